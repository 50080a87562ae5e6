//! RFC 6901 JSON Pointers: parsing (without allocation unless a token has escapes) and escaping.
//!
//! The one home of pointer escaping (`~` -> `~0`, `/` -> `~1`): [`needs_escape`],
//! [`escape_into`], [`push_token`], [`push_token_bytes`] and [`unescape`].

use std::borrow::Cow;

use crate::base::MAX_DEPTH;

/// A validated pointer. `tokens()` yields the unescaped reference tokens.
#[derive(Debug, Clone, Copy)]
pub struct Pointer<'a> {
    raw: &'a str,
    len: usize,
    /// Whether there is any `~` (else no token needs unescaping).
    tilde: bool,
}

/// Parses and validates `raw`; the error is the message to raise (it starts with
/// `invalid JSON pointer`).
pub fn parse(raw: &str) -> Result<Pointer<'_>, String> {
    if raw.is_empty() {
        return Ok(Pointer {
            raw,
            len: 0,
            tilde: false,
        });
    }
    let bytes = raw.as_bytes();
    if bytes[0] != b'/' {
        return Err(format!(
            "invalid JSON pointer {}: must be empty or start with '/'",
            quoted(raw)
        ));
    }
    // Counting is a vectorisable pass; the escape check only runs if there is a '~'.
    let len = bytes.iter().filter(|&&b| b == b'/').count();
    let tilde = bytes.contains(&b'~');
    let mut i = 0usize;
    while tilde && i < bytes.len() {
        if bytes[i] == b'~' {
            if !matches!(bytes.get(i + 1), Some(b'0' | b'1')) {
                return Err(format!(
                    "invalid JSON pointer {}: '~' at byte {i} must be followed by '0' or '1'",
                    quoted(raw)
                ));
            }
            i += 1;
        }
        i += 1;
    }
    if len > MAX_DEPTH {
        return Err(format!(
            "invalid JSON pointer {}: more than {MAX_DEPTH} tokens (depth)",
            quoted(raw)
        ));
    }
    Ok(Pointer { raw, len, tilde })
}

/// `'raw'` for a message (shortened when long).
fn quoted(raw: &str) -> String {
    match raw.char_indices().nth(60) {
        Some((i, _)) => format!("'{}'...", &raw[..i]),
        None => format!("'{raw}'"),
    }
}

impl<'a> Pointer<'a> {
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// Number of reference tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_root(&self) -> bool {
        self.len == 0
    }

    /// Same as [`Pointer::is_root`]: no token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn tokens(&self) -> Tokens<'a> {
        Tokens {
            rest: self.raw,
            consumed: 0,
            full: self.raw,
            tilde: self.tilde,
        }
    }
}

/// Iterator over the unescaped tokens of a valid pointer.
#[derive(Debug, Clone)]
pub struct Tokens<'a> {
    /// What is left: empty, or starts with '/'.
    rest: &'a str,
    consumed: usize,
    full: &'a str,
    tilde: bool,
}

impl<'a> Tokens<'a> {
    /// No token left.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The pointer up to (and including) the last token returned.
    pub fn prefix(&self) -> &'a str {
        self.full.get(..self.consumed).unwrap_or(self.full)
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Cow<'a, str>;

    fn next(&mut self) -> Option<Cow<'a, str>> {
        let body = self.rest.strip_prefix('/')?;
        // Tokens are short: a plain scan beats `str::find`'s searcher.
        let end = body.bytes().position(|b| b == b'/').unwrap_or(body.len());
        let (tok, rest) = body.split_at(end);
        self.rest = rest;
        self.consumed += 1 + end;
        Some(if self.tilde {
            unescape(tok)
        } else {
            Cow::Borrowed(tok)
        })
    }
}

/// How messages name a place: its pointer, or `(root)` for the empty pointer.
pub fn display(ptr: &str) -> &str {
    if ptr.is_empty() {
        "(root)"
    } else {
        ptr
    }
}

