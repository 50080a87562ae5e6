//! The JSON ingest path of the engine (`replace_bytes` / `merge_bytes`, in Rust, without the
//! Python call) against the same ops fed by maintained parsers, on the server's payloads.
//!
//! `cargo run --release --manifest-path benches/parse/Cargo.toml --target-dir benches/parse/target`
//! (its own target directory: the engine built as a plain dependency here must not overwrite the
//! extension module maturin builds; see docs/engine.md). Prints, per payload set, the nanoseconds
//! per op (median of rounds) of each path and the ratio of the best crate to the engine's own
//! path; then MessagePack (against rmp) and the ordered map (against indexmap).

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Instant;

use _fastdiff::doc::StateDoc;
use _fastdiff::json;
use _fastdiff::value::{dedupe_keys, Map, Value};

// -- candidates ---------------------------------------------------------------------------------

/// serde_json into the engine's value (strings borrowed where they have no escape).
mod via_serde {
    use super::*;
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

    pub struct V<'a>(pub Value<'a>);
    struct K<'a>(Cow<'a, str>);

    impl<'de> Deserialize<'de> for K<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct KV;
            impl<'de> Visitor<'de> for KV {
                type Value = K<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a key")
                }
                fn visit_borrowed_str<E>(self, s: &'de str) -> Result<K<'de>, E> {
                    Ok(K(Cow::Borrowed(s)))
                }
                fn visit_str<E>(self, s: &str) -> Result<K<'de>, E> {
                    Ok(K(Cow::Owned(s.to_owned())))
                }
            }
            d.deserialize_str(KV)
        }
    }

    impl<'de> Deserialize<'de> for V<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(VV)
        }
    }

    struct VV;
    impl<'de> Visitor<'de> for VV {
        type Value = V<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_unit<E>(self) -> Result<V<'de>, E> {
            Ok(V(Value::Null))
        }
        fn visit_bool<E>(self, b: bool) -> Result<V<'de>, E> {
            Ok(V(Value::Bool(b)))
        }
        fn visit_i64<E>(self, i: i64) -> Result<V<'de>, E> {
            Ok(V(Value::int(i)))
        }
        fn visit_u64<E>(self, u: u64) -> Result<V<'de>, E> {
            Ok(V(Value::UInt(u)))
        }
        fn visit_f64<E: de::Error>(self, f: f64) -> Result<V<'de>, E> {
            Value::float(f)
                .map(V)
                .ok_or_else(|| E::custom("non-finite float"))
        }
        fn visit_borrowed_str<E>(self, s: &'de str) -> Result<V<'de>, E> {
            Ok(V(Value::Str(Cow::Borrowed(s))))
        }
        fn visit_str<E>(self, s: &str) -> Result<V<'de>, E> {
            Ok(V(Value::Str(Cow::Owned(s.to_owned()))))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<V<'de>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(V(v)) = seq.next_element()? {
                items.push(v);
            }
            Ok(V(Value::Array(items)))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<V<'de>, A::Error> {
            let mut map: Map<'de> = Vec::new();
            while let Some((K(k), V(v))) = m.next_entry()? {
                map.push((k, v));
            }
            dedupe_keys(&mut map);
            Ok(V(Value::Object(map)))
        }
    }

    pub fn parse(b: &[u8]) -> Result<Value<'_>, String> {
        serde_json::from_slice::<V>(b)
            .map(|v| v.0)
            .map_err(|e| e.to_string())
    }
}

/// jiter's streaming API into the engine's value (its strings are decoded into the parser's own
/// buffer, so they are copied).
mod via_jiter {
    use super::*;
    use jiter::{Jiter, JiterResult, NumberAny, NumberInt, Peek};

