//! A subscriber connection's byte stream, scanned into a pending batch.
//!
//! [`Stream`] is what the two subscriber scanners (`resp`: Redis pub/sub, `nats`: NATS) share:
//! the bytes of each read are scanned in place, a frame cut by the end of a read waits (copied)
//! for the next one, a payload over `max_payload` is skipped as it streams by (never buffered),
//! and the messages go to a [`Pending`] batch: on a *conflated* route (a Redis pattern, a NATS
//! subscription id) only the latest payload per channel is kept, in the order the channels first
//! appeared; any other message is kept in order. Replies that are not messages are cut out whole
//! for the caller. The framing of each protocol is a [`Framing`].

use std::collections::HashMap;
use std::fmt;

use crate::base::Hasher;

/// Why the stream cannot be read on (the connection must be closed: the stream is lost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// The bytes are not the protocol (`protocol` names it: `RESP`, `NATS`).
    Protocol { protocol: &'static str, msg: String },
    /// A frame (or a channel name) bigger than the scanner buffers.
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::Protocol { protocol, msg } => write!(f, "{protocol} protocol error: {msg}"),
            ScanError::TooLarge { what, size, limit } => {
                write!(
                    f,
                    "{what} of {size} bytes is over the limit of {limit} bytes"
                )
            }
        }
    }
}

impl std::error::Error for ScanError {}

/// A message kept in order: its route (a pattern, a subscription id; empty for a Redis
/// `message`), channel and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub route: Vec<u8>,
    pub channel: Vec<u8>,
    pub payload: Vec<u8>,
}

/// A message whose payload was over `max_payload`: skipped, never buffered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversized {
    pub route: Vec<u8>,
    pub channel: Vec<u8>,
    pub size: usize,
}

/// The latest payload per channel of one conflated route, in the order the channels first
/// appeared, and how many messages they stand for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Conflated {
    pub latest: Vec<(Vec<u8>, Vec<u8>)>,
    pub count: u64,
}

/// What [`Stream::take`] hands over: per conflated route (by its index in the routes given to
/// [`Stream::new`], only those with messages), the ordered messages, the oversized ones.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    pub conflated: Vec<(usize, Conflated)>,
    pub ordered: Vec<Message>,
    pub oversized: Vec<Oversized>,
}

#[derive(Default)]
struct Route {
    index: HashMap<Vec<u8>, usize, Hasher>,
    latest: Vec<(Vec<u8>, Vec<u8>)>,
    count: u64,
}

/// The batch being gathered.
pub struct Pending {
    routes: Vec<Vec<u8>>,
    conflated: Vec<Route>,
    ordered: Vec<Message>,
    oversized: Vec<Oversized>,
    keys: usize,
}

impl Pending {
    fn new(routes: Vec<Vec<u8>>) -> Pending {
        let conflated = routes.iter().map(|_| Route::default()).collect();
        Pending {
            routes,
            conflated,
            ordered: Vec::new(),
            oversized: Vec::new(),
            keys: 0,
        }
    }

    /// A message on `route`: conflated if `conflatable` and the route is one of the conflated
    /// ones, else kept in order.
    pub fn deliver(&mut self, route: &[u8], conflatable: bool, channel: &[u8], payload: &[u8]) {
        let found = if conflatable {
            self.routes.iter().position(|r| r.as_slice() == route)
        } else {
            None
        };
        let Some(i) = found else {
            self.ordered.push(Message {
                route: route.to_vec(),
                channel: channel.to_vec(),
                payload: payload.to_vec(),
            });
            return;
        };
        let r = &mut self.conflated[i];
        r.count += 1;
        match r.index.get(channel) {
            Some(&slot) => {
                let latest = &mut r.latest[slot].1;
                latest.clear();
                latest.extend_from_slice(payload);
            }
            None => {
                r.index.insert(channel.to_vec(), r.latest.len());
                r.latest.push((channel.to_vec(), payload.to_vec()));
                self.keys += 1;
            }
        }
    }

    /// A message skipped for its size.
    pub fn oversized(&mut self, route: &[u8], channel: &[u8], size: usize) {
        self.oversized.push(Oversized {
            route: route.to_vec(),
            channel: channel.to_vec(),
            size,
        });
    }

    fn take(&mut self) -> Batch {
        let mut batch = Batch::default();
        for (i, r) in self.conflated.iter_mut().enumerate() {
            if r.count > 0 {
                r.index.clear();
                batch.conflated.push((
                    i,
                    Conflated {
                        latest: std::mem::take(&mut r.latest),
                        count: std::mem::take(&mut r.count),
                    },
                ));
            }
        }
        self.keys = 0;
        batch.ordered = std::mem::take(&mut self.ordered);
        batch.oversized = std::mem::take(&mut self.oversized);
        batch
    }
}

