//! The leaf of the crate: limits, the hasher and small byte helpers every other module may use.
//! It uses no other module of the crate.

/// Containers may nest at most this many levels (and a pointer may have at most this many tokens).
pub const MAX_DEPTH: usize = 128;

/// The hasher of every hash table of the crate.
pub type Hasher = foldhash::fast::RandomState;

/// Appends `s`. Short slices are copied with fixed-size (inlined) moves instead of a call to
/// `memcpy`: encoders append many small pieces.
#[inline(always)]
pub fn put(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len();
    if n > 32 {
        out.extend_from_slice(s);
        return;
    }
    let len = out.len();
    out.resize(len + 32, 0);
    let buf = &mut out[len..];
    if n >= 16 {
        buf[..16].copy_from_slice(&s[..16]);
        buf[n - 16..n].copy_from_slice(&s[n - 16..]);
    } else if n >= 8 {
        buf[..8].copy_from_slice(&s[..8]);
        buf[n - 8..n].copy_from_slice(&s[n - 8..]);
    } else if n >= 4 {
        buf[..4].copy_from_slice(&s[..4]);
        buf[n - 4..n].copy_from_slice(&s[n - 4..]);
    } else {
        for (d, &b) in buf.iter_mut().zip(s) {
            *d = b;
        }
    }
    out.truncate(len + n);
}

/// Equality of short byte strings with a few overlapping word loads (no call to `memcmp`).
#[inline]
pub fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    #[inline(always)]
    fn w8(s: &[u8], at: usize) -> u64 {
        match s.get(at..at + 8) {
            Some(x) => u64::from_le_bytes(x.try_into().unwrap_or_default()),
            None => 0,
        }
    }
    #[inline(always)]
    fn w4(s: &[u8], at: usize) -> u32 {
        match s.get(at..at + 4) {
            Some(x) => u32::from_le_bytes(x.try_into().unwrap_or_default()),
            None => 0,
        }
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0..=3 => a == b,
        4..=7 => w4(a, 0) == w4(b, 0) && w4(a, n - 4) == w4(b, n - 4),
        8..=16 => w8(a, 0) == w8(b, 0) && w8(a, n - 8) == w8(b, n - 8),
        17..=24 => w8(a, 0) == w8(b, 0) && w8(a, 8) == w8(b, 8) && w8(a, n - 8) == w8(b, n - 8),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_copies_every_length() {
        for n in 0..70 {
            let s: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            let mut out = b"xy".to_vec();
            put(&mut out, &s);
            assert_eq!(&out[2..], &s[..]);
            assert_eq!(&out[..2], b"xy");
        }
    }

    #[test]
    fn short_byte_equality() {
        for n in 0..40usize {
            let a: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(bytes_eq(&a, &a.clone()));
            for i in 0..n {
                let mut b = a.clone();
                b[i] ^= 1;
                assert!(!bytes_eq(&a, &b), "{n} {i}");
            }
            assert!(!bytes_eq(&a, &a[..n.saturating_sub(1)]) || n == 0);
        }
    }
}
