//! The messages sent to clients: `snapshot` (straight from the node tree) and `update` (from a
//! change set), in JSON or MessagePack, with the envelope keys in the order of the contract.

use crate::doc::{ChangeSet, EntryKind, Error, Kind, Node, StateDoc};
use crate::{base, json, msgpack};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Msgpack,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, Error> {
        match s {
            "json" => Ok(Format::Json),
            "msgpack" => Ok(Format::Msgpack),
            _ => Err(Error(format!(
                "unknown format {s:?}: expected \"msgpack\" or \"json\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffForm {
    Changes,
    JsonPatch,
}

impl DiffForm {
    pub fn parse(s: &str) -> Result<DiffForm, Error> {
        match s {
            "changes" => Ok(DiffForm::Changes),
            "json-patch" => Ok(DiffForm::JsonPatch),
            _ => Err(Error(format!(
                "unknown diff form {s:?}: expected \"changes\" or \"json-patch\""
            ))),
        }
    }
}

// -- timestamps -------------------------------------------------------------------------------

/// (year, month, day) of the proleptic Gregorian calendar for a count of days since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01, so that leap days end the (400-year) era and the year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of (March-based) year, [0, 365]
    let mp = (5 * doy + 2) / 153; // March-based month, [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix milliseconds (`>= 0`) as RFC 3339 UTC with milliseconds: `2026-11-27T10:30:00.100Z`.
pub fn rfc3339_ms(ms: i64) -> Result<String, Error> {
    if ms < 0 {
        return Err(Error(format!(
            "timestamp_ms must be a non-negative int, not {ms}"
        )));
    }
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return Err(Error(format!(
            "timestamp_ms {ms} out of range (years 0000 to 9999)"
        )));
    }
    Ok(format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    ))
}

// -- writers ----------------------------------------------------------------------------------

/// Writes keys, scalars and node trees in one format.
struct W {
    fmt: Format,
    out: Vec<u8>,
}

impl W {
    fn new(fmt: Format, cap: usize) -> W {
        W {
            fmt,
            out: Vec::with_capacity(cap),
        }
    }

    fn map_start(&mut self, n: usize) {
        match self.fmt {
            Format::Json => self.out.push(b'{'),
            Format::Msgpack => msgpack::write_map_len(&mut self.out, n),
        }
    }

    fn map_end(&mut self) {
        if self.fmt == Format::Json {
            self.out.push(b'}');
        }
    }

    fn array_start(&mut self, n: usize) {
        match self.fmt {
            Format::Json => self.out.push(b'['),
            Format::Msgpack => msgpack::write_array_len(&mut self.out, n),
        }
    }

    fn array_end(&mut self) {
        if self.fmt == Format::Json {
            self.out.push(b']');
        }
    }

    /// Separator before the i-th item of a map or array (JSON only).
    #[inline]
    fn sep(&mut self, i: usize) {
        if i > 0 && self.fmt == Format::Json {
            self.out.push(b',');
        }
    }

    /// A map key (`"k":` in JSON).
    #[inline]
    fn key(&mut self, k: &str) {
        match self.fmt {
            Format::Json => {
                json::write_str(&mut self.out, k);
                self.out.push(b':');
            }
            Format::Msgpack => msgpack::write_str(&mut self.out, k),
        }
    }

    /// A map key given as UTF-8 bytes; `clean`: it needs no JSON escaping.
    #[inline]
    fn key_bytes(&mut self, k: &[u8], clean: bool) {
        match self.fmt {
            Format::Json if clean => {
                self.out.push(b'"');
                base::put(&mut self.out, k);
                self.out.extend_from_slice(b"\":");
            }
            Format::Json => {
                json::write_str_bytes(&mut self.out, k);
                self.out.push(b':');
            }
            Format::Msgpack => msgpack::write_str_bytes(&mut self.out, k),
        }
    }

    /// A string given as UTF-8 bytes.
    #[inline]
    fn str_bytes(&mut self, s: &[u8]) {
        match self.fmt {
            Format::Json => json::write_str_bytes(&mut self.out, s),
            Format::Msgpack => msgpack::write_str_bytes(&mut self.out, s),
        }
    }

    fn str(&mut self, s: &str) {
        match self.fmt {
            Format::Json => json::write_str(&mut self.out, s),
            Format::Msgpack => msgpack::write_str(&mut self.out, s),
        }
    }

    fn u64(&mut self, u: u64) {
        match self.fmt {
            Format::Json => json::write_u64(&mut self.out, u),
            Format::Msgpack => msgpack::write_u64(&mut self.out, u),
        }
    }

    fn value(&mut self, v: &crate::value::Value<'_>) {
        match self.fmt {
            Format::Json => json::write_value(&mut self.out, v),
            Format::Msgpack => msgpack::write_value(&mut self.out, v),
        }
    }

    fn node(&mut self, n: &Node) {
        match (&n.kind, self.fmt) {
            (Kind::Leaf(v), _) => self.value(v),
            (Kind::Obj(o), Format::Json) => o.write_json(&mut self.out),
            (Kind::Obj(o), Format::Msgpack) => o.write_msgpack(&mut self.out),
        }
    }

    /// A value given as MessagePack (copied, or transcoded to JSON).
    #[inline]
    fn raw_value(&mut self, mp: &[u8]) {
        match self.fmt {
            Format::Msgpack => base::put(&mut self.out, mp),
            // The common cases, a float or a non-negative int (timestamps), without the general
            // transcoder.
            Format::Json => match mp {
                [0xcb, rest @ ..] if rest.len() == 8 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(rest);
                    json::write_f64(&mut self.out, f64::from_be_bytes(b));
                }
                [0xcf, rest @ ..] if rest.len() == 8 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(rest);
                    json::write_u64(&mut self.out, u64::from_be_bytes(b));
                }
                &[b] if b < 0x80 => json::write_u64(&mut self.out, u64::from(b)),
                _ => msgpack::transcode_json(mp, &mut self.out),
            },
        }
    }

    /// `"type":T,"seq":S,"version":V` (the first three members of every message).
    fn envelope(&mut self, members: usize, ty: &str, seq: u64, version: u64) {
        self.map_start(members);
        self.key("type");
        self.str(ty);
        self.sep(1);
        self.key("seq");
        self.u64(seq);
        self.sep(1);
        self.key("version");
        self.u64(version);
    }
}

