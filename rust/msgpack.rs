//! MessagePack straight into [`Value`], and MessagePack out of it.
//!
//! The decoder accepts nil, bool, ints, float32 (widened) / float64 (finite), str and array / map
//! with str keys; it rejects bin, ext (timestamps included), the never-used byte 0xc1, non-string
//! keys, invalid UTF-8, truncated input and trailing bytes. Declared lengths never drive an
//! allocation beyond what the remaining input could hold. Strings are borrowed from the input.
//!
//! The encoder uses the smallest int encoding, float64 for every float and the str family.

use std::borrow::Cow;

use crate::base::MAX_DEPTH;
use crate::value::{dedupe_keys, depth_error, Map, Value, ValueError};

/// Decodes one MessagePack value from `input` (and nothing after it).
pub fn parse(input: &[u8]) -> Result<Value<'_>, ValueError> {
    let mut d = Decoder { buf: input, pos: 0 };
    let v = d.value(0)?;
    if d.pos != input.len() {
        return Err(invalid(format!(
            "{} trailing bytes after the value",
            input.len() - d.pos
        )));
    }
    Ok(v)
}

fn invalid(msg: impl std::fmt::Display) -> ValueError {
    ValueError::new(format!("invalid MessagePack: {msg}"))
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn truncated(&self) -> ValueError {
        invalid(format!("truncated input at byte {}", self.pos))
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], ValueError> {
        if n > self.remaining() {
            return Err(self.truncated());
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, ValueError> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.truncated()),
        }
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], ValueError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn len8(&mut self) -> Result<usize, ValueError> {
        Ok(usize::from(self.byte()?))
    }

    fn len16(&mut self) -> Result<usize, ValueError> {
        Ok(usize::from(u16::from_be_bytes(self.be()?)))
    }

    fn len32(&mut self) -> Result<usize, ValueError> {
        Ok(u32::from_be_bytes(self.be()?) as usize)
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, ValueError> {
        let at = self.pos;
        let m = self.byte()?;
        Ok(match m {
            0x00..=0x7f => Value::UInt(u64::from(m)),
            0x80..=0x8f => return self.map(usize::from(m & 0x0f), depth + 1),
            0x90..=0x9f => return self.array(usize::from(m & 0x0f), depth + 1),
            0xa0..=0xbf => Value::Str(self.str(usize::from(m & 0x1f))?),
            0xc0 => Value::Null,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                return Err(invalid(format!(
                    "bin (byte 0x{m:02x} at byte {at}) is not supported"
                )))
            }
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                return Err(invalid(format!(
                    "ext (byte 0x{m:02x} at byte {at}) is not supported"
                )))
            }
            0xca => {
                let f = f64::from(f32::from_be_bytes(self.be()?));
                Value::float(f).ok_or_else(|| ValueError::new("non-finite float"))?
            }
            0xcb => {
                let f = f64::from_be_bytes(self.be()?);
                Value::float(f).ok_or_else(|| ValueError::new("non-finite float"))?
            }
            0xcc => Value::UInt(u64::from(self.byte()?)),
            0xcd => Value::UInt(u64::from(u16::from_be_bytes(self.be()?))),
            0xce => Value::UInt(u64::from(u32::from_be_bytes(self.be()?))),
            0xcf => Value::UInt(u64::from_be_bytes(self.be()?)),
            0xd0 => Value::int(i64::from(i8::from_be_bytes(self.be()?))),
            0xd1 => Value::int(i64::from(i16::from_be_bytes(self.be()?))),
            0xd2 => Value::int(i64::from(i32::from_be_bytes(self.be()?))),
            0xd3 => Value::int(i64::from_be_bytes(self.be()?)),
            0xd9 => {
                let n = self.len8()?;
                Value::Str(self.str(n)?)
            }
            0xda => {
                let n = self.len16()?;
                Value::Str(self.str(n)?)
            }
            0xdb => {
                let n = self.len32()?;
                Value::Str(self.str(n)?)
            }
            0xdc => {
                let n = self.len16()?;
                return self.array(n, depth + 1);
            }
            0xdd => {
                let n = self.len32()?;
                return self.array(n, depth + 1);
            }
            0xde => {
                let n = self.len16()?;
                return self.map(n, depth + 1);
            }
            0xdf => {
                let n = self.len32()?;
                return self.map(n, depth + 1);
            }
            0xe0..=0xff => Value::Int(i64::from(m as i8)),
            0xc1 => return Err(invalid(format!("byte 0xc1 at byte {at} is never used"))),
        })
    }

    fn str(&mut self, n: usize) -> Result<Cow<'a, str>, ValueError> {
        let at = self.pos;
        let b = self.take(n)?;
        std::str::from_utf8(b).map(Cow::Borrowed).map_err(|e| {
            invalid(format!(
                "string at byte {} is not valid UTF-8",
                at + e.valid_up_to()
            ))
        })
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Value<'a>, ValueError> {
        if depth > MAX_DEPTH {
            return Err(depth_error());
        }
        // Every element takes at least one byte.
        if n > self.remaining() {
            return Err(self.truncated());
        }
        let mut items = Vec::with_capacity(n);
        for i in 0..n {
            match self.value(depth) {
                Ok(v) => items.push(v),
                Err(e) => return Err(e.within(i.to_string())),
            }
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value<'a>, ValueError> {
        if depth > MAX_DEPTH {
            return Err(depth_error());
        }
        // Every member takes at least two bytes.
        if n > self.remaining() / 2 {
            return Err(self.truncated());
        }
        let mut map: Map<'a> = Vec::with_capacity(n);
        for _ in 0..n {
            let at = self.pos;
            let m = self.byte()?;
            let key = match m {
                0xa0..=0xbf => self.str(usize::from(m & 0x1f))?,
                0xd9 => {
                    let n = self.len8()?;
                    self.str(n)?
                }
                0xda => {
                    let n = self.len16()?;
                    self.str(n)?
                }
                0xdb => {
                    let n = self.len32()?;
                    self.str(n)?
                }
                _ => {
                    return Err(ValueError::new(format!(
                        "invalid MessagePack: non-string key (byte 0x{m:02x} at byte {at})"
                    )))
                }
            };
            match self.value(depth) {
                Ok(v) => map.push((key, v)),
                Err(e) => return Err(e.within(key.into_owned())),
            }
        }
        dedupe_keys(&mut map);
        Ok(Value::Object(map))
    }
}

