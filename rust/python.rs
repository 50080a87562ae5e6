//! The PyO3 binding: `dashboard_server._fastdiff`.
//!
//! Only conversions and argument handling live here; the logic is in the core modules. Every
//! rejection of a value or path raises `ValueError` whose message starts with the JSON Pointer of
//! the offending place; `get` raises `KeyError` for a missing path.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple,
};

use crate::base::MAX_DEPTH;
use crate::diff::diff as diff_values;
use crate::doc::{self, GetError, Kind, Node, ObjNode};
use crate::encode::{self, DiffForm, Format};
use crate::value::{depth_error, Map, Value, ValueError};
use crate::{json, msgpack, nats, pointer, resp, stream};

fn value_error(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

fn doc_error(e: doc::Error) -> PyErr {
    PyValueError::new_err(e.0)
}

// -- Python -> Value --------------------------------------------------------------------------

/// Strict conversion of a Python object (`depth`: containers above it).
fn to_value(obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value<'static>, ValueError> {
    // Exact types first (the common case), then subclasses; bool before int.
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return py_str(s).map(|s| Value::Str(Cow::Owned(s.to_owned())));
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::int(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::UInt(u));
        }
        return Err(ValueError::new(
            "out of range: int outside [-2**63, 2**64 - 1]",
        ));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let f = f.value();
        return Value::float(f).ok_or_else(|| ValueError::new(format!("non-finite float: {f}")));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        if depth >= MAX_DEPTH {
            return Err(depth_error());
        }
        let mut map: Map<'static> = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            let Ok(ks) = k.cast::<PyString>() else {
                return Err(ValueError::new(format!(
                    "non-string key: {} key {}",
                    type_name(&k),
                    k.repr().map(|r| r.to_string()).unwrap_or_default()
                )));
            };
            let key = py_str(ks)?.to_owned();
            match to_value(&v, depth + 1) {
                Ok(val) => map.push((Cow::Owned(key), val)),
                Err(e) => return Err(e.within(key)),
            }
        }
        return Ok(Value::Object(map));
    }
    if let Ok(l) = obj.cast::<PyList>() {
        if depth >= MAX_DEPTH {
            return Err(depth_error());
        }
        let mut items = Vec::with_capacity(l.len());
        for (i, x) in l.iter().enumerate() {
            items.push(to_value(&x, depth + 1).map_err(|e| e.within(i.to_string()))?);
        }
        return Ok(Value::Array(items));
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        if depth >= MAX_DEPTH {
            return Err(depth_error());
        }
        let mut items = Vec::with_capacity(t.len());
        for (i, x) in t.iter().enumerate() {
            items.push(to_value(&x, depth + 1).map_err(|e| e.within(i.to_string()))?);
        }
        return Ok(Value::Array(items));
    }
    Err(ValueError::new(format!(
        "unsupported type: {}",
        type_name(obj)
    )))
}

fn py_str<'a>(s: &'a Bound<'_, PyString>) -> Result<&'a str, ValueError> {
    s.to_str()
        .map_err(|_| ValueError::new("string is not valid UTF-8 (lone surrogate)"))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// The value of an op, with errors prefixed by the op's `path`.
fn arg_value(path: &str, obj: &Bound<'_, PyAny>) -> PyResult<Value<'static>> {
    to_value(obj, 0).map_err(|e| value_error(e.render(path)))
}

/// A `str` path argument.
#[inline]
fn path_arg<'a>(path: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    match path.cast::<PyString>() {
        Ok(s) => Ok(s.to_str()?),
        Err(_) => Err(PyTypeError::new_err(format!(
            "path must be a str, not {}",
            type_name(path)
        ))),
    }
}

