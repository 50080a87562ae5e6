//! JSON (RFC 8259): the one parser of the crate, and compact JSON out of values.
//!
//! The parser scans a payload into a flat, reusable [`Tape`] of tokens (no allocation per object,
//! array or string); a [`TapeRef`] reads a value of it in place. The document merges and replaces
//! straight from the tape, so that only what actually changes gets built; [`parse`] builds a
//! [`Value`] from it for the other callers.
//!
//! It is strict: exactly one value, no NaN/Infinity literals, integer literals outside
//! `[-2**63, 2**64 - 1]` rejected (`out of range`) rather than turned into floats, fractions and
//! exponents parsed as finite floats (`non-finite float` otherwise), invalid UTF-8 and lone
//! surrogate escapes rejected (`UTF-8`), containers nested at most [`MAX_DEPTH`] levels. Strings
//! without escapes are borrowed from the input. Duplicate keys: the last one wins, at the place of
//! the first.

use std::borrow::Cow;

use crate::base::{bytes_eq, put, Hasher, MAX_DEPTH};
use crate::value::{dedupe_keys, depth_error, Map, MapIndex, Value, ValueError};

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
    /// A string that had escapes, unescaped into the tape's string buffer at `start..end`.
    EscStr {
        start: u32,
        end: u32,
    },
    /// `n` members (each a string key then a value); the subtree ends before token `end`.
    /// `dups`: a key is repeated (the last value wins, at the place of the first).
    Obj {
        n: u32,
        end: u32,
        dups: bool,
    },
    /// `n` elements; the subtree ends before token `end`.
    Arr {
        n: u32,
        end: u32,
    },
}

/// The scan of a payload: its tokens, and the unescaped text of its strings that had escapes.
/// Reusable: [`scan`] clears it.
#[derive(Debug, Clone, Default)]
pub struct Tape {
    toks: Vec<Tok>,
    strs: String,
}

impl Tape {
    /// Roughly how many bytes it holds on to (to decide whether to keep it for reuse).
    pub fn footprint(&self) -> usize {
        self.toks.capacity() * std::mem::size_of::<Tok>() + self.strs.capacity()
    }
}

/// Parses one JSON value from `input`.
pub fn parse(input: &[u8]) -> Result<Value<'_>, ValueError> {
    let mut tape = Tape::default();
    Ok(scan(input, &mut tape)?.to_value())
}

/// Scans one JSON value from `input` into `tape` (cleared first) and returns it.
///
/// UTF-8 is checked where it matters: inside strings (outside them, any non-ASCII byte is an
/// error anyway).
pub fn scan<'t, 'a>(input: &'a [u8], tape: &'t mut Tape) -> Result<TapeRef<'t, 'a>, ValueError> {
    tape.toks.clear();
    tape.strs.clear();
    if input.len() > (u32::MAX / 2) as usize {
        return Err(ValueError::new("invalid JSON: a payload of 2 GiB or more"));
    }
    let mut p = Parser {
        bytes: input,
        pos: 0,
        tape,
    };
    p.value(0)?;
    p.skip_ws();
    if p.pos < p.bytes.len() {
        return Err(p.unexpected_or("trailing characters after the value"));
    }
    // The only way to get a `TapeRef`: its tape is the scan of its input (see `TapeRef::text`).
    Ok(TapeRef {
        toks: &tape.toks,
        strs: &tape.strs,
        input,
        i: 0,
    })
}

struct Parser<'a, 't> {
    bytes: &'a [u8],
    pos: usize,
    tape: &'t mut Tape,
}

/// `10^i` for the exactly representable powers.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The first this many keys of an object are checked for duplicates pairwise while scanning;
/// larger objects are checked again, all keys, through a hash set.
const PAIRWISE: usize = 32;

/// The flag of [`key_span`] for a string of the tape's buffer (offsets are below 2**31).
const ESCAPED_SPAN: u32 = 1 << 31;

/// Where the text of a string is, in one word (returned in a register): `start | end << 32`,
/// with [`ESCAPED_SPAN`] set in `start` for a string of the tape's buffer.
#[inline]
fn span(start: usize, end: usize, escaped: bool) -> u64 {
    let flag = if escaped { ESCAPED_SPAN } else { 0 };
    u64::from(start as u32 | flag) | u64::from(end as u32) << 32
}

/// `(start with its flag, end)` of a [`span`].
#[inline]
fn split_span(s: u64) -> (u32, u32) {
    (s as u32, (s >> 32) as u32)
}

/// The token of the string at a [`span`].
#[inline]
fn span_tok(s: u64) -> Tok {
    let (start, end) = split_span(s);
    if start & ESCAPED_SPAN == 0 {
        Tok::Str { start, end }
    } else {
        Tok::EscStr {
            start: start & !ESCAPED_SPAN,
            end,
        }
    }
}

