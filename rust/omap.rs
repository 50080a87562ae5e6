//! The children of an object node: an insertion-ordered map with short keys stored inline.
//!
//! Like a Python dict: lookups by hash, iteration in insertion order, and O(1) removal that keeps
//! the order (the slot becomes a hole; holes are squeezed out once they outnumber live entries).
//! Keys of up to [`INLINE`] bytes live inside the slot, so a lookup touches one cache line for
//! the key instead of chasing a pointer to the heap.
//!
//! Each slot also has a version stamp in a dense side array (an upper bound of the value's
//! [`Stamped::stamp`]), so that finding the values changed after a version scans 8 bytes per
//! entry instead of the entries themselves.

use std::fmt;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::base::{bytes_eq, Hasher};
use crate::{json, pointer};

/// Longest key stored inline.
pub const INLINE: usize = 22;

/// Maps with at most this many slots have no hash table: a 1-byte tag of each key's hash, kept
/// inline in the map, picks the slot to compare (one cache line instead of a table probe).
const SMALL: usize = 16;

#[inline]
fn tag(h: u64) -> u8 {
    (h >> 56) as u8
}

/// An object key (valid UTF-8, like `str`).
#[derive(Clone)]
pub struct Key(Repr);

#[derive(Clone)]
enum Repr {
    /// `meta`: the length, plus [`ESCAPED`] if the key has a `~` or `/`, plus [`JSON_ESCAPED`]
    /// if it has a `"`, `\\` or control character.
    Inline {
        meta: u8,
        buf: [u8; INLINE],
    },
    Heap(Box<str>),
}

/// Flag of `Repr::Inline::meta`: the key needs escaping in a JSON Pointer.
const ESCAPED: u8 = 0x80;
/// Flag of `Repr::Inline::meta`: the key needs escaping in a JSON string.
const JSON_ESCAPED: u8 = 0x40;
const FLAGS: u8 = ESCAPED | JSON_ESCAPED;

impl Key {
    pub fn new(s: &str) -> Key {
        if s.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            let escaped = pointer::needs_escape(s);
            Key(Repr::Inline {
                meta: s.len() as u8
                    | if escaped { ESCAPED } else { 0 }
                    | if json::str_needs_escape(s.as_bytes()) {
                        JSON_ESCAPED
                    } else {
                        0
                    },
                buf,
            })
        } else {
            Key(Repr::Heap(s.into()))
        }
    }

    /// Whether the key has a `"`, `\\` or control character (to escape in a JSON string).
    #[inline]
    pub fn needs_json_escape(&self) -> bool {
        match &self.0 {
            Repr::Inline { meta, .. } => meta & JSON_ESCAPED != 0,
            Repr::Heap(s) => json::str_needs_escape(s.as_bytes()),
        }
    }

    /// Whether the key has a `~` or `/` (to escape in a JSON Pointer).
    #[inline]
    pub fn needs_escape(&self) -> bool {
        match &self.0 {
            Repr::Inline { meta, .. } => meta & ESCAPED != 0,
            Repr::Heap(s) => pointer::needs_escape(s),
        }
    }

    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { meta, buf } => {
                let bytes = buf.get(..usize::from(meta & !FLAGS)).unwrap_or_default();
                // SAFETY: an inline key is only ever built (in `Key::new`) by copying all the
                // bytes of a `&str` (so whole characters) into `buf[..len]`, and is never mutated.
                unsafe { std::str::from_utf8_unchecked(bytes) }
            }
            Repr::Heap(s) => s,
        }
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key::new(s)
    }
}

impl From<std::borrow::Cow<'_, str>> for Key {
    fn from(s: std::borrow::Cow<'_, str>) -> Key {
        match s {
            std::borrow::Cow::Borrowed(s) => Key::new(s),
            std::borrow::Cow::Owned(s) => Key::from(s),
        }
    }
}

impl From<String> for Key {
    fn from(s: String) -> Key {
        if s.len() <= INLINE {
            Key::new(&s)
        } else {
            Key(Repr::Heap(s.into_boxed_str()))
        }
    }
}

impl std::ops::Deref for Key {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value with a version stamp (for a document node: its newest change).
pub trait Stamped {
    fn stamp(&self) -> u64;
}

/// An insertion-ordered map from [`Key`] to `V`.
#[derive(Clone)]
pub struct OMap<V> {
    /// Indices into `slots`; empty while `slots.len() <= SMALL`.
    table: HashTable<usize>,
    /// Entries in insertion order; `None` is a removed entry's hole.
    slots: Vec<Option<(Key, V)>>,
    /// `stamps[i] >= slots[i].1.stamp()`.
    stamps: Vec<u64>,
    holes: usize,
    hasher: Hasher,
    /// While `slots.len() <= SMALL` (and then there are no holes): the tag of slot `i`'s key.
    tags: [u8; SMALL],
}

impl<V: Stamped> Default for OMap<V> {
    fn default() -> Self {
        OMap::new()
    }
}

impl<V: fmt::Debug + Stamped> fmt::Debug for OMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V: Stamped> OMap<V> {
    pub fn new() -> Self {
        OMap {
            table: HashTable::new(),
            slots: Vec::new(),
            stamps: Vec::new(),
            holes: 0,
            hasher: Hasher::default(),
            tags: [0; SMALL],
        }
    }

