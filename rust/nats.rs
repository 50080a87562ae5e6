//! The framing of a NATS subscriber connection: what a server sends a client (`MSG`, `HMSG`,
//! `PING`, `PONG`, `+OK`, `-ERR`, `INFO`).
//!
//! A message (`MSG`, or `HMSG`, whose headers are skipped) goes to the pending batch by its
//! subscription id: on a conflated id only the latest payload per subject is kept. Every other
//! operation is handed over as its line, without the CRLF, for the caller to act on. Why not
//! nats-py's parser: it is pure Python (a regular expression and a buffer copy per message, then a
//! message object and a callback), and it capped the ingest near 200,000 msg/s at a full core.

use crate::stream::{parse_int, Framing, Pending, ScanError, Step, Stream};

/// A control line (`MSG ...`, `INFO {...}`) longer than this is refused.
pub const MAX_LINE: usize = 64 * 1024;

/// The NATS framing (see the module documentation).
pub struct Nats;

/// The scanner of one NATS connection.
pub type Scanner = Stream<Nats>;

/// A scanner conflating the messages of the subscription ids `conflate` (as ASCII digits) and
/// skipping messages over `max_payload` bytes.
pub fn scanner(conflate: Vec<Vec<u8>>, max_payload: usize) -> Scanner {
    Stream::new(Nats, conflate, max_payload)
}

fn protocol_error(msg: String) -> ScanError {
    ScanError::Protocol {
        protocol: "NATS",
        msg,
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\r') {
        let at = from + i;
        if buf.get(at + 1) == Some(&b'\n') {
            return Some(at);
        }
        if at + 1 >= buf.len() {
            return None;
        }
        from = at + 1;
    }
    None
}

fn size(field: &[u8], pos: usize) -> Result<usize, ScanError> {
    parse_int(field)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            protocol_error(format!(
                "bad size \"{}\" in a message line at byte {pos}",
                String::from_utf8_lossy(field)
            ))
        })
}

impl Framing for Nats {
    const SLACK: usize = MAX_LINE + 2;

