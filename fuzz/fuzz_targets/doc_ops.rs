//! Document ops driven by the input: merge / replace (as JSON bytes, MessagePack bytes or values)
//! / remove at paths over a few keys, `changes_since` and the encoders. Never panics, and:
//! - a twin document that gets every JSON payload as a decoded value (not from the tape) ends
//!   each op in the same state with the same result;
//! - an op either changes something and bumps the version by one, or changes nothing;
//! - `changes_since(v)` applied to the state at `v` gives the current state;
//! - the encoded messages decode (JSON and MessagePack), and the snapshot's data is the state.
#![no_main]

use std::borrow::Cow;

use _fastdiff::encode::{encode_snapshot, encode_update, DiffForm, Format};
use _fastdiff::value::{dedupe_keys, Value};
use _fastdiff::{json, msgpack, StateDoc};
use libfuzzer_sys::fuzz_target;

const SECTIONS: [&str; 2] = ["s", "t"];
const KEYS: [&str; 6] = ["a", "b", "c~d", "e/f", "q\"", ""];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn path(&mut self) -> String {
        let b = self.byte();
        if b == 0xff {
            return "bad~2".to_owned(); // an invalid pointer now and then
        }
        let mut p = format!("/{}", SECTIONS[usize::from(b & 1)]);
        for _ in 0..(b >> 1) % 4 {
            p.push('/');
            let k = KEYS[usize::from(self.byte()) % KEYS.len()];
            p.push_str(&k.replace('~', "~0").replace('/', "~1"));
        }
        p
    }

    fn value(&mut self, depth: u32) -> Value<'static> {
        let b = self.byte();
        match b % if depth >= 4 { 6 } else { 8 } {
            0 => Value::Null,
            1 => Value::Bool(b & 0x80 != 0),
            2 => Value::int(i64::from(self.byte() as i8) * i64::from(self.byte())),
            3 => Value::UInt(u64::from(self.byte()) << (self.byte() % 64)),
            4 => {
                let mut w = [0u8; 8];
                w.copy_from_slice(&{
                    let mut x = self.bytes(8).to_vec();
                    x.resize(8, 0);
                    x
                });
                Value::float(f64::from_le_bytes(w)).unwrap_or(Value::Float(0.5))
            }
            5 => Value::Str(Cow::Owned(
                KEYS[usize::from(self.byte()) % KEYS.len()].to_owned(),
            )),
            6 => Value::Array(
                (0..self.byte() % 4)
                    .map(|_| self.value(depth + 1))
                    .collect(),
            ),
            _ => {
                let mut m: Vec<_> = (0..self.byte() % 4)
                    .map(|_| {
                        let k = KEYS[usize::from(self.byte()) % KEYS.len()];
                        (Cow::Owned(k.to_owned()), self.value(depth + 1))
                    })
                    .collect();
                dedupe_keys(&mut m); // values hold unique keys, as the decoders make them
                Value::Object(m)
            }
        }
    }
}

fn state(d: &StateDoc) -> Value<'static> {
    d.get_value("").expect("the root")
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let max_tombstones = usize::from(input.byte() % 8) * 4;
    let mut doc = StateDoc::new(SECTIONS, max_tombstones);
    let mut twin = StateDoc::new(SECTIONS, max_tombstones);
    let mut history = vec![state(&doc)];
    for _ in 0..48 {
        if input.0.is_empty() {
            break;
        }
        let op = input.byte();
        let path = input.path();
        let before = doc.version();
        let (res, twin_res) = match op % 8 {
            // JSON bytes (raw input now and then): the tape path against the value path.
            0..=2 => {
                let bytes = if op & 0x80 != 0 {
                    let n = usize::from(input.byte() % 64);
                    input.bytes(n).to_vec()
                } else {
                    json::to_vec(&input.value(0))
                };
                let merge = op % 8 != 2;
                let res = if merge {
                    doc.merge_json(&path, &bytes)
                } else {
                    doc.replace_json(&path, &bytes)
                };
                let twin_res = match json::parse(&bytes) {
                    Ok(v) if merge => twin.merge(&path, v),
                    Ok(v) => twin.replace(&path, v),
                    Err(e) => match res {
                        // A decode error is reported at the path; a bad path comes first.
                        Err(_) => res.clone(),
                        Ok(_) => panic!("the tape accepted what the parser rejects: {e}"),
                    },
                };
                (res, twin_res)
            }
            3 | 4 => {
                let v = input.value(0);
                let packed = msgpack::to_vec(&v);
                let decoded = msgpack::parse(&packed).expect("own bytes decode");
                if op % 8 == 3 {
                    (doc.merge(&path, decoded), twin.merge(&path, v))
                } else {
                    (doc.replace(&path, decoded), twin.replace(&path, v))
                }
            }
            5 => (doc.remove(&path), twin.remove(&path)),
            _ => {
                // Read: changes since an earlier version, the messages.
                let since = u64::from(input.byte()) % (doc.version() + 1);
                if let Some(cs) = doc.changes_since(since).expect("a version <= now") {
                    let mut replay = StateDoc::new(SECTIONS, usize::MAX);
                    let old = &history[since as usize];
                    replay.replace("", old.clone()).expect("a root object");
                    for e in cs.entries() {
                        if e.is_removed() {
                            replay.remove(e.pointer()).expect("remove");
                        } else {
                            replay.replace(e.pointer(), e.value()).expect("replace");
                        }
                    }
                    assert_eq!(
                        state(&replay),
                        state(&doc),
                        "changes_since({since}) replayed"
                    );
                    for fmt in [Format::Json, Format::Msgpack] {
                        for diff in [DiffForm::Changes, DiffForm::JsonPatch] {
                            let msg =
                                encode_update::<&str>(&cs, fmt, diff, None, 1, 0).expect("encode");
                            if let Some(m) = msg {
                                match fmt {
                                    Format::Json => json::parse(&m).map(drop),
                                    Format::Msgpack => msgpack::parse(&m).map(drop),
                                }
                                .expect("the update decodes");
                            }
                        }
                    }
                }
                for fmt in [Format::Json, Format::Msgpack] {
                    let m = encode_snapshot::<&str>(&doc, fmt, None, 1, "e", 0, 0).expect("encode");
                    let v = match fmt {
                        Format::Json => json::parse(&m),
                        Format::Msgpack => msgpack::parse(&m),
                    }
                    .expect("the snapshot decodes");
                    let Value::Object(members) = v else {
                        panic!("a snapshot is an object")
                    };
                    let data = members.iter().find(|(k, _)| k == "data").expect("data");
                    assert_eq!(data.1, state(&doc));
                }
                continue;
            }
        };
        assert_eq!(res, twin_res, "tape and value paths agree at {path}");
        assert_eq!(state(&doc), state(&twin));
        match res {
            Ok(true) => {
                assert_eq!(doc.version(), before + 1);
                history.push(state(&doc));
            }
            _ => {
                assert_eq!(doc.version(), before);
                assert_eq!(state(&doc), *history.last().expect("history"));
            }
        }
    }
});
