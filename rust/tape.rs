//! The fast path of `merge_bytes` for JSON: the payload is scanned into a flat, reusable tape of
//! tokens (no allocation per object, array or string), and merged straight from it; an owned
//! value is built only for what actually changes.
//!
//! The tape only handles the common shape of payloads: strings without escapes, numbers that
//! convert exactly on the fast paths, no duplicate keys, moderate nesting. For anything else it
//! gives up (`None`) and the caller uses the general parser ([`crate::json::parse`]), which is
//! also the one that reports errors: the tape never accepts what the parser would reject.

use std::borrow::Cow;

use crate::base::MAX_DEPTH;
use crate::value::{Map, Value};

/// One token. Containers record their size and where their subtree ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tok {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// A string without escapes: `input[start..end]` (valid UTF-8).
    Str {
        start: u32,
        end: u32,
    },
    /// `n` members (each a `Str` key then a value); the subtree ends before token `end`.
    Obj {
        n: u32,
        end: u32,
    },
    /// `n` elements; the subtree ends before token `end`.
    Arr {
        n: u32,
        end: u32,
    },
}

const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Scans `input` into `tape` (cleared first) and returns its value. `None`: not handled here
/// (use the parser).
pub fn scan<'t, 'a>(input: &'a [u8], tape: &'t mut Vec<Tok>) -> Option<TapeRef<'t, 'a>> {
    tape.clear();
    if input.len() > u32::MAX as usize / 2 {
        return None;
    }
    let mut s = Scanner { b: input, pos: 0 };
    s.value(tape, 0)?;
    s.ws();
    if s.pos != input.len() {
        return None;
    }
    // The only way to get a `TapeRef`: its tape is the scan of its input (see `TapeRef::text`).
    Some(TapeRef { tape, input, i: 0 })
}