impl<'a> Parser<'a, '_> {
    #[cold]
    #[inline(never)]
    fn err(&self, what: &str) -> ValueError {
        ValueError::new(format!("invalid JSON: {what} at byte {}", self.pos))
    }

    /// The ASCII text of `start..end` (numbers; empty if not ASCII, which cannot happen).
    fn text(&self, start: usize, end: usize) -> &'a str {
        self.bytes
            .get(start..end)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// The error for the byte at `self.pos`: invalid UTF-8, or an unexpected character.
    #[cold]
    #[inline(never)]
    fn unexpected(&self) -> ValueError {
        self.unexpected_or("unexpected character")
    }

    #[cold]
    #[inline(never)]
    fn unexpected_or(&self, what: &str) -> ValueError {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        if rest.is_empty() {
            return self.err("unexpected end of input");
        }
        let head = &rest[..rest.len().min(4)];
        let c = match std::str::from_utf8(head) {
            Ok(s) => s.chars().next(),
            Err(e) if e.valid_up_to() > 0 => head
                .get(..e.valid_up_to())
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.chars().next()),
            Err(_) => None,
        };
        match c {
            Some(c) => self.err(&format!("{what} {c:?}")),
            None => self.err("invalid UTF-8"),
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    #[inline]
    fn push(&mut self, t: Tok) {
        self.tape.toks.push(t);
    }

    fn value(&mut self, depth: usize) -> Result<(), ValueError> {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => {
                self.pos += 1;
                let span = self.string()?;
                self.push(span_tok(span));
                Ok(())
            }
            Some(b't') => self.literal("true", Tok::Bool(true)),
            Some(b'f') => self.literal("false", Tok::Bool(false)),
            Some(b'n') => self.literal("null", Tok::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.unexpected()),
        }
    }

    fn literal(&mut self, word: &str, t: Tok) -> Result<(), ValueError> {
        if self
            .bytes
            .get(self.pos..)
            .unwrap_or_default()
            .starts_with(word.as_bytes())
        {
            self.pos += word.len();
            self.push(t);
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    /// The text of a string token (for an error's place).
    #[cold]
    #[inline(never)]
    fn string_text(&self, t: Tok) -> String {
        match t {
            Tok::Str { start, end } => String::from_utf8_lossy(
                self.bytes
                    .get(start as usize..end as usize)
                    .unwrap_or_default(),
            )
            .into_owned(),
            Tok::EscStr { start, end } => self
                .tape
                .strs
                .get(start as usize..end as usize)
                .unwrap_or_default()
                .to_owned(),
            _ => String::new(),
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), ValueError> {
        if depth > MAX_DEPTH {
            return Err(depth_error());
        }
        self.pos += 1; // '{'
        let at = self.tape.toks.len();
        self.push(Tok::Obj {
            n: 0,
            end: 0,
            dups: false,
        });
        let mut n: u32 = 0;
        // The keys so far (up to `PAIRWISE` of them), for the duplicate check.
        let mut keys = [(0u32, 0u32); PAIRWISE];
        let mut dups = false;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                if self.peek() != Some(b'"') {
                    return Err(match self.peek() {
                        None => self.err("unexpected end of input"),
                        Some(_) => self.err("expected a string key"),
                    });
                }
                self.pos += 1;
                let span = self.string()?;
                let key = span_tok(span);
                if let Some(seen) = keys.get(..n as usize) {
                    let span = split_span(span);
                    let k = self.key_bytes(span);
                    dups |= seen.iter().any(|&s| bytes_eq(self.key_bytes(s), k));
                    if let Some(slot) = keys.get_mut(n as usize) {
                        *slot = span;
                    }
                }
                self.push(key);
                self.skip_ws();
                if self.peek() != Some(b':') {
                    return Err(self.err("expected ':'").within(self.string_text(key)));
                }
                self.pos += 1;
                if let Err(e) = self.value(depth) {
                    return Err(e.within(self.string_text(key)));
                }
                n += 1;
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    None => return Err(self.err("unexpected end of input")),
                    Some(_) => return Err(self.err("expected ',' or '}'")),
                }
            }
        }
        let end = self.tape.toks.len() as u32;
        if let Some(t) = self.tape.toks.get_mut(at) {
            *t = Tok::Obj { n, end, dups };
        }
        if !dups && n as usize > PAIRWISE && self.repeats_a_key(at, n as usize) {
            if let Some(t) = self.tape.toks.get_mut(at) {
                *t = Tok::Obj { n, end, dups: true };
            }
        }
        Ok(())
    }

    /// The bytes of the string at `(start, end)` of a [`split_span`].
    #[inline]
    fn key_bytes(&self, (start, end): (u32, u32)) -> &[u8] {
        if start & ESCAPED_SPAN == 0 {
            self.bytes.get(start as usize..end as usize)
        } else {
            let start = start & !ESCAPED_SPAN;
            self.tape.strs.as_bytes().get(start as usize..end as usize)
        }
        .unwrap_or_default()
    }

    /// Whether the object at token `at` (with `n` members, more than `PAIRWISE`) has a key twice.
    #[cold]
    fn repeats_a_key(&self, at: usize, n: usize) -> bool {
        let r = TapeRef {
            toks: &self.tape.toks,
            strs: &self.tape.strs,
            input: self.bytes,
            i: at,
        };
        let mut set: std::collections::HashSet<&[u8], Hasher> =
            std::collections::HashSet::with_capacity_and_hasher(n, Hasher::default());
        let mut dup = false;
        r.members(|k, _| dup |= !set.insert(k.into_str().as_bytes()));
        dup
    }

    fn array(&mut self, depth: usize) -> Result<(), ValueError> {
        if depth > MAX_DEPTH {
            return Err(depth_error());
        }
        self.pos += 1; // '['
        let at = self.tape.toks.len();
        self.push(Tok::Arr { n: 0, end: 0 });
        let mut n: u32 = 0;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                if let Err(e) = self.value(depth) {
                    return Err(e.within(n.to_string()));
                }
                n += 1;
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    None => return Err(self.err("unexpected end of input")),
                    Some(_) => return Err(self.err("expected ',' or ']'")),
                }
            }
        }
        let end = self.tape.toks.len() as u32;
        if let Some(t) = self.tape.toks.get_mut(at) {
            *t = Tok::Arr { n, end };
        }
        Ok(())
    }

    /// A number, pushed as its token (not returned: a token returned through memory stalls the
    /// loads of its fields).
    fn number(&mut self) -> Result<(), ValueError> {
        let start = self.pos;
        let neg = self.peek() == Some(b'-');
        if neg {
            self.pos += 1;
        }
        // The digits as an integer, for the integer result and for the exact float fast path.
        // Up to 19 digits always fit in a u64, so the loop needs no overflow check: `ndig`
        // counts them and longer numbers take a careful path.
        let mut mag: u64 = 0;
        let mut ndig = 0usize;
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while let Some(b @ b'0'..=b'9') = self.peek() {
                    mag = mag.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
                    ndig += 1;
                    self.pos += 1;
                }
            }
            _ => return Err(self.err("invalid number")),
        }
        let int_end = self.pos;
        let mut is_float = false;
        let mut frac_digits: i64 = 0;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            while let Some(b @ b'0'..=b'9') = self.peek() {
                mag = mag.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
                ndig += 1;
                frac_digits += 1;
                self.pos += 1;
            }
            if frac_digits == 0 {
                return Err(self.err("invalid number: expected a digit after '.'"));
            }
            is_float = true;
        }
        let mut exp: i64 = 0;
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            let exp_neg = match self.peek() {
                Some(b'-') => {
                    self.pos += 1;
                    true
                }
                Some(b'+') => {
                    self.pos += 1;
                    false
                }
                _ => false,
            };
            let exp_start = self.pos;
            while let Some(b @ b'0'..=b'9') = self.peek() {
                exp = (exp * 10 + i64::from(b - b'0')).min(1 << 40);
                self.pos += 1;
            }
            if self.pos == exp_start {
                return Err(self.err("invalid number: expected a digit in the exponent"));
            }
            if exp_neg {
                exp = -exp;
            }
            is_float = true;
        }
        if is_float {
            // Exact when the digits fit in 53 bits and the power of ten is exact (Clinger).
            let e = exp - frac_digits;
            if ndig <= 19 && mag <= (1u64 << 53) && (-22..=22).contains(&e) {
                let m = mag as f64;
                let f = if e >= 0 {
                    m * POW10[e as usize]
                } else {
                    m / POW10[(-e) as usize]
                };
                {
                    self.push(Tok::Float(if neg { -f } else { f }));
                    return Ok(());
                }
            }
            let text = self.text(start, self.pos);
            let f: f64 = text
                .parse()
                .map_err(|_| ValueError::new(format!("invalid JSON: invalid number {text}")))?;
            if !f.is_finite() {
                return Err(ValueError::new(format!(
                    "non-finite float: {text} overflows a float"
                )));
            }
            {
                self.push(Tok::Float(f));
                return Ok(());
            }
        }
        if ndig > 19 {
            // 20 digits may still fit (up to 18446744073709551615): redo it carefully.
            mag = 0;
            for &b in self.bytes.get(int_start..int_end).unwrap_or_default() {
                mag = match mag
                    .checked_mul(10)
                    .and_then(|m| m.checked_add(u64::from(b - b'0')))
                {
                    Some(m) => m,
                    None => return Err(self.out_of_range(start)),
                };
            }
        }
        if !neg {
            {
                self.push(Tok::UInt(mag));
                return Ok(());
            }
        }
        if mag == 0 {
            {
                self.push(Tok::UInt(0));
                return Ok(());
            }
        }
        if mag > 1u64 << 63 {
            return Err(self.out_of_range(start));
        }
        // mag in 1..=2**63: -mag fits in i64.
        self.push(Tok::Int((mag as i64).wrapping_neg()));
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn out_of_range(&self, start: usize) -> ValueError {
        let text = self.text(start, self.pos);
        ValueError::new(format!("integer {text} out of range [-2**63, 2**64 - 1]"))
    }

    /// `bytes[start..end]` (part of a string body) as `str`.
    fn utf8(&self, start: usize, end: usize) -> Result<&'a str, ValueError> {
        let b = self.bytes.get(start..end).unwrap_or_default();
        std::str::from_utf8(b).map_err(|e| {
            ValueError::new(format!(
                "invalid JSON: invalid UTF-8 in a string at byte {}",
                start + e.valid_up_to()
            ))
        })
    }

    /// A string body; `self.pos` is just after the opening quote. Returns its [`span`].
    /// Inlined, and a word rather than a token: a token returned through memory stalled the
    /// loads of its fields.
    #[inline(always)]
    fn string(&mut self) -> Result<u64, ValueError> {
        let b = self.bytes;
        let start = self.pos;
        let mut i = start;
        // Whether any byte so far is not ASCII (only then is UTF-8 worth checking).
        let mut high = 0u64;
        // Fast path: 8 bytes at a time while none is a quote, a backslash or a control character.
        while let Some(chunk) = b.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            let w = u64::from_le_bytes(w);
            if word_needs_escape(w) {
                break;
            }
            high |= w;
            i += 8;
        }
        loop {
            match b.get(i) {
                None => {
                    self.pos = i;
                    return Err(self.err("unterminated string"));
                }
                Some(b'"') => {
                    if high & 0x8080_8080_8080_8080 != 0 {
                        self.utf8(start, i)?;
                    }
                    self.pos = i + 1;
                    return Ok(span(start, i, false));
                }
                Some(b'\\') => break,
                Some(&c) if c < 0x20 => {
                    self.pos = i;
                    return Err(self.err("control character in string"));
                }
                Some(&c) => {
                    high |= u64::from(c);
                    i += 1;
                }
            }
        }
        self.pos = i;
        self.escaped_string(start)
    }

    /// The rest of a string that has an escape at `self.pos` (its body started at `start`).
    #[cold]
    fn escaped_string(&mut self, start: usize) -> Result<u64, ValueError> {
        let s0 = self.tape.strs.len();
        let head = self.utf8(start, self.pos)?;
        self.tape.strs.push_str(head);
        loop {
            let run = self.pos;
            loop {
                match self.peek() {
                    None => return Err(self.err("unterminated string")),
                    Some(b'"' | b'\\') => break,
                    Some(b) if b < 0x20 => return Err(self.err("control character in string")),
                    Some(_) => self.pos += 1,
                }
            }
            let seg = self.utf8(run, self.pos)?;
            self.tape.strs.push_str(seg);
            if self.peek() == Some(b'"') {
                self.pos += 1;
                return Ok(span(s0, self.tape.strs.len(), true));
            }
            // Backslash.
            self.pos += 1;
            let Some(e) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            self.pos += 1;
            let out = &mut self.tape.strs;
            match e {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let at = self.pos - 2;
                    let hi = self.hex4()?;
                    let c = if (0xD800..0xDC00).contains(&hi) {
                        if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.surrogate(at));
                        }
                        self.pos += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..0xE000).contains(&lo) {
                            return Err(self.surrogate(at));
                        }
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    } else if (0xDC00..0xE000).contains(&hi) {
                        return Err(self.surrogate(at));
                    } else {
                        hi
                    };
                    match char::from_u32(c) {
                        Some(c) => self.tape.strs.push(c),
                        None => return Err(self.surrogate(at)),
                    }
                }
                _ => {
                    self.pos -= 1;
                    return Err(self.err("invalid escape in string"));
                }
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn surrogate(&self, at: usize) -> ValueError {
        ValueError::new(format!(
            "invalid JSON: lone surrogate escape at byte {at} is not valid UTF-8"
        ))
    }

    fn hex4(&mut self) -> Result<u32, ValueError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                _ => return Err(self.err("invalid \\u escape")),
            };
            v = v * 16 + u32::from(d);
            self.pos += 1;
        }
        Ok(v)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the tape