    fn value(j: &mut Jiter<'_>, peek: Peek) -> JiterResult<Value<'static>> {
        Ok(match peek {
            Peek::Null => {
                j.known_null()?;
                Value::Null
            }
            Peek::True | Peek::False => Value::Bool(j.known_bool(peek)?),
            Peek::String => Value::Str(Cow::Owned(j.known_str()?.to_owned())),
            Peek::Array => {
                let mut items = Vec::new();
                let mut next = j.known_array()?;
                while let Some(p) = next {
                    items.push(value(j, p)?);
                    next = j.array_step()?;
                }
                Value::Array(items)
            }
            Peek::Object => {
                let mut map: Map<'static> = Vec::new();
                let mut key = j.known_object()?.map(str::to_owned);
                while let Some(k) = key {
                    let p = j.peek()?;
                    let v = value(j, p)?;
                    map.push((Cow::Owned(k), v));
                    key = j.next_key()?.map(str::to_owned);
                }
                dedupe_keys(&mut map);
                Value::Object(map)
            }
            _ => match j.known_number(peek)? {
                NumberAny::Int(NumberInt::Int(i)) => Value::int(i),
                NumberAny::Float(f) => Value::Float(f),
            },
        })
    }

    pub fn parse(b: &[u8]) -> Result<Value<'static>, String> {
        let mut j = Jiter::new(b);
        let p = j.peek().map_err(|e| format!("{e:?}"))?;
        let v = value(&mut j, p).map_err(|e| format!("{e:?}"))?;
        j.finish().map_err(|e| format!("{e:?}"))?;
        Ok(v)
    }
}

/// rmp's reader and writer functions, driven the way `msgpack.rs` drives its own.
mod via_rmp {
    use super::*;
    use rmp::decode::{self, Bytes, RmpRead};
    use rmp::Marker;

    pub fn write(out: &mut Vec<u8>, v: &Value<'_>) {
        use rmp::encode as e;
        let _ = match v {
            Value::Null => e::write_nil(out).map_err(drop),
            Value::Bool(b) => e::write_bool(out, *b).map_err(drop),
            Value::Int(i) => e::write_sint(out, *i).map(drop).map_err(drop),
            Value::UInt(u) => e::write_uint(out, *u).map(drop).map_err(drop),
            Value::Float(f) => e::write_f64(out, *f).map_err(drop),
            Value::Str(s) => e::write_str(out, s).map_err(drop),
            Value::Array(a) => {
                let _ = e::write_array_len(out, a.len() as u32);
                for x in a {
                    write(out, x);
                }
                Ok(())
            }
            Value::Object(m) => {
                let _ = e::write_map_len(out, m.len() as u32);
                for (k, x) in m {
                    let _ = e::write_str(out, k);
                    write(out, x);
                }
                Ok(())
            }
        };
    }