/// The bytes of a payload (`bytes`, `bytearray` or `memoryview`), handed to `f`.
fn with_payload<R>(
    path: &str,
    payload: &Bound<'_, PyAny>,
    f: impl FnOnce(&[u8]) -> R,
) -> PyResult<R> {
    if let Ok(b) = payload.cast::<PyBytes>() {
        return Ok(f(b.as_bytes()));
    }
    if let Ok(b) = payload.cast::<PyByteArray>() {
        return Ok(f(&b.to_vec()));
    }
    if payload.is_instance_of::<PyMemoryView>() {
        let b = payload.call_method0("tobytes")?;
        let b = b.cast::<PyBytes>()?;
        return Ok(f(b.as_bytes()));
    }
    Err(value_error(format!(
        "{}: payload must be bytes, not {}",
        pointer::display(path),
        type_name(payload)
    )))
}

/// An int argument that must not be a bool (as the pure engine checks).
fn int_arg(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
    if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
        return Err(value_error(format!(
            "{name} must be an int, not {}",
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        )));
    }
    Ok(obj.extract::<i64>().ok())
}

fn decode<'a>(fmt: &str, bytes: &'a [u8]) -> Result<Value<'a>, ValueError> {
    match fmt {
        "json" => json::parse(bytes),
        "msgpack" => msgpack::parse(bytes),
        other => Err(ValueError::new(format!(
            "unknown payload format {other:?}: expected \"json\" or \"msgpack\""
        ))),
    }
}

/// `None` or a sequence of names (`what`: for messages). A bare `str` is refused (ValueError):
/// it is almost surely a mistake.
fn names_arg(what: &str, names: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<String>>> {
    let Some(names) = names else {
        return Ok(None);
    };
    if names.is_none() {
        return Ok(None);
    }
    if names.is_instance_of::<PyString>() {
        return Err(value_error(format!(
            "{what} must be a sequence of names, not a single string"
        )));
    }
    let mut out = Vec::new();
    for item in names.try_iter()? {
        let item = item?;
        let Ok(s) = item.cast::<PyString>() else {
            return Err(value_error(format!(
                "{what}: a name must be a string, not {}",
                type_name(&item)
            )));
        };
        out.push(s.to_str()?.to_owned());
    }
    Ok(Some(out))
}

fn channels_arg(channels: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<String>>> {
    names_arg("channels", channels)
}

/// The items of `merge_many` / `replace_many`: an iterable of `(str, bytes-like)` pairs (tuples or lists), checked
/// (and bytes-like payloads turned into `bytes`) before anything is applied.
fn batch_arg<'py>(
    items: &Bound<'py, PyAny>,
) -> PyResult<Vec<(Bound<'py, PyString>, Bound<'py, PyBytes>)>> {
    if items.is_instance_of::<PyString>()
        || items.is_instance_of::<PyBytes>()
        || items.is_instance_of::<PyByteArray>()
    {
        return Err(PyTypeError::new_err(format!(
            "items must be an iterable of (path, payload) pairs, not {}",
            type_name(items)
        )));
    }
    let mut out = Vec::new();
    if let Ok(list) = items.cast::<PyList>() {
        touch_items(list);
        out.reserve(list.len());
        for (i, item) in list.iter().enumerate() {
            out.push(batch_item(i, &item)?);
        }
    } else if let Ok(tuple) = items.cast::<PyTuple>() {
        out.reserve(tuple.len());
        for (i, item) in tuple.iter().enumerate() {
            out.push(batch_item(i, &item)?);
        }
    } else {
        let iter = items.try_iter().map_err(|_| {
            PyTypeError::new_err(format!(
                "items must be an iterable of (path, payload) pairs, not {}",
                type_name(items)
            ))
        })?;
        for (i, item) in iter.enumerate() {
            out.push(batch_item(i, &item?)?);
        }
    }
    Ok(out)
}

/// Reads a little of every item of a batch (the pair, the path and the payload with its bytes)
/// in one light pass, before the real work: a batch of payloads is often cold in memory, and
/// loads issued back to back overlap their cache misses instead of waiting one after the other
/// (a prefetch, in safe code; the results are thrown away).
fn touch_items(list: &Bound<'_, PyList>) {
    for item in list.iter() {
        let Ok(pair) = item.cast::<PyTuple>() else {
            continue;
        };
        if let Ok(payload) = pair.get_borrowed_item(1) {
            if let Ok(b) = payload.cast::<PyBytes>() {
                let d = b.as_bytes();
                std::hint::black_box((
                    d.first().copied(),
                    d.get(d.len() / 2).copied(),
                    d.last().copied(),
                ));
            }
        }
        if let Ok(path) = pair.get_borrowed_item(0) {
            if let Ok(s) = path.cast::<PyString>() {
                if let Ok(s) = s.to_str() {
                    std::hint::black_box(s.as_bytes().last().copied());
                }
            }
        }
    }
}

/// Item `i` of a batch: a `(str, bytes-like)` pair.
fn batch_item<'py>(
    i: usize,
    item: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyString>, Bound<'py, PyBytes>)> {
    let pair = if let Ok(t) = item.cast::<PyTuple>() {
        (t.len() == 2).then(|| Ok::<_, PyErr>((t.get_item(0)?, t.get_item(1)?)))
    } else if let Ok(l) = item.cast::<PyList>() {
        (l.len() == 2).then(|| Ok::<_, PyErr>((l.get_item(0)?, l.get_item(1)?)))
    } else {
        None
    };
    let Some(pair) = pair else {
        return Err(PyTypeError::new_err(format!(
            "items[{i}] must be a (path, payload) pair, not {}",
            type_name(item)
        )));
    };
    let (path, payload) = pair?;
    let path = path.cast_into::<PyString>().map_err(|e| {
        PyTypeError::new_err(format!(
            "items[{i}]: path must be a str, not {}",
            type_name(&e.into_inner())
        ))
    })?;
    let py = item.py();
    let payload = if let Ok(b) = payload.cast::<PyBytes>() {
        b.clone()
    } else if let Ok(b) = payload.cast::<PyByteArray>() {
        PyBytes::new(py, &b.to_vec())
    } else if payload.is_instance_of::<PyMemoryView>() {
        payload.call_method0("tobytes")?.cast_into::<PyBytes>()?
    } else {
        return Err(PyTypeError::new_err(format!(
            "items[{i}]: payload must be bytes, bytearray or memoryview, not {}",
            type_name(&payload)
        )));
    };
    Ok((path, payload))
}

