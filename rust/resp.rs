//! The scanner of a Redis pub/sub connection's bytes (RESP2 and RESP3).
//!
//! Messages (`message`, `smessage` and `pmessage`, as RESP2 arrays or RESP3 pushes) never become
//! values: a message on a *conflated* pattern only replaces the latest payload of its channel (the
//! latest payload per channel wins until the next `take`), any other message is kept in order.
//! Every other reply (subscription confirmations, PONG, errors: rare) is cut out whole, as its
//! bytes, for the caller to parse. A payload over `max_payload` bytes is skipped as it streams by,
//! never buffered, and reported with its channel and size, so memory stays bounded whatever a
//! publisher sends.
//!
//! Why not a general RESP parser: the pub/sub read is the ingest's hot path, and building one
//! object per message (hiredis, redis-py) was most of its cost; here a message costs a few
//! header reads, a hash lookup and one copy of its payload.

use crate::stream::{parse_int, Framing, Pending, ScanError, Step, Stream};

/// Aggregates nested deeper than this in a reply are refused (Redis sends at most a few levels).
const MAX_NESTING: usize = 32;
/// A header line (`*4`, `$123`) longer than this is a protocol error, not something to wait for.
const MAX_HEADER: usize = 32;
/// A channel name longer than this is refused (the stream is lost). Shorter ones are buffered
/// and handed over: the feed counts a channel over `max_id_bytes` as malformed and goes on.
pub const MAX_CHANNEL: usize = 4 * 1024 * 1024;
/// What a frame may take beyond `max_payload` while it is incomplete: a channel name, headers.
const SLACK: usize = MAX_CHANNEL + 64 * 1024;

/// The Redis framing (see the module documentation).
pub struct Resp;

/// The scanner of one Redis pub/sub connection.
pub type Scanner = Stream<Resp>;

/// A scanner conflating the messages of `conflate` (patterns, as PSUBSCRIBEd) and skipping
/// payloads over `max_payload` bytes.
pub fn scanner(conflate: Vec<Vec<u8>>, max_payload: usize) -> Scanner {
    Stream::new(Resp, conflate, max_payload)
}

fn protocol_error(msg: String) -> ScanError {
    ScanError::Protocol {
        protocol: "RESP",
        msg,
    }
}

impl Framing for Resp {
    const SLACK: usize = SLACK;

    fn frame(
        &mut self,
        buf: &[u8],
        pos: usize,
        max_payload: usize,
        pending: &mut Pending,
    ) -> Result<Step, ScanError> {
        if matches!(buf[pos], b'*' | b'>') {
            if let Some(step) = message(buf, pos, max_payload, pending)? {
                return Ok(step);
            }
        }
        reply(buf, pos)
    }
}

/// The message starting at `pos` (an array or push of 3 or 4 elements whose first is `message`,
/// `smessage` (a sharded channel's) or `pmessage`), or None if the reply there is something else.
fn message(
    buf: &[u8],
    pos: usize,
    max_payload: usize,
    pending: &mut Pending,
) -> Result<Option<Step>, ScanError> {
    let Some((n, p)) = header(buf, pos)? else {
        return Ok(Some(Step::Incomplete));
    };
    if n != 3 && n != 4 {
        return Ok(None);
    }
    let (kind, p) = match bulk(buf, p, usize::MAX)? {
        Bulk::Incomplete => return Ok(Some(Step::Incomplete)),
        Bulk::Other => return Ok(None),
        Bulk::Whole(range, next) => (&buf[range], next),
    };
    let with_pattern = match (kind, n) {
        (b"pmessage", 4) => true,
        (b"message" | b"smessage", 3) => false,
        _ => return Ok(None),
    };
    let (pattern, p) = if with_pattern {
        match bulk(buf, p, MAX_CHANNEL)? {
            Bulk::Incomplete => return Ok(Some(Step::Incomplete)),
            Bulk::Other => return Ok(None),
            Bulk::Whole(range, next) => (&buf[range], next),
        }
    } else {
        (&b""[..], p)
    };
    let (channel, p) = match bulk(buf, p, MAX_CHANNEL)? {
        Bulk::Incomplete => return Ok(Some(Step::Incomplete)),
        Bulk::Other => return Ok(None),
        Bulk::Whole(range, next) => (&buf[range], next),
    };
    if buf.get(p) != Some(&b'$') {
        return Ok(if p >= buf.len() {
            Some(Step::Incomplete)
        } else {
            None
        });
    }
    let Some((size, body)) = header(buf, p)? else {
        return Ok(Some(Step::Incomplete));
    };
    let Ok(size) = usize::try_from(size) else {
        return Ok(None); // a null payload: not a message Redis sends
    };
    let end = body.saturating_add(size).saturating_add(2);
    if size > max_payload {
        pending.oversized(pattern, channel, size);
        // skipped blind (its CRLF too), whether or not it is all here: the same either way
        if end <= buf.len() {
            return Ok(Some(Step::Message { end }));
        }
        return Ok(Some(Step::Skipping {
            skip: end - buf.len(),
        }));
    }
    if end > buf.len() {
        return Ok(Some(Step::Incomplete));
    }
    crlf(buf, end - 2)?;
    let payload = &buf[body..end - 2];
    pending.deliver(pattern, with_pattern, channel, payload);
    Ok(Some(Step::Message { end }))
}