/// The index of the token after the subtree at `i`.
#[inline]
fn next(toks: &[Tok], i: usize) -> Option<usize> {
    Some(match *toks.get(i)? {
        Tok::Obj { end, .. } | Tok::Arr { end, .. } => end as usize,
        _ => i + 1,
    })
}

/// A value of a scanned payload: token `i` of a tape over `input`. Only [`scan`] makes one, so
/// the tape is always the scan of `input`.
#[derive(Clone, Copy)]
pub struct TapeRef<'t, 'a> {
    toks: &'t [Tok],
    strs: &'t str,
    input: &'a [u8],
    i: usize,
}

/// A string of a tape: borrowed from the input, or from the tape's buffer of unescaped strings.
pub enum TapeStr<'t, 'a> {
    Input(&'a str),
    Unescaped(&'t str),
}

impl<'t, 'a> TapeStr<'t, 'a> {
    #[inline]
    pub fn as_str(&self) -> &str {
        match self {
            TapeStr::Input(s) => s,
            TapeStr::Unescaped(s) => s,
        }
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.as_str().as_bytes()
    }

    /// The text, for as long as both the input and the tape live.
    #[inline]
    pub fn into_str<'s>(self) -> &'s str
    where
        't: 's,
        'a: 's,
    {
        match self {
            TapeStr::Input(s) => s,
            TapeStr::Unescaped(s) => s,
        }
    }

    #[inline]
    pub fn into_cow(self) -> Cow<'a, str> {
        match self {
            TapeStr::Input(s) => Cow::Borrowed(s),
            TapeStr::Unescaped(s) => Cow::Owned(s.to_owned()),
        }
    }
}

impl<'t, 'a> TapeRef<'t, 'a> {
    #[inline]
    pub fn tok(&self) -> Tok {
        self.toks.get(self.i).copied().unwrap_or(Tok::Null)
    }