/// One item of `merge_many` / `replace_many`: `merge_bytes` / `replace_bytes` with its
/// `ValueError` as a message.
fn apply_one(
    doc: &mut doc::StateDoc,
    path: &Bound<'_, PyString>,
    bytes: &[u8],
    json: bool,
    merge: bool,
) -> Result<bool, String> {
    let path = path.to_str().map_err(|e| e.value(path.py()).to_string())?;
    let ptr = pointer::parse(path)?;
    let res = match (json, merge) {
        (true, true) => doc.merge_json_at(ptr, bytes),
        (true, false) => doc.replace_json_at(ptr, bytes),
        (false, _) => match msgpack::parse(bytes) {
            Ok(v) if merge => doc.merge_at(ptr, v),
            Ok(v) => doc.replace_at(ptr, v),
            Err(e) => return Err(e.render(path)),
        },
    };
    res.map_err(|e| e.0)
}

/// `fmt` of a batch: true for JSON, false for MessagePack.
fn batch_fmt(fmt: &str) -> PyResult<bool> {
    match fmt {
        "json" => Ok(true),
        "msgpack" => Ok(false),
        other => Err(value_error(format!(
            "unknown payload format {other:?}: expected \"json\" or \"msgpack\""
        ))),
    }
}

/// `merge_many` / `replace_many`: every item checked first, then applied in order.
fn apply_many<'py>(
    doc: &mut doc::StateDoc,
    py: Python<'py>,
    items: &Bound<'py, PyAny>,
    fmt: &str,
    merge: bool,
) -> PyResult<Bound<'py, PyList>> {
    let json = batch_fmt(fmt)?;
    let batch = batch_arg(items)?;
    let results = batch.iter().map(|(path, payload)| {
        match apply_one(doc, path, payload.as_bytes(), json, merge) {
            Ok(changed) => PyBool::new(py, changed).to_owned().into_any(),
            Err(msg) => PyString::new(py, &msg).into_any(),
        }
    });
    PyList::new(py, results)
}