fn subscribed<S: AsRef<str>>(channels: Option<&[S]>, section: &str) -> bool {
    match channels {
        None => true,
        Some(ch) => ch.iter().any(|c| c.as_ref() == section),
    }
}

/// `{"type":"snapshot","seq":S,"version":V,"epoch":E,"timestamp":T,"data":{section: value, ...}}`
/// with the subscribed sections present in the document, in document order.
pub fn encode_snapshot<S: AsRef<str>>(
    doc: &StateDoc,
    fmt: Format,
    channels: Option<&[S]>,
    seq: u64,
    epoch: &str,
    timestamp_ms: i64,
    size_hint: usize,
) -> Result<Vec<u8>, Error> {
    let ts = rfc3339_ms(timestamp_ms)?;
    let mut w = W::new(fmt, size_hint.max(256));
    w.envelope(6, "snapshot", seq, doc.version());
    w.sep(1);
    w.key("epoch");
    w.str(epoch);
    w.sep(1);
    w.key("timestamp");
    w.str(&ts);
    w.sep(1);
    w.key("data");
    let root = doc.root();
    let count = root
        .children
        .keys()
        .filter(|k| subscribed(channels, k))
        .count();
    w.map_start(count);
    let mut i = 0;
    for (k, n) in &root.children {
        if !subscribed(channels, k) {
            continue;
        }
        w.sep(i);
        i += 1;
        w.key(k);
        w.node(n);
    }
    w.map_end();
    w.map_end();
    Ok(w.out)
}