    #[inline]
    fn at(&self, i: usize) -> TapeRef<'t, 'a> {
        TapeRef { i, ..*self }
    }

    /// The text of a string token (`""` for any other).
    #[inline]
    fn text(&self, t: Tok) -> TapeStr<'t, 'a> {
        match t {
            Tok::Str { start, end } => {
                let bytes = self
                    .input
                    .get(start as usize..end as usize)
                    .unwrap_or_default();
                // SAFETY: `Tok::Str { start, end }` is only produced by `Parser::string`, which
                // checked that `input[start..end]` is valid UTF-8 (all ASCII, or `from_utf8`
                // succeeded), and a `TapeRef` only exists (see `scan`) over the very input its
                // tape was scanned from.
                TapeStr::Input(unsafe { std::str::from_utf8_unchecked(bytes) })
            }
            Tok::EscStr { start, end } => {
                TapeStr::Unescaped(self.strs.get(start as usize..end as usize).unwrap_or(""))
            }
            _ => TapeStr::Input(""),
        }
    }

    /// Whether this is a string equal to `s`.
    #[inline]
    fn str_eq(&self, s: &str) -> bool {
        match self.tok() {
            t @ (Tok::Str { .. } | Tok::EscStr { .. }) => self.text(t).as_str() == s,
            _ => false,
        }
    }

