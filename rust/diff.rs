//! Stateless structural diff of two values as an RFC 6902 op list.
//!
//! At each object: removals of keys absent from `new` (in `old`'s order), then, in `new`'s order,
//! `add` for new keys, a recursive diff for objects on both sides, `replace` for anything else
//! that differs. Two values that differ at the root and are not both objects give one `replace`
//! of the whole document.

use crate::pointer;
use crate::value::{Map, MapIndex, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Remove,
    Replace,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Add => "add",
            OpKind::Remove => "remove",
            OpKind::Replace => "replace",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatchOp<'a> {
    pub op: OpKind,
    pub path: String,
    /// `None` for `remove`.
    pub value: Option<Value<'a>>,
}

/// The ops that turn `old` into `new` (values are moved out of `new`).
pub fn diff<'a>(old: &Value<'_>, new: Value<'a>) -> Vec<PatchOp<'a>> {
    let mut ops = Vec::new();
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut path = String::new();
            diff_maps(o, n, &mut path, &mut ops);
        }
        (o, n) => {
            if *o != n {
                ops.push(PatchOp {
                    op: OpKind::Replace,
                    path: String::new(),
                    value: Some(n),
                });
            }
        }
    }
    ops
}

fn diff_maps<'a>(old: &Map<'_>, new: Map<'a>, path: &mut String, ops: &mut Vec<PatchOp<'a>>) {
    let mark = path.len();
    {
        let new_index = MapIndex::new(&new);
        for (k, _) in old {
            if !new_index.contains(&new, k) {
                pointer::push_token(path, k);
                ops.push(PatchOp {
                    op: OpKind::Remove,
                    path: path.clone(),
                    value: None,
                });
                path.truncate(mark);
            }
        }
    }
    let old_index = MapIndex::new(old);
    for (k, nv) in new {
        pointer::push_token(path, &k);
        match old_index.get(old, &k) {
            None => ops.push(PatchOp {
                op: OpKind::Add,
                path: path.clone(),
                value: Some(nv),
            }),
            Some(Value::Object(om)) if nv.is_object() => {
                if let Value::Object(nm) = nv {
                    diff_maps(om, nm, path, ops);
                }
            }
            Some(ov) => {
                if *ov != nv {
                    ops.push(PatchOp {
                        op: OpKind::Replace,
                        path: path.clone(),
                        value: Some(nv),
                    });
                }
            }
        }
        path.truncate(mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;

    fn j(s: &str) -> Value<'_> {
        json::parse(s.as_bytes()).unwrap()
    }

    fn d(a: &str, b: &str) -> Vec<(OpKind, String, Option<String>)> {
        diff(&j(a), j(b))
            .into_iter()
            .map(|op| {
                (
                    op.op,
                    op.path,
                    op.value
                        .map(|v| String::from_utf8(json::to_vec(&v)).unwrap()),
                )
            })
            .collect()
    }

    #[test]
    fn basics() {
        assert!(d("{}", "{}").is_empty());
        assert!(d("1", "1").is_empty());
        assert!(d(r#"{"a":{"b":1}}"#, r#"{"a":{"b":1}}"#).is_empty());
        assert_eq!(
            d("1", "1.0"),
            vec![(OpKind::Replace, "".into(), Some("1.0".into()))]
        );
        assert_eq!(
            d("{}", "[]"),
            vec![(OpKind::Replace, "".into(), Some("[]".into()))]
        );
        assert_eq!(
            d(
                r#"{"x":1,"a":{"b":1,"c":[1]},"r":true,"s/t":0}"#,
                r#"{"n":null,"a":{"c":[1,2],"b":1,"d":{}},"x":1,"r":false}"#
            ),
            vec![
                (OpKind::Remove, "/s~1t".into(), None),
                (OpKind::Add, "/n".into(), Some("null".into())),
                (OpKind::Replace, "/a/c".into(), Some("[1,2]".into())),
                (OpKind::Add, "/a/d".into(), Some("{}".into())),
                (OpKind::Replace, "/r".into(), Some("false".into())),
            ]
        );
        // Object <-> non-object below the root: replace.
        assert_eq!(
            d(r#"{"a":{"b":1}}"#, r#"{"a":[1]}"#),
            vec![(OpKind::Replace, "/a".into(), Some("[1]".into()))]
        );
        // Arrays are atomic; objects inside arrays compare regardless of member order.
        assert!(d(r#"{"a":[{"x":1,"y":2}]}"#, r#"{"a":[{"y":2,"x":1}]}"#).is_empty());
        assert_eq!(
            d(r#"{"a":[1,true]}"#, r#"{"a":[1,1]}"#),
            vec![(OpKind::Replace, "/a".into(), Some("[1,1]".into()))]
        );
    }

    #[test]
    fn large_objects() {
        let a: String = format!(
            "{{{}}}",
            (0..50)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let b: String = format!(
            "{{{}}}",
            (10..60)
                .rev()
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let ops = d(&a, &b);
        assert_eq!(ops.len(), 20);
        assert!(ops[..10].iter().all(|o| o.0 == OpKind::Remove));
        assert!(ops[10..].iter().all(|o| o.0 == OpKind::Add));
        assert_eq!(ops[10].1, "/k59");
    }
}