    fn take<'a>(rd: &mut Bytes<'a>, n: usize) -> Option<&'a [u8]> {
        let rest = rd.remaining_slice();
        let s = rest.get(..n)?;
        *rd = Bytes::new(&rest[n..]);
        Some(s)
    }

    fn string<'a>(rd: &mut Bytes<'a>, n: usize) -> Option<Cow<'a, str>> {
        std::str::from_utf8(take(rd, n)?).ok().map(Cow::Borrowed)
    }

    fn value<'a>(rd: &mut Bytes<'a>) -> Option<Value<'a>> {
        Some(match decode::read_marker(rd).ok()? {
            Marker::Null => Value::Null,
            Marker::True => Value::Bool(true),
            Marker::False => Value::Bool(false),
            Marker::FixPos(u) => Value::UInt(u64::from(u)),
            Marker::FixNeg(i) => Value::Int(i64::from(i)),
            Marker::U8 => Value::UInt(u64::from(rd.read_data_u8().ok()?)),
            Marker::U16 => Value::UInt(u64::from(rd.read_data_u16().ok()?)),
            Marker::U32 => Value::UInt(u64::from(rd.read_data_u32().ok()?)),
            Marker::U64 => Value::UInt(rd.read_data_u64().ok()?),
            Marker::I8 => Value::int(i64::from(rd.read_data_i8().ok()?)),
            Marker::I16 => Value::int(i64::from(rd.read_data_i16().ok()?)),
            Marker::I32 => Value::int(i64::from(rd.read_data_i32().ok()?)),
            Marker::I64 => Value::int(rd.read_data_i64().ok()?),
            Marker::F32 => Value::float(f64::from(rd.read_data_f32().ok()?))?,
            Marker::F64 => Value::float(rd.read_data_f64().ok()?)?,
            Marker::FixStr(n) => Value::Str(string(rd, usize::from(n))?),
            Marker::Str8 => {
                let n = usize::from(rd.read_data_u8().ok()?);
                Value::Str(string(rd, n)?)
            }
            Marker::Str16 => {
                let n = usize::from(rd.read_data_u16().ok()?);
                Value::Str(string(rd, n)?)
            }
            Marker::Str32 => {
                let n = rd.read_data_u32().ok()? as usize;
                Value::Str(string(rd, n)?)
            }
            m @ (Marker::FixArray(_) | Marker::Array16 | Marker::Array32) => {
                let n = match m {
                    Marker::FixArray(n) => usize::from(n),
                    Marker::Array16 => usize::from(rd.read_data_u16().ok()?),
                    _ => rd.read_data_u32().ok()? as usize,
                };
                let mut items = Vec::with_capacity(n.min(rd.remaining_slice().len()));
                for _ in 0..n {
                    items.push(value(rd)?);
                }
                Value::Array(items)
            }
            m @ (Marker::FixMap(_) | Marker::Map16 | Marker::Map32) => {
                let n = match m {
                    Marker::FixMap(n) => usize::from(n),
                    Marker::Map16 => usize::from(rd.read_data_u16().ok()?),
                    _ => rd.read_data_u32().ok()? as usize,
                };
                let mut map: Map<'a> = Vec::with_capacity(n.min(rd.remaining_slice().len()));
                for _ in 0..n {
                    let Value::Str(k) = value(rd)? else {
                        return None;
                    };
                    map.push((k, value(rd)?));
                }
                dedupe_keys(&mut map);
                Value::Object(map)
            }
            _ => return None,
        })
    }

    pub fn parse(b: &[u8]) -> Option<Value<'_>> {
        let mut rd = Bytes::new(b);
        let v = value(&mut rd)?;
        rd.remaining_slice().is_empty().then_some(v)
    }
}

/// The ordered map of object children against `IndexMap` (same hasher): lookups of every key.
mod maps {
    use super::*;
    use _fastdiff::base::Hasher;
    use _fastdiff::omap::{Key, OMap, Stamped};
    use indexmap::IndexMap;

    /// A value the size of a document node.
    #[allow(dead_code)] // the padding is never read
    struct S(u64, [u64; 5]);
    impl Stamped for S {
        fn stamp(&self) -> u64 {
            self.0
        }
    }