    /// Number of members of an object (keys repeated counted once), elements of an array.
    pub fn len(&self) -> usize {
        match self.tok() {
            Tok::Obj { n, dups: false, .. } | Tok::Arr { n, .. } => n as usize,
            Tok::Obj { dups: true, .. } => {
                let mut n = 0;
                self.for_each_member(|_, _| n += 1);
                n
            }
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every (key, value) of an object as written, repeated keys included.
    #[inline]
    fn members(&self, mut f: impl FnMut(TapeStr<'t, 'a>, TapeRef<'t, 'a>)) {
        let Tok::Obj { n, .. } = self.tok() else {
            return;
        };
        let mut i = self.i + 1;
        for _ in 0..n {
            let Some(&k) = self.toks.get(i) else {
                return;
            };
            f(self.text(k), self.at(i + 1));
            match next(self.toks, i + 1) {
                Some(j) => i = j,
                None => return,
            }
        }
    }

    /// The members of an object, in order, keys unique (a repeated key: the last value, at the
    /// place of the first).
    pub fn for_each_member(self, mut f: impl FnMut(Cow<'a, str>, TapeRef<'t, 'a>)) {
        match self.tok() {
            Tok::Obj { dups: false, .. } => self.members(|k, v| f(k.into_cow(), v)),
            Tok::Obj { dups: true, .. } => {
                let mut all: Vec<(Cow<'a, str>, TapeRef<'t, 'a>)> = Vec::new();
                self.members(|k, v| all.push((k.into_cow(), v)));
                dedupe_keys(&mut all);
                for (k, v) in all {
                    f(k, v);
                }
            }
            _ => {}
        }
    }

    /// The elements of an array, in order.
    #[inline]
    fn for_each_element(&self, mut f: impl FnMut(TapeRef<'t, 'a>) -> bool) {
        let Tok::Arr { n, .. } = self.tok() else {
            return;
        };
        let mut i = self.i + 1;
        for _ in 0..n {
            if !f(self.at(i)) {
                return;
            }
            match next(self.toks, i) {
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
            (Tok::Str { .. } | Tok::EscStr { .. }, Value::Str(s)) => self.str_eq(s),
            (Tok::Arr { n, .. }, Value::Array(items)) => {
                if n as usize != items.len() {
                    return false;
                }
                let mut items = items.iter();
                let mut eq = true;
                self.for_each_element(|x| {
                    eq = items.next().is_some_and(|item| x.eq_value(item));
                    eq
                });
                eq
            }
            (Tok::Obj { .. }, Value::Object(m)) => {
                if self.len() != m.len() {
                    return false;
                }
                let index = MapIndex::new(m);
                let mut eq = true;
                self.for_each_member(|k, x| {
                    eq = eq && index.get(m, &k).is_some_and(|mv| x.eq_value(mv));
                });
                eq
            }
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
            (t @ (Tok::Str { .. } | Tok::EscStr { .. }), Value::Str(c)) => {
                let text = self.text(t);
                let text = text.as_str();
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
                let mut items = items.iter_mut();
                self.for_each_element(|x| match items.next() {
                    Some(item) => {
                        changed |= x.assign_to(item);
                        true
                    }
                    None => false,
                });
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
            t @ (Tok::Str { .. } | Tok::EscStr { .. }) => {
                Value::Str(Cow::Owned(self.text(t).as_str().to_owned()))
            }
            Tok::Arr { n, .. } => {
                let mut items = Vec::with_capacity(n as usize);
                self.for_each_element(|x| {
                    items.push(x.to_owned_value());
                    true
                });
                Value::Array(items)
            }
            Tok::Obj { n, .. } => {
                let mut map: Map<'static> = Vec::with_capacity(n as usize);
                self.for_each_member(|k, v| {
                    map.push((Cow::Owned(k.into_owned()), v.to_owned_value()))
                });
                Value::Object(map)
            }
        }
    }

    /// The value (strings without escapes borrowed from the input).
    pub fn to_value(&self) -> Value<'a> {
        match self.tok() {
            Tok::Null => Value::Null,
            Tok::Bool(b) => Value::Bool(b),
            Tok::Int(i) => Value::Int(i),
            Tok::UInt(u) => Value::UInt(u),
            Tok::Float(f) => Value::Float(f),
            t @ (Tok::Str { .. } | Tok::EscStr { .. }) => Value::Str(self.text(t).into_cow()),
            Tok::Arr { n, .. } => {
                let mut items = Vec::with_capacity(n as usize);
                self.for_each_element(|x| {
                    items.push(x.to_value());
                    true
                });
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

// ---------------------------------------------------------------------------------------------
// Writer

/// Appends `v` as compact JSON.
pub fn write_value(out: &mut Vec<u8>, v: &Value<'_>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => write_i64(out, *i),
        Value::UInt(u) => write_u64(out, *u),
        Value::Float(f) => write_f64(out, *f),
        Value::Str(s) => write_str(out, s),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, x);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            out.push(b'{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(out, x);
            }
            out.push(b'}');
        }
    }
}

/// JSON text of `v`.
pub fn to_vec(v: &Value<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    write_value(&mut out, v);
    out
}

/// Number of decimal digits of `u`.
#[inline]
fn digit_count(u: u64) -> usize {
    match u.checked_ilog10() {
        Some(l) => l as usize + 1,
        None => 1,
    }
}

/// "00" to "99".
static PAIRS: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

/// Writes the decimal digits of `u` at the start of `buf` (at least 20 bytes); returns how many.
#[inline]
fn digits_into(buf: &mut [u8], mut u: u64) -> usize {
    let n = digit_count(u);
    let Some(digits) = buf.get_mut(..n) else {
        return 0;
    };
    // Two digits at a time, from the end.
    let mut chunks = digits.rchunks_exact_mut(2);
    for pair in chunks.by_ref() {
        pair.copy_from_slice(&PAIRS[(u % 100) as usize]);
        u /= 100;
    }
    if let [d] = chunks.into_remainder() {
        *d = b'0' + (u % 10) as u8;
    }
    n
}

#[inline]
pub fn write_i64(out: &mut Vec<u8>, i: i64) {
    if i < 0 {
        out.push(b'-');
    }
    write_u64(out, i.unsigned_abs());
}

#[inline]
pub fn write_u64(out: &mut Vec<u8>, u: u64) {
    // Digits written in place (a stack buffer copied out would stall store forwarding).
    let len = out.len();
    out.resize(len + 24, 0);
    let buf = &mut out[len..len + 24];
    let n = if u < 100_000_000 {
        put_digits8(buf, u)
    } else if u < 10_000_000_000_000_000 {
        // Up to 16 digits (timestamps in milliseconds): two words.
        let n = put_digits8(buf, u / 100_000_000);
        let lo = swar8(u % 100_000_000) + 0x3030_3030_3030_3030;
        buf[n..n + 8].copy_from_slice(&lo.to_le_bytes());
        n + 8
    } else {
        digits_into(buf, u)
    };
    out.truncate(len + n);
}

/// A finite float: the shortest text that reads back as the same float, and always as a float
/// (`1.0`, `-0.0`, `0.1`, `1e+20`; zmij, a faster successor of ryu).
#[inline]
pub fn write_f64(out: &mut Vec<u8>, f: f64) {
    if write_short_decimal(out, f) {
        return;
    }
    if f.is_finite() {
        put(out, zmij::Buffer::new().format_finite(f).as_bytes());
    } else {
        // Unreachable for a valid Value; never write invalid JSON.
        out.extend_from_slice(b"null");
    }
}

/// Fast path for the common case of a float that is a decimal with at most 4 fraction digits
/// below 1e11 (prices, sizes): writes it and returns true, or returns false and writes nothing.
///
/// If `r / 10^4` (a correctly rounded division of exact operands) gives back `|f|`, the decimal
/// `r * 10^-4` reads back as `|f|`; it has at most 15 significant digits, and two decimals that
/// short never read back as the same float, so with its trailing zeros dropped it is exactly
/// the shortest representation that zmij or ryu would print (in plain notation, as they do in
/// this range).
#[inline]
fn write_short_decimal(out: &mut Vec<u8>, f: f64) -> bool {
    let a = f.abs();
    if a.is_nan() || a >= 1e11 {
        return false;
    }
    // r < 1e15: exact as u64 and as f64.
    let r = (a * 1e4 + 0.5) as u64;
    if r as f64 / 1e4 != a {
        return false;
    }
    // sign, integer part (at most 11 digits), '.', 4 fraction digits: written in place, with
    // whole 8-byte stores (and then cut to length).
    let len = out.len();
    out.resize(len + 32, 0);
    let Some(buf) = out.get_mut(len..len + 32) else {
        return false;
    };
    buf[0] = b'-';
    let mut n = usize::from(f.is_sign_negative());
    let ip = r / 10_000;
    if ip < 100_000_000 {
        n += put_digits8(&mut buf[n..n + 8], ip);
    } else {
        n += digits_into(&mut buf[n..], ip);
    }
    // '.' and the 4 fraction digits, without their trailing zeros (but at least one digit).
    let fd = swar8(r % 10_000) >> 32;
    let keep = 4 - ((fd << 32) | (1 << 32)).leading_zeros() as usize / 8;
    let w = ((fd + 0x3030_3030) << 8) | u64::from(b'.');
    buf[n..n + 8].copy_from_slice(&w.to_le_bytes());
    n += 1 + keep;
    out.truncate(len + n);
    true
}

/// The 8 decimal digits of `n < 10^8` (leading zeros included) as the bytes 0..=9 of a
/// little-endian word: the most significant digit in the lowest byte (SWAR, no division loop).
#[inline]
fn swar8(n: u64) -> u64 {
    let v = (n / 10_000) | ((n % 10_000) << 32);
    let h = ((v * 10_486) >> 20) & 0x0000_007F_0000_007F; // / 100 in each 32-bit lane
    let v = h | ((v - h * 100) << 16);
    let h = ((v * 103) >> 10) & 0x000F_000F_000F_000F; // / 10 in each 16-bit lane
    h | ((v - h * 10) << 8)
}

/// Writes the digits of `n < 10^8` (no leading zeros) into `buf[..8]` (all 8 bytes are
/// written); returns how many there are.
#[inline]
fn put_digits8(buf: &mut [u8], n: u64) -> usize {
    let d = swar8(n);
    // Leading zero digits are low zero bytes; the last digit always stays.
    let skip = (d | (1 << 56)).trailing_zeros() as usize / 8;
    let w = (d + 0x3030_3030_3030_3030) >> (8 * skip);
    if let Some(b) = buf.get_mut(..8) {
        b.copy_from_slice(&w.to_le_bytes());
    }
    8 - skip
}

/// Bytes that need escaping inside a JSON string: 0 = none, else the escape letter or b'u'.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Whether any of the 8 bytes of `w` needs escaping in a JSON string (`< 0x20`, `"` or `\`).
#[inline]
pub(crate) fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte < 0x20, or a zero byte in w ^ '"' or in w ^ '\\' (exact as existence tests).
    let lt = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * u64::from(b'"'));
    let b = w ^ (ONES * u64::from(b'\\'));
    ((lt | (q.wrapping_sub(ONES) & !q) | (b.wrapping_sub(ONES) & !b)) & HIGH) != 0
}

/// Whether the string `bytes` has a byte to escape in a JSON string (`"`, `\\`, a control
/// character).
#[inline]
pub fn str_needs_escape(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| ESCAPE[b as usize] != 0)
}

/// Appends `s` as a JSON string (escaping `"`, `\` and control characters; non-ASCII raw).
#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_str_bytes(out, s.as_bytes());
}

/// [`write_str`] of the UTF-8 bytes of a string.
pub fn write_str_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Fast path: skip 8 bytes at a time while nothing needs escaping.
    let mut clean = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        if word_needs_escape(u64::from_le_bytes(w)) {
            break;
        }
        clean += 8;
    }
    let tail = bytes.get(clean..).unwrap_or_default();
    if !str_needs_escape(tail) {
        put(out, bytes);
        out.push(b'"');
        return;
    }
    put(out, bytes.get(..clean).unwrap_or_default());
    let bytes = tail;
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if esc == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', esc]);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Value<'_> {
        parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn bad(s: &[u8]) -> String {
        match parse(s) {
            Ok(v) => panic!("{:?} parsed as {v:?}", String::from_utf8_lossy(s)),
            Err(e) => e.render("/p"),
        }
    }

    #[test]
    fn scalars() {
        assert_eq!(ok("null"), Value::Null);
        assert_eq!(ok(" true "), Value::Bool(true));
        assert_eq!(ok("false"), Value::Bool(false));
        assert_eq!(ok("0"), Value::UInt(0));
        assert_eq!(ok("-0"), Value::UInt(0));
        assert_eq!(ok("-0.0"), Value::Float(-0.0));
        assert_eq!(ok("12"), Value::UInt(12));
        assert_eq!(ok("-12"), Value::Int(-12));
        assert_eq!(ok("1.0"), Value::Float(1.0));
        assert_eq!(ok("1e2"), Value::Float(100.0));
        assert_eq!(ok("1E-2"), Value::Float(0.01));
        assert_eq!(ok("1e-400"), Value::Float(0.0));
        assert_eq!(ok("18446744073709551615"), Value::UInt(u64::MAX));
        assert_eq!(ok("-9223372036854775808"), Value::Int(i64::MIN));
        assert_eq!(
            ok("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\""),
            Value::str("a\"b\\c/d\u{8}\u{c}\n\r\t")
        );
        assert_eq!(ok("\"\\u00e9\\ud83d\\ude00\""), Value::str("é😀"));
        assert_eq!(ok("\"é😀\""), Value::str("é😀"));
    }

    #[test]
    fn floats_are_correctly_rounded() {
        // The fast path (exact digits and power of ten) and the fallback agree with std.
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200_000 {
            let int = next() % 10u64.pow((next() % 12) as u32);
            let frac_len = (next() % 12) as usize;
            let frac: String = (0..frac_len)
                .map(|_| char::from(b'0' + (next() % 10) as u8))
                .collect();
            let exp = (next() % 60) as i64 - 30;
            let mut s = format!("{}{int}", if next() % 2 == 0 { "-" } else { "" });
            if frac_len > 0 {
                s.push('.');
                s.push_str(&frac);
            }
            if next() % 2 == 0 {
                s.push_str(&format!("e{exp}"));
            } else if frac_len == 0 {
                s.push_str(".0");
            }
            let want: f64 = s.parse().unwrap();
            assert_eq!(ok(&s), Value::Float(want), "{s}");
        }
        for s in [
            "0.1",
            "0.3",
            "123456789012345678.5",
            "9007199254740993.0",
            "1e22",
            "1e23",
            "4.9e-324",
            "2.2250738585072014e-308",
            "1.7976931348623157e308",
            "0.000001",
        ] {
            assert_eq!(ok(s), Value::Float(s.parse().unwrap()), "{s}");
        }
    }

    #[test]
    fn borrowing() {
        match ok("\"plain\"") {
            Value::Str(Cow::Borrowed(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn containers_and_duplicates() {
        let v = ok(r#"{"a": [1, 2.5, "x", null], "b": {}, "a": {"c": []}}"#);
        let Value::Object(m) = v else { panic!() };
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].0, "a");
        assert_eq!(m[0].1, ok(r#"{"c": []}"#));
        assert_eq!(m[1].0, "b");
    }

    #[test]
    fn rejections() {
        assert!(bad(b"").contains("invalid JSON"));
        assert!(bad(b"  ").contains("end of input"));
        assert!(bad(b"1 2").contains("trailing"));
        assert!(bad(b"NaN").contains("invalid JSON"));
        assert!(bad(b"Infinity").contains("invalid JSON"));
        assert!(bad(b"-Infinity").contains("invalid JSON"));
        assert!(bad(b"01").contains("trailing"));
        assert!(bad(b"1.").contains("invalid number"));
        assert!(bad(b".5").contains("invalid JSON"));
        assert!(bad(b"+1").contains("invalid JSON"));
        assert!(bad(b"1e").contains("invalid number"));
        assert!(bad(b"[1,]").contains("invalid JSON"));
        assert!(bad(b"{\"a\":1,}").contains("invalid JSON"));
        assert!(bad(b"{\"a\" 1}").contains("':'"));
        assert!(bad(b"{a:1}").contains("string key"));
        assert!(bad(b"\"abc").contains("unterminated"));
        assert!(bad(b"\"a\nb\"").contains("control character"));
        assert!(bad(b"\"\\x\"").contains("invalid escape"));
        assert!(bad(b"\"\\u12\"").contains("\\u"));
        assert!(bad(b"tru").contains("invalid JSON"));
        assert!(bad(b"nul").contains("invalid JSON"));
        assert!(bad(b"18446744073709551616").contains("out of range"));
        assert!(bad(b"-9223372036854775809").contains("out of range"));
        assert!(bad(b"123456789012345678901234567890").contains("out of range"));
        assert!(bad(b"1e400").contains("non-finite float"));
        assert!(bad(b"-1e400").contains("non-finite float"));
        assert!(bad(b"\"\xff\"").contains("UTF-8"));
        assert!(bad(b"\"\\ud800\"").contains("UTF-8"));
        assert!(bad(b"\"\\udc00\"").contains("UTF-8"));
        assert!(bad(b"\"\\ud800\\u0041\"").contains("UTF-8"));
    }

    #[test]
    fn error_pointers() {
        assert_eq!(
            bad(br#"{"a": {"b/c": [1, 1e999]}}"#),
            "/p/a/b~1c/1: non-finite float: 1e999 overflows a float"
        );
        assert!(bad(br#"{"x": [true, 99999999999999999999]}"#).starts_with("/p/x/1: integer"));
    }

    #[test]
    fn depth_limit() {
        let ok_deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(ok(&ok_deep).depth(), MAX_DEPTH);
        let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(bad(too_deep.as_bytes()).contains("depth"));
        let objs = format!(
            "{}1{}",
            "{\"a\":".repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert!(bad(objs.as_bytes()).contains("depth"));
        // Very deep input must not overflow the stack.
        let huge = "[".repeat(1_000_000);
        assert!(bad(huge.as_bytes()).contains("depth"));
    }

    #[test]
    fn short_decimal_floats_match_zmij() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut fast = 0;
        for i in 0..2_000_000u64 {
            let f = match i % 4 {
                0 => (next() % 1_000_000_000_000_000) as f64 / 10f64.powi((next() % 8) as i32),
                1 => f64::from_bits(next()),
                2 => (next() % 100_000) as f64 * 0.0001 * if next() % 2 == 0 { -1.0 } else { 1.0 },
                _ => ((next() % 2_000_000) as f64 * 1.000_1).round() / 100.0,
            };
            if !f.is_finite() {
                continue;
            }
            let mut a = Vec::new();
            if write_short_decimal(&mut a, f) {
                fast += 1;
            }
            let mut b = Vec::new();
            b.extend_from_slice(zmij::Buffer::new().format_finite(f).as_bytes());
            if !a.is_empty() {
                assert_eq!(
                    String::from_utf8(a).unwrap(),
                    String::from_utf8(b).unwrap(),
                    "{f:e}"
                );
            }
        }
        assert!(fast > 500_000, "{fast}");
        for (f, s) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (-2.5, "-2.5"),
            (0.0001, "0.0001"),
            (99999999999.9999, "99999999999.9999"),
            (1e11, "100000000000.0"),
            (0.1 + 0.2, "0.30000000000000004"),
        ] {
            let mut out = Vec::new();
            write_f64(&mut out, f);
            assert_eq!(String::from_utf8(out).unwrap(), s);
        }
    }

    #[test]
    fn string_escapes() {
        for s in [
            "",
            "a",
            "abcdefgh",
            "abcdefghi\"",
            "\u{1}abcdefghijklmnop",
            "abcdefgh\\ijk",
            "é✓𝄞 and some more text",
            "0123456789\n",
            "\u{7f}\u{80}\u{ff}",
            "\"\"\"\"\"\"\"\"",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            let text = String::from_utf8(out).unwrap();
            assert_eq!(parse(text.as_bytes()).unwrap(), Value::str(s), "{text}");
        }
        // Every byte value at every position of a 16-byte string.
        for pos in 0..16 {
            for b in 0u8..0x80 {
                let mut s = vec![b'a'; 16];
                s[pos] = b;
                let s = String::from_utf8(s).unwrap();
                let mut out = Vec::new();
                write_str(&mut out, &s);
                let needs = b < 0x20 || b == b'"' || b == b'\\';
                assert_eq!(out.len() > s.len() + 2, needs, "{b} at {pos}");
                assert_eq!(parse(&out).unwrap(), Value::str(s.as_str()));
            }
        }
    }

    #[test]
    fn small_writers() {
        for u in [
            0u64,
            1,
            9,
            10,
            99,
            100,
            12345,
            999_999_999_999,
            u64::MAX / 10,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_u64(&mut out, u);
            assert_eq!(out, u.to_string().as_bytes());
        }
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for k in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = x >> (k % 64);
            let mut out = b"-".to_vec();
            write_u64(&mut out, u);
            assert_eq!(&out[1..], u.to_string().as_bytes());
        }
        for p in 0..20u32 {
            for u in [10u64.pow(p), 10u64.pow(p) - 1, 10u64.pow(p) + 1] {
                let mut out = Vec::new();
                write_u64(&mut out, u);
                assert_eq!(out, u.to_string().as_bytes());
            }
        }
        for i in [0i64, -1, -10, 7, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_i64(&mut out, i);
            assert_eq!(out, i.to_string().as_bytes());
        }
    }

    fn scanned(s: &str) -> Value<'static> {
        let mut tape = Tape::default();
        let r = scan(s.as_bytes(), &mut tape).unwrap_or_else(|e| panic!("{s}: {e}"));
        let v = r.to_value().into_owned();
        assert!(r.eq_value(&v), "{s}");
        assert_eq!(r.to_owned_value(), v, "{s}");
        v
    }

    #[test]
    fn the_tape_reads_back_what_it_scanned() {
        for s in [
            "null",
            "-0",
            "9999999999999999999",
            "1e-400",
            "0.1e-30",
            "123456789012345678.5",
            "\"a\\nb\"",
            "\"\\u00e9\\ud83d\\ude00 é\"",
            "[]",
            "{}",
            "[1,[2,[3]],{\"a\":null}]",
            r#" { "a" : 1 , "b" : [ true , false ] , "c" : { "d" : "x" } } "#,
            r#"{"bids":[[50000.5,1.25],[49999.0,0.5]],"updated_at":1764000000100}"#,
            r#"{"k\"ey":{"x\\y":"\u0000"},"plain":"v"}"#,
        ] {
            let v = scanned(s);
            assert_eq!(to_vec(&v), to_vec(&parse(s.as_bytes()).unwrap()));
        }
    }

    #[test]
    fn repeated_keys_through_the_tape() {
        let mut tape = Tape::default();
        // The last value, at the place of the first; also across an escaped spelling.
        let r = scan(br#"{"a":1,"b":2,"\u0061":3,"c":{"d":1,"d":[]}}"#, &mut tape).unwrap();
        assert_eq!(r.len(), 3);
        let mut seen = Vec::new();
        r.for_each_member(|k, v| seen.push((k.into_owned(), v.to_owned_value())));
        assert_eq!(seen[0], ("a".to_owned(), Value::UInt(3)));
        assert_eq!(seen[1].0, "b");
        assert_eq!(
            seen[2].1,
            Value::Object(vec![("d".into(), Value::Array(vec![]))])
        );
        // Large objects: the hash-set check, a repeat after the pairwise window.
        let big: String = (0..40).map(|i| format!("\"k{i}\":{i},")).collect();
        let v = scanned(&format!("{{{big}\"k0\":\"last\"}}"));
        let Value::Object(m) = v else { panic!() };
        assert_eq!(m.len(), 40);
        assert_eq!(m[0], ("k0".into(), Value::str("last")));
        let v = scanned(&format!("{{{big}\"k40\":40}}"));
        assert!(matches!(v, Value::Object(m) if m.len() == 41));
    }

    #[test]
    fn exact_error_messages() {
        // The messages (and places) `merge_bytes` / `replace_bytes` report, as they always have.
        for (input, want) in [
            (
                &b"{\"a\":1,}"[..],
                "invalid JSON: expected a string key at byte 7",
            ),
            (b"[1 2]", "invalid JSON: expected ',' or ']' at byte 3"),
            (b"{\"a\" 1}", "/a: invalid JSON: expected ':' at byte 5"),
            (
                b"{\"a\":[1,x]}",
                "/a/1: invalid JSON: unexpected character 'x' at byte 8",
            ),
            (
                b"\"\\ud800\"",
                "invalid JSON: lone surrogate escape at byte 1 is not valid UTF-8",
            ),
            (
                b"{\"a\":\"\xff\"}",
                "/a: invalid JSON: invalid UTF-8 in a string at byte 6",
            ),
            (
                b"[\"a\\q\"]",
                "/0: invalid JSON: invalid escape in string at byte 4",
            ),
            (b"\xff", "invalid JSON: invalid UTF-8 at byte 0"),
            (
                b"1 2",
                "invalid JSON: trailing characters after the value '2' at byte 2",
            ),
            (
                b"{\"k\":18446744073709551616}",
                "/k: integer 18446744073709551616 out of range [-2**63, 2**64 - 1]",
            ),
            (
                b"[-1e999]",
                "/0: non-finite float: -1e999 overflows a float",
            ),
            (
                b"{\"a\\/b\":\"x",
                "/a~1b: invalid JSON: unterminated string at byte 10",
            ),
        ] {
            let mut tape = Tape::default();
            let got = scan(input, &mut tape).map(|_| ()).unwrap_err().render("/p");
            let want = match want.strip_prefix('/') {
                Some(inner) => format!("/p/{inner}"),
                None => format!("/p: {want}"),
            };
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
        }
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
            ("\"x\"", "\"\\u0078\"", false),
            ("7", "7.0", true),
        ];
        for (old, new, changed) in cases {
            let mut cur = parse(old.as_bytes()).unwrap().into_owned();
            if let Value::Str(s) = &mut cur {
                *s = Cow::Owned(s.to_string());
            }
            let mut by_value = cur.clone();
            let mut tape = Tape::default();
            let r = scan(new.as_bytes(), &mut tape).unwrap();
            assert_eq!(r.assign_to(&mut cur), changed, "{old} -> {new}");
            assert_eq!(cur, parse(new.as_bytes()).unwrap(), "{old} -> {new}");
            let new_value = parse(new.as_bytes()).unwrap();
            assert_eq!(by_value.assign(&new_value), changed, "{old} -> {new}");
            assert_eq!(by_value, new_value);
        }
    }

    #[test]
    fn strict_equality() {
        let mut tape = Tape::default();
        let input = br#"[1,1.0,true,"x",[1],{"a":1,"b":2}]"#;
        let r = scan(input, &mut tape).unwrap();
        let mut vals = Vec::new();
        r.for_each_element(|x| {
            vals.push(x);
            true
        });
        assert!(vals[0].eq_value(&Value::UInt(1)) && !vals[0].eq_value(&Value::Float(1.0)));
        assert!(vals[1].eq_value(&Value::Float(1.0)) && !vals[1].eq_value(&Value::UInt(1)));
        assert!(vals[2].eq_value(&Value::Bool(true)) && !vals[2].eq_value(&Value::UInt(1)));
        assert!(vals[3].eq_value(&Value::str("x")) && !vals[3].eq_value(&Value::str("y")));
        assert!(!vals[4].eq_value(&Value::Array(vec![Value::Float(1.0)])));
        let swapped = parse(br#"{"b":2,"a":1}"#).unwrap();
        assert!(vals[5].eq_value(&swapped));
        assert!(!vals[5].eq_value(&parse(br#"{"b":2,"c":1}"#).unwrap()));
        assert!(!vals[5].eq_value(&parse(br#"{"b":2}"#).unwrap()));
    }

    #[test]
    fn writer() {
        let v = ok(r#"{"a":[1,-2,1.0,-0.0,1e20,0.1,"x\"y\\z\n\u0001é"],"b":null,"c":true}"#);
        let s = String::from_utf8(to_vec(&v)).unwrap();
        assert_eq!(
            s,
            r#"{"a":[1,-2,1.0,-0.0,1e+20,0.1,"x\"y\\z\n\u0001é"],"b":null,"c":true}"#
        );
        // Round trip.
        assert_eq!(ok(&s), v);
        assert_eq!(to_vec(&Value::UInt(u64::MAX)), b"18446744073709551615");
        assert_eq!(to_vec(&Value::Int(i64::MIN)), b"-9223372036854775808");
        assert_eq!(to_vec(&Value::Float(1.5e-7)), b"1.5e-7");
    }
}
