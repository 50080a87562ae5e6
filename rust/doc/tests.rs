use std::borrow::Cow;

use super::*;
use crate::encode::{encode_snapshot, encode_update, DiffForm, Format};
use crate::value::maps_equal;
use crate::value::Map;
use crate::{json, msgpack};

fn j(s: &str) -> Value<'static> {
    json::parse(s.as_bytes())
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .into_owned()
}

fn state(d: &StateDoc) -> Value<'static> {
    d.get_value("").unwrap()
}

fn at(d: &StateDoc, p: &str) -> Option<Value<'static>> {
    match d.get_value(p) {
        Ok(v) => Some(v),
        Err(GetError::Missing) => None,
        Err(GetError::Invalid(e)) => panic!("{e}"),
    }
}

#[test]
fn sections_start_empty() {
    let d = StateDoc::new(["market_data", "orders", "orders"], 10);
    assert_eq!(d.version(), 0);
    assert_eq!(state(&d), j(r#"{"market_data":{},"orders":{}}"#));
    let s = d.stats();
    assert_eq!((s.version, s.floor, s.tombstones, s.nodes), (0, 0, 0, 2));
}

#[test]
fn rfc7386_appendix_a() {
    let cases = [
        (r#"{"a":"b"}"#, r#"{"a":"c"}"#, Some(r#"{"a":"c"}"#)),
        (r#"{"a":"b"}"#, r#"{"b":"c"}"#, Some(r#"{"a":"b","b":"c"}"#)),
        (r#"{"a":"b"}"#, r#"{"a":null}"#, Some(r#"{}"#)),
        (
            r#"{"a":"b","b":"c"}"#,
            r#"{"a":null}"#,
            Some(r#"{"b":"c"}"#),
        ),
        (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, Some(r#"{"a":"c"}"#)),
        (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, Some(r#"{"a":["b"]}"#)),
        (
            r#"{"a":{"b":"c"}}"#,
            r#"{"a":{"b":"d","c":null}}"#,
            Some(r#"{"a":{"b":"d"}}"#),
        ),
        (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, Some(r#"{"a":[1]}"#)),
        (r#"["a","b"]"#, r#"["c","d"]"#, Some(r#"["c","d"]"#)),
        (r#"{"a":"b"}"#, r#"["c"]"#, Some(r#"["c"]"#)),
        // A null patch at a non-root path removes the value (RFC: the result is null).
        (r#"{"a":"foo"}"#, "null", None),
        (r#"{"a":"foo"}"#, r#""bar""#, Some(r#""bar""#)),
        (r#"{"e":null}"#, r#"{"a":1}"#, Some(r#"{"e":null,"a":1}"#)),
        (r#"[1,2]"#, r#"{"a":"b","c":null}"#, Some(r#"{"a":"b"}"#)),
        (
            r#"{}"#,
            r#"{"a":{"bb":{"ccc":null}}}"#,
            Some(r#"{"a":{"bb":{}}}"#),
        ),
    ];
    for (target, patch, result) in cases {
        let mut d = StateDoc::new(["s"], 100);
        assert!(d.replace("/s/t", j(target)).unwrap());
        d.merge("/s/t", j(patch)).unwrap();
        assert_eq!(at(&d, "/s/t"), result.map(j), "{target} + {patch}");
        if let Some(r) = result {
            // The same merge applied at the parent gives the same result.
            let mut d2 = StateDoc::new(["s"], 100);
            d2.replace("/s/t", j(target)).unwrap();
            d2.merge("/s", j(&format!(r#"{{"t":{patch}}}"#))).unwrap();
            assert_eq!(at(&d2, "/s/t"), Some(j(r)));
        }
    }
    // And at the root, for object targets.
    let mut d = StateDoc::new::<&str>([], 100);
    d.replace("", j(r#"{"a":"b","c":{"d":1}}"#)).unwrap();
    d.merge("", j(r#"{"a":null,"c":{"e":[1]}}"#)).unwrap();
    assert_eq!(state(&d), j(r#"{"c":{"d":1,"e":[1]}}"#));
}

#[test]
fn merge_versions_and_noops() {
    let mut d = StateDoc::new(["market_data"], 100);
    assert!(d
        .merge("/market_data/BTC", j(r#"{"price":1.5,"qty":3}"#))
        .unwrap());
    assert_eq!(d.version(), 1);
    assert!(!d.merge("/market_data/BTC", j(r#"{"price":1.5}"#)).unwrap());
    assert!(!d.merge("/market_data/BTC/qty", j("3")).unwrap());
    assert!(!d.merge("/market_data/BTC", j("{}")).unwrap());
    assert!(!d.merge("/market_data/BTC/nope", j("null")).unwrap());
    assert!(!d.merge("/market_data/BTC", j(r#"{"nope":null}"#)).unwrap());
    assert_eq!(d.version(), 1);
    // 3 != 3.0, true != 1.
    assert!(d.merge("/market_data/BTC/qty", j("3.0")).unwrap());
    assert!(d.merge("/market_data/BTC/qty", j("true")).unwrap());
    assert!(d.merge("/market_data/BTC/qty", j("1")).unwrap());
    assert!(d.merge("/market_data/BTC/price", j("-0.0")).unwrap());
    assert!(d.merge("/market_data/BTC/price", j("0.0")).unwrap());
    assert_eq!(d.version(), 6);
    // Missing intermediates are created.
    assert!(d
        .merge("/a/b/c", j(r#"{"x":null,"y":{"z":null}}"#))
        .unwrap());
    assert_eq!(at(&d, "/a"), Some(j(r#"{"b":{"c":{"y":{}}}}"#)));
    assert_eq!(d.version(), 7);
    // A null patch at a missing path changes nothing and creates nothing.
    assert!(!d.merge("/q/r", Value::Null).unwrap());
    assert_eq!(at(&d, "/q"), None);
    assert_eq!(d.version(), 7);
    // merge(path, None) removes.
    assert!(d.merge("/a/b", Value::Null).unwrap());
    assert_eq!(at(&d, "/a"), Some(j("{}")));
    // Arrays are atomic and compared whole.
    assert!(d.merge("/arr", j("[1,{\"a\":1,\"b\":2}]")).unwrap());
    assert!(!d.merge("/arr", j("[1,{\"b\":2,\"a\":1}]")).unwrap());
    assert!(d.merge("/arr", j("[1,{\"b\":2,\"a\":1.0}]")).unwrap());
}

#[test]
fn replace_is_structural() {
    let mut d = StateDoc::new(["orders"], 100);
    d.replace("/orders/1", j(r#"{"a":1,"b":{"c":2,"d":3},"e":[1]}"#))
        .unwrap();
    assert_eq!(d.version(), 1);
    assert!(!d
        .replace("/orders/1", j(r#"{"e":[1],"b":{"d":3,"c":2},"a":1}"#))
        .unwrap());
    assert!(d
        .replace("/orders/1", j(r#"{"b":{"c":2},"a":null,"f":"x"}"#))
        .unwrap());
    assert_eq!(d.version(), 2);
    assert_eq!(
        at(&d, "/orders/1"),
        Some(j(r#"{"a":null,"b":{"c":2},"f":"x"}"#))
    );
    // Member order of the target is kept; new members come last.
    let Value::Object(m) = at(&d, "/orders/1").unwrap() else {
        panic!()
    };
    let keys: Vec<_> = m.iter().map(|(k, _)| k.as_ref()).collect();
    assert_eq!(keys, ["a", "b", "f"]);
    let cs = d.changes_since(1).unwrap().unwrap();
    // Walk order: the removals of /orders/1 come before those of its child b.
    assert_eq!(
        cs.removed().collect::<Vec<_>>(),
        ["/orders/1/e", "/orders/1/b/d"]
    );
    let changes: Vec<_> = cs.changes().map(|(p, _)| p).collect();
    assert_eq!(changes, ["/orders/1/a", "/orders/1/f"]);
    // The root: replace keeps sections that are in the value, removes the rest.
    assert!(d
        .replace(
            "",
            j(r#"{"orders":{"1":{"a":null,"b":{"c":2},"f":"x"}},"x":1}"#)
        )
        .unwrap());
    assert!(!d
        .replace(
            "",
            j(r#"{"orders":{"1":{"a":null,"b":{"c":2},"f":"x"}},"x":1}"#)
        )
        .unwrap());
    assert_eq!(d.version(), 3);
    // Replacing with null stores a null.
    assert!(d.replace("/x", Value::Null).unwrap());
    assert_eq!(at(&d, "/x"), Some(Value::Null));
}

#[test]
fn remove() {
    let mut d = StateDoc::new(["orders"], 100);
    d.merge("/orders/1", j(r#"{"a":1}"#)).unwrap();
    assert!(d.remove("/orders/1/a").unwrap());
    assert!(!d.remove("/orders/1/a").unwrap());
    assert!(!d.remove("/orders/2/a").unwrap());
    assert!(!d.remove("/nope/2/a").unwrap());
    assert!(d.remove("/orders").unwrap());
    assert_eq!(state(&d), j("{}"));
    assert_eq!(d.version(), 3);
    assert_eq!(d.stats().tombstones, 2);
}

#[test]
fn rejections_are_atomic() {
    let mut d = StateDoc::new(["s"], 100);
    d.merge("/s/leaf", j("1")).unwrap();
    d.merge("/s/arr", j("[1,{\"a\":1}]")).unwrap();
    d.merge("/s/obj", j(r#"{"a":{"b":1}}"#)).unwrap();
    let before = state(&d);
    let v = d.version();
    let check = |d: &StateDoc, e: Error, start: &str, word: &str| {
        assert!(e.0.starts_with(start), "{e} does not start with {start}");
        assert!(e.0.contains(word), "{e} does not mention {word}");
        assert_eq!(state(d), before);
        assert_eq!(d.version(), v);
    };
    let e = d.merge("/s/leaf/x", j("1")).unwrap_err();
    check(&d, e, "/s/leaf/x: ", "not an object");
    let e = d.merge("/s/leaf/x/y", j(r#"{"a":1}"#)).unwrap_err();
    check(&d, e, "/s/leaf/x/y: ", "not an object");
    let e = d.replace("/s/leaf/x", j("1")).unwrap_err();
    check(&d, e, "/s/leaf/x: ", "not an object");
    let e = d.remove("/s/leaf/x").unwrap_err();
    check(&d, e, "/s/leaf/x: ", "not an object");
    let e = d.merge("/s/leaf/x", Value::Null).unwrap_err();
    check(&d, e, "/s/leaf/x: ", "not an object");
    let e = d.merge("/s/arr/0", j("1")).unwrap_err();
    check(&d, e, "/s/arr/0: ", "array");
    let e = d.merge("/s/arr/1/a", j("2")).unwrap_err();
    check(&d, e, "/s/arr/1/a: ", "array");
    let e = d.remove("/s/arr/0").unwrap_err();
    check(&d, e, "/s/arr/0: ", "array");
    let e = d.merge("s", j("1")).unwrap_err();
    check(&d, e, "invalid JSON pointer 's'", "pointer");
    let e = d.merge("/s/~2", j("1")).unwrap_err();
    check(&d, e, "invalid JSON pointer '/s/~2'", "pointer");
    let e = d.merge("", j("1")).unwrap_err();
    check(&d, e, "(root): ", "not an object");
    let e = d.merge("", Value::Null).unwrap_err();
    check(&d, e, "(root): ", "not an object");
    let e = d.replace("", j("[]")).unwrap_err();
    check(&d, e, "(root): ", "not an object");
    let e = d.remove("").unwrap_err();
    check(&d, e, "(root): ", "root");
    let deep = "/x".repeat(MAX_DEPTH_TOKENS + 1);
    let e = d.merge(&deep, j("1")).unwrap_err();
    check(&d, e, "invalid JSON pointer '/x/x", "depth");
    assert!(matches!(d.get("/s/leaf/x"), Err(GetError::Missing)));
    assert!(matches!(d.get("/s/arr/0"), Err(GetError::Missing)));
    assert!(matches!(d.get("s"), Err(GetError::Invalid(_))));
    assert!(matches!(d.get("/s/nope"), Err(GetError::Missing)));
    assert!(matches!(d.get("/s/nope/deeper"), Err(GetError::Missing)));
}

const MAX_DEPTH_TOKENS: usize = crate::base::MAX_DEPTH;

#[test]
fn merge_json_matches_merge() {
    let payloads: &[&[u8]] = &[
        r#"{"a":1,"b":{"c":[1,2.5,"x"],"d":null},"e":"é"}"#.as_bytes(),
        br#"{"a":1,"b":{"c":[1,2.5,"x"]}}"#,
        br#"{"a":1.0,"b":{"c":[1,2.5,"y"],"n":{"x":null}}}"#,
        br#"{"a":"q"uoted","dup":1,"dup":2}"#,
        br#"{"big":123456789012345678901234567890e-10,"arr":[{"k":1,"j":2}]}"#,
        br#"{"arr":[{"j":2,"k":1}]}"#,
        br#"[1,2]"#,
        br#"{"b":null}"#,
        b"null",
        b"7",
    ];
    let mut a = StateDoc::new(["s"], 100);
    let mut b = StateDoc::new(["s"], 100);
    for p in payloads {
        for path in ["/s/x", "/s/y/z", ""] {
            let ra = json::parse(p)
                .map_err(|e| Error(e.render(path)))
                .and_then(|v| a.merge(path, v));
            let rb = b.merge_json(path, p);
            assert_eq!(ra, rb, "{}", String::from_utf8_lossy(p));
            assert_eq!(state(&a), state(&b));
        }
    }
    assert_eq!(a.changes_since(0).unwrap(), b.changes_since(0).unwrap());
    // Errors are the parser's, at the path.
    let e = b.merge_json("/s/x", br#"{"a":[1,1e999]}"#).unwrap_err();
    assert_eq!(e.0, "/s/x/a/1: non-finite float: 1e999 overflows a float");
    let e = b.merge_json("/s/x", b"{").unwrap_err();
    assert!(e.0.starts_with("/s/x: invalid JSON"), "{e}");
    let e = b.merge_json("s", b"1").unwrap_err();
    assert!(e.0.contains("pointer"));
}

#[test]
fn max_depth_paths_and_values() {
    let mut d = StateDoc::new::<&str>([], 100);
    let path = "/x".repeat(MAX_DEPTH_TOKENS);
    let deep = format!(
        "{}{}",
        "[".repeat(MAX_DEPTH_TOKENS),
        "]".repeat(MAX_DEPTH_TOKENS)
    );
    assert!(d.merge(&path, j(&deep)).unwrap());
    let b = encode_snapshot::<&str>(&d, Format::Msgpack, None, 0, "", 0, 0).unwrap();
    assert!(!b.is_empty());
    let cs = d.changes_since(0).unwrap().unwrap();
    assert_eq!(cs.len(), 1);
}

// -- change tracking --------------------------------------------------------------------------

fn ptr_tokens(p: &str) -> Vec<String> {
    crate::pointer::parse(p)
        .unwrap()
        .tokens()
        .map(Cow::into_owned)
        .collect()
}

/// The object that holds the last token of `toks` (which must exist), and that token.
fn parent_mut<'v>(
    root: &'v mut Value<'static>,
    toks: &[String],
) -> Result<&'v mut Map<'static>, String> {
    let mut cur = root;
    for t in &toks[..toks.len() - 1] {
        let Value::Object(m) = cur else {
            return Err(format!("{t}: not an object"));
        };
        let Some(i) = m.iter().position(|(k, _)| k == t) else {
            return Err(format!("{t}: missing parent"));
        };
        cur = &mut m[i].1;
    }
    match cur {
        Value::Object(m) => Ok(m),
        _ => Err("parent not an object".into()),
    }
}

fn apply_remove(root: &mut Value<'static>, p: &str) -> Result<(), String> {
    let toks = ptr_tokens(p);
    let m = parent_mut(root, &toks)?;
    let last = toks.last().unwrap();
    let i = m
        .iter()
        .position(|(k, _)| k == last)
        .ok_or_else(|| format!("{p}: remove of a missing key"))?;
    m.remove(i);
    Ok(())
}

fn apply_set(
    root: &mut Value<'static>,
    p: &str,
    v: Value<'static>,
    must_exist: bool,
) -> Result<(), String> {
    let toks = ptr_tokens(p);
    let m = parent_mut(root, &toks)?;
    let last = toks.last().unwrap();
    match m.iter().position(|(k, _)| k == last) {
        Some(i) => m[i].1 = v,
        None if must_exist => return Err(format!("{p}: replace of a missing key")),
        None => m.push((Cow::Owned(last.clone()), v)),
    }
    Ok(())
}

/// Applies `cs` to `old` both ways (changes form, json-patch form), checks both give `now`.
fn check_changeset(old: &Value<'static>, now: &Value<'static>, cs: &ChangeSet) {
    let (Value::Object(_), Value::Object(now_m)) = (old, now) else {
        panic!()
    };
    // changes form: removals, then changes.
    let mut a = old.clone();
    for p in cs.removed() {
        apply_remove(&mut a, p).unwrap_or_else(|e| panic!("{e} in {cs:#?}"));
    }
    for (p, v) in cs.changes() {
        apply_set(&mut a, p, v.into_owned(), false).unwrap_or_else(|e| panic!("{e}"));
    }
    let Value::Object(am) = &a else { panic!() };
    assert!(
        maps_equal(am, now_m),
        "changes form:\n{a:?}\n!=\n{now:?}\n{cs:#?}"
    );
    // json-patch form, strictly, in entry order.
    let mut b = old.clone();
    for e in cs.entries() {
        match e.kind {
            EntryKind::Removed => apply_remove(&mut b, e.pointer()),
            EntryKind::Add => apply_set(&mut b, e.pointer(), e.value().into_owned(), false),
            EntryKind::Replace => apply_set(&mut b, e.pointer(), e.value().into_owned(), true),
        }
        .unwrap_or_else(|err| panic!("{err} in {cs:#?}"));
    }
    let Value::Object(bm) = &b else { panic!() };
    assert!(maps_equal(bm, now_m), "json-patch form");
}

/// Checks `changes_since(v)` for every answerable `v` against the recorded history.
fn check_all(d: &StateDoc, history: &[Value<'static>]) {
    let now = state(d);
    for (v, old) in history.iter().enumerate() {
        let v = v as u64;
        match d.changes_since(v).unwrap() {
            None => assert!(v < d.floor()),
            Some(cs) => {
                assert!(v >= d.floor());
                assert_eq!((cs.from_version, cs.to_version), (v, d.version()));
                check_changeset(old, &now, &cs);
                // Sections of the entries are the first tokens of their pointers.
                for e in cs.entries() {
                    let first = ptr_tokens(e.pointer()).remove(0);
                    assert_eq!(cs.sections()[e.section as usize].as_str(), first.as_str());
                }
            }
        }
    }
    assert!(d.changes_since(d.version() + 1).is_err());
    let cs = d.changes_since(d.version()).unwrap().unwrap();
    assert!(cs.is_empty());
}

#[test]
fn changes_since_basic_order() {
    let mut d = StateDoc::new(["market_data", "orders"], 100);
    d.merge("/market_data/BTC", j(r#"{"last":1.0,"bid":0.5}"#))
        .unwrap();
    d.merge("/orders/1", j(r#"{"s":"new"}"#)).unwrap();
    d.merge("/orders/2", j(r#"{"s":"new"}"#)).unwrap();
    d.merge("/orders/3", j(r#"{"s":"new"}"#)).unwrap();
    let v = d.version();
    d.merge("/market_data/BTC/last", j("2.0")).unwrap();
    d.remove("/orders/3").unwrap();
    d.merge("/orders", j(r#"{"2":null,"1":null}"#)).unwrap();
    d.merge("/orders/4", j(r#"{"s":"new"}"#)).unwrap();
    d.merge("/orders/5", j(r#"{"s":"new"}"#)).unwrap();
    d.remove("/orders/5").unwrap();
    let cs = d.changes_since(v).unwrap().unwrap();
    let got: Vec<(String, Option<String>, bool)> = cs
        .entries()
        .map(|e| match e.kind {
            EntryKind::Removed => (e.pointer().to_string(), None, false),
            kind => (
                e.pointer().to_string(),
                Some(String::from_utf8(json::to_vec(&e.value())).unwrap()),
                kind == EntryKind::Add,
            ),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("/market_data/BTC/last".into(), Some("2.0".into()), false),
            ("/orders/3".into(), None, false),
            ("/orders/1".into(), None, false),
            ("/orders/2".into(), None, false),
            ("/orders/4".into(), Some(r#"{"s":"new"}"#.into()), true),
        ]
    );
    // Coalescing: several changes to one path give one entry with the latest value.
    let v = d.version();
    for i in 0..5 {
        d.merge("/market_data/BTC/last", Value::UInt(i)).unwrap();
    }
    let cs = d.changes_since(v).unwrap().unwrap();
    assert_eq!(cs.len(), 1);
    assert_eq!(cs.changes().next().unwrap().1, Value::UInt(4));
}

#[test]
fn kind_changes_are_new_nodes() {
    let mut d = StateDoc::new(["s"], 100);
    d.merge("/s/a", j(r#"{"x":1}"#)).unwrap();
    let v = d.version();
    d.merge("/s/a", j("5")).unwrap();
    let cs = d.changes_since(v).unwrap().unwrap();
    let e = cs.entries().next().unwrap();
    assert_eq!((e.kind, e.value()), (EntryKind::Add, j("5")));
    d.merge("/s/a", j(r#"{"y":2}"#)).unwrap();
    let cs = d.changes_since(v).unwrap().unwrap();
    assert_eq!(cs.len(), 1);
    let e = cs.entries().next().unwrap();
    assert_eq!((e.kind, e.value()), (EntryKind::Add, j(r#"{"y":2}"#)));
    // The replaced nodes count as removed: two tombstones so far.
    assert_eq!(d.stats().tombstones, 2);
    // A key that existed at v and changed kind before being removed is reported removed.
    d.remove("/s/a").unwrap();
    let cs = d.changes_since(v).unwrap().unwrap();
    assert_eq!(cs.removed().collect::<Vec<_>>(), ["/s/a"]);
    assert_eq!(d.stats().tombstones, 3);
    // Created and removed after v: not reported.
    let v2 = d.version();
    d.merge("/s/b", j("1")).unwrap();
    d.remove("/s/b").unwrap();
    let cs = d.changes_since(v2).unwrap().unwrap();
    assert!(cs.is_empty());
}

#[test]
fn recreated_key_keeps_history() {
    let mut d = StateDoc::new(["s"], 100);
    d.merge("/s/k", j("1")).unwrap(); // 1
    let v = d.version();
    d.remove("/s/k").unwrap(); // 2
    d.merge("/s/k", j("2")).unwrap(); // 3
    d.remove("/s/k").unwrap(); // 4
    let cs = d.changes_since(v).unwrap().unwrap();
    assert_eq!(cs.removed().collect::<Vec<_>>(), ["/s/k"]);
    // For 2 <= v' < 3 the key did not exist: nothing to remove.
    assert!(d.changes_since(2).unwrap().unwrap().is_empty());
    // Re-created and present: emitted as an add.
    d.merge("/s/k", j("3")).unwrap(); // 5
    let cs = d.changes_since(v).unwrap().unwrap();
    assert_eq!(cs.len(), 1);
    let e = cs.entries().next().unwrap();
    assert_eq!((e.kind, e.value()), (EntryKind::Add, j("3")));
}

#[test]
fn removal_order_uses_the_latest_removal_of_a_key() {
    let mut d = StateDoc::new(["s"], 100);
    d.merge("/s", j(r#"{"a":1,"b":1}"#)).unwrap(); // 1
    d.remove("/s/b").unwrap(); // 2
    d.remove("/s/a").unwrap(); // 3
    d.merge("/s/b", j("1")).unwrap(); // 4
    d.remove("/s/b").unwrap(); // 5
                               // At v=1 both existed; a was last removed at 3, b at 5.
    let cs = d.changes_since(1).unwrap().unwrap();
    assert_eq!(cs.removed().collect::<Vec<_>>(), ["/s/a", "/s/b"]);
    // Many tombstones in one object (the hash path of latest_removals).
    let mut d = StateDoc::new(["s"], 1000);
    for i in 0..50 {
        d.merge(&format!("/s/k{i:02}"), Value::UInt(i)).unwrap();
    }
    let v = d.version();
    for i in (0..50).rev() {
        d.remove(&format!("/s/k{i:02}")).unwrap();
    }
    for i in 0..50 {
        d.merge(&format!("/s/k{i:02}"), Value::UInt(i)).unwrap();
    }
    for i in 0..50 {
        d.remove(&format!("/s/k{i:02}")).unwrap();
    }
    let cs = d.changes_since(v).unwrap().unwrap();
    let want: Vec<String> = (0..50).map(|i| format!("/s/k{i:02}")).collect();
    assert_eq!(cs.removed().collect::<Vec<_>>(), want);
    // Same removal version: by key.
    let mut d = StateDoc::new(["s"], 100);
    d.merge("/s", j(r#"{"z":1,"b":1,"a":1}"#)).unwrap();
    d.replace("/s", j("{}")).unwrap();
    let cs = d.changes_since(1).unwrap().unwrap();
    assert_eq!(cs.removed().collect::<Vec<_>>(), ["/s/a", "/s/b", "/s/z"]);
}

#[test]
fn horizon_and_floor() {
    let mut d = StateDoc::new(["s"], 3);
    let mut history = vec![state(&d)];
    for i in 0..6 {
        d.merge(&format!("/s/k{i}"), Value::UInt(i)).unwrap();
        history.push(state(&d));
    }
    assert_eq!(d.floor(), 0);
    for i in 0..3 {
        d.remove(&format!("/s/k{i}")).unwrap(); // versions 7, 8, 9
        history.push(state(&d));
    }
    assert_eq!(d.floor(), 0);
    assert_eq!(d.stats().tombstones, 3);
    d.remove("/s/k3").unwrap(); // 10: drops the removal at 7
    history.push(state(&d));
    assert_eq!(d.floor(), 7);
    assert_eq!(d.stats().tombstones, 3);
    assert!(d.changes_since(6).unwrap().is_none());
    assert!(d.changes_since(7).unwrap().is_some());
    check_all(&d, &history);
    // The tombstones themselves are gone from the object.
    assert_eq!(d.root.children["s"].as_obj().unwrap().tombs.len(), 3);
    // One op removing many keys.
    d.replace("/s", j("{}")).unwrap(); // 11: removes k4, k5; the log drops 8 and 9
    history.push(state(&d));
    assert_eq!(d.floor(), 9);
    assert_eq!(d.stats().tombstones, 3);
    check_all(&d, &history);
    // max_tombstones = 0: every removal moves the floor.
    let mut d = StateDoc::new(["s"], 0);
    d.merge("/s/a", j("1")).unwrap();
    d.remove("/s/a").unwrap();
    assert_eq!(d.floor(), 2);
    assert!(d.changes_since(1).unwrap().is_none());
    assert!(d.changes_since(2).unwrap().unwrap().is_empty());
}

#[test]
fn horizon_prunes_tombstones_of_recreated_parents() {
    let mut d = StateDoc::new(["s"], 2);
    d.merge("/s/o", j(r#"{"a":1,"b":2,"c":3}"#)).unwrap();
    d.remove("/s/o/a").unwrap();
    d.remove("/s/o").unwrap(); // 3: log holds (o/a @2, o @3)
    d.merge("/s/o", j(r#"{"x":1}"#)).unwrap(); // a new object at the same path
    d.remove("/s/o/x").unwrap(); // 5: evicts o/a @2; floor 2
    assert_eq!(d.floor(), 2);
    d.merge("/s/p", j("1")).unwrap();
    d.remove("/s/p").unwrap(); // 7: evicts o @3; floor 3
    assert_eq!(d.floor(), 3);
    assert_eq!(d.stats().tombstones, 2);
    let cs = d.changes_since(3).unwrap().unwrap();
    assert_eq!(cs.removed().count(), 0);
    assert_eq!(cs.changes().map(|(p, _)| p).collect::<Vec<_>>(), ["/s/o"]);
}

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn key(&mut self) -> &'static str {
        ["a", "b", "c", "d/e", "f~g"][self.below(5) as usize]
    }

    fn path(&mut self) -> String {
        let mut p = format!("/{}", ["s1", "s2", "s3"][self.below(3) as usize]);
        for _ in 0..self.below(4) {
            crate::pointer::push_token(&mut p, self.key());
        }
        p
    }

    fn value(&mut self, depth: u32, nulls: bool) -> Value<'static> {
        let top = if depth == 0 { 6 } else { 8 };
        match self.below(top) {
            0 if nulls => Value::Null,
            0 | 1 => Value::UInt(self.below(3)),
            2 => Value::Float([0.0, -0.0, 1.0, 1.5][self.below(4) as usize]),
            3 => Value::Bool(self.below(2) == 0),
            4 => Value::str(["x", "y"][self.below(2) as usize]),
            5 => Value::Array(
                (0..self.below(3))
                    .map(|_| Value::UInt(self.below(2)))
                    .collect(),
            ),
            _ => {
                let mut m: Map = Vec::new();
                for _ in 0..self.below(4) {
                    let k = self.key();
                    let v = self.value(depth - 1, nulls);
                    if !m.iter().any(|(x, _)| x == k) {
                        m.push((Cow::Borrowed(k), v));
                    }
                }
                Value::Object(m)
            }
        }
    }
}

fn random_run(seed: u64, ops: usize, max_tombstones: usize) {
    let mut rng = Rng(seed);
    let mut d = StateDoc::new(["s1", "s2"], max_tombstones);
    // A twin that gets every merge as JSON bytes (the tape path).
    let mut t = StateDoc::new(["s1", "s2"], max_tombstones);
    let mut history = vec![state(&d)];
    for _ in 0..ops {
        let before = state(&d);
        let v = d.version();
        let path = rng.path();
        let (res, twin) = match rng.below(10) {
            0..=4 => {
                let val = rng.value(3, true);
                let bytes = json::to_vec(&val);
                (d.merge(&path, val), t.merge_json(&path, &bytes))
            }
            5 => {
                let val = rng.value(3, true);
                (d.replace(&path, val.clone()), t.replace(&path, val))
            }
            6 => {
                // The twin replaces straight from the scan of the JSON text.
                let val = rng.value(3, true);
                let bytes = json::to_vec(&val);
                (d.replace(&path, val), t.replace_json(&path, &bytes))
            }
            7 => (d.merge(&path, Value::Null), t.merge_json(&path, b"null")),
            _ => (d.remove(&path), t.remove(&path)),
        };
        assert_eq!(res, twin);
        assert_eq!(d.version(), t.version());
        assert_eq!(d.floor(), t.floor());
        match res {
            Ok(true) => {
                assert_eq!(d.version(), v + 1);
                history.push(state(&d));
            }
            Ok(false) => {
                assert_eq!(d.version(), v);
                assert_eq!(state(&d), before);
            }
            Err(e) => {
                assert!(e.0.starts_with(&path), "{e}");
                assert_eq!(d.version(), v);
                assert_eq!(state(&d), before);
            }
        }
        assert_eq!(history.len() as u64, d.version() + 1);
        if d.version() % 7 == 0 {
            check_all(&d, &history);
        }
    }
    check_all(&d, &history);
    assert_eq!(state(&d), state(&t));
    for v in d.floor()..=d.version() {
        assert_eq!(d.changes_since(v).unwrap(), t.changes_since(v).unwrap());
    }
    // The encoders agree with the document.
    let snap = encode_snapshot::<&str>(&d, Format::Json, None, 1, "e", 0, 0).unwrap();
    let Value::Object(m) = json::parse(&snap).unwrap() else {
        panic!()
    };
    assert_eq!(m[5].1, state(&d));
    let snap_mp = encode_snapshot::<&str>(&d, Format::Msgpack, None, 1, "e", 0, 0).unwrap();
    assert_eq!(
        msgpack::parse(&snap_mp).unwrap(),
        json::parse(&snap).unwrap()
    );
    for v in d.floor()..=d.version() {
        let cs = d.changes_since(v).unwrap().unwrap();
        for diff in [DiffForm::Changes, DiffForm::JsonPatch] {
            let jb = encode_update::<&str>(&cs, Format::Json, diff, None, 1, 0).unwrap();
            let mb = encode_update::<&str>(&cs, Format::Msgpack, diff, None, 1, 0).unwrap();
            assert_eq!(jb.is_none(), cs.is_empty());
            if let (Some(jb), Some(mb)) = (jb, mb) {
                assert_eq!(msgpack::parse(&mb).unwrap(), json::parse(&jb).unwrap());
            }
        }
    }
}

#[test]
fn random_ops_changes_since_reconstructs_state() {
    for seed in 1..40u64 {
        random_run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), 300, 1000);
    }
}

#[test]
fn random_ops_with_a_small_horizon() {
    for seed in 1..20u64 {
        random_run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) + 1, 300, 5);
    }
}