/// One step of the scan at a position.
pub enum Step {
    /// Not all of the frame is here yet.
    Incomplete,
    /// A message, dealt with; the next frame starts at `end`.
    Message { end: usize },
    /// A message whose oversized payload runs `skip` bytes past the buffer: skipped.
    Skipping { skip: usize },
    /// Another reply: its `len` bytes from the position are handed over; the next frame
    /// starts at `end`.
    Reply { end: usize, len: usize },
}

/// The framing of one protocol.
pub trait Framing: Send {
    /// How many bytes a frame that is not a message may take while it is incomplete, beyond
    /// `max_payload`.
    const SLACK: usize;

    /// The frame at `pos` of `buf` (`pos < buf.len()`): messages go to `pending`.
    fn frame(
        &mut self,
        buf: &[u8],
        pos: usize,
        max_payload: usize,
        pending: &mut Pending,
    ) -> Result<Step, ScanError>;
}

/// The scanner of one connection (see the module documentation).
pub struct Stream<F: Framing> {
    framing: F,
    batch: Pending,
    /// The start of a frame that is not complete yet.
    partial: Vec<u8>,
    /// Bytes of an oversized payload (and its CRLF) still to skip.
    skip: usize,
    max_payload: usize,
    failed: Option<ScanError>,
}

impl<F: Framing> Stream<F> {
    /// A scanner conflating the messages of `routes` and skipping payloads over `max_payload`.
    pub fn new(framing: F, routes: Vec<Vec<u8>>, max_payload: usize) -> Stream<F> {
        Stream {
            framing,
            batch: Pending::new(routes),
            partial: Vec::new(),
            skip: 0,
            max_payload,
            failed: None,
        }
    }

    /// Distinct channels pending over every conflated route.
    pub fn pending_keys(&self) -> usize {
        self.batch.keys
    }

    /// Messages pending in order (and oversized ones).
    pub fn pending_ordered(&self) -> usize {
        self.batch.ordered.len() + self.batch.oversized.len()
    }

    /// Bytes buffered of a frame not complete yet.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// The conflated routes given to [`Stream::new`].
    pub fn routes(&self) -> &[Vec<u8>] {
        &self.batch.routes
    }

    /// Take what is pending: the conflated latest payloads, the ordered and oversized messages.
    pub fn take(&mut self) -> Batch {
        self.batch.take()
    }

    /// Scan the next bytes of the stream: the messages in them are pending until
    /// [`Stream::take`], every other complete reply is appended to `replies`. Returns how many
    /// messages there were. After an error every call fails with it.
    pub fn feed(&mut self, data: &[u8], replies: &mut Vec<Vec<u8>>) -> Result<usize, ScanError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.feed_inner(data, replies);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
            self.partial = Vec::new();
        }
        result
    }

    fn feed_inner(&mut self, data: &[u8], replies: &mut Vec<Vec<u8>>) -> Result<usize, ScanError> {
        let skipped = self.skip.min(data.len());
        self.skip -= skipped;
        let data = &data[skipped..];
        if data.is_empty() {
            return Ok(0);
        }
        let mut messages = 0;
        if self.partial.is_empty() {
            let used = self.scan(data, &mut messages, replies)?;
            self.partial.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(data);
            let used = self.scan(&buf, &mut messages, replies)?;
            buf.drain(..used);
            self.partial = buf;
        }
        let limit = self.max_payload.saturating_add(F::SLACK);
        if self.partial.len() > limit {
            return Err(ScanError::TooLarge {
                what: "an incomplete frame",
                size: self.partial.len(),
                limit,
            });
        }
        Ok(messages)
    }

    /// Scan the complete frames of `buf`; returns how many bytes were used.
    fn scan(
        &mut self,
        buf: &[u8],
        messages: &mut usize,
        replies: &mut Vec<Vec<u8>>,
    ) -> Result<usize, ScanError> {
        let mut pos = 0;
        while pos < buf.len() {
            match self
                .framing
                .frame(buf, pos, self.max_payload, &mut self.batch)?
            {
                Step::Incomplete => break,
                Step::Message { end } => {
                    *messages += 1;
                    pos = end;
                }
                Step::Skipping { skip } => {
                    *messages += 1;
                    self.skip = skip;
                    return Ok(buf.len());
                }
                Step::Reply { end, len } => {
                    replies.push(buf[pos..pos + len].to_vec());
                    pos = end;
                }
            }
        }
        Ok(pos)
    }
}

/// A decimal integer (an optional `-`, 1 to 18 digits), or None.
pub fn parse_int(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
    Some(if negative { -value } else { value })
}