/// `~1` -> `/`, `~0` -> `~` (the token is assumed valid).
pub fn unescape(tok: &str) -> Cow<'_, str> {
    if !tok.contains('~') {
        return Cow::Borrowed(tok);
    }
    let mut out = String::with_capacity(tok.len());
    let mut chars = tok.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('1') => out.push('/'),
                Some('0') => out.push('~'),
                Some(other) => {
                    out.push('~');
                    out.push(other);
                }
                None => out.push('~'),
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether `key` has a `~` or a `/`, so that it must be escaped as a reference token.
#[inline]
pub fn needs_escape(key: &str) -> bool {
    key.bytes().any(|b| b == b'~' || b == b'/')
}

/// Appends `key` escaped as a reference token (`~` -> `~0`, `/` -> `~1`).
pub fn escape_into(out: &mut String, key: &str) {
    if !needs_escape(key) {
        out.push_str(key);
        return;
    }
    for c in key.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}

/// Appends `/` and the escaped `key`.
#[inline]
pub fn push_token(out: &mut String, key: &str) {
    out.push('/');
    escape_into(out, key);
}

/// Appends `/` and the escaped `key` to a pointer being built as bytes; `escaped`: whether
/// `key` needs escaping (as [`needs_escape`] says; callers often know it already).
#[inline]
pub fn push_token_bytes(out: &mut Vec<u8>, key: &str, escaped: bool) {
    out.push(b'/');
    if escaped {
        let mut s = String::new();
        escape_into(&mut s, key);
        out.extend_from_slice(s.as_bytes());
    } else {
        crate::base::put(out, key.as_bytes());
    }
}

/// The pointer made of `keys`.
pub fn from_tokens<S: AsRef<str>>(keys: &[S]) -> String {
    let mut s = String::new();
    for k in keys {
        push_token(&mut s, k.as_ref());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(p: &str) -> Vec<String> {
        parse(p).unwrap().tokens().map(|t| t.into_owned()).collect()
    }

    #[test]
    fn rfc6901_examples() {
        // The document of RFC 6901 section 5 and its pointers.
        assert_eq!(toks(""), Vec::<String>::new());
        assert_eq!(toks("/foo"), vec!["foo"]);
        assert_eq!(toks("/foo/0"), vec!["foo", "0"]);
        assert_eq!(toks("/"), vec![""]);
        assert_eq!(toks("/a~1b"), vec!["a/b"]);
        assert_eq!(toks("/c%d"), vec!["c%d"]);
        assert_eq!(toks("/e^f"), vec!["e^f"]);
        assert_eq!(toks("/g|h"), vec!["g|h"]);
        assert_eq!(toks("/i\\j"), vec!["i\\j"]);
        assert_eq!(toks("/k\"l"), vec!["k\"l"]);
        assert_eq!(toks("/ "), vec![" "]);
        assert_eq!(toks("/m~0n"), vec!["m~n"]);
        // ~01 is "~1", not "/".
        assert_eq!(toks("/~01"), vec!["~1"]);
        assert_eq!(toks("//"), vec!["", ""]);
        assert_eq!(toks("/a/"), vec!["a", ""]);
    }

    #[test]
    fn rejections() {
        for bad in ["a", "a/b", "/~", "/~2", "/a~", "/~a", "#/a"] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("invalid JSON pointer '{bad}'")),
                "{e}"
            );
        }
        let deep: String = "/x".repeat(MAX_DEPTH);
        assert_eq!(parse(&deep).unwrap().len(), MAX_DEPTH);
        let too_deep: String = "/x".repeat(MAX_DEPTH + 1);
        assert!(parse(&too_deep).unwrap_err().contains("depth"));
    }

    #[test]
    fn escape_round_trip() {
        for key in ["", "a", "a/b", "m~n", "~/~/", "~01", "é/ü"] {
            let p = from_tokens(&[key, key]);
            assert_eq!(toks(&p), vec![key, key]);
        }
        assert_eq!(from_tokens(&["a/b", "m~n"]), "/a~1b/m~0n");
    }

    #[test]
    fn prefix() {
        let p = parse("/a/b~1c/d").unwrap();
        let mut t = p.tokens();
        assert_eq!(t.prefix(), "");
        t.next();
        assert_eq!(t.prefix(), "/a");
        t.next();
        assert_eq!(t.prefix(), "/a/b~1c");
        assert!(!t.is_empty());
        t.next();
        assert!(t.is_empty());
        assert_eq!(t.prefix(), "/a/b~1c/d");
    }
}