// -- Value -> Python --------------------------------------------------------------------------

fn value_to_py<'py>(py: Python<'py>, v: &Value<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::UInt(u) => u.into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, *f).into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => {
            let items = a
                .iter()
                .map(|x| value_to_py(py, x))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
        Value::Object(m) => {
            let d = PyDict::new(py);
            for (k, x) in m {
                d.set_item(PyString::new(py, k), value_to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

fn obj_to_py<'py>(py: Python<'py>, o: &ObjNode) -> PyResult<Bound<'py, PyAny>> {
    let d = PyDict::new(py);
    for (k, n) in o.children() {
        d.set_item(PyString::new(py, k), node_to_py(py, n)?)?;
    }
    Ok(d.into_any())
}

fn node_to_py<'py>(py: Python<'py>, n: &Node) -> PyResult<Bound<'py, PyAny>> {
    match &n.kind {
        Kind::Leaf(v) => value_to_py(py, v),
        Kind::Obj(o) => obj_to_py(py, o),
    }
}

// -- StateDoc ---------------------------------------------------------------------------------

/// The state document: ingest ops, change tracking and snapshot encoding.
#[pyclass(name = "StateDoc", module = "dashboard_server._fastdiff")]
pub struct PyStateDoc {
    doc: doc::StateDoc,
    /// Size of the last snapshot, to pre-size the next one.
    snapshot_hint: AtomicUsize,
}

