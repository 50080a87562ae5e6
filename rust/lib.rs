//! The engine of dashboard-server: the state document, change tracking and message encoding.
//!
//! The core (every module but `python`) is plain Rust, tested with `cargo test`; the PyO3 binding
//! `dashboard_server._fastdiff` lives in `python.rs`, behind the `python` feature. The contract
//! both this engine and its pure-Python twin follow is `docs/engine.md`.
//!
//! # Layering
//!
//! The modules form a DAG: each may use only the modules listed after it (and, through them,
//! nothing else). Test modules (`mod tests`, `doc/tests.rs`) are exempt. The test
//! `layering::modules_form_the_declared_dag` reads the sources and fails on any other
//! `crate::` reference, and on a cycle in the table itself.
//!
//! ```text
//! layering:
//!   base:
//!   pointer: base
//!   value: base pointer
//!   json: base value
//!   msgpack: base value json
//!   omap: base pointer json
//!   diff: pointer value
//!   doc: base pointer value json msgpack omap
//!   encode: base value json msgpack doc
//!   stream: base
//!   resp: stream
//!   nats: stream
//!   python: base pointer value json msgpack doc encode diff stream resp nats
//! ```
//!
//! - `base`: limits (`MAX_DEPTH`), the hasher, byte helpers (`put`, `bytes_eq`).
//! - `pointer`: JSON Pointer parsing and the one home of pointer escaping.
//! - `value`: the value model, its errors.
//! - `json`: the one JSON parser (a reusable tape the document reads in place; `parse` builds a
//!   value from it) and the JSON writer (the one home of JSON string escaping).
//! - `msgpack`: the MessagePack decoder and encoder, and MessagePack -> JSON transcoding.
//! - `omap`: the ordered map of object children, with per-slot version stamps.
//! - `doc`: the state document, change sets, and the writing of its node trees.
//! - `encode`: the client messages (and the one home of RFC 3339 timestamps).
//! - `stream`: a subscriber connection's byte stream scanned into a pending batch (messages
//!   conflated per channel), for any framing.
//! - `resp`: the framing of a Redis pub/sub connection (RESP2 and RESP3).
//! - `nats`: the framing of a NATS subscriber connection.

pub mod base;
pub mod diff;
pub mod doc;
pub mod encode;
pub mod json;
pub mod msgpack;
pub mod nats;
pub mod omap;
pub mod pointer;
pub mod resp;
pub mod stream;
pub mod value;

#[cfg(feature = "python")]
mod python;

pub use base::MAX_DEPTH;
pub use doc::{ChangeSet, StateDoc};
pub use value::Value;

#[cfg(test)]
mod layering {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// The table of the `layering:` block of this file's documentation.
    fn declared() -> BTreeMap<String, BTreeSet<String>> {
        let lib = include_str!("lib.rs");
        let mut table = BTreeMap::new();
        let mut inside = false;
        for line in lib.lines() {
            let Some(text) = line.strip_prefix("//!") else {
                continue;
            };
            let text = text.trim();
            if text == "layering:" {
                inside = true;
                continue;
            }
            if inside && text.starts_with("```") {
                break;
            }
            if inside {
                let (module, deps) = text.split_once(':').expect("`module: deps` lines");
                let deps = deps.split_whitespace().map(str::to_owned).collect();
                table.insert(module.trim().to_owned(), deps);
            }
        }
        assert!(!table.is_empty(), "no layering table in lib.rs");
        table
    }

    /// The modules `src` refers to as `crate::NAME` (outside its `#[cfg(test)] mod tests`).
    fn used(src: &str) -> BTreeSet<String> {
        let code = match src.find("#[cfg(test)]\nmod tests") {
            Some(i) => &src[..i],
            None => src,
        };
        let mut out = BTreeSet::new();
        // Line comments do not count (doc links are not dependencies).
        for line in code.lines() {
            let line = match line.find("//") {
                Some(i) => &line[..i],
                None => line,
            };
            let mut rest = line;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    // `use crate::{a, b::c, ...}`
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    for item in group.split(',') {
                        let name: String = item
                            .trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() {
                            out.insert(name);
                        }
                    }
                } else {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    out.insert(name);
                }
            }
        }
        out
    }

    #[test]
    fn modules_form_the_declared_dag() {
        let table = declared();
        // The table is acyclic: every module only lists modules declared before it.
        let mut seen = BTreeSet::new();
        let order: Vec<&String> = {
            let lib = include_str!("lib.rs");
            let mut order: Vec<(usize, &String)> = table
                .keys()
                .map(|m| (lib.find(&format!("//!   {m}:")).unwrap_or(usize::MAX), m))
                .collect();
            order.sort();
            order.into_iter().map(|(_, m)| m).collect()
        };
        for m in &order {
            for d in &table[*m] {
                assert!(
                    seen.contains(d),
                    "layering table: {m} uses {d}, which is not declared before it"
                );
            }
            seen.insert((*m).clone());
        }
        // Every module file is in the table, and uses only what the table allows.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rust");
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).expect("rust/") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let module = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if module == "lib" {
                continue;
            }
            files += 1;
            let allowed = table
                .get(module)
                .unwrap_or_else(|| panic!("rust/{module}.rs is missing from the layering table"));
            let src = std::fs::read_to_string(&path).expect("read");
            for dep in used(&src) {
                assert!(
                    dep == module || allowed.contains(&dep),
                    "rust/{module}.rs uses crate::{dep}, which the layering table in lib.rs does \
                     not allow (allowed: {allowed:?})"
                );
            }
        }
        assert_eq!(
            files,
            table.len(),
            "the layering table lists a module with no file"
        );
    }

    #[test]
    fn the_checker_sees_every_form_of_use() {
        let src =
            "use crate::a::X;\nuse crate::{b, c::Y};\nfn f() { crate::d::g(); } // crate::e\n\
                   #[cfg(test)]\nmod tests { use crate::f; }\n";
        let got: Vec<String> = used(src).into_iter().collect();
        assert_eq!(got, ["a", "b", "c", "d"]);
    }
}