    pub fn run(rounds: usize) {
        println!("\nordered map: ns per lookup (median of {rounds} rounds)");
        println!("{:<36} {:>9} {:>9}", "map", "omap", "indexmap");
        for (name, n) in [
            ("12 members (an item)", 12),
            ("500 members (a section)", 500),
        ] {
            let keys: Vec<String> = (0..n).map(|i| format!("field_{i:04}")).collect();
            let mut o: OMap<S> = OMap::new();
            let mut x: IndexMap<Box<str>, S, Hasher> = IndexMap::with_hasher(Hasher::default());
            for (i, k) in keys.iter().enumerate() {
                o.insert(Key::new(k), S(i as u64, [0; 5]));
                x.insert(k.as_str().into(), S(i as u64, [0; 5]));
            }
            let reps = 200_000 / n;
            let t_o = median(rounds, || {
                let mut sum = 0;
                for _ in 0..reps {
                    for k in &keys {
                        sum += o.get(black_box(k)).map_or(0, |s| s.0);
                    }
                }
                black_box(sum);
            }) / (reps * n) as f64;
            let t_x = median(rounds, || {
                let mut sum = 0;
                for _ in 0..reps {
                    for k in &keys {
                        sum += x.get(black_box(k.as_str())).map_or(0, |s| s.0);
                    }
                }
                black_box(sum);
            }) / (reps * n) as f64;
            println!("{name:<36} {t_o:>9.1} {t_x:>9.1}");
        }
        // The change walk: the members changed after a version, 1% of a 2,000-member section.
        let n = 2000;
        let mut o: OMap<S> = OMap::new();
        let mut x: IndexMap<Box<str>, S, Hasher> = IndexMap::with_hasher(Hasher::default());
        for i in 0..n {
            let k = format!("order-{i:06}");
            let stamp = if i % 100 == 7 { 10 } else { 1 };
            o.insert(Key::new(&k), S(stamp, [0; 5]));
            x.insert(k.into(), S(stamp, [0; 5]));
        }
        let reps = 200;
        let t_o = median(rounds, || {
            for _ in 0..reps {
                black_box(o.iter_since(black_box(5)).filter(|(_, v)| v.0 > 5).count());
            }
        }) / reps as f64;
        let t_x = median(rounds, || {
            for _ in 0..reps {
                black_box(x.values().filter(|v| v.0 > black_box(5)).count());
            }
        }) / reps as f64;
        println!(
            "{:<36} {t_o:>9.0} {t_x:>9.0}",
            "walk 2,000 members, 20 changed (ns)"
        );
    }

    fn median(rounds: usize, mut f: impl FnMut()) -> f64 {
        let mut t: Vec<f64> = (0..rounds)
            .map(|_| {
                let s = Instant::now();
                f();
                s.elapsed().as_nanos() as f64
            })
            .collect();
        t.sort_by(|a, b| a.total_cmp(b));
        t[t.len() / 2]
    }
}

// -- payloads -----------------------------------------------------------------------------------

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

fn round(x: f64, dp: i32) -> f64 {
    let p = 10f64.powi(dp);
    (x * p).round() / p
}

/// A set of ops: the items to load first, then the payloads to apply in turn.
struct Set {
    name: String,
    initial: Vec<(String, Vec<u8>)>,
    ops: Vec<(String, Vec<u8>)>,
    merge: bool,
}

fn obj(members: Vec<(&str, Value<'static>)>) -> Value<'static> {
    Value::Object(
        members
            .into_iter()
            .map(|(k, v)| (Cow::Owned(k.to_owned()), v))
            .collect(),
    )
}

fn f(x: f64) -> Value<'static> {
    Value::Float(x)
}

fn s(x: &str) -> Value<'static> {
    Value::Str(Cow::Owned(x.to_owned()))
}