#[pymethods]
impl PyStateDoc {
    #[new]
    #[pyo3(
        signature = (sections = None, *, max_tombstones = None),
        text_signature = "(sections=None, *, max_tombstones=100000)"
    )]
    fn new(
        sections: Option<&Bound<'_, PyAny>>,
        max_tombstones: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let max = match max_tombstones {
            None => 100_000,
            Some(m) => match int_arg("max_tombstones", m)? {
                Some(n) if n >= 0 => n as usize,
                Some(n) => {
                    return Err(value_error(format!("max_tombstones must be >= 0, not {n}")))
                }
                None => usize::MAX,
            },
        };
        let names = names_arg("sections", sections)?;
        Ok(PyStateDoc {
            doc: doc::StateDoc::new(names.unwrap_or_default(), max),
            snapshot_hint: AtomicUsize::new(4096),
        })
    }

    /// The number of effective ops so far.
    #[getter]
    fn version(&self) -> u64 {
        self.doc.version()
    }

    /// The oldest version `changes_since` can still answer from.
    #[getter]
    fn floor(&self) -> u64 {
        self.doc.floor()
    }

    #[getter]
    fn max_tombstones(&self) -> usize {
        self.doc.max_tombstones()
    }

    /// RFC 7386 merge of `patch` into the value at `path`.
    fn merge(&mut self, path: &str, patch: &Bound<'_, PyAny>) -> PyResult<bool> {
        let v = arg_value(path, patch)?;
        self.doc.merge(path, v).map_err(doc_error)
    }

    /// Makes the value at `path` equal to `value`.
    fn replace(&mut self, path: &str, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        let v = arg_value(path, value)?;
        self.doc.replace(path, v).map_err(doc_error)
    }

    /// Removes the value at `path`; False if there is none.
    fn remove(&mut self, path: &str) -> PyResult<bool> {
        self.doc.remove(path).map_err(doc_error)
    }

    /// `merge` with the patch given as a JSON or MessagePack payload.
    #[pyo3(signature = (path, payload, fmt = "json"))]
    fn merge_bytes(
        &mut self,
        path: &Bound<'_, PyAny>,
        payload: &Bound<'_, PyAny>,
        fmt: &str,
    ) -> PyResult<bool> {
        // Look at both arguments before using either: their memory is often cold (payloads
        // fresh from Redis), and independent loads get fetched in parallel.
        let bytes = payload.cast::<PyBytes>().ok();
        let path = path_arg(path)?;
        let ptr = pointer::parse(path).map_err(value_error)?;
        let doc = &mut self.doc;
        if fmt == "json" {
            if let Some(b) = bytes {
                return doc.merge_json_at(ptr, b.as_bytes()).map_err(doc_error);
            }
            return with_payload(path, payload, |bytes| {
                doc.merge_json_at(ptr, bytes).map_err(doc_error)
            })?;
        }
        with_payload(path, payload, |bytes| match decode(fmt, bytes) {
            Ok(v) => doc.merge_at(ptr, v).map_err(doc_error),
            Err(e) => Err(value_error(e.render(path))),
        })?
    }

    /// `merge_bytes` of each `(path, payload)` of `items`, in order, each atomic on its own: the
    /// result of each (whether it changed something), or the message of the `ValueError` it
    /// would have raised (that item changes nothing; the others still apply). Raises only for a
    /// wrongly shaped argument (`TypeError`, checked before anything is applied) or an unknown
    /// `fmt` (`ValueError`).
    #[pyo3(signature = (items, fmt = "json"))]
    fn merge_many<'py>(
        &mut self,
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
        fmt: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        apply_many(&mut self.doc, py, items, fmt, true)
    }

    /// `replace_bytes` of each `(path, payload)` of `items`, in order, each atomic on its own,
    /// exactly as `merge_many` does for `merge_bytes`: the result of each, or the message of the
    /// `ValueError` it would have raised. Raises only for a wrongly shaped argument (`TypeError`,
    /// checked before anything is applied) or an unknown `fmt` (`ValueError`).
    #[pyo3(signature = (items, fmt = "json"))]
    fn replace_many<'py>(
        &mut self,
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
        fmt: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        apply_many(&mut self.doc, py, items, fmt, false)
    }

    /// `replace` with the value given as a JSON or MessagePack payload.
    #[pyo3(signature = (path, payload, fmt = "json"))]
    fn replace_bytes(
        &mut self,
        path: &str,
        payload: &Bound<'_, PyAny>,
        fmt: &str,
    ) -> PyResult<bool> {
        let ptr = pointer::parse(path).map_err(value_error)?;
        let doc = &mut self.doc;
        if fmt == "json" {
            return with_payload(path, payload, |bytes| {
                doc.replace_json_at(ptr, bytes).map_err(doc_error)
            })?;
        }
        with_payload(path, payload, |bytes| match decode(fmt, bytes) {
            Ok(v) => doc.replace_at(ptr, v).map_err(doc_error),
            Err(e) => Err(value_error(e.render(path))),
        })?
    }

    /// A fresh copy of the value at `path`; KeyError if absent.
    #[pyo3(signature = (path = ""))]
    fn get<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyAny>> {
        if path.is_empty() {
            return obj_to_py(py, self.doc.root());
        }
        match self.doc.get(path) {
            Ok(n) => node_to_py(py, n),
            Err(GetError::Missing) => Err(PyKeyError::new_err(path.to_owned())),
            Err(GetError::Invalid(e)) => Err(doc_error(e)),
        }
    }

    /// The member names of the object at `path`, in document order; KeyError if absent,
    /// ValueError if the value there is not an object.
    #[pyo3(signature = (path = ""))]
    fn keys<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyList>> {
        let obj = if path.is_empty() {
            self.doc.root()
        } else {
            match self.doc.get(path) {
                Ok(Node {
                    kind: Kind::Obj(o), ..
                }) => o,
                Ok(_) => return Err(value_error(format!("{path}: not an object"))),
                Err(GetError::Missing) => return Err(PyKeyError::new_err(path.to_owned())),
                Err(GetError::Invalid(e)) => return Err(doc_error(e)),
            }
        };
        PyList::new(py, obj.children().keys().map(|k| k.as_str()))
    }

    /// `{"version", "floor", "tombstones", "nodes"}`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.doc.stats();
        let d = PyDict::new(py);
        d.set_item("version", s.version)?;
        d.set_item("floor", s.floor)?;
        d.set_item("tombstones", s.tombstones)?;
        d.set_item("nodes", s.nodes)?;
        Ok(d)
    }

    /// The changes from version `v` to now; None if `v` is older than the floor.
    fn changes_since(&self, v: &Bound<'_, PyAny>) -> PyResult<Option<PyChangeSet>> {
        let version = self.doc.version();
        let Some(v) = int_arg("version", v)? else {
            return Err(value_error(format!("version {v} is outside 0..{version}")));
        };
        if v < 0 {
            return Err(value_error(format!("version {v} is outside 0..{version}")));
        }
        self.doc
            .changes_since(v as u64)
            .map(|cs| cs.map(|cs| PyChangeSet { cs }))
            .map_err(doc_error)
    }

    /// The bytes of a `snapshot` message for `channels` (None: every section).
    fn encode_snapshot<'py>(
        &self,
        py: Python<'py>,
        fmt: &str,
        channels: Option<&Bound<'py, PyAny>>,
        seq: u64,
        epoch: &str,
        timestamp_ms: i64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let fmt = Format::parse(fmt).map_err(doc_error)?;
        let channels = channels_arg(channels)?;
        let hint = self.snapshot_hint.load(Ordering::Relaxed);
        let out = encode::encode_snapshot(
            &self.doc,
            fmt,
            channels.as_deref(),
            seq,
            epoch,
            timestamp_ms,
            hint + hint / 8,
        )
        .map_err(doc_error)?;
        self.snapshot_hint.store(out.len(), Ordering::Relaxed);
        Ok(PyBytes::new(py, &out))
    }

    fn __repr__(&self) -> String {
        let s = self.doc.stats();
        format!(
            "<StateDoc version={} floor={} nodes={} tombstones={}>",
            s.version, s.floor, s.nodes, s.tombstones
        )
    }
}