/// A bulk string at a position: its bytes and where the next reply starts, something else, or
/// not complete.
enum Bulk {
    Whole(std::ops::Range<usize>, usize),
    Other,
    Incomplete,
}

fn bulk(buf: &[u8], pos: usize, limit: usize) -> Result<Bulk, ScanError> {
    match buf.get(pos) {
        None => return Ok(Bulk::Incomplete),
        Some(b'$') => {}
        Some(_) => return Ok(Bulk::Other),
    }
    let Some((size, body)) = header(buf, pos)? else {
        return Ok(Bulk::Incomplete);
    };
    let Ok(size) = usize::try_from(size) else {
        return Ok(Bulk::Other);
    };
    if size > limit {
        return Err(ScanError::TooLarge {
            what: "a channel name",
            size,
            limit,
        });
    }
    let end = body.saturating_add(size);
    if end.saturating_add(2) > buf.len() {
        return Ok(Bulk::Incomplete);
    }
    crlf(buf, end)?;
    Ok(Bulk::Whole(body..end, end + 2))
}

fn crlf(buf: &[u8], at: usize) -> Result<(), ScanError> {
    if &buf[at..at + 2] == b"\r\n" {
        Ok(())
    } else {
        Err(protocol_error(format!(
            "a bulk string is not followed by CRLF at byte {at}"
        )))
    }
}

/// The end of the line starting at `pos` (just after its CRLF), or None if it is not complete.
fn line_end(buf: &[u8], pos: usize) -> Option<usize> {
    let rest = buf.get(pos..)?;
    let i = rest.windows(2).position(|w| w == b"\r\n")?;
    Some(pos + i + 2)
}

/// The integer of the header line at `pos` (its type byte first) and where its body starts.
fn header(buf: &[u8], pos: usize) -> Result<Option<(i64, usize)>, ScanError> {
    let start = pos + 1;
    let window = &buf[start.min(buf.len())..buf.len().min(start + MAX_HEADER)];
    let Some(i) = window.iter().position(|&b| b == b'\r') else {
        if window.len() >= MAX_HEADER {
            return Err(protocol_error(format!(
                "a header line over {MAX_HEADER} bytes at byte {pos}"
            )));
        }
        return Ok(None);
    };
    if start + i + 1 >= buf.len() {
        return Ok(None);
    }
    if buf[start + i + 1] != b'\n' {
        return Err(protocol_error(format!(
            "a header line not ended by CRLF at byte {pos}"
        )));
    }
    let digits = &window[..i];
    let value = parse_int(digits).ok_or_else(|| {
        protocol_error(format!(
            "bad length {:?} at byte {pos}",
            String::from_utf8_lossy(digits)
        ))
    })?;
    Ok(Some((value, start + i + 2)))
}

/// Any reply at `pos`: its end, or not complete.
fn reply(buf: &[u8], pos: usize) -> Result<Step, ScanError> {
    Ok(match value_end(buf, pos, 0)? {
        Some(end) => Step::Reply {
            end,
            len: end - pos,
        },
        None => Step::Incomplete,
    })
}

