//! The JSON decoder on arbitrary bytes: never panics; what it accepts is a valid value that
//! reads back the same through the tape, the writer and MessagePack.
#![no_main]

use _fastdiff::json::{self, Tape};
use _fastdiff::{msgpack, MAX_DEPTH};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut tape = Tape::default();
    let scanned = json::scan(data, &mut tape);
    let parsed = json::parse(data);
    match (scanned, parsed) {
        (Ok(r), Ok(v)) => {
            assert!(v.depth() <= MAX_DEPTH);
            assert!(r.eq_value(&v), "the tape and the value differ");
            assert_eq!(r.to_owned_value(), v);
            let text = json::to_vec(&v);
            let again = json::parse(&text).expect("the writer's output parses");
            assert_eq!(again, v, "JSON round trip");
            let packed = msgpack::to_vec(&v);
            assert_eq!(msgpack::parse(&packed).expect("msgpack parses"), v);
            let mut transcoded = Vec::new();
            msgpack::transcode_json(&packed, &mut transcoded);
            assert_eq!(
                transcoded, text,
                "transcoding writes what the JSON writer writes"
            );
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "the same error either way");
            let msg = a.render("/p");
            assert!(msg.starts_with("/p"), "{msg}");
        }
        (a, b) => panic!("scan and parse disagree: {:?} / {:?}", a.is_ok(), b.is_ok()),
    }
});