/// The `update` message of `cs` for `channels`, or `None` if it has nothing for them.
///
/// `changes`: `{"type":"update","seq":S,"version":V,"timestamp":T,"changes":{..},"removed":[..]}`
/// (`removed` only when not empty). `json-patch`: `{..., "patch":[{"op","path","value"}, ...]}`
/// with the entries in walk order.
pub fn encode_update<S: AsRef<str>>(
    cs: &ChangeSet,
    fmt: Format,
    diff: DiffForm,
    channels: Option<&[S]>,
    seq: u64,
    timestamp_ms: i64,
) -> Result<Option<Vec<u8>>, Error> {
    let ts = rfc3339_ms(timestamp_ms)?;
    let mask = cs.section_mask(channels);
    let all = mask.iter().all(|&m| m);
    let mask = &mask;
    let selected = || {
        cs.entries()
            .filter(move |e| all || mask.get(e.section as usize).copied().unwrap_or(false))
    };
    // Counts per section were taken by the walk.
    let (mut n_set, mut n_removed) = (0usize, 0usize);
    for (i, &(set, removed)) in cs.section_counts().iter().enumerate() {
        if all || mask.get(i).copied().unwrap_or(false) {
            n_set += set as usize;
            n_removed += removed as usize;
        }
    }
    if n_set + n_removed == 0 {
        return Ok(None);
    }
    let clean = cs.pointers_json_clean();
    let (ptr_bytes, val_bytes) = cs.buffer_sizes();
    let size = ptr_bytes + 2 * val_bytes + 8 * (n_set + n_removed);
    let mut w = W::new(fmt, 128 + size);
    match diff {
        DiffForm::Changes => {
            let members = if n_removed > 0 { 6 } else { 5 };
            w.envelope(members, "update", seq, cs.to_version);
            w.sep(1);
            w.key("timestamp");
            w.str(&ts);
            w.sep(1);
            w.key("changes");
            w.map_start(n_set);
            for (i, e) in selected().filter(|e| !e.is_removed()).enumerate() {
                w.sep(i);
                w.key_bytes(e.pointer_bytes, clean);
                w.raw_value(e.value_msgpack);
            }
            w.map_end();
            if n_removed > 0 {
                w.sep(1);
                w.key("removed");
                w.array_start(n_removed);
                for (i, e) in selected().filter(|e| e.is_removed()).enumerate() {
                    w.sep(i);
                    w.str_bytes(e.pointer_bytes);
                }
                w.array_end();
            }
            w.map_end();
        }
        DiffForm::JsonPatch => {
            w.envelope(5, "update", seq, cs.to_version);
            w.sep(1);
            w.key("timestamp");
            w.str(&ts);
            w.sep(1);
            w.key("patch");
            w.array_start(n_set + n_removed);
            for (i, e) in selected().enumerate() {
                w.sep(i);
                let op = match e.kind {
                    EntryKind::Removed => "remove",
                    EntryKind::Replace => "replace",
                    EntryKind::Add => "add",
                };
                w.map_start(if e.is_removed() { 2 } else { 3 });
                w.key("op");
                w.str(op);
                w.sep(1);
                w.key("path");
                w.str_bytes(e.pointer_bytes);
                if !e.is_removed() {
                    w.sep(1);
                    w.key("value");
                    w.raw_value(e.value_msgpack);
                }
                w.map_end();
            }
            w.array_end();
            w.map_end();
        }
    }
    Ok(Some(w.out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
        // 2100 is not a leap year.
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        // Walk day by day over 1600..2400 and check continuity against a naive calendar.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut days = -135_140; // 1600-01-01
        for y in 1600..2400 {
            for m in 1..=12u32 {
                let len = match m {
                    2 if leap(y) => 29,
                    2 => 28,
                    4 | 6 | 9 | 11 => 30,
                    _ => 31,
                };
                for d in 1..=len {
                    assert_eq!(civil_from_days(days), (y, m, d));
                    days += 1;
                }
            }
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(0).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_ms(1_795_775_400_100).unwrap(),
            "2026-11-27T10:30:00.100Z"
        );
        assert!(rfc3339_ms(-1).is_err());
        assert_eq!(
            rfc3339_ms(951_782_400_000).unwrap(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_ms(253_402_300_799_999).unwrap(),
            "9999-12-31T23:59:59.999Z"
        );
        assert!(rfc3339_ms(253_402_300_800_000).is_err());
        assert!(rfc3339_ms(i64::MAX).is_err());
        assert!(rfc3339_ms(i64::MIN).is_err());
    }

    fn doc() -> StateDoc {
        let mut d = StateDoc::new(["market_data", "orders"], 100);
        d.merge(
            "/market_data/BTC",
            json::parse(br#"{"last":50100.0,"qty":3}"#).unwrap(),
        )
        .unwrap();
        d.merge("/orders/1", json::parse(br#"{"side":"buy"}"#).unwrap())
            .unwrap();
        d
    }

    #[test]
    fn snapshot_json_and_msgpack() {
        let d = doc();
        let b = encode_snapshot::<&str>(&d, Format::Json, None, 7, "ep", 100, 0).unwrap();
        assert_eq!(
            String::from_utf8(b).unwrap(),
            r#"{"type":"snapshot","seq":7,"version":2,"epoch":"ep","timestamp":"1970-01-01T00:00:00.100Z","data":{"market_data":{"BTC":{"last":50100.0,"qty":3}},"orders":{"1":{"side":"buy"}}}}"#
        );
        let b =
            encode_snapshot(&d, Format::Json, Some(&["orders", "nope"]), 7, "ep", 100, 0).unwrap();
        let v = json::parse(&b).unwrap();
        let m = msgpack::to_vec(&v);
        let b2 = encode_snapshot(
            &d,
            Format::Msgpack,
            Some(&["orders", "nope"]),
            7,
            "ep",
            100,
            0,
        )
        .unwrap();
        assert_eq!(m, b2);
        assert!(String::from_utf8(b)
            .unwrap()
            .ends_with(r#""data":{"orders":{"1":{"side":"buy"}}}}"#));
    }

    #[test]
    fn updates() {
        let mut d = doc();
        d.merge("/market_data/BTC/last", Value::Float(50200.0))
            .unwrap();
        d.remove("/orders/1").unwrap();
        d.merge("/orders/2", json::parse(br#"{"side":"sell"}"#).unwrap())
            .unwrap();
        let cs = d.changes_since(2).unwrap().unwrap();
        let b = encode_update::<&str>(&cs, Format::Json, DiffForm::Changes, None, 9, 0)
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(b).unwrap(),
            r#"{"type":"update","seq":9,"version":5,"timestamp":"1970-01-01T00:00:00.000Z","changes":{"/market_data/BTC/last":50200.0,"/orders/2":{"side":"sell"}},"removed":["/orders/1"]}"#
        );
        let b = encode_update::<&str>(&cs, Format::Json, DiffForm::JsonPatch, None, 9, 0)
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(b).unwrap(),
            r#"{"type":"update","seq":9,"version":5,"timestamp":"1970-01-01T00:00:00.000Z","patch":[{"op":"replace","path":"/market_data/BTC/last","value":50200.0},{"op":"remove","path":"/orders/1"},{"op":"add","path":"/orders/2","value":{"side":"sell"}}]}"#
        );
        let b = encode_update(
            &cs,
            Format::Json,
            DiffForm::Changes,
            Some(&["market_data"]),
            9,
            0,
        )
        .unwrap()
        .unwrap();
        assert!(!String::from_utf8(b).unwrap().contains("removed"));
        assert!(
            encode_update(&cs, Format::Json, DiffForm::Changes, Some(&["x"]), 9, 0)
                .unwrap()
                .is_none()
        );
        assert!(
            encode_update::<&str>(&cs, Format::Json, DiffForm::Changes, Some(&[]), 9, 0)
                .unwrap()
                .is_none()
        );
        // msgpack carries the same message.
        for diff in [DiffForm::Changes, DiffForm::JsonPatch] {
            let j = encode_update::<&str>(&cs, Format::Json, diff, None, 9, 0)
                .unwrap()
                .unwrap();
            let m = encode_update::<&str>(&cs, Format::Msgpack, diff, None, 9, 0)
                .unwrap()
                .unwrap();
            assert_eq!(msgpack::to_vec(&json::parse(&j).unwrap()), m);
        }
    }

    #[test]
    fn pointers_escaped_in_json() {
        let mut d = StateDoc::new(["s"], 10);
        d.merge("/s/k", Value::UInt(1)).unwrap();
        let key = "q\"u\\o\nte/~";
        let path = crate::pointer::from_tokens(&["s", key]);
        d.merge(&path, Value::UInt(2)).unwrap();
        let cs = d.changes_since(0).unwrap().unwrap();
        for diff in [DiffForm::Changes, DiffForm::JsonPatch] {
            let b = encode_update::<&str>(&cs, Format::Json, diff, None, 1, 0)
                .unwrap()
                .unwrap();
            let v = json::parse(&b).unwrap();
            assert_eq!(
                msgpack::to_vec(&v),
                encode_update::<&str>(&cs, Format::Msgpack, diff, None, 1, 0)
                    .unwrap()
                    .unwrap()
            );
            let text = String::from_utf8(b).unwrap();
            assert!(text.contains("q\\\"u\\\\o\\nte~1~0"), "{text}");
        }
    }

    #[test]
    fn format_names() {
        assert_eq!(Format::parse("json").unwrap(), Format::Json);
        assert_eq!(Format::parse("msgpack").unwrap(), Format::Msgpack);
        assert!(Format::parse("xml").is_err());
        assert_eq!(DiffForm::parse("json-patch").unwrap(), DiffForm::JsonPatch);
        assert!(DiffForm::parse("patch").is_err());
    }
}