// ---------------------------------------------------------------------------------------------
// Transcoder

/// Appends the JSON text of the MessagePack value `src` (as written by this module's encoder:
/// for bytes from elsewhere, an unsupported or truncated item is written as `null`, and a
/// truncated container ends where the input does).
pub fn transcode_json(src: &[u8], out: &mut Vec<u8>) {
    let mut pos = 0;
    transcode_item(src, &mut pos, out, 0);
}

fn transcode_item(src: &[u8], pos: &mut usize, out: &mut Vec<u8>, depth: usize) {
    fn take<'s>(src: &'s [u8], pos: &mut usize, n: usize) -> Option<&'s [u8]> {
        let s = src.get(*pos..pos.checked_add(n)?)?;
        *pos += n;
        Some(s)
    }
    fn be<const N: usize>(src: &[u8], pos: &mut usize) -> Option<[u8; N]> {
        take(src, pos, N)?.try_into().ok()
    }
    fn len(src: &[u8], pos: &mut usize, m: u8) -> Option<usize> {
        Some(match m {
            0xd9 | 0xc4 => usize::from(take(src, pos, 1)?[0]),
            0xda | 0xdc | 0xde => usize::from(u16::from_be_bytes(be(src, pos)?)),
            _ => u32::from_be_bytes(be(src, pos)?) as usize,
        })
    }
    fn str_at<'s>(src: &'s [u8], pos: &mut usize, n: usize) -> Option<&'s str> {
        std::str::from_utf8(take(src, pos, n)?).ok()
    }
    let ok = (|| -> Option<()> {
        let m = *src.get(*pos)?;
        *pos += 1;
        match m {
            0x00..=0x7f => crate::json::write_u64(out, u64::from(m)),
            0xe0..=0xff => crate::json::write_i64(out, i64::from(m as i8)),
            0xc0 => out.extend_from_slice(b"null"),
            0xc2 => out.extend_from_slice(b"false"),
            0xc3 => out.extend_from_slice(b"true"),
            0xcb => crate::json::write_f64(out, f64::from_be_bytes(be(src, pos)?)),
            0xca => crate::json::write_f64(out, f64::from(f32::from_be_bytes(be(src, pos)?))),
            0xcc => crate::json::write_u64(out, u64::from(take(src, pos, 1)?[0])),
            0xcd => crate::json::write_u64(out, u64::from(u16::from_be_bytes(be(src, pos)?))),
            0xce => crate::json::write_u64(out, u64::from(u32::from_be_bytes(be(src, pos)?))),
            0xcf => crate::json::write_u64(out, u64::from_be_bytes(be(src, pos)?)),
            0xd0 => crate::json::write_i64(out, i64::from(i8::from_be_bytes(be(src, pos)?))),
            0xd1 => crate::json::write_i64(out, i64::from(i16::from_be_bytes(be(src, pos)?))),
            0xd2 => crate::json::write_i64(out, i64::from(i32::from_be_bytes(be(src, pos)?))),
            0xd3 => crate::json::write_i64(out, i64::from_be_bytes(be(src, pos)?)),
            0xa0..=0xbf => crate::json::write_str(out, str_at(src, pos, usize::from(m & 0x1f))?),
            0xd9..=0xdb => {
                let n = len(src, pos, m)?;
                crate::json::write_str(out, str_at(src, pos, n)?)
            }
            0x90..=0x9f | 0xdc | 0xdd | 0x80..=0x8f | 0xde | 0xdf => {
                if depth > 2 * MAX_DEPTH + 2 {
                    return None;
                }
                let (is_map, n) = match m {
                    0x90..=0x9f => (false, usize::from(m & 0x0f)),
                    0x80..=0x8f => (true, usize::from(m & 0x0f)),
                    0xdc | 0xdd => (false, len(src, pos, m)?),
                    _ => (true, len(src, pos, m)?),
                };
                out.push(if is_map { b'{' } else { b'[' });
                for i in 0..n {
                    // Foreign bytes: a truncated container (or one with a bad key) ends where
                    // its input does, so the work stays bounded by the input and the text valid.
                    if *pos >= src.len() {
                        break;
                    }
                    let key = if is_map {
                        let key = (|| {
                            let km = *src.get(*pos)?;
                            *pos += 1;
                            let kn = match km {
                                0xa0..=0xbf => usize::from(km & 0x1f),
                                0xd9..=0xdb => len(src, pos, km)?,
                                _ => return None,
                            };
                            str_at(src, pos, kn)
                        })();
                        let Some(key) = key else {
                            *pos = src.len();
                            break;
                        };
                        Some(key)
                    } else {
                        None
                    };
                    if i > 0 {
                        out.push(b',');
                    }
                    if let Some(key) = key {
                        crate::json::write_str(out, key);
                        out.push(b':');
                    }
                    transcode_item(src, pos, out, depth + 1);
                }
                out.push(if is_map { b'}' } else { b']' });
            }
            _ => return None,
        }
        Some(())
    })();
    if ok.is_none() {
        out.extend_from_slice(b"null");
        *pos = src.len();
    }
}