    pub fn with_capacity(n: usize) -> Self {
        OMap {
            table: HashTable::with_capacity(if n > SMALL { n } else { 0 }),
            slots: Vec::with_capacity(n),
            stamps: Vec::with_capacity(n),
            holes: 0,
            hasher: Hasher::default(),
            tags: [0; SMALL],
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.slots.len() - self.holes
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    fn index_of(&self, key: &str) -> Option<usize> {
        let slots = &self.slots;
        let eq = |k: &Key| bytes_eq(k.as_bytes(), key.as_bytes());
        let n = slots.len();
        if n <= SMALL {
            let t = tag(self.hash(key));
            let tags = self.tags.get(..n)?;
            return tags
                .iter()
                .enumerate()
                .filter(|&(_, &g)| g == t)
                .map(|(i, _)| i)
                .find(|&i| matches!(slots.get(i), Some(Some((k, _))) if eq(k)));
        }
        self.table
            .find(
                self.hash(key),
                |&i| matches!(slots.get(i), Some(Some((k, _))) if eq(k)),
            )
            .copied()
    }

    #[inline]
    pub fn get(&self, key: &str) -> Option<&V> {
        let i = self.index_of(key)?;
        match self.slots.get(i) {
            Some(Some((_, v))) => Some(v),
            _ => None,
        }
    }

    /// Mutable access that must not raise the value's stamp (use [`OMap::get_mut_at`] for that).
    #[inline]
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let i = self.index_of(key)?;
        match self.slots.get_mut(i) {
            Some(Some((_, v))) => Some(v),
            _ => None,
        }
    }

    /// Mutable access to a value whose stamp may become (at most) `version`.
    #[inline]
    pub fn get_mut_at(&mut self, key: &str, version: u64) -> Option<&mut V> {
        let i = self.index_of(key)?;
        if let Some(s) = self.stamps.get_mut(i) {
            *s = (*s).max(version);
        }
        match self.slots.get_mut(i) {
            Some(Some((_, v))) => Some(v),
            _ => None,
        }
    }

    #[inline]
    pub fn contains_key(&self, key: &str) -> bool {
        self.index_of(key).is_some()
    }

    /// Inserts `key` -> `value` (at the end if `key` is new, in place otherwise); returns the
    /// value it replaced.
    pub fn insert(&mut self, key: Key, value: V) -> Option<V> {
        let stamp = value.stamp();
        if let Some(i) = self.index_of(&key) {
            if let Some(s) = self.stamps.get_mut(i) {
                *s = (*s).max(stamp);
            }
            if let Some(Some((_, v))) = self.slots.get_mut(i) {
                return Some(std::mem::replace(v, value));
            }
        }
        let i = self.slots.len();
        self.stamps.push(stamp);
        if i < SMALL {
            if let Some(t) = self.tags.get_mut(i) {
                *t = tag(self.hasher.hash_one(key.as_str()));
            }
            self.slots.push(Some((key, value)));
            return None;
        }
        if i == SMALL {
            self.slots.push(Some((key, value)));
            self.rebuild();
            return None;
        }
        let h = self.hash(&key);
        self.slots.push(Some((key, value)));
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.table.insert_unique(h, i, |&j| match slots.get(j) {
            Some(Some((k, _))) => hasher.hash_one(k.as_str()),
            _ => 0,
        });
        None
    }

    /// Removes `key`, keeping the order of the others; returns the entry.
    pub fn remove(&mut self, key: &str) -> Option<(Key, V)> {
        if self.slots.len() <= SMALL {
            let i = self.index_of(key)?;
            let out = self.slots.get_mut(i).and_then(Option::take);
            if out.is_some() {
                self.holes += 1;
                // Small: squeeze out the hole at once.
                self.rebuild();
            }
            return out;
        }
        let h = self.hash(key);
        let slots = &self.slots;
        let entry = self
            .table
            .find_entry(
                h,
                |&i| matches!(slots.get(i), Some(Some((k, _))) if k.as_str() == key),
            )
            .ok()?;
        let (i, _) = entry.remove();
        let out = self.slots.get_mut(i).and_then(Option::take);
        if out.is_some() {
            self.holes += 1;
            self.maybe_compact();
        }
        out
    }

    /// Removes the entries for which `pred` is true (in order), returning them.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&Key, &V) -> bool) -> Vec<(Key, V)> {
        let mut out = Vec::new();
        for slot in self.slots.iter_mut() {
            if matches!(slot, Some((k, v)) if pred(k, v)) {
                if let Some(e) = slot.take() {
                    out.push(e);
                }
            }
        }
        if !out.is_empty() {
            self.holes += out.len();
            self.rebuild();
        }
        out
    }