// -- ChangeSet --------------------------------------------------------------------------------

/// The changes between two versions, with values read when it was taken.
#[pyclass(name = "ChangeSet", module = "dashboard_server._fastdiff", frozen)]
pub struct PyChangeSet {
    cs: doc::ChangeSet,
}

#[pymethods]
impl PyChangeSet {
    #[getter(from_version)]
    fn get_from_version(&self) -> u64 {
        self.cs.from_version
    }

    #[getter(to_version)]
    fn get_to_version(&self) -> u64 {
        self.cs.to_version
    }

    fn __len__(&self) -> usize {
        self.cs.len()
    }

    /// `{pointer: value}` of the changed values, in walk order.
    fn changes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (p, v) in self.cs.changes() {
            d.set_item(PyString::new(py, p), value_to_py(py, &v)?)?;
        }
        Ok(d)
    }

    /// Removed pointers, in walk order.
    fn removed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.cs.removed().map(|p| PyString::new(py, p)))
    }

    /// Whether there is nothing for `channels` (None: every section).
    #[pyo3(signature = (channels = None))]
    fn is_empty(&self, channels: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let channels = channels_arg(channels)?;
        Ok(self.cs.is_empty_for(channels.as_deref()))
    }

    /// The bytes of an `update` message, or None if there is nothing for `channels`.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        fmt: &str,
        diff: &str,
        channels: Option<&Bound<'py, PyAny>>,
        seq: u64,
        timestamp_ms: i64,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let fmt = Format::parse(fmt).map_err(doc_error)?;
        let diff = DiffForm::parse(diff).map_err(doc_error)?;
        let channels = channels_arg(channels)?;
        let out =
            encode::encode_update(&self.cs, fmt, diff, channels.as_deref(), seq, timestamp_ms)
                .map_err(doc_error)?;
        Ok(out.map(|b| PyBytes::new(py, &b)))
    }

    fn __repr__(&self) -> String {
        format!(
            "<ChangeSet from_version={} to_version={} entries={}>",
            self.cs.from_version,
            self.cs.to_version,
            self.cs.len()
        )
    }
}

