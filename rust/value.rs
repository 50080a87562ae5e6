//! The value model: the JSON data model, strictly.
//!
//! A [`Value`] may borrow its strings from the buffer it was decoded from (`Value<'a>`), so that a
//! payload that turns out to change nothing costs no string allocation. The document stores
//! `Value<'static>`.
//!
//! Invariants (upheld by every constructor in this crate):
//! - `Int` holds negative numbers only; every number `>= 0` is a `UInt`, so integer equality is
//!   variant equality;
//! - `Float` is finite;
//! - the keys of an `Object` are unique (insertion order kept).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use crate::base::{Hasher, MAX_DEPTH};
use crate::pointer;

/// Objects with more members than this use a hash index for lookups instead of a linear scan.
const SMALL_MAP: usize = 16;

/// An object: members in insertion order, keys unique.
pub type Map<'a> = Vec<(Cow<'a, str>, Value<'a>)>;

#[derive(Debug, Clone)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    /// A negative integer (`>= -2**63`).
    Int(i64),
    /// A non-negative integer (`<= 2**64 - 1`).
    UInt(u64),
    /// A finite float.
    Float(f64),
    Str(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    Object(Map<'a>),
}

impl<'a> Value<'a> {
    /// An integer, normalised (`>= 0` becomes `UInt`).
    #[inline]
    pub fn int(i: i64) -> Self {
        if i < 0 {
            Value::Int(i)
        } else {
            Value::UInt(i as u64)
        }
    }

    /// A float, or `None` if it is not finite.
    #[inline]
    pub fn float(f: f64) -> Option<Self> {
        f.is_finite().then_some(Value::Float(f))
    }

    pub fn str(s: impl Into<Cow<'a, str>>) -> Self {
        Value::Str(s.into())
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Value::Object(_))
    }

    /// A copy that owns all its strings.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            Value::Int(i) => Value::Int(i),
            Value::UInt(u) => Value::UInt(u),
            Value::Float(f) => Value::Float(f),
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
            Value::Array(a) => Value::Array(a.into_iter().map(Value::into_owned).collect()),
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                    .collect(),
            ),
        }
    }

    /// An owned copy (strings copied once).
    pub fn to_static(&self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::UInt(u) => Value::UInt(*u),
            Value::Float(f) => Value::Float(*f),
            Value::Str(s) => Value::Str(Cow::Owned(s.to_string())),
            Value::Array(a) => Value::Array(a.iter().map(Value::to_static).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (Cow::Owned(k.to_string()), v.to_static()))
                    .collect(),
            ),
        }
    }

    /// Makes `self` equal to `new`, in place where the shapes match (no allocation for an array
    /// of numbers that changes, say); returns whether anything changed.
    pub fn assign(&mut self, new: &Value<'_>) -> bool {
        match (&mut *self, new) {
            (Value::Float(c), Value::Float(f)) => {
                let changed = c.to_bits() != f.to_bits();
                *c = *f;
                changed
            }
            (Value::UInt(c), Value::UInt(u)) => std::mem::replace(c, *u) != *u,
            (Value::Int(c), Value::Int(i)) => std::mem::replace(c, *i) != *i,
            (Value::Bool(c), Value::Bool(b)) => std::mem::replace(c, *b) != *b,
            (Value::Null, Value::Null) => false,
            (Value::Str(c), Value::Str(s)) => {
                if c.as_ref() == s.as_ref() {
                    return false;
                }
                match c {
                    Cow::Owned(o) => {
                        o.clear();
                        o.push_str(s);
                    }
                    Cow::Borrowed(_) => *c = Cow::Owned(s.to_string()),
                }
                true
            }
            (Value::Array(items), Value::Array(new_items)) if items.len() == new_items.len() => {
                let mut changed = false;
                for (c, n) in items.iter_mut().zip(new_items) {
                    changed |= c.assign(n);
                }
                changed
            }
            (_, new) => {
                if *self == *new {
                    return false;
                }
                *self = new.to_static();
                true
            }
        }
    }

    /// How deeply containers nest: 0 for a scalar, 1 for `[]` or `{}`, 2 for `[[]]`, ...
    pub fn depth(&self) -> usize {
        // Iterative, so that a (hand-built) very deep value cannot overflow the stack.
        let mut max = 0;
        let mut stack: Vec<(&Value, usize)> = vec![(self, 0)];
        while let Some((v, d)) = stack.pop() {
            match v {
                Value::Array(a) => {
                    max = max.max(d + 1);
                    stack.extend(a.iter().map(|x| (x, d + 1)));
                }
                Value::Object(m) => {
                    max = max.max(d + 1);
                    stack.extend(m.iter().map(|(_, x)| (x, d + 1)));
                }
                _ => max = max.max(d),
            }
        }
        max
    }

    /// Kind name, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::UInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
}