/// The items of the standard workload's sections (dashboard_server.workload), as Redis carries
/// them (one whole item per message).
fn generic_item(kind: &str, i: usize, rng: &mut Rng, clock: u64) -> Value<'static> {
    let price = round(rng.uniform(1.0, 50_000.0), 2);
    match kind {
        "market_data" => {
            let spread = round(price * 0.0002, 4);
            obj(vec![
                ("last_price", f(price)),
                ("bid", f(round(price - spread, 4))),
                ("ask", f(round(price + spread, 4))),
                ("bid_size", f(round(rng.uniform(0.1, 50.0), 3))),
                ("ask_size", f(round(rng.uniform(0.1, 50.0), 3))),
                ("volume_24h", f(round(rng.uniform(1e3, 1e7), 2))),
                ("change_24h", f(round(rng.uniform(-500.0, 500.0), 2))),
                ("change_pct_24h", f(round(rng.uniform(-5.0, 5.0), 3))),
                ("high_24h", f(round(price * 1.03, 2))),
                ("low_24h", f(round(price * 0.97, 2))),
                ("open_24h", f(round(price * 0.99, 2))),
                ("updated_at", Value::UInt(clock)),
            ])
        }
        "orderbook" => {
            // The demo feed's book: ten levels a side and a sequence.
            let side = |rng: &mut Rng, sign: f64| {
                Value::Array(
                    (0..10)
                        .map(|l| {
                            Value::Array(vec![
                                f(round(price * (1.0 + sign * 0.0005 * (l as f64 + 1.0)), 4)),
                                f(round(rng.uniform(0.1, 20.0), 3)),
                            ])
                        })
                        .collect(),
                )
            };
            obj(vec![
                ("bids", side(rng, -1.0)),
                ("asks", side(rng, 1.0)),
                ("sequence", Value::UInt(clock / 100)),
                ("updated_at", Value::UInt(clock)),
            ])
        }
        "orders" => obj(vec![
            ("id", s(&i.to_string())),
            ("symbol", s(&format!("SYM{:04}USDT", i % 500))),
            ("side", s(if i.is_multiple_of(2) { "buy" } else { "sell" })),
            ("type", s("limit")),
            ("price", f(price)),
            ("quantity", f(round(rng.uniform(0.01, 10.0), 3))),
            ("filled_quantity", f(0.0)),
            ("avg_fill_price", f(0.0)),
            ("status", s("open")),
            ("strategy", s(&format!("strategy-{:02}", i % 50))),
            ("time_in_force", s("GTC")),
            ("client_id", s(&format!("c-{i}"))),
            ("created_at", Value::UInt(clock)),
            ("updated_at", Value::UInt(clock)),
        ]),
        _ => obj(vec![
            ("symbol", s(&format!("SYM{:04}USDT", i))),
            ("side", s("long")),
            ("quantity", f(round(rng.uniform(0.1, 100.0), 3))),
            ("entry_price", f(price)),
            ("mark_price", f(round(rng.uniform(1.0, 50_000.0), 2))),
            ("unrealized_pnl", f(round(rng.uniform(-1e4, 1e4), 2))),
            ("realized_pnl", f(round(rng.uniform(-1e4, 1e4), 2))),
            ("leverage", Value::UInt(1 + (i % 10) as u64)),
        ]),
    }
}

/// `v` with about a quarter of its leaves changed as a live feed changes them: numbers moved a
/// little, decimal strings moved in their last digit, timestamps advanced.
fn perturb(v: &Value<'_>, rng: &mut Rng) -> Value<'static> {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (Cow::Owned(k.to_string()), perturb(x, rng)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| perturb(x, rng)).collect()),
        other if !rng.next().is_multiple_of(4) => other.clone().into_owned(),
        Value::Float(x) => Value::Float(round(x * rng.uniform(0.999, 1.001), 4)),
        Value::UInt(u) => Value::UInt(u + 1 + rng.next() % 100),
        Value::Str(t) if t.bytes().last().is_some_and(|b| b.is_ascii_digit()) => {
            let mut t = t.to_string();
            let d = t.pop().unwrap_or('0');
            t.push(if d == '9' {
                '0'
            } else {
                char::from(d as u8 + 1)
            });
            Value::Str(Cow::Owned(t))
        }
        other => other.clone().into_owned(),
    }
}

/// The small merge patches of the standard workload's ticks (a field or two of an item, a side
/// of a book).
fn generic_patch(kind: &str, rng: &mut Rng, clock: u64) -> Value<'static> {
    match kind {
        "market_data" => obj(vec![
            ("last_price", f(round(rng.uniform(1.0, 50_000.0), 4))),
            ("updated_at", Value::UInt(clock)),
        ]),
        "orderbook" => obj(vec![(
            "bids",
            Value::Array(
                (0..5)
                    .map(|l| {
                        Value::Array(vec![
                            f(round(30_000.0 - l as f64 * 15.0, 4)),
                            f(round(rng.uniform(0.1, 20.0), 3)),
                        ])
                    })
                    .collect(),
            ),
        )]),
        _ => obj(vec![
            ("quantity", f(round(rng.uniform(0.01, 50_000.0), 3))),
            ("updated_at", Value::UInt(clock)),
        ]),
    }
}