// -- the subscriber scanners -----------------------------------------------------------------

fn routes_arg(what: &str, items: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
    let mut routes = Vec::new();
    for item in items.try_iter()? {
        let item = item?;
        let bytes = item.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!(
                "conflate: expected bytes {what}, got {}",
                type_name(&item)
            ))
        })?;
        routes.push(bytes.as_bytes().to_vec());
    }
    Ok(routes)
}

/// `feed` of a scanner: the bytes of any contiguous buffer, `(messages, replies)`.
fn feed_stream<'py, F: stream::Framing>(
    scanner: &mut stream::Stream<F>,
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
) -> PyResult<(usize, Bound<'py, PyList>)> {
    let mut replies = Vec::new();
    // The scan touches only the scanner and the bytes: it runs without the GIL, so a reader
    // thread scans while the event loop goes on (the caller serializes calls on one scanner).
    let result = if let Ok(bytes) = data.cast::<PyBytes>() {
        let slice = bytes.as_bytes();
        py.detach(|| scanner.feed(slice, &mut replies))
    } else {
        let buffer = pyo3::buffer::PyBuffer::<u8>::get(data)?;
        if !buffer.is_c_contiguous() {
            return Err(PyTypeError::new_err("feed: expected a contiguous buffer"));
        }
        // SAFETY: the buffer is held (exported: it cannot be resized or freed) for the call; it
        // is contiguous bytes of `len_bytes`, only read here, and its owner does not write to it
        // while it is being scanned.
        let slice = unsafe {
            std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.len_bytes())
        };
        py.detach(|| scanner.feed(slice, &mut replies))
    };
    let messages = result.map_err(|e| value_error(e.to_string()))?;
    let list = PyList::empty(py);
    for reply in replies {
        list.append(PyBytes::new(py, &reply))?;
    }
    Ok((messages, list))
}

/// `take` of a scanner: `(conflated, counts, ordered, oversized)`.
fn take_stream<'py, F: stream::Framing>(
    scanner: &mut stream::Stream<F>,
    py: Python<'py>,
) -> PyResult<Bound<'py, PyTuple>> {
    let batch = scanner.take();
    let conflated = PyDict::new(py);
    let counts = PyDict::new(py);
    for (i, c) in batch.conflated {
        let route = PyBytes::new(py, &scanner.routes()[i]);
        let latest = PyDict::new(py);
        for (channel, payload) in c.latest {
            latest.set_item(PyBytes::new(py, &channel), PyBytes::new(py, &payload))?;
        }
        conflated.set_item(&route, latest)?;
        counts.set_item(&route, c.count)?;
    }
    let ordered = PyList::empty(py);
    for m in batch.ordered {
        ordered.append((
            PyBytes::new(py, &m.route),
            PyBytes::new(py, &m.channel),
            PyBytes::new(py, &m.payload),
        ))?;
    }
    let oversized = PyList::empty(py);
    for m in batch.oversized {
        oversized.append((
            PyBytes::new(py, &m.route),
            PyBytes::new(py, &m.channel),
            m.size,
        ))?;
    }
    PyTuple::new(
        py,
        [
            conflated.into_any(),
            counts.into_any(),
            ordered.into_any(),
            oversized.into_any(),
        ],
    )
}