/// Objects with more members than this are left to the parser (duplicate check).
const MAX_MEMBERS: usize = 32;

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn value(&mut self, tape: &mut Vec<Tok>, depth: usize) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'{' => self.object(tape, depth + 1),
            b'[' => self.array(tape, depth + 1),
            b'"' => {
                let t = self.string()?;
                tape.push(t);
                Some(())
            }
            b't' => self.literal(tape, b"true", Tok::Bool(true)),
            b'f' => self.literal(tape, b"false", Tok::Bool(false)),
            b'n' => self.literal(tape, b"null", Tok::Null),
            b'-' | b'0'..=b'9' => {
                let t = self.number()?;
                tape.push(t);
                Some(())
            }
            _ => None,
        }
    }

    fn literal(&mut self, tape: &mut Vec<Tok>, word: &[u8], t: Tok) -> Option<()> {
        if self.b.get(self.pos..)?.starts_with(word) {
            self.pos += word.len();
            tape.push(t);
            Some(())
        } else {
            None
        }
    }

    fn object(&mut self, tape: &mut Vec<Tok>, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        let at = tape.len();
        tape.push(Tok::Obj { n: 0, end: 0 });
        let mut n: u32 = 0;
        // The keys seen so far, for the duplicate check.
        let mut keys = [(0u32, 0u32); MAX_MEMBERS];
        self.ws();
        if self.peek()? == b'}' {
            self.pos += 1;
        } else {
            loop {
                self.ws();
                if self.peek()? != b'"' {
                    return None;
                }
                let key = self.string()?;
                let Tok::Str { start, end } = key else {
                    return None;
                };
                let k = self.b.get(start as usize..end as usize)?;
                for &(s, e) in keys.get(..n as usize)? {
                    if crate::base::bytes_eq(self.b.get(s as usize..e as usize)?, k) {
                        return None; // a duplicate: the parser knows what to do
                    }
                }
                *keys.get_mut(n as usize)? = (start, end);
                tape.push(key);
                self.ws();
                if self.peek()? != b':' {
                    return None;
                }
                self.pos += 1;
                self.value(tape, depth)?;
                n += 1;
                self.ws();
                match self.peek()? {
                    b',' => self.pos += 1,
                    b'}' => {
                        self.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        let end = u32::try_from(tape.len()).ok()?;
        *tape.get_mut(at)? = Tok::Obj { n, end };
        Some(())
    }

    fn array(&mut self, tape: &mut Vec<Tok>, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        let at = tape.len();
        tape.push(Tok::Arr { n: 0, end: 0 });
        let mut n: u32 = 0;
        self.ws();
        if self.peek()? == b']' {
            self.pos += 1;
        } else {
            loop {
                self.value(tape, depth)?;
                n += 1;
                self.ws();
                match self.peek()? {
                    b',' => self.pos += 1,
                    b']' => {
                        self.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        let end = u32::try_from(tape.len()).ok()?;
        *tape.get_mut(at)? = Tok::Arr { n, end };
        Some(())
    }

    /// A string without escapes or control characters (valid UTF-8); `pos` is on the quote.
    /// Inlined: the token returned through memory stalled the loads of its fields.
    #[inline(always)]
    fn string(&mut self) -> Option<Tok> {
        let b = self.b;
        let start = self.pos + 1;
        let mut i = start;
        let mut high = 0u64;
        // 8 bytes at a time while none is a quote, a backslash or a control character.
        while let Some(chunk) = b.get(i..i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().ok()?);
            if crate::json::word_needs_escape(w) {
                break;
            }
            high |= w;
            i += 8;
        }
        loop {
            match *b.get(i)? {
                b'"' => break,
                b'\\' => return None,
                c if c < 0x20 => return None,
                c => {
                    high |= u64::from(c);
                    i += 1;
                }
            }
        }
        let end = i;
        self.pos = i + 1;
        if high & 0x8080_8080_8080_8080 != 0 {
            std::str::from_utf8(self.b.get(start..end)?).ok()?;
        }
        Some(Tok::Str {
            start: start as u32,
            end: end as u32,
        })
    }

    fn number(&mut self) -> Option<Tok> {
        let neg = self.peek()? == b'-';
        if neg {
            self.pos += 1;
        }
        let mut mag: u64 = 0;
        let mut ndig = 0usize;
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                while let Some(b @ b'0'..=b'9') = self.peek() {
                    mag = mag.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
                    ndig += 1;
                    self.pos += 1;
                }
            }
            _ => return None,
        }
        let mut is_float = false;
        let mut frac: i64 = 0;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            while let Some(b @ b'0'..=b'9') = self.peek() {
                mag = mag.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
                ndig += 1;
                frac += 1;
                self.pos += 1;
            }
            if frac == 0 {
                return None;
            }
            is_float = true;
        }
        let mut exp: i64 = 0;
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            let exp_neg = match self.peek()? {
                b'-' => {
                    self.pos += 1;
                    true
                }
                b'+' => {
                    self.pos += 1;
                    false
                }
                _ => false,
            };
            let at = self.pos;
            while let Some(b @ b'0'..=b'9') = self.peek() {
                exp = (exp * 10 + i64::from(b - b'0')).min(1 << 20);
                self.pos += 1;
            }
            if self.pos == at {
                return None;
            }
            if exp_neg {
                exp = -exp;
            }
            is_float = true;
        }
        if ndig > 19 {
            return None;
        }
        if is_float {
            // Exact (Clinger's fast path), as in the parser; anything else goes there.
            let e = exp - frac;
            if mag > (1u64 << 53) || !(-22..=22).contains(&e) {
                return None;
            }
            let m = mag as f64;
            let f = if e >= 0 {
                m * POW10[e as usize]
            } else {
                m / POW10[(-e) as usize]
            };
            return Some(Tok::Float(if neg { -f } else { f }));
        }
        if !neg {
            return Some(Tok::UInt(mag));
        }
        if mag == 0 {
            return Some(Tok::UInt(0));
        }
        if mag > 1u64 << 63 {
            return None;
        }
        Some(Tok::Int((mag as i64).wrapping_neg()))
    }
}

/// The index of the token after the subtree at `i`.
#[inline]
fn next(tape: &[Tok], i: usize) -> Option<usize> {
    Some(match *tape.get(i)? {
        Tok::Obj { end, .. } | Tok::Arr { end, .. } => end as usize,
        _ => i + 1,
    })
}

/// A value of a scanned payload: token `i` of `tape` over `input`. Only [`scan`] makes one, so
/// `tape` is always the scan of `input`.
#[derive(Clone, Copy)]
pub struct TapeRef<'t, 'a> {
    tape: &'t [Tok],
    input: &'a [u8],
    i: usize,
}

impl<'t, 'a> TapeRef<'t, 'a> {
    #[inline]
    pub fn tok(&self) -> Tok {
        self.tape.get(self.i).copied().unwrap_or(Tok::Null)
    }

    #[inline]
    fn at(&self, i: usize) -> TapeRef<'t, 'a> {
        TapeRef { i, ..*self }
    }

    /// The text of a `Str` token.
    #[inline]
    fn text(&self, start: u32, end: u32) -> &'a str {
        let bytes = self
            .input
            .get(start as usize..end as usize)
            .unwrap_or_default();
        // SAFETY: `Tok::Str { start, end }` is only produced by `Scanner::string`, which checked
        // that `input[start..end]` is valid UTF-8 (all ASCII, or `from_utf8` succeeded), and a
        // `TapeRef` only exists (see `scan`) over the very input its tape was scanned from.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// The members of an object, in order.
    pub fn for_each_member(self, mut f: impl FnMut(Cow<'a, str>, TapeRef<'t, 'a>)) {
        let Tok::Obj { n, .. } = self.tok() else {
            return;
        };
        let mut i = self.i + 1;
        for _ in 0..n {
            let Some(Tok::Str { start, end }) = self.tape.get(i).copied() else {
                return;
            };
            f(Cow::Borrowed(self.text(start, end)), self.at(i + 1));
            match next(self.tape, i + 1) {
                Some(j) => i = j,
                None => return,
            }
        }
    }

    /// Strict equality with `v` (see [`Value`]'s `PartialEq`).
    pub fn eq_value(&self, v: &Value<'_>) -> bool {
        match (self.tok(), v) {
            (Tok::Null, Value::Null) => true,
            (Tok::Bool(a), Value::Bool(b)) => a == *b,
            (Tok::Int(a), Value::Int(b)) => a == *b,
            (Tok::UInt(a), Value::UInt(b)) => a == *b,
            (Tok::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Tok::Str { start, end }, Value::Str(s)) => {
                self.input.get(start as usize..end as usize) == Some(s.as_bytes())
            }
            (Tok::Arr { n, .. }, Value::Array(items)) => {
                if n as usize != items.len() {
                    return false;
                }
                let mut i = self.i + 1;
                for item in items {
                    if !self.at(i).eq_value(item) {
                        return false;
                    }
                    match next(self.tape, i) {
                        Some(j) => i = j,
                        None => return false,
                    }
                }
                true
            }
            (Tok::Obj { .. }, Value::Object(_)) => self.to_value() == *v,
            _ => false,
        }
    }

    /// Makes `cur` equal to this value, in place where the shapes match (no allocation for an
    /// array of numbers that changes, say); returns whether anything changed.
    pub fn assign_to(&self, cur: &mut Value<'static>) -> bool {
        match (self.tok(), &mut *cur) {
            (Tok::Float(f), Value::Float(c)) => {
                let changed = c.to_bits() != f.to_bits();
                *c = f;
                changed
            }
            (Tok::UInt(u), Value::UInt(c)) => std::mem::replace(c, u) != u,
            (Tok::Int(i), Value::Int(c)) => std::mem::replace(c, i) != i,
            (Tok::Bool(b), Value::Bool(c)) => std::mem::replace(c, b) != b,
            (Tok::Null, Value::Null) => false,
            (Tok::Str { start, end }, Value::Str(c)) => {
                let text = self.text(start, end);
                if c.as_ref() == text {
                    return false;
                }
                match c {
                    Cow::Owned(s) => {
                        s.clear();
                        s.push_str(text);
                    }
                    Cow::Borrowed(_) => *c = Cow::Owned(text.to_owned()),
                }
                true
            }
            (Tok::Arr { n, .. }, Value::Array(items)) if n as usize == items.len() => {
                let mut changed = false;
                let mut i = self.i + 1;
                for item in items.iter_mut() {
                    changed |= self.at(i).assign_to(item);
                    match next(self.tape, i) {
                        Some(j) => i = j,
                        None => break,
                    }
                }
                changed
            }
            _ => {
                if self.eq_value(cur) {
                    return false;
                }
                *cur = self.to_owned_value();
                true
            }
        }
    }

    /// The value, owning its strings.
    pub fn to_owned_value(&self) -> Value<'static> {
        match self.tok() {
            Tok::Null => Value::Null,
            Tok::Bool(b) => Value::Bool(b),
            Tok::Int(i) => Value::Int(i),
            Tok::UInt(u) => Value::UInt(u),
            Tok::Float(f) => Value::Float(f),
            Tok::Str { start, end } => Value::Str(Cow::Owned(self.text(start, end).to_owned())),
            Tok::Arr { n, .. } => {
                let mut items = Vec::with_capacity(n as usize);
                let mut i = self.i + 1;
                for _ in 0..n {
                    items.push(self.at(i).to_owned_value());
                    match next(self.tape, i) {
                        Some(j) => i = j,
                        None => break,
                    }
                }
                Value::Array(items)
            }
            Tok::Obj { .. } => self.to_value().into_owned(),
        }
    }

    /// The value (strings borrowed from the input).
    pub fn to_value(&self) -> Value<'a> {
        match self.tok() {
            Tok::Null => Value::Null,
            Tok::Bool(b) => Value::Bool(b),
            Tok::Int(i) => Value::Int(i),
            Tok::UInt(u) => Value::UInt(u),
            Tok::Float(f) => Value::Float(f),
            Tok::Str { start, end } => Value::Str(Cow::Borrowed(self.text(start, end))),
            Tok::Arr { n, .. } => {
                let mut items = Vec::with_capacity(n as usize);
                let mut i = self.i + 1;
                for _ in 0..n {
                    items.push(self.at(i).to_value());
                    match next(self.tape, i) {
                        Some(j) => i = j,
                        None => break,
                    }
                }
                Value::Array(items)
            }
            Tok::Obj { n, .. } => {
                let mut map: Map<'a> = Vec::with_capacity(n as usize);
                self.for_each_member(|k, v| map.push((k, v.to_value())));
                Value::Object(map)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;

    fn scanned(s: &str) -> Option<Value<'_>> {
        let mut tape = Vec::new();
        let r = scan(s.as_bytes(), &mut tape)?;
        let v = r.to_value().into_owned();
        assert!(r.eq_value(&v));
        assert_eq!(r.to_owned_value(), v);
        Some(v)
    }

    #[test]
    fn agrees_with_the_parser() {
        for s in [
            "null",
            "true",
            "false",
            "0",
            "-0",
            "12",
            "-12",
            "1.5",
            "-0.0",
            "1e3",
            "1.25e-3",
            "9223372036854775807",
            "-9223372036854775808",
            "9999999999999999999",
            "\"\"",
            "\"abc\"",
            "\"é✓𝄞\"",
            "[]",
            "{}",
            "[1,[2,[3]],{\"a\":null}]",
            r#" { "a" : 1 , "b" : [ true , false ] , "c" : { "d" : "x" } } "#,
            r#"{"bids":[[50000.5,1.25],[49999.0,0.5]],"updated_at":1764000000100}"#,
        ] {
            let want = json::parse(s.as_bytes()).unwrap().into_owned();
            let got = scanned(s).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(got, want, "{s}");
            assert_eq!(json::to_vec(&got), json::to_vec(&want), "{s}");
        }
    }

    #[test]
    fn gives_up_on_what_it_does_not_handle() {
        for s in [
            "",
            " ",
            "nul",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "1 2",
            "01",
            "1.",
            "NaN",
            "\"a\\nb\"",
            "{\"a\\u0041\":1}",
            "\"\x01\"",
            "{\"a\":1,\"a\":2}",
            "1e400",
            "123456789012345678901",
            "-9223372036854775809",
            "0.1e-30",
            "[[",
        ] {
            assert!(scanned(s).is_none(), "{s:?}");
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(scanned(&deep).is_none());
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(scanned(&ok).is_some());
        let mut tape = Vec::new();
        assert!(scan(b"\"\xff\"", &mut tape).is_none());
        assert!(scan(&b"[".repeat(100_000), &mut tape).is_none());
    }

    #[test]
    fn assign_in_place() {
        let cases = [
            ("[[1.5,2],[3,4]]", "[[1.5,2],[3,5]]", true),
            ("[[1.5,2],[3,4]]", "[[1.5,2],[3,4]]", false),
            ("[1,\"a\",true,null]", "[1,\"b\",true,null]", true),
            ("[1,\"a\"]", "[1.0,\"a\"]", true),
            ("[0.0]", "[-0.0]", true),
            ("[1,2]", "[1,2,3]", true),
            ("[{\"a\":1,\"b\":2}]", "[{\"b\":2,\"a\":1}]", false),
            ("[{\"a\":1}]", "[{\"a\":2}]", true),
            ("\"x\"", "\"x\"", false),
            ("7", "7.0", true),
        ];
        for (old, new, changed) in cases {
            let mut cur = json::parse(old.as_bytes()).unwrap().into_owned();
            if let Value::Str(s) = &mut cur {
                *s = Cow::Owned(s.to_string());
            }
            let mut tape = Vec::new();
            let r = scan(new.as_bytes(), &mut tape).unwrap();
            assert_eq!(r.assign_to(&mut cur), changed, "{old} -> {new}");
            assert_eq!(cur, json::parse(new.as_bytes()).unwrap(), "{old} -> {new}");
            if changed {
                assert_eq!(json::to_vec(&cur), new.as_bytes());
            }
        }
    }

    #[test]
    fn strict_equality() {
        let mut tape = Vec::new();
        let input = br#"[1,1.0,true,"x",[1],{"a":1,"b":2}]"#;
        let r = scan(input, &mut tape).unwrap();
        let mut vals = Vec::new();
        let Tok::Arr { n, .. } = r.tok() else {
            panic!()
        };
        let mut i = 1;
        for _ in 0..n {
            vals.push(r.at(i));
            i = next(r.tape, i).unwrap();
        }
        assert!(vals[0].eq_value(&Value::UInt(1)) && !vals[0].eq_value(&Value::Float(1.0)));
        assert!(vals[1].eq_value(&Value::Float(1.0)) && !vals[1].eq_value(&Value::UInt(1)));
        assert!(vals[2].eq_value(&Value::Bool(true)) && !vals[2].eq_value(&Value::UInt(1)));
        assert!(vals[3].eq_value(&Value::str("x")) && !vals[3].eq_value(&Value::str("y")));
        assert!(!vals[4].eq_value(&Value::Array(vec![Value::Float(1.0)])));
        let swapped = json::parse(br#"{"b":2,"a":1}"#).unwrap();
        assert!(vals[5].eq_value(&swapped));
    }
}