    fn frame(
        &mut self,
        buf: &[u8],
        pos: usize,
        max_payload: usize,
        pending: &mut Pending,
    ) -> Result<Step, ScanError> {
        let rest = &buf[pos..];
        let window = &rest[..rest.len().min(MAX_LINE + 2)];
        let Some(eol) = find_crlf(window) else {
            if window.len() >= MAX_LINE + 2 {
                return Err(protocol_error(format!(
                    "a control line over {MAX_LINE} bytes at byte {pos}"
                )));
            }
            return Ok(Step::Incomplete);
        };
        let line = &rest[..eol];
        let body = pos + eol + 2;
        let mut fields: [&[u8]; 7] = [b""; 7];
        let mut count = 0;
        for field in line
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|f| !f.is_empty())
        {
            if count < fields.len() {
                fields[count] = field;
            }
            count += 1;
        }
        let op = fields[0];
        let headers = op.eq_ignore_ascii_case(b"HMSG");
        if !headers && !op.eq_ignore_ascii_case(b"MSG") {
            return if [&b"PING"[..], b"PONG", b"+OK", b"-ERR", b"INFO"]
                .iter()
                .any(|known| op.eq_ignore_ascii_case(known))
            {
                Ok(Step::Reply {
                    end: body,
                    len: eol,
                })
            } else {
                let shown = &op[..op.len().min(32)];
                Err(protocol_error(format!(
                    "unknown operation \"{}\" at byte {pos}",
                    String::from_utf8_lossy(shown)
                )))
            };
        }
        // MSG subject sid [reply] total / HMSG subject sid [reply] header total
        let (subject, sid, header_size, total) = match (headers, count) {
            (false, 4 | 5) => (fields[1], fields[2], 0, size(fields[count - 1], pos)?),
            (true, 5 | 6) => (
                fields[1],
                fields[2],
                size(fields[count - 2], pos)?,
                size(fields[count - 1], pos)?,
            ),
            _ => {
                return Err(protocol_error(format!(
                    "a message line with {} fields at byte {pos}",
                    count
                )))
            }
        };
        if header_size > total {
            return Err(protocol_error(format!(
                "a message's headers ({header_size} bytes) longer than the message ({total}) at \
                 byte {pos}"
            )));
        }
        let end = body.saturating_add(total).saturating_add(2);
        if total > max_payload {
            pending.oversized(sid, subject, total - header_size);
            // skipped blind (its CRLF too), whether or not it is all here: the same either way
            if end <= buf.len() {
                return Ok(Step::Message { end });
            }
            return Ok(Step::Skipping {
                skip: end - buf.len(),
            });
        }
        if end > buf.len() {
            return Ok(Step::Incomplete);
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Err(protocol_error(format!(
                "a message is not followed by CRLF at byte {}",
                end - 2
            )));
        }
        pending.deliver(sid, true, subject, &buf[body + header_size..body + total]);
        Ok(Step::Message { end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Oversized;

    fn feed_all(s: &mut Scanner, data: &[u8]) -> (usize, Vec<Vec<u8>>) {
        let mut replies = Vec::new();
        let n = s.feed(data, &mut replies).expect("scan");
        (n, replies)
    }

    #[test]
    fn conflates_by_subject_per_subscription_and_hands_over_the_rest() {
        let mut data = b"INFO {\"server_id\":\"x\"}\r\n".to_vec();
        data.extend(b"MSG md.A 1 2\r\nv1\r\n");
        data.extend(b"MSG md.B 1 reply.to 2\r\nv2\r\n");
        data.extend(b"HMSG md.A 1 12 14\r\nNATS/1.0\r\n\r\nv3\r\n");
        data.extend(b"PING\r\n");
        data.extend(b"msg ev.x\t2  1\r\ne\r\n+OK\r\n-ERR 'Slow Consumer'\r\nPONG\r\n");
        let whole = {
            let mut s = scanner(vec![b"1".to_vec()], 1 << 20);
            let (n, r) = feed_all(&mut s, &data);
            (n, r, s.take())
        };
        assert_eq!(whole.0, 4);
        assert_eq!(
            whole.1,
            vec![
                b"INFO {\"server_id\":\"x\"}".to_vec(),
                b"PING".to_vec(),
                b"+OK".to_vec(),
                b"-ERR 'Slow Consumer'".to_vec(),
                b"PONG".to_vec(),
            ]
        );
        let batch = &whole.2;
        assert_eq!(batch.conflated.len(), 1);
        assert_eq!(batch.conflated[0].1.count, 3);
        assert_eq!(
            batch.conflated[0].1.latest,
            vec![
                (b"md.A".to_vec(), b"v3".to_vec()),
                (b"md.B".to_vec(), b"v2".to_vec())
            ]
        );
        assert_eq!(batch.ordered.len(), 1);
        assert_eq!(batch.ordered[0].route, b"2");
        for split in 0..data.len() {
            let mut s = scanner(vec![b"1".to_vec()], 1 << 20);
            let (a, mut ra) = feed_all(&mut s, &data[..split]);
            let (b, rb) = feed_all(&mut s, &data[split..]);
            ra.extend(rb);
            assert_eq!((a + b, ra, s.take()), whole, "split at {split}");
        }
    }

    #[test]
    fn an_oversized_message_is_skipped_as_it_streams() {
        let mut s = scanner(vec![b"1".to_vec()], 10);
        let mut data = format!("MSG md.A 1 100\r\n{}\r\n", "x".repeat(100)).into_bytes();
        data.extend(b"MSG md.B 1 2\r\nok\r\n");
        let (n1, _) = feed_all(&mut s, &data[..30]);
        assert_eq!((n1, s.buffered()), (1, 0));
        let (n2, _) = feed_all(&mut s, &data[30..]);
        assert_eq!(n2, 1);
        let batch = s.take();
        assert_eq!(
            batch.oversized,
            vec![Oversized {
                route: b"1".to_vec(),
                channel: b"md.A".to_vec(),
                size: 100
            }]
        );
        assert_eq!(
            batch.conflated[0].1.latest,
            vec![(b"md.B".to_vec(), b"ok".to_vec())]
        );
    }

    #[test]
    fn bad_bytes_fail_with_what_was_wrong() {
        let cases: [(&[u8], &str); 6] = [
            (b"WHAT x\r\n", "unknown operation \"WHAT\""),
            (b"MSG a 1\r\n", "a message line with 3 fields"),
            (b"MSG a 1 -3\r\n", "bad size \"-3\""),
            (b"HMSG a 1 9 3\r\n", "headers (9 bytes) longer"),
            (b"MSG a 1 2\r\nabcd\r\n", "not followed by CRLF"),
            (b"MSG a 1 2 3 4 5 6 7\r\n", "a message line with 9 fields"),
        ];
        for (data, want) in cases {
            let mut s = scanner(vec![], 1 << 20);
            let err = s.feed(data, &mut Vec::new()).unwrap_err().to_string();
            assert!(err.starts_with("NATS protocol error: "), "{err}");
            assert!(err.contains(want), "{err} / {want}");
        }
        let mut s = scanner(vec![], 1 << 20);
        let long = vec![b'a'; MAX_LINE + 3];
        assert!(s.feed(&long, &mut Vec::new()).is_err());
    }
}
