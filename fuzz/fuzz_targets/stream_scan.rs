//! The subscriber scanners (Redis pub/sub and NATS; the first byte's low bit picks one, the
//! rest of it where to split) on arbitrary bytes: never panic, buffer at most their limit, and
//! give the same messages, replies and batch (or an error either way) whole, split in two
//! anywhere, or fed byte by byte.
#![no_main]

use _fastdiff::stream::{Batch, Framing, Stream};
use _fastdiff::{nats, resp};
use libfuzzer_sys::fuzz_target;

const MAX_PAYLOAD: usize = 64;

type Scanned = (Result<usize, String>, Vec<Vec<u8>>, Batch);

fn scan<F: Framing>(mut s: Stream<F>, pieces: &[&[u8]], slack: usize) -> Scanned {
    let mut replies = Vec::new();
    let mut total = 0;
    for piece in pieces {
        match s.feed(piece, &mut replies) {
            Ok(n) => total += n,
            Err(e) => return (Err(e.to_string()), replies, s.take()),
        }
        assert!(s.buffered() <= MAX_PAYLOAD + slack);
    }
    (Ok(total), replies, s.take())
}

fn run(use_nats: bool, pieces: &[&[u8]]) -> Scanned {
    if use_nats {
        let s = nats::scanner(vec![b"1".to_vec(), b"7".to_vec()], MAX_PAYLOAD);
        scan(s, pieces, nats::MAX_LINE + 2)
    } else {
        let s = resp::scanner(vec![b"md:*".to_vec(), b"b:*".to_vec()], MAX_PAYLOAD);
        scan(s, pieces, resp::MAX_CHANNEL + 64 * 1024)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let use_nats = first & 1 == 1;
    let whole = run(use_nats, &[data]);
    let at = usize::from(first >> 1) * data.len() / 128;
    let (a, b) = data.split_at(at);
    let split = run(use_nats, &[a, b]);
    assert_eq!(whole.0.is_ok(), split.0.is_ok(), "split at {at}");
    if whole.0.is_ok() {
        assert_eq!(whole, split, "split at {at}");
    }
    let bytewise: Vec<&[u8]> = data.chunks(1).collect();
    let third = run(use_nats, &bytewise);
    assert_eq!(whole.0.is_ok(), third.0.is_ok());
    if whole.0.is_ok() {
        assert_eq!(whole, third, "byte by byte");
    }
});
