//! The MessagePack decoder and the MessagePack -> JSON transcoder on arbitrary bytes: never
//! panic; the transcoder writes valid JSON, bounded by the input; what the decoder accepts re-encodes to a value that decodes the same, and transcodes
//! to JSON text of the same value.
#![no_main]

use _fastdiff::{json, msgpack, MAX_DEPTH};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Whatever the bytes, transcoding writes something and never panics.
    let mut out = Vec::new();
    msgpack::transcode_json(data, &mut out);
    assert!(out.len() <= 8 * data.len() + 8, "bounded by the input");
    if let Err(e) = json::parse(&out) {
        assert!(
            e.msg().starts_with("depth"),
            "transcoded text is valid JSON: {e}"
        );
    }
    match msgpack::parse(data) {
        Ok(v) => {
            assert!(v.depth() <= MAX_DEPTH);
            let packed = msgpack::to_vec(&v);
            assert_eq!(msgpack::parse(&packed).expect("re-encoded bytes decode"), v);
            let mut text = Vec::new();
            msgpack::transcode_json(&packed, &mut text);
            assert_eq!(json::parse(&text).expect("transcoded JSON parses"), v);
        }
        Err(e) => {
            let msg = e.render("/p");
            assert!(msg.starts_with("/p"), "{msg}");
        }
    }
});