    fn maybe_compact(&mut self) {
        if self.holes > 8 && self.holes > self.slots.len() / 2 {
            self.rebuild();
        }
    }

    /// Squeezes out the holes, recomputes the stamps and re-indexes (small maps have no index).
    fn rebuild(&mut self) {
        if self.holes > 0 {
            self.slots.retain(Option::is_some);
        }
        self.stamps.clear();
        self.stamps.extend(
            self.slots
                .iter()
                .map(|s| s.as_ref().map_or(0, |(_, v)| v.stamp())),
        );
        self.holes = 0;
        self.table.clear();
        if self.slots.len() <= SMALL {
            for (t, slot) in self.tags.iter_mut().zip(&self.slots) {
                if let Some((k, _)) = slot {
                    *t = tag(self.hasher.hash_one(k.as_str()));
                }
            }
            return;
        }
        let (slots, hasher) = (&self.slots, &self.hasher);
        for (i, slot) in slots.iter().enumerate() {
            if let Some((k, _)) = slot {
                let h = hasher.hash_one(k.as_str());
                self.table.insert_unique(h, i, |&j| match slots.get(j) {
                    Some(Some((k, _))) => hasher.hash_one(k.as_str()),
                    _ => 0,
                });
            }
        }
    }

    #[inline]
    pub fn iter(&self) -> Iter<'_, V> {
        Iter {
            slots: self.slots.iter(),
        }
    }

    /// The entries whose stamp may be newer than `since`, in order (a superset of those whose
    /// stamp is).
    #[inline]
    pub fn iter_since(&self, since: u64) -> IterSince<'_, V> {
        IterSince {
            stamps: &self.stamps,
            slots: &self.slots,
            next: 0,
            since,
        }
    }

    #[inline]
    pub fn keys(&self) -> impl Iterator<Item = &Key> + '_ {
        self.iter().map(|(k, _)| k)
    }

    #[inline]
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }
}

/// Iterator over the entries of an [`OMap`], in order.
pub struct Iter<'a, V> {
    slots: std::slice::Iter<'a, Option<(Key, V)>>,
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a Key, &'a V);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.slots.by_ref().flatten().next().map(|(k, v)| (k, v))
    }
}

/// See [`OMap::iter_since`]: scans the stamps only, touching the entries that pass.
pub struct IterSince<'a, V> {
    stamps: &'a [u64],
    slots: &'a [Option<(Key, V)>],
    next: usize,
    since: u64,
}

impl<'a, V> Iterator for IterSince<'a, V> {
    type Item = (&'a Key, &'a V);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let since = self.since;
        loop {
            let rest = self.stamps.get(self.next..)?;
            let i = self.next + rest.iter().position(|&s| s > since)?;
            self.next = i + 1;
            if let Some(Some((k, v))) = self.slots.get(i) {
                return Some((k, v));
            }
        }
    }
}

impl<'a, V: Stamped> IntoIterator for &'a OMap<V> {
    type Item = (&'a Key, &'a V);
    type IntoIter = Iter<'a, V>;
    fn into_iter(self) -> Iter<'a, V> {
        self.iter()
    }
}