fn sets() -> Vec<Set> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::new();
    const ITEMS: usize = 100;
    const OPS: usize = 2000;
    for kind in ["market_data", "orderbook", "orders", "positions"] {
        let base: Vec<Value<'static>> = (0..ITEMS)
            .map(|i| generic_item(kind, i, &mut rng, 1_764_000_000_000))
            .collect();
        let initial = base
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("/{kind}/k{i}"), json::to_vec(v)))
            .collect();
        let mut cur = base;
        let mut ops = Vec::new();
        for n in 0..OPS {
            let i = n % ITEMS;
            cur[i] = perturb(&cur[i], &mut rng);
            ops.push((format!("/{kind}/k{i}"), json::to_vec(&cur[i])));
        }
        out.push(Set {
            name: format!("replace generic {kind}"),
            initial,
            ops,
            merge: false,
        });
    }
    // The original system's payloads (benches/payloads/, compact as a service sends them).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../payloads");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("benches/payloads")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut initial = Vec::new();
    let mut ops = Vec::new();
    let samples: Vec<(String, Value<'static>)> = files
        .iter()
        .map(|p| {
            let text = std::fs::read(p).expect("read");
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, json::parse(&text).expect("sample").into_owned())
        })
        .collect();
    for (name, v) in &samples {
        for i in 0..10 {
            initial.push((format!("/b25/{name}-{i}"), json::to_vec(v)));
        }
    }
    let mut cur: Vec<Vec<Value<'static>>> =
        samples.iter().map(|(_, v)| vec![v.clone(); 10]).collect();
    for n in 0..OPS {
        let f = n % samples.len();
        let i = (n / samples.len()) % 10;
        cur[f][i] = perturb(&cur[f][i], &mut rng);
        ops.push((
            format!("/b25/{}-{i}", samples[f].0),
            json::to_vec(&cur[f][i]),
        ));
    }
    out.push(Set {
        name: format!("replace b25 samples ({} kinds)", samples.len()),
        initial: initial.clone(),
        ops,
        merge: false,
    });
    for kind in ["market_data", "orderbook", "orders"] {
        let initial: Vec<(String, Vec<u8>)> = (0..ITEMS)
            .map(|i| {
                let v = generic_item(kind, i, &mut rng, 1_764_000_000_000);
                (format!("/{kind}/k{i}"), json::to_vec(&v))
            })
            .collect();
        let ops = (0..OPS)
            .map(|n| {
                let v = generic_patch(kind, &mut rng, 1_764_000_000_000 + 100 * n as u64);
                (format!("/{kind}/k{}", n % ITEMS), json::to_vec(&v))
            })
            .collect();
        out.push(Set {
            name: format!("merge generic {kind} patch"),
            initial,
            ops,
            merge: true,
        });
    }
    out
}

// -- timing -------------------------------------------------------------------------------------

fn loaded(set: &Set) -> StateDoc {
    let mut doc = StateDoc::new(
        ["market_data", "orderbook", "orders", "positions", "b25"],
        1000,
    );
    for (p, b) in &set.initial {
        doc.replace(p, json::parse(b).expect("initial"))
            .expect("load");
    }
    doc
}