/// A scanner class: `feed` the bytes as they are read (`(messages, replies)`: the number of
/// messages in them and every other complete reply or line, as bytes; `ValueError` if the stream
/// is not the protocol or a frame is too large, and on every later call), `pending_keys` /
/// `pending_ordered`, and `take` the batch (`(conflated, counts, ordered, oversized)`, by route).
macro_rules! scanner_class {
    ($(#[$doc:meta])* $class:ident, $name:literal, $module:ident, $routes:literal) => {
        $(#[$doc])*
        #[pyclass(name = $name, module = "dashboard_server._fastdiff")]
        struct $class {
            inner: $module::Scanner,
        }

        #[pymethods]
        impl $class {
            #[new]
            #[pyo3(signature = (conflate, max_payload))]
            fn new(conflate: &Bound<'_, PyAny>, max_payload: usize) -> PyResult<Self> {
                let routes = routes_arg($routes, conflate)?;
                Ok($class {
                    inner: $module::scanner(routes, max_payload),
                })
            }

            fn feed<'py>(
                &mut self,
                py: Python<'py>,
                data: &Bound<'py, PyAny>,
            ) -> PyResult<(usize, Bound<'py, PyList>)> {
                feed_stream(&mut self.inner, py, data)
            }

            #[getter]
            fn pending_keys(&self) -> usize {
                self.inner.pending_keys()
            }

            #[getter]
            fn pending_ordered(&self) -> usize {
                self.inner.pending_ordered()
            }

            fn take<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
                take_stream(&mut self.inner, py)
            }
        }
    };
}

scanner_class!(
    /// The scanner of a Redis pub/sub connection's bytes (`resp`); routes are the conflated
    /// patterns, replies are whole RESP replies.
    PyPubSubScanner,
    "PubSubScanner",
    resp,
    "patterns"
);

scanner_class!(
    /// The scanner of a NATS subscriber connection's bytes (`nats`); routes are subscription
    /// ids, replies are operation lines without their CRLF.
    PyNatsScanner,
    "NatsScanner",
    nats,
    "subscription ids"
);

// -- module -----------------------------------------------------------------------------------

/// Stateless structural diff of two values as an RFC 6902 op list.
#[pyfunction]
fn diff<'py>(
    py: Python<'py>,
    old: &Bound<'py, PyAny>,
    new: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let old = to_value(old, 0).map_err(|e| value_error(e.render("")))?;
    let new = to_value(new, 0).map_err(|e| value_error(e.render("")))?;
    let list = PyList::empty(py);
    for op in diff_values(&old, new) {
        let d = PyDict::new(py);
        d.set_item("op", op.op.name())?;
        d.set_item("path", PyString::new(py, &op.path))?;
        if let Some(v) = &op.value {
            d.set_item("value", value_to_py(py, v)?)?;
        }
        list.append(d)?;
    }
    Ok(list)
}

/// Test-only hook: panics with `msg`, which the binding raises as `PanicException` (a
/// `BaseException`). The server's tests use it to check that an engine panic is caught and
/// reported; nothing else calls it.
#[pyfunction]
fn _panic_for_tests(msg: &str) {
    panic!("{msg}");
}

/// The Rust engine of dashboard-server: state document, change tracking, message encoding.
#[pymodule]
fn _fastdiff(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyStateDoc>()?;
    m.add_class::<PyChangeSet>()?;
    m.add_class::<PyPubSubScanner>()?;
    m.add_class::<PyNatsScanner>()?;
    m.add_function(wrap_pyfunction!(diff, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    // what a panic in the engine is raised as (test-only hook above; the server catches it)
    m.add(
        "PanicException",
        m.py().get_type::<pyo3::panic::PanicException>(),
    )?;
    m.add("MAX_DEPTH", MAX_DEPTH)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