impl<V: Stamped> std::ops::Index<&str> for OMap<V> {
    type Output = V;
    /// Test helper: panics if absent (never used on user input).
    fn index(&self, key: &str) -> &V {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no key {key:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Stamped for u32 {
        fn stamp(&self) -> u64 {
            u64::from(*self)
        }
    }

    #[test]
    fn keys_inline_and_heap() {
        for s in [
            "",
            "a",
            "é✓",
            &"x".repeat(22),
            &"y".repeat(23),
            "0123456789012345678é",
        ] {
            let k = Key::new(s);
            assert_eq!(k.as_str(), s);
            assert_eq!(Key::from(s.to_string()).as_str(), s);
        }
        assert!(Key::new("a") < Key::new("b"));
        assert!(Key::new("a/b").needs_escape() && Key::new("~").needs_escape());
        assert!(!Key::new("ab").needs_escape() && !Key::new(&"x".repeat(40)).needs_escape());
        assert!(Key::new(&"~".repeat(40)).needs_escape());
        assert!(Key::new("a\"b").needs_json_escape() && Key::new("\n").needs_json_escape());
        assert!(!Key::new("a/b~").needs_json_escape() && Key::new("a/b~").as_str() == "a/b~");
        assert_eq!(std::mem::size_of::<Key>(), 24);
    }

    #[test]
    fn random_ops_match_a_reference() {
        let mut x: u64 = 12345;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..200 {
            let mut m: OMap<u32> = OMap::new();
            let mut r: Vec<(String, u32)> = Vec::new();
            let span = [4u64, 20, 40, 200][round % 4];
            for step in 0..400u32 {
                let k = format!("k{}", next() % span);
                match next() % 4 {
                    0 | 1 => {
                        let old = m.insert(Key::from(k.clone()), step);
                        match r.iter_mut().find(|(x, _)| *x == k) {
                            Some(e) => assert_eq!(old, Some(std::mem::replace(&mut e.1, step))),
                            None => {
                                assert_eq!(old, None);
                                r.push((k, step));
                            }
                        }
                    }
                    2 => {
                        let got = m.remove(&k).map(|(k, v)| (k.to_string(), v));
                        let want = r.iter().position(|(x, _)| *x == k).map(|i| r.remove(i));
                        assert_eq!(got, want);
                    }
                    _ => {
                        let cut = (next() % 400) as u32;
                        let got: Vec<_> = m
                            .remove_where(|_, &v| v < cut)
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect();
                        let want: Vec<_> = r.iter().filter(|(_, v)| *v < cut).cloned().collect();
                        r.retain(|(_, v)| *v >= cut);
                        assert_eq!(got, want);
                    }
                }
                assert_eq!(m.len(), r.len());
                let got: Vec<_> = m.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                assert_eq!(got, r);
                for i in 0..span {
                    let k = format!("k{i}");
                    assert_eq!(m.get(&k), r.iter().find(|(x, _)| *x == k).map(|(_, v)| v));
                }
            }
        }
    }

    #[test]
    fn ordered_map() {
        let mut m: OMap<u32> = OMap::new();
        for i in 0..100 {
            assert!(m.insert(Key::from(format!("k{i}")), i).is_none());
        }
        assert_eq!(m.insert(Key::new("k5"), 500), Some(5));
        assert_eq!(m.len(), 100);
        // Remove most, keeping order; holes get squeezed out along the way.
        for i in (0..100).filter(|i| i % 3 != 0) {
            let (k, _) = m.remove(&format!("k{i}")).unwrap();
            assert_eq!(k.as_str(), format!("k{i}"));
        }
        assert!(m.remove("k1").is_none());
        let keys: Vec<String> = m.keys().map(|k| k.to_string()).collect();
        let want: Vec<String> = (0..100)
            .filter(|i| i % 3 == 0)
            .map(|i| format!("k{i}"))
            .collect();
        assert_eq!(keys, want);
        assert_eq!(m.len(), 34);
        for i in 0..100 {
            assert_eq!(m.get(&format!("k{i}")).is_some(), i % 3 == 0, "{i}");
        }
        // Re-inserted keys go last.
        m.insert(Key::new("k1"), 1);
        assert_eq!(m.keys().last().unwrap().as_str(), "k1");
        *m.get_mut("k1").unwrap() = 11;
        assert_eq!(m["k1"], 11);
        // Stamps: an upper bound of the values' stamps; iter_since filters on them.
        let since: Vec<u32> = m.iter_since(50).map(|(_, v)| *v).collect();
        assert!(
            since.iter().all(|&v| v > 50 || v == 11) && since.contains(&99),
            "{since:?}"
        );
        *m.get_mut_at("k0", 1000).unwrap() = 0;
        assert_eq!(
            m.iter_since(999)
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["k0"]
        );
        // Small maps (no index) too.
        let mut s: OMap<u32> = OMap::with_capacity(3);
        for i in 0..12 {
            s.insert(Key::from(format!("s{i}")), i);
            assert_eq!(s.get("s0"), Some(&0));
            assert_eq!(s.get(&format!("s{i}")), Some(&i));
        }
        for i in 0..12 {
            assert_eq!(s.remove(&format!("s{i}")).map(|(_, v)| v), Some(i));
            assert!(s.get(&format!("s{i}")).is_none());
            for j in i + 1..12 {
                assert_eq!(s.get(&format!("s{j}")), Some(&j), "{i} {j}");
            }
        }
        assert!(s.is_empty());
        let gone = m.remove_where(|k, _| k.ends_with('3'));
        assert_eq!(
            gone.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["k3", "k33", "k63", "k93"]
        );
        assert_eq!(m.len(), 31);
        assert!(m.get("k3").is_none() && m.get("k6").is_some());
        let long = "z".repeat(40);
        m.insert(Key::new(&long), 7);
        assert_eq!(m.get(&long), Some(&7));
        assert_eq!(m.remove(&long).map(|(_, v)| v), Some(7));
    }
}