// ---------------------------------------------------------------------------------------------
// Encoder

/// Appends `v` as MessagePack.
pub fn write_value(out: &mut Vec<u8>, v: &Value<'_>) {
    match v {
        Value::Null => out.push(0xc0),
        Value::Bool(false) => out.push(0xc2),
        Value::Bool(true) => out.push(0xc3),
        Value::Int(i) => write_i64(out, *i),
        Value::UInt(u) => write_u64(out, *u),
        Value::Float(f) => write_f64(out, *f),
        Value::Str(s) => write_str(out, s),
        Value::Array(a) => {
            write_array_len(out, a.len());
            for x in a {
                write_value(out, x);
            }
        }
        Value::Object(m) => {
            write_map_len(out, m.len());
            for (k, x) in m {
                write_str(out, k);
                write_value(out, x);
            }
        }
    }
}

/// MessagePack bytes of `v`.
pub fn to_vec(v: &Value<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    write_value(&mut out, v);
    out
}

#[inline]
pub fn write_u64(out: &mut Vec<u8>, u: u64) {
    if u < 0x80 {
        out.push(u as u8);
    } else if u <= 0xff {
        out.extend_from_slice(&[0xcc, u as u8]);
    } else if u <= 0xffff {
        out.push(0xcd);
        out.extend_from_slice(&(u as u16).to_be_bytes());
    } else if u <= 0xffff_ffff {
        out.push(0xce);
        out.extend_from_slice(&(u as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&u.to_be_bytes());
    }
}

/// Any i64 (non-negative ones go through the uint family, as msgpack-python does).
#[inline]
pub fn write_i64(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        write_u64(out, i as u64);
    } else if i >= -32 {
        out.push(i as i8 as u8);
    } else if i >= i64::from(i8::MIN) {
        out.extend_from_slice(&[0xd0, i as i8 as u8]);
    } else if i >= i64::from(i16::MIN) {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= i64::from(i32::MIN) {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

#[inline]
pub fn write_f64(out: &mut Vec<u8>, f: f64) {
    out.push(0xcb);
    out.extend_from_slice(&f.to_be_bytes());
}

#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_str_bytes(out, s.as_bytes());
}

/// [`write_str`] of the UTF-8 bytes of a string.
#[inline]
pub fn write_str_bytes(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    crate::base::put(out, s);
}

#[inline]
pub fn write_array_len(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= 0xffff {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

#[inline]
pub fn write_map_len(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x80 | n as u8);
    } else if n <= 0xffff {
        out.push(0xde);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;

    #[test]
    fn transcoding_foreign_bytes_stays_bounded_and_valid() {
        for (src, want) in [
            (&[0xdd, 0xff, 0xff, 0xff, 0xff][..], "[]"),
            (
                &[0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, b'a', 0x01][..],
                "{\"a\":1}",
            ),
            (&[0x92, 0x01][..], "[1]"),
            (&[0x82, 0xa1, b'a', 0x01, 0x05, 0x02][..], "{\"a\":1}"),
            (&[0x91, 0xc1][..], "[null]"),
            (&[0xc1][..], "null"),
        ] {
            let mut out = Vec::new();
            transcode_json(src, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{src:02x?}");
        }
    }

    fn rt(v: &Value<'_>) -> Value<'static> {
        parse(&to_vec(v)).unwrap().into_owned()
    }

    fn bad(b: &[u8]) -> String {
        match parse(b) {
            Ok(v) => panic!("{b:?} decoded as {v:?}"),
            Err(e) => e.render("/p"),
        }
    }

    #[test]
    fn smallest_ints() {
        let cases: &[(i128, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0xcc, 0x80]),
            (255, &[0xcc, 0xff]),
            (256, &[0xcd, 0x01, 0x00]),
            (65535, &[0xcd, 0xff, 0xff]),
            (65536, &[0xce, 0, 1, 0, 0]),
            (4294967296, &[0xcf, 0, 0, 0, 1, 0, 0, 0, 0]),
            (-1, &[0xff]),
            (-32, &[0xe0]),
            (-33, &[0xd0, 0xdf]),
            (-128, &[0xd0, 0x80]),
            (-129, &[0xd1, 0xff, 0x7f]),
            (-32769, &[0xd2, 0xff, 0xff, 0x7f, 0xff]),
            (
                -2147483649,
                &[0xd3, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
            ),
        ];
        for &(n, bytes) in cases {
            let v = if n < 0 {
                Value::Int(n as i64)
            } else {
                Value::UInt(n as u64)
            };
            assert_eq!(to_vec(&v), bytes, "{n}");
            assert_eq!(parse(bytes).unwrap(), v, "{n}");
        }
        assert_eq!(rt(&Value::UInt(u64::MAX)), Value::UInt(u64::MAX));
        assert_eq!(rt(&Value::Int(i64::MIN)), Value::Int(i64::MIN));
        // Non-negative values in the int family normalise to UInt.
        assert_eq!(parse(&[0xd0, 0x05]).unwrap(), Value::UInt(5));
        assert_eq!(
            parse(&[0xd3, 0, 0, 0, 0, 0, 0, 0, 7]).unwrap(),
            Value::UInt(7)
        );
    }

    #[test]
    fn round_trips() {
        let v = json::parse(
            br#"{"a":[1,-2,1.0,-0.0,1e300,"x",null,true,false,{}],"b":{"c":{"d":[]}},"long":"0123456789012345678901234567890123456789"}"#,
        )
        .unwrap();
        assert_eq!(rt(&v), v);
        assert_eq!(to_vec(&Value::Float(1.0))[0], 0xcb);
        let s300 = "x".repeat(300);
        let s70k = "y".repeat(70_000);
        for s in [s300.as_str(), s70k.as_str(), "", "é"] {
            assert_eq!(rt(&Value::str(s)), Value::str(s));
        }
        let arr: Vec<Value> = (0..70_000u64).map(Value::UInt).collect();
        assert_eq!(rt(&Value::Array(arr.clone())), Value::Array(arr));
        let map: Map = (0..20)
            .map(|i| (Cow::Owned(format!("k{i}")), Value::UInt(i)))
            .collect();
        assert_eq!(rt(&Value::Object(map.clone())), Value::Object(map));
    }

    #[test]
    fn transcoding_to_json_matches_the_json_writer() {
        let v = json::parse(
            br#"{"a":[1,-2,-33,-200,-40000,-3000000000,200,70000,5000000000,18446744073709551615,1.0,-0.0,1e300,"x\"\n",null,true,false,{}],"b":{"c":{"d":[]}},"long":"0123456789012345678901234567890123456789"}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        transcode_json(&to_vec(&v), &mut out);
        assert_eq!(out, json::to_vec(&v));
        let big: Map = (0..40)
            .map(|i| (Cow::Owned(format!("k{i}")), Value::str("é".repeat(i))))
            .collect();
        let big = Value::Object(big);
        let mut out = Vec::new();
        transcode_json(&to_vec(&big), &mut out);
        assert_eq!(out, json::to_vec(&big));
        // Garbage never panics.
        for bytes in [
            &[0xc4u8, 1, 2][..],
            &[0x92, 0x01],
            &[0x81, 0x01, 0x01],
            &[0xdb, 0xff],
        ] {
            let mut out = Vec::new();
            transcode_json(bytes, &mut out);
        }
    }

    #[test]
    fn float32_widened() {
        assert_eq!(parse(&[0xca, 0x3f, 0xc0, 0, 0]).unwrap(), Value::Float(1.5));
        assert!(bad(&[0xca, 0x7f, 0xc0, 0, 0]).contains("non-finite float"));
        assert!(bad(&[0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0]).contains("non-finite float"));
    }

    #[test]
    fn rejections() {
        assert!(bad(&[]).contains("truncated"));
        assert!(bad(&[0xc4, 0x01, 0x00]).contains("bin"));
        assert!(bad(&[0xc5, 0x00, 0x01, 0x00]).contains("bin"));
        assert!(bad(&[0xd4, 0x01, 0x00]).contains("ext"));
        // Timestamp 32: fixext4 type -1.
        assert!(bad(&[0xd6, 0xff, 0, 0, 0, 0]).contains("ext"));
        assert!(bad(&[0xc7, 0x00, 0x01]).contains("ext"));
        assert!(bad(&[0xc1]).contains("invalid MessagePack"));
        assert!(bad(&[0x81, 0x01, 0x02]).contains("non-string key"));
        assert!(bad(&[0x81, 0xc0, 0x02]).contains("non-string key"));
        assert!(bad(&[0xa2, 0xff, 0xfe]).contains("UTF-8"));
        assert!(bad(&[0xa3, b'a']).contains("truncated"));
        assert!(bad(&[0x92, 0x01]).contains("truncated"));
        assert!(bad(&[0x01, 0x02]).contains("trailing"));
        assert!(bad(&[0xcd, 0x01]).contains("truncated"));
        // Huge declared lengths must not allocate.
        assert!(bad(&[0xdd, 0xff, 0xff, 0xff, 0xff]).contains("truncated"));
        assert!(bad(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0xa0]).contains("truncated"));
        assert!(bad(&[0xdb, 0xff, 0xff, 0xff, 0xff]).contains("truncated"));
        // Error pointers.
        assert_eq!(
            bad(&[0x81, 0xa1, b'a', 0x92, 0x01, 0xc4, 0x00]),
            "/p/a/1: invalid MessagePack: bin (byte 0xc4 at byte 5) is not supported"
        );
    }

    #[test]
    fn depth_limit() {
        let mut ok = vec![0x91u8; MAX_DEPTH - 1];
        ok.push(0x90);
        assert_eq!(parse(&ok).unwrap().depth(), MAX_DEPTH);
        let mut deep = vec![0x91u8; MAX_DEPTH];
        deep.push(0x90);
        assert!(bad(&deep).contains("depth"));
        let huge = vec![0x91u8; 1_000_000];
        assert!(bad(&huge).contains("depth"));
        let maps: Vec<u8> = std::iter::repeat_n([0x81u8, 0xa1, b'k'], MAX_DEPTH + 1)
            .flatten()
            .chain([0xc0])
            .collect();
        assert!(bad(&maps).contains("depth"));
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let b = [0x82, 0xa1, b'a', 0x01, 0xa1, b'a', 0x02];
        let Value::Object(m) = parse(&b).unwrap() else {
            panic!()
        };
        assert_eq!(m, vec![(Cow::Borrowed("a"), Value::UInt(2))]);
    }
}