impl<'a, 'b> PartialEq<Value<'b>> for Value<'a> {
    /// Strict equality: same kind and same content; floats by their bits; objects regardless of
    /// member order.
    fn eq(&self, other: &Value<'b>) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::UInt(a), Value::UInt(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x == y)
            }
            (Value::Object(a), Value::Object(b)) => maps_equal(a, b),
            _ => false,
        }
    }
}

/// Member-wise equality of two objects, ignoring member order.
pub fn maps_equal(a: &Map<'_>, b: &Map<'_>) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Fast path: same order.
    if a.iter().zip(b.iter()).all(|((ka, _), (kb, _))| ka == kb) {
        return a.iter().zip(b.iter()).all(|((_, va), (_, vb))| va == vb);
    }
    let index = MapIndex::new(b);
    a.iter()
        .all(|(k, va)| index.get(b, k).is_some_and(|vb| va == vb))
}

/// Key lookups in a [`Map`] (or any list of `(key, V)` pairs): a linear scan for small objects,
/// a hash index for large ones.
pub struct MapIndex<'m> {
    index: Option<HashMap<&'m str, usize, Hasher>>,
}

impl<'m> MapIndex<'m> {
    pub fn new<V>(map: &'m [(Cow<'_, str>, V)]) -> Self {
        if map.len() <= SMALL_MAP {
            return MapIndex { index: None };
        }
        let mut index = HashMap::with_capacity_and_hasher(map.len(), Hasher::default());
        for (i, (k, _)) in map.iter().enumerate() {
            index.insert(k.as_ref(), i);
        }
        MapIndex { index: Some(index) }
    }

    pub fn position<V>(&self, map: &[(Cow<'_, str>, V)], key: &str) -> Option<usize> {
        match &self.index {
            Some(ix) => ix.get(key).copied(),
            None => map.iter().position(|(k, _)| k == key),
        }
    }

    pub fn get<'v, V>(&self, map: &'v [(Cow<'_, str>, V)], key: &str) -> Option<&'v V> {
        self.position(map, key)
            .and_then(|i| map.get(i))
            .map(|(_, v)| v)
    }

    pub fn contains<V>(&self, map: &[(Cow<'_, str>, V)], key: &str) -> bool {
        self.position(map, key).is_some()
    }
}

/// Enforces unique keys on a freshly decoded object (or the members of one): a repeated key keeps
/// the position of its first occurrence and the value of its last one (as a Python dict does).
pub fn dedupe_keys<V>(map: &mut Vec<(Cow<'_, str>, V)>) {
    let n = map.len();
    if n < 2 {
        return;
    }
    // (later index, first index) pairs.
    let mut dups: Vec<(usize, usize)> = Vec::new();
    if n <= SMALL_MAP {
        for j in 1..n {
            if let Some(i) = (0..j).find(|&i| map[i].0 == map[j].0) {
                dups.push((j, i));
            }
        }
    } else {
        let mut first: HashMap<&str, usize, Hasher> =
            HashMap::with_capacity_and_hasher(n, Hasher::default());
        for (j, (k, _)) in map.iter().enumerate() {
            match first.get(k.as_ref()) {
                Some(&i) => dups.push((j, i)),
                None => {
                    first.insert(k.as_ref(), j);
                }
            }
        }
    }
    if dups.is_empty() {
        return;
    }
    let mut dead = vec![false; n];
    for &(j, i) in &dups {
        // j > i: the later value moves to the first place (the one left at j is dropped).
        let (head, tail) = map.split_at_mut(j);
        std::mem::swap(&mut head[i].1, &mut tail[0].1);
        dead[j] = true;
    }
    let mut idx = 0;
    map.retain(|_| {
        let keep = !dead[idx];
        idx += 1;
        keep
    });
}

/// A problem found in a value: the message and where (tokens inside the value, innermost first).
/// Boxed, so that `Result<Value, ValueError>` stays small on the hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(Box<ErrorInner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct ErrorInner {
    at_rev: Vec<String>,
    msg: String,
}

impl ValueError {
    #[cold]
    pub fn new(msg: impl Into<String>) -> Self {
        ValueError(Box::new(ErrorInner {
            at_rev: Vec::new(),
            msg: msg.into(),
        }))
    }

    /// The error happened inside the member / element `token` of the current container.
    #[must_use]
    #[cold]
    pub fn within(mut self, token: impl Into<String>) -> Self {
        self.0.at_rev.push(token.into());
        self
    }

    pub fn msg(&self) -> &str {
        &self.0.msg
    }

    /// The pointer of the offending place relative to the value (`""` for the value itself).
    pub fn pointer(&self) -> String {
        let mut s = String::new();
        for t in self.0.at_rev.iter().rev() {
            s.push('/');
            pointer::escape_into(&mut s, t);
        }
        s
    }

    /// `"{base}{pointer}: {msg}"` where `base` is the (already escaped) pointer of the value
    /// (`(root)` when both are empty).
    pub fn render(&self, base: &str) -> String {
        let at = format!("{base}{}", self.pointer());
        format!("{}: {}", pointer::display(&at), self.0.msg)
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(""))
    }
}

impl std::error::Error for ValueError {}

/// Message of a value nesting deeper than [`MAX_DEPTH`].
pub fn depth_error() -> ValueError {
    ValueError::new(format!(
        "depth: containers nest more than {MAX_DEPTH} levels"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(members: Vec<(&'static str, Value<'static>)>) -> Value<'static> {
        Value::Object(
            members
                .into_iter()
                .map(|(k, v)| (Cow::Borrowed(k), v))
                .collect(),
        )
    }

    #[test]
    fn int_normalisation_and_strict_equality() {
        assert_eq!(Value::int(5), Value::UInt(5));
        assert_eq!(Value::int(-5), Value::Int(-5));
        assert_eq!(Value::int(0), Value::UInt(0));
        assert_ne!(Value::UInt(1), Value::Float(1.0));
        assert_ne!(Value::Bool(true), Value::UInt(1));
        assert_ne!(Value::Float(0.0), Value::Float(-0.0));
        assert_eq!(Value::Float(1.5), Value::Float(1.5));
        assert!(Value::float(f64::NAN).is_none());
        assert!(Value::float(f64::INFINITY).is_none());
        assert_eq!(Value::str("a"), Value::Str(Cow::Owned("a".to_string())));
        assert_ne!(
            Value::Array(vec![Value::UInt(1)]),
            Value::Array(vec![Value::UInt(1), Value::UInt(2)])
        );
    }

    #[test]
    fn object_equality_ignores_order() {
        let a = obj(vec![("a", Value::UInt(1)), ("b", Value::UInt(2))]);
        let b = obj(vec![("b", Value::UInt(2)), ("a", Value::UInt(1))]);
        let c = obj(vec![("b", Value::UInt(2)), ("a", Value::Float(1.0))]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Large objects go through the hash index.
        let big1: Map = (0..40)
            .map(|i| (Cow::Owned(format!("k{i}")), Value::UInt(i)))
            .collect();
        let mut big2 = big1.clone();
        big2.reverse();
        assert!(maps_equal(&big1, &big2));
        big2[0].1 = Value::Null;
        assert!(!maps_equal(&big1, &big2));
    }

    #[test]
    fn depth() {
        assert_eq!(Value::Null.depth(), 0);
        assert_eq!(Value::Array(vec![]).depth(), 1);
        assert_eq!(
            obj(vec![("a", Value::Array(vec![Value::Array(vec![])]))]).depth(),
            3
        );
    }

    #[test]
    fn dedupe_small_and_large() {
        let mut m: Map = vec![
            (Cow::Borrowed("a"), Value::UInt(1)),
            (Cow::Borrowed("b"), Value::UInt(2)),
            (Cow::Borrowed("a"), Value::UInt(3)),
        ];
        dedupe_keys(&mut m);
        assert_eq!(
            m,
            vec![
                (Cow::Borrowed("a"), Value::UInt(3)),
                (Cow::Borrowed("b"), Value::UInt(2))
            ]
        );
        let mut big: Map = (0..30)
            .map(|i| (Cow::Owned(format!("k{}", i % 20)), Value::UInt(i)))
            .collect();
        dedupe_keys(&mut big);
        assert_eq!(big.len(), 20);
        assert_eq!(big[0], (Cow::Borrowed("k0"), Value::UInt(20)));
        assert_eq!(big[19], (Cow::Borrowed("k19"), Value::UInt(19)));
    }

    #[test]
    fn error_pointer() {
        let e = ValueError::new("non-finite float")
            .within("last")
            .within("a/b");
        assert_eq!(
            e.render("/market_data"),
            "/market_data/a~1b/last: non-finite float"
        );
    }
}