/// Median ns per op of `op` over the set's ops, on a fresh copy of the loaded doc per round.
fn time(set: &Set, rounds: usize, mut op: impl FnMut(&mut StateDoc, &str, &[u8]) -> bool) -> f64 {
    let base = loaded(set);
    let mut per_round = Vec::new();
    for _ in 0..rounds {
        let mut doc = base.clone();
        let t = Instant::now();
        let mut changed = 0usize;
        for (p, b) in &set.ops {
            changed += usize::from(op(&mut doc, p, b));
        }
        black_box(changed);
        per_round.push(t.elapsed().as_nanos() as f64 / set.ops.len() as f64);
    }
    per_round.sort_by(|a, b| a.total_cmp(b));
    per_round[per_round.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(31);
    println!(
        "ns per op (median of {rounds} rounds); engine = the path replace_bytes / merge_bytes take"
    );
    println!(
        "{:<36} {:>9} {:>9} {:>9} {:>9}  {:>12}",
        "payload set", "engine", "value", "serde", "jiter", "crate/engine"
    );
    for set in sets() {
        let bytes: usize = set.ops.iter().map(|(_, b)| b.len()).sum::<usize>() / set.ops.len();
        let apply = |merge: bool, doc: &mut StateDoc, p: &str, v: Value<'_>| {
            if merge {
                doc.merge(p, v).expect("merge")
            } else {
                doc.replace(p, v).expect("replace")
            }
        };
        let m = set.merge;
        let engine = time(&set, rounds, |d, p, b| {
            if m {
                d.merge_json(p, b).expect("merge")
            } else {
                d.replace_json(p, b).expect("replace")
            }
        });
        let value = time(&set, rounds, |d, p, b| {
            apply(m, d, p, json::parse(b).expect("parse"))
        });
        let serde = time(&set, rounds, |d, p, b| {
            apply(m, d, p, via_serde::parse(b).expect("parse"))
        });
        let jiter = time(&set, rounds, |d, p, b| {
            apply(m, d, p, via_jiter::parse(b).expect("parse"))
        });
        println!(
            "{:<36} {:>9.0} {:>9.0} {:>9.0} {:>9.0}  {:>12.2}   ({bytes} B avg)",
            set.name,
            engine,
            value,
            serde,
            jiter,
            serde.min(jiter) / engine
        );
    }
    msgpack(rounds);
    maps::run(rounds);
}

/// MessagePack: decoding the payloads into values, encoding them, `msgpack.rs` against rmp.
fn msgpack(rounds: usize) {
    use _fastdiff::msgpack;
    println!("\nMessagePack: ns per payload (median of {rounds} rounds)");
    println!(
        "{:<36} {:>9} {:>9} {:>9} {:>9}",
        "payload set", "decode", "rmp", "encode", "rmp"
    );
    for set in sets().into_iter().filter(|s| !s.merge) {
        let values: Vec<Value<'static>> = set
            .ops
            .iter()
            .map(|(_, b)| json::parse(b).expect("json").into_owned())
            .collect();
        let packed: Vec<Vec<u8>> = values.iter().map(msgpack::to_vec).collect();
        for (v, p) in values.iter().zip(&packed) {
            let mut theirs = Vec::new();
            via_rmp::write(&mut theirs, v);
            assert_eq!(&theirs, p, "the same bytes");
            assert_eq!(via_rmp::parse(p).as_ref(), Some(v));
        }
        let per = |f: &mut dyn FnMut()| {
            let mut t: Vec<f64> = (0..rounds)
                .map(|_| {
                    let s = Instant::now();
                    f();
                    s.elapsed().as_nanos() as f64 / values.len() as f64
                })
                .collect();
            t.sort_by(|a, b| a.total_cmp(b));
            t[t.len() / 2]
        };
        let dec = per(&mut || {
            for p in &packed {
                black_box(msgpack::parse(p).ok());
            }
        });
        let dec_rmp = per(&mut || {
            for p in &packed {
                black_box(via_rmp::parse(p));
            }
        });
        let mut out = Vec::with_capacity(1 << 16);
        let enc = per(&mut || {
            for v in &values {
                out.clear();
                msgpack::write_value(&mut out, v);
                black_box(&out);
            }
        });
        let enc_rmp = per(&mut || {
            for v in &values {
                out.clear();
                via_rmp::write(&mut out, v);
                black_box(&out);
            }
        });
        println!(
            "{:<36} {dec:>9.0} {dec_rmp:>9.0} {enc:>9.0} {enc_rmp:>9.0}",
            set.name
        );
    }
}