/// Where the value starting at `pos` ends, or None if it is not complete.
fn value_end(buf: &[u8], pos: usize, depth: usize) -> Result<Option<usize>, ScanError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    match kind {
        // simple string, error, integer, null, double, boolean, big number
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok(line_end(buf, pos + 1)),
        // bulk string, bulk error, verbatim string
        b'$' | b'!' | b'=' => {
            let Some((size, body)) = header(buf, pos)? else {
                return Ok(None);
            };
            if size == -1 && kind == b'$' {
                return Ok(Some(body)); // RESP2 null bulk string
            }
            let size = usize::try_from(size)
                .map_err(|_| protocol_error(format!("negative length {size} at byte {pos}")))?;
            let end = body.saturating_add(size).saturating_add(2);
            if end > buf.len() {
                return Ok(None);
            }
            crlf(buf, end - 2)?;
            Ok(Some(end))
        }
        // array, push, set, map, attribute
        b'*' | b'>' | b'~' | b'%' | b'|' => {
            let Some((count, mut p)) = header(buf, pos)? else {
                return Ok(None);
            };
            if count == -1 && kind == b'*' {
                return Ok(Some(p)); // RESP2 null array
            }
            let count = u64::try_from(count)
                .map_err(|_| protocol_error(format!("negative count {count} at byte {pos}")))?;
            if depth >= MAX_NESTING {
                return Err(protocol_error(format!(
                    "replies nested over {MAX_NESTING} levels"
                )));
            }
            let elements = if matches!(kind, b'%' | b'|') {
                count.saturating_mul(2)
            } else {
                count
            };
            for _ in 0..elements {
                match value_end(buf, p, depth + 1)? {
                    Some(end) => p = end,
                    None => return Ok(None),
                }
            }
            if kind == b'|' {
                // attributes come before the reply they describe: both are one reply here
                return value_end(buf, p, depth + 1);
            }
            Ok(Some(p))
        }
        other => Err(protocol_error(format!(
            "unexpected byte 0x{other:02x} at the start of a reply (byte {pos})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Batch, Oversized};

    fn pmessage(pattern: &str, channel: &str, payload: &str) -> Vec<u8> {
        format!(
            "*4\r\n$8\r\npmessage\r\n${}\r\n{pattern}\r\n${}\r\n{channel}\r\n${}\r\n{payload}\r\n",
            pattern.len(),
            channel.len(),
            payload.len()
        )
        .into_bytes()
    }

    fn feed_all(s: &mut Scanner, data: &[u8]) -> (usize, Vec<Vec<u8>>) {
        let mut replies = Vec::new();
        let n = s.feed(data, &mut replies).expect("scan");
        (n, replies)
    }

    #[test]
    fn conflates_by_channel_in_first_seen_order() {
        let mut s = scanner(vec![b"md:*".to_vec()], 1 << 20);
        let mut data = pmessage("md:*", "md:B", "1");
        data.extend(pmessage("md:*", "md:A", "2"));
        data.extend(pmessage("md:*", "md:B", "3"));
        data.extend(pmessage("ev:*", "ev:x", "4"));
        let (n, replies) = feed_all(&mut s, &data);
        assert_eq!((n, replies.len()), (4, 0));
        assert_eq!(s.pending_keys(), 2);
        let batch = s.take();
        assert_eq!(batch.conflated.len(), 1);
        let (i, c) = &batch.conflated[0];
        assert_eq!(*i, 0);
        assert_eq!(c.count, 3);
        assert_eq!(
            c.latest,
            vec![
                (b"md:B".to_vec(), b"3".to_vec()),
                (b"md:A".to_vec(), b"2".to_vec())
            ]
        );
        assert_eq!(batch.ordered.len(), 1);
        assert_eq!(batch.ordered[0].payload, b"4");
        assert_eq!(s.pending_keys(), 0);
        assert_eq!(s.take(), Batch::default());
    }

    #[test]
    fn every_split_point_gives_the_same_result() {
        let mut data = b"*3\r\n$10\r\npsubscribe\r\n$4\r\nmd:*\r\n:1\r\n".to_vec();
        data.extend(pmessage("md:*", "md:A", "{\"a\":1}"));
        data.extend(b">4\r\n$8\r\npmessage\r\n$4\r\nmd:*\r\n$4\r\nmd:A\r\n$2\r\n{}\r\n");
        data.extend(b"+PONG\r\n");
        data.extend(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$0\r\n\r\n");
        data.extend(b"%1\r\n+k\r\n*2\r\n:1\r\n_\r\n");
        data.extend(b"|1\r\n+a\r\n+b\r\n$-1\r\n");
        let whole = {
            let mut s = scanner(vec![b"md:*".to_vec()], 1 << 20);
            let (n, r) = feed_all(&mut s, &data);
            (n, r, s.take())
        };
        assert_eq!(whole.0, 3);
        assert_eq!(whole.1.len(), 4);
        for split in 0..data.len() {
            let mut s = scanner(vec![b"md:*".to_vec()], 1 << 20);
            let (a, mut ra) = feed_all(&mut s, &data[..split]);
            let (b, rb) = feed_all(&mut s, &data[split..]);
            ra.extend(rb);
            assert_eq!((a + b, ra, s.take()), whole, "split at {split}");
        }
    }

    #[test]
    fn an_oversized_payload_is_skipped_as_it_streams() {
        let mut s = scanner(vec![b"md:*".to_vec()], 10);
        let big = "x".repeat(100);
        let mut data = pmessage("md:*", "md:A", &big);
        data.extend(pmessage("md:*", "md:B", "ok"));
        let (n1, _) = feed_all(&mut s, &data[..50]);
        assert_eq!(n1, 1); // counted once its header is read
        assert_eq!(s.buffered(), 0);
        let (n2, _) = feed_all(&mut s, &data[50..]);
        assert_eq!(n2, 1);
        let batch = s.take();
        assert_eq!(
            batch.oversized,
            vec![Oversized {
                route: b"md:*".to_vec(),
                channel: b"md:A".to_vec(),
                size: 100
            }]
        );
        assert_eq!(
            batch.conflated[0].1.latest,
            vec![(b"md:B".to_vec(), b"ok".to_vec())]
        );
    }

    #[test]
    fn bad_bytes_fail_and_stay_failed() {
        let mut s = scanner(vec![], 1 << 20);
        let mut replies = Vec::new();
        let err = s.feed(b"?what\r\n", &mut replies).unwrap_err();
        assert!(err.to_string().contains("unexpected byte 0x3f"), "{err}");
        assert_eq!(s.feed(b"+OK\r\n", &mut replies).unwrap_err(), err);
        let mut s = scanner(vec![], 1 << 20);
        let err = s.feed(b"$3\r\nabcd\r\n", &mut replies).unwrap_err();
        assert!(err.to_string().contains("CRLF"), "{err}");
        let mut s = scanner(vec![], 1 << 20);
        let err = s.feed(b"*12345678901234567890123456789012345\r\n", &mut replies);
        assert!(err.is_err());
        let mut s = scanner(vec![], 1 << 20);
        let deep = "*1\r\n".repeat(40) + ":1\r\n";
        assert!(s.feed(deep.as_bytes(), &mut replies).is_err());
    }

    #[test]
    fn an_incomplete_reply_is_bounded() {
        let mut s = scanner(vec![], 100);
        let mut replies = Vec::new();
        let mut data = b"+".to_vec();
        data.extend(std::iter::repeat_n(b'a', 100 + SLACK + 1));
        let err = s.feed(&data, &mut replies).unwrap_err();
        assert!(matches!(err, ScanError::TooLarge { .. }), "{err}");
        let mut s = scanner(vec![], 100);
        let long_channel = format!("*3\r\n$7\r\nmessage\r\n${}\r\n", MAX_CHANNEL + 1);
        let err = s.feed(long_channel.as_bytes(), &mut replies).unwrap_err();
        assert!(err.to_string().contains("channel name"), "{err}");
    }

    #[test]
    fn other_arrays_are_replies() {
        let mut s = scanner(vec![b"md:*".to_vec()], 1 << 20);
        let data =
            b"*2\r\n$4\r\npong\r\n$0\r\n\r\n*4\r\n$8\r\npmessage\r\n:1\r\n$1\r\na\r\n$1\r\nb\r\n";
        let (n, replies) = feed_all(&mut s, data);
        assert_eq!(n, 0);
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0], b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    }
}
