//! The state document: a tree of nodes stamped with versions, tombstones for removals, and the
//! change walk (`changes_since`).
//!
//! Every node records `created` (the version that made this node) and `changed` (its newest
//! change; for an object the newest change anywhere below). A removal leaves a [`Tomb`] in the
//! parent object (the key and the versions during which it existed), and an entry in the global
//! log that bounds their number (see [`StateDoc::floor`]). A value that changes kind (object <->
//! non-object) is a new node: the old one counts as removed (it leaves a tombstone too), so a
//! key's tombstones chain its whole history.
//!
//! Every op is atomic: a path is checked while walking down, before anything is modified, and
//! values are valid by construction, so once the walk reaches its target nothing can fail.

use std::borrow::Cow;
use std::collections::VecDeque;

use crate::base::Hasher;
use crate::json::{Tape, TapeRef, Tok};
pub use crate::omap::Key;
use crate::omap::{OMap, Stamped};
use crate::pointer::{self, Pointer, Tokens};
use crate::value::{MapIndex, Value};
use crate::{json, msgpack};

pub type Children = OMap<Node>;

/// A node of the document.
#[derive(Debug, Clone)]
pub struct Node {
    pub(crate) created: u64,
    pub(crate) changed: u64,
    pub(crate) kind: Kind,
}

#[derive(Debug, Clone)]
pub enum Kind {
    /// A scalar or an (atomic) array. Never an `Object`.
    Leaf(Value<'static>),
    Obj(Box<ObjNode>),
}

#[derive(Debug, Clone, Default)]
pub struct ObjNode {
    pub(crate) children: Children,
    /// Removals of members of this object, in removal order.
    pub(crate) tombs: VecDeque<Tomb>,
}

/// A removed node: its key existed from `born` (the node's `created`) until `removed` (exclusive).
#[derive(Debug, Clone)]
pub struct Tomb {
    pub(crate) key: Key,
    pub(crate) born: u64,
    pub(crate) removed: u64,
}

/// One removal in the global log: where its tombstone lives, and when it happened.
#[derive(Debug, Clone)]
struct LogEntry {
    parent: Box<[Key]>,
    removed: u64,
}

/// An op failed: the message starts with the pointer of the offending place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Why `get` found nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetError {
    /// The path is fine, nothing is there.
    Missing,
    /// The path itself is invalid (syntax, goes into an array or through a non-object).
    Invalid(Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub version: u64,
    pub floor: u64,
    pub tombstones: usize,
    pub nodes: usize,
}

impl Node {
    fn obj(v: u64, obj: ObjNode) -> Node {
        Node {
            created: v,
            changed: v,
            kind: Kind::Obj(Box::new(obj)),
        }
    }

    /// A node made of the value `p` at version `v`. `strip_nulls`: merge semantics (null members
    /// of objects are dropped; arrays are untouched).
    pub(crate) fn from_patch<'a, P: Patch<'a>>(p: P, v: u64, strip_nulls: bool) -> Node {
        match p.kind() {
            PatchKind::Object => {
                let mut children = Children::with_capacity(p.len());
                p.for_each_member(|k, val| {
                    if !(strip_nulls && val.kind() == PatchKind::Null) {
                        children.insert(Key::from(k), Node::from_patch(val, v, strip_nulls));
                    }
                });
                Node::obj(
                    v,
                    ObjNode {
                        children,
                        tombs: VecDeque::new(),
                    },
                )
            }
            _ => Node {
                created: v,
                changed: v,
                kind: Kind::Leaf(p.into_owned_value()),
            },
        }
    }

    pub fn as_obj(&self) -> Option<&ObjNode> {
        match &self.kind {
            Kind::Obj(o) => Some(o),
            Kind::Leaf(_) => None,
        }
    }

    /// An owned copy of the value of this node.
    pub fn to_value(&self) -> Value<'static> {
        match &self.kind {
            Kind::Leaf(v) => v.clone(),
            Kind::Obj(o) => Value::Object(
                o.children
                    .iter()
                    .map(|(k, n)| (Cow::Owned(k.to_string()), n.to_value()))
                    .collect(),
            ),
        }
    }

    /// Appends the value of this node as MessagePack.
    pub fn write_msgpack(&self, out: &mut Vec<u8>) {
        match &self.kind {
            Kind::Leaf(v) => msgpack::write_value(out, v),
            Kind::Obj(o) => o.write_msgpack(out),
        }
    }

    fn count(&self) -> usize {
        match &self.kind {
            Kind::Leaf(_) => 1,
            Kind::Obj(o) => 1 + o.children.values().map(Node::count).sum::<usize>(),
        }
    }
}

impl Stamped for Node {
    #[inline]
    fn stamp(&self) -> u64 {
        self.changed
    }
}

impl ObjNode {
    pub fn children(&self) -> &Children {
        &self.children
    }

    /// Appends this object as compact JSON.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (k, n)) in self.children.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::write_str(out, k);
            out.push(b':');
            match &n.kind {
                Kind::Leaf(v) => json::write_value(out, v),
                Kind::Obj(c) => c.write_json(out),
            }
        }
        out.push(b'}');
    }

    /// Appends this object as MessagePack.
    pub fn write_msgpack(&self, out: &mut Vec<u8>) {
        msgpack::write_map_len(out, self.children.len());
        for (k, n) in &self.children {
            msgpack::write_str(out, k);
            match &n.kind {
                Kind::Leaf(v) => msgpack::write_value(out, v),
                Kind::Obj(c) => c.write_msgpack(out),
            }
        }
    }
}

/// The path of an object while walking down (a linked list on the stack; only turned into an
/// owned path when a removal needs to log it).
struct Frame<'p> {
    parent: Option<&'p Frame<'p>>,
    key: &'p str,
}

fn frame_path(frame: Option<&Frame<'_>>) -> Box<[Key]> {
    let mut keys: Vec<Key> = Vec::new();
    let mut f = frame;
    while let Some(fr) = f {
        keys.push(fr.key.into());
        f = fr.parent;
    }
    keys.reverse();
    keys.into_boxed_slice()
}

/// What an op writes with.
struct Ctx<'d> {
    /// The version stamped on every change of this op.
    v: u64,
    log: &'d mut VecDeque<LogEntry>,
}

impl Ctx<'_> {
    fn remove_key(&mut self, obj: &mut ObjNode, frame: Option<&Frame<'_>>, key: &str) -> bool {
        match obj.children.remove(key) {
            Some((key, node)) => {
                self.tomb(&mut obj.tombs, frame, key, node.created);
                true
            }
            None => false,
        }
    }

    fn tomb(&mut self, tombs: &mut VecDeque<Tomb>, frame: Option<&Frame<'_>>, key: Key, born: u64) {
        tombs.push_back(Tomb {
            key,
            born,
            removed: self.v,
        });
        self.log.push_back(LogEntry {
            parent: frame_path(frame),
            removed: self.v,
        });
    }

    /// Puts a new node (made of `value`) at `key`; a node of another kind it replaces counts as
    /// removed.
    fn put_new<'a, P: Patch<'a>>(
        &mut self,
        obj: &mut ObjNode,
        frame: Option<&Frame<'_>>,
        key: Cow<'_, str>,
        value: P,
        strip: bool,
    ) {
        let node = Node::from_patch(value, self.v, strip);
        match obj.children.get_mut_at(key.as_ref(), self.v) {
            Some(old) => {
                let born = old.created;
                *old = node;
                self.tomb(&mut obj.tombs, frame, Key::from(key), born);
            }
            None => {
                obj.children.insert(Key::from(key), node);
            }
        }
    }

    /// RFC 7386 merge of `patch` into the member `key` of `obj` (whose path is `frame`).
    fn merge_member<'a, P: Patch<'a>>(
        &mut self,
        obj: &mut ObjNode,
        frame: Option<&Frame<'_>>,
        key: Cow<'_, str>,
        patch: P,
    ) -> bool {
        match patch.kind() {
            PatchKind::Null => self.remove_key(obj, frame, &key),
            PatchKind::Object => {
                if let Some(child) = obj.children.get_mut_at(key.as_ref(), self.v) {
                    if let Kind::Obj(o) = &mut child.kind {
                        let f = Frame {
                            parent: frame,
                            key: &key,
                        };
                        let changed = self.merge_obj(o, Some(&f), patch);
                        if changed {
                            child.changed = self.v;
                        }
                        return changed;
                    }
                }
                self.put_new(obj, frame, key, patch, true);
                true
            }
            PatchKind::Leaf => {
                if let Some(child) = obj.children.get_mut_at(key.as_ref(), self.v) {
                    if let Kind::Leaf(cur) = &mut child.kind {
                        if !patch.assign_leaf(cur) {
                            return false;
                        }
                        child.changed = self.v;
                        return true;
                    }
                }
                self.put_new(obj, frame, key, patch, true);
                true
            }
        }
    }

    /// Merges the members of the object patch `patch` into `obj`.
    fn merge_obj<'a, P: Patch<'a>>(
        &mut self,
        obj: &mut ObjNode,
        frame: Option<&Frame<'_>>,
        patch: P,
    ) -> bool {
        let mut changed = false;
        patch.for_each_member(|k, val| changed |= self.merge_member(obj, frame, k, val));
        changed
    }

    /// Makes the member `key` of `obj` equal to `value` (structural diff): (whether that changed
    /// anything, whether `key` was a member before).
    fn replace_member<'a, P: Patch<'a>>(
        &mut self,
        obj: &mut ObjNode,
        frame: Option<&Frame<'_>>,
        key: Cow<'_, str>,
        value: P,
    ) -> (bool, bool) {
        let Some(child) = obj.children.get_mut_at(key.as_ref(), self.v) else {
            self.put_new(obj, frame, key, value, false);
            return (true, false);
        };
        let changed = match (&mut child.kind, value.kind()) {
            (Kind::Obj(o), PatchKind::Object) => {
                let f = Frame {
                    parent: frame,
                    key: &key,
                };
                let changed = self.replace_obj(o, Some(&f), value);
                if changed {
                    child.changed = self.v;
                }
                changed
            }
            (Kind::Leaf(cur), kind) if kind != PatchKind::Object => {
                let changed = value.assign_leaf(cur);
                if changed {
                    child.changed = self.v;
                }
                changed
            }
            _ => {
                self.put_new(obj, frame, key, value, false);
                true
            }
        };
        (changed, true)
    }

    /// Makes the object `obj` equal to the object `patch`: its members replaced one by one, then
    /// the members absent from `patch` removed.
    fn replace_obj<'a, P: Patch<'a>>(
        &mut self,
        obj: &mut ObjNode,
        frame: Option<&Frame<'_>>,
        patch: P,
    ) -> bool {
        let before = obj.children.len();
        let mut kept = 0;
        let mut changed = false;
        patch.for_each_member(|k, val| {
            let (c, existed) = self.replace_member(obj, frame, k, val);
            changed |= c;
            kept += usize::from(existed);
        });
        // The keys of `patch` are unique: all the old members are still there iff it had each.
        if kept < before {
            let keys = patch.member_keys();
            let index = MapIndex::new(&keys);
            let removed = obj.children.remove_where(|k, _| !index.contains(&keys, k));
            for (key, node) in removed {
                self.tomb(&mut obj.tombs, frame, key, node.created);
            }
            changed = true;
        }
        changed
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Merge,
    Replace,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Null,
    Object,
    /// Anything else: a scalar or an (atomic) array.
    Leaf,
}

/// The value of an op: a decoded [`Value`], or a value of a scanned JSON payload (read in
/// place, so that only what changes gets built).
pub(crate) trait Patch<'a>: Copy {
    fn kind(&self) -> PatchKind;
    /// Kind name, for messages.
    fn kind_name(&self) -> &'static str;
    /// Members of an object (for capacity).
    fn len(&self) -> usize;
    /// The members of an object, in order (keys unique).
    fn for_each_member(self, f: impl FnMut(Cow<'a, str>, Self));
    fn into_owned_value(self) -> Value<'static>;
    /// Makes the leaf `cur` equal to this (non-object) patch, in place where it can; whether it
    /// changed.
    fn assign_leaf(self, cur: &mut Value<'static>) -> bool;
    /// The member names of an object, as the keys of a map (for [`MapIndex`]).
    fn member_keys(self) -> Vec<(Cow<'a, str>, ())> {
        let mut keys = Vec::with_capacity(self.len());
        self.for_each_member(|k, _| keys.push((k, ())));
        keys
    }
}

impl<'p> Patch<'p> for &'p Value<'_> {
    #[inline]
    fn kind(&self) -> PatchKind {
        match self {
            Value::Null => PatchKind::Null,
            Value::Object(_) => PatchKind::Object,
            _ => PatchKind::Leaf,
        }
    }

    fn kind_name(&self) -> &'static str {
        Value::kind(self)
    }

    fn len(&self) -> usize {
        match self {
            Value::Object(m) => m.len(),
            _ => 0,
        }
    }

    fn for_each_member(self, mut f: impl FnMut(Cow<'p, str>, Self)) {
        if let Value::Object(map) = self {
            for (k, v) in map {
                f(Cow::Borrowed(k.as_ref()), v);
            }
        }
    }

    #[inline]
    fn into_owned_value(self) -> Value<'static> {
        self.to_static()
    }

    #[inline]
    fn assign_leaf(self, cur: &mut Value<'static>) -> bool {
        cur.assign(self)
    }
}

impl<'a> Patch<'a> for TapeRef<'_, 'a> {
    #[inline]
    fn kind(&self) -> PatchKind {
        match self.tok() {
            Tok::Null => PatchKind::Null,
            Tok::Obj { .. } => PatchKind::Object,
            _ => PatchKind::Leaf,
        }
    }

    fn kind_name(&self) -> &'static str {
        match self.tok() {
            Tok::Null => "null",
            Tok::Bool(_) => "bool",
            Tok::Int(_) | Tok::UInt(_) => "int",
            Tok::Float(_) => "float",
            Tok::Str { .. } | Tok::EscStr { .. } => "string",
            Tok::Arr { .. } => "array",
            Tok::Obj { .. } => "object",
        }
    }

    fn len(&self) -> usize {
        TapeRef::len(self)
    }

    fn for_each_member(self, f: impl FnMut(Cow<'a, str>, Self)) {
        TapeRef::for_each_member(self, f);
    }

    fn into_owned_value(self) -> Value<'static> {
        self.to_owned_value()
    }

    fn assign_leaf(self, cur: &mut Value<'static>) -> bool {
        self.assign_to(cur)
    }
}

/// The state document.
#[derive(Debug, Clone)]
pub struct StateDoc {
    pub(crate) root: ObjNode,
    pub(crate) root_changed: u64,
    version: u64,
    floor: u64,
    max_tombstones: usize,
    log: VecDeque<LogEntry>,
    /// Reused by `merge_json` and `replace_json`.
    scratch: Tape,
    /// Sizes of the last change set (entries, pointer bytes, value bytes), to pre-size the next.
    cs_hint: [Hint; 3],
}

/// A size remembered across calls that take `&self`.
#[derive(Debug, Default)]
struct Hint(std::sync::atomic::AtomicUsize);

impl Hint {
    fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set(&self, n: usize) {
        self.0.store(n, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Clone for Hint {
    fn clone(&self) -> Hint {
        Hint(self.get().into())
    }
}

impl StateDoc {
    /// A document whose `sections` are empty objects (at version 0).
    pub fn new<S: AsRef<str>>(
        sections: impl IntoIterator<Item = S>,
        max_tombstones: usize,
    ) -> Self {
        let mut root = ObjNode::default();
        for s in sections {
            if !root.children.contains_key(s.as_ref()) {
                root.children
                    .insert(Key::new(s.as_ref()), Node::obj(0, ObjNode::default()));
            }
        }
        StateDoc {
            root,
            root_changed: 0,
            version: 0,
            floor: 0,
            max_tombstones,
            log: VecDeque::new(),
            scratch: Tape::default(),
            cs_hint: Default::default(),
        }
    }

    /// The number of effective ops so far.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The oldest version `changes_since` can still answer from.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub fn max_tombstones(&self) -> usize {
        self.max_tombstones
    }

    pub fn root(&self) -> &ObjNode {
        &self.root
    }

    pub fn stats(&self) -> Stats {
        Stats {
            version: self.version,
            floor: self.floor,
            tombstones: self.log.len(),
            // Every node but the root.
            nodes: self.root.children.values().map(Node::count).sum::<usize>(),
        }
    }

    // -- ops -----------------------------------------------------------------------------------

    /// RFC 7386 merge of `patch` into the value at `path`.
    pub fn merge(&mut self, path: &str, patch: Value<'_>) -> Result<bool, Error> {
        let ptr = pointer::parse(path).map_err(Error)?;
        self.merge_at(ptr, patch)
    }

    /// `merge` at an already parsed pointer.
    pub fn merge_at(&mut self, ptr: Pointer<'_>, patch: Value<'_>) -> Result<bool, Error> {
        self.merge_patch(ptr, &patch)
    }

    fn merge_patch<'a, P: Patch<'a>>(&mut self, ptr: Pointer<'_>, patch: P) -> Result<bool, Error> {
        if !ptr.is_root() && patch.kind() == PatchKind::Null {
            return self.remove_ptr(ptr);
        }
        self.write(ptr, patch, Op::Merge)
    }

    /// `merge` with the patch given as a JSON payload (decode errors are reported at `path`).
    ///
    /// The payload is merged straight from its scan (see [`crate::json::Tape`]): only what
    /// changes gets built.
    pub fn merge_json(&mut self, path: &str, payload: &[u8]) -> Result<bool, Error> {
        let ptr = pointer::parse(path).map_err(Error)?;
        self.merge_json_at(ptr, payload)
    }

    /// `merge_json` at an already parsed pointer.
    pub fn merge_json_at(&mut self, ptr: Pointer<'_>, payload: &[u8]) -> Result<bool, Error> {
        self.with_scan(ptr, payload, Op::Merge)
    }

    /// `replace` with the value given as a JSON payload (decode errors are reported at `path`),
    /// replaced straight from its scan as `merge_json` does.
    pub fn replace_json(&mut self, path: &str, payload: &[u8]) -> Result<bool, Error> {
        let ptr = pointer::parse(path).map_err(Error)?;
        self.replace_json_at(ptr, payload)
    }

    /// `replace_json` at an already parsed pointer.
    pub fn replace_json_at(&mut self, ptr: Pointer<'_>, payload: &[u8]) -> Result<bool, Error> {
        self.with_scan(ptr, payload, Op::Replace)
    }

    fn with_scan(&mut self, ptr: Pointer<'_>, payload: &[u8], op: Op) -> Result<bool, Error> {
        let mut tape = std::mem::take(&mut self.scratch);
        let res = match crate::json::scan(payload, &mut tape) {
            Ok(patch) if op == Op::Merge => self.merge_patch(ptr, patch),
            Ok(value) => self.write(ptr, value, Op::Replace),
            Err(e) => Err(Error(e.render(ptr.as_str()))),
        };
        if tape.footprint() <= 1 << 20 {
            self.scratch = tape;
        }
        res
    }

    /// Makes the value at `path` equal to `value`.
    pub fn replace(&mut self, path: &str, value: Value<'_>) -> Result<bool, Error> {
        let ptr = pointer::parse(path).map_err(Error)?;
        self.write(ptr, &value, Op::Replace)
    }

    /// `replace` at an already parsed pointer.
    pub fn replace_at(&mut self, ptr: Pointer<'_>, value: Value<'_>) -> Result<bool, Error> {
        self.write(ptr, &value, Op::Replace)
    }

    /// Removes the value at `path`; `false` if there is none.
    pub fn remove(&mut self, path: &str) -> Result<bool, Error> {
        let ptr = pointer::parse(path).map_err(Error)?;
        self.remove_ptr(ptr)
    }

    fn write<'a, P: Patch<'a>>(
        &mut self,
        ptr: Pointer<'_>,
        value: P,
        op: Op,
    ) -> Result<bool, Error> {
        let mut cx = Ctx {
            v: self.version + 1,
            log: &mut self.log,
        };
        let changed = if ptr.is_root() {
            if value.kind() != PatchKind::Object {
                return Err(Error(format!(
                    "{}: not an object: the root must be an object, got {}",
                    pointer::display(ptr.as_str()),
                    value.kind_name()
                )));
            }
            match op {
                Op::Merge => cx.merge_obj(&mut self.root, None, value),
                Op::Replace => cx.replace_obj(&mut self.root, None, value),
            }
        } else {
            write_path(&mut cx, &mut self.root, None, ptr, ptr.tokens(), value, op)?
        };
        Ok(self.finish(changed))
    }

    fn remove_ptr(&mut self, ptr: Pointer<'_>) -> Result<bool, Error> {
        if ptr.is_root() {
            return Err(Error(format!(
                "{}: cannot remove the root",
                pointer::display(ptr.as_str())
            )));
        }
        let mut cx = Ctx {
            v: self.version + 1,
            log: &mut self.log,
        };
        let changed = remove_path(&mut cx, &mut self.root, None, ptr, ptr.tokens())?;
        Ok(self.finish(changed))
    }

    /// Commits an op: bumps the version if it changed something, then applies the horizon.
    fn finish(&mut self, changed: bool) -> bool {
        if changed {
            self.version += 1;
            self.root_changed = self.version;
            self.enforce_horizon();
        }
        changed
    }

    fn enforce_horizon(&mut self) {
        while self.log.len() > self.max_tombstones {
            let Some(entry) = self.log.pop_front() else {
                break;
            };
            self.floor = self.floor.max(entry.removed);
            // Drop the tombstones that can no longer be asked for from the object they live in
            // (if that path now holds another object, its old tombstones are useless too).
            let mut obj = &mut self.root;
            let mut found = true;
            for k in entry.parent.iter() {
                match obj.children.get_mut(k).map(|n| &mut n.kind) {
                    Some(Kind::Obj(o)) => obj = o,
                    _ => {
                        found = false;
                        break;
                    }
                }
            }
            if found {
                let floor = self.floor;
                while obj.tombs.front().is_some_and(|t| t.removed <= floor) {
                    obj.tombs.pop_front();
                }
            }
        }
    }

    // -- reading -------------------------------------------------------------------------------

    /// The node at `path` (a path through a non-object or into an array finds nothing).
    pub fn get(&self, path: &str) -> Result<&Node, GetError> {
        let ptr = pointer::parse(path).map_err(|e| GetError::Invalid(Error(e)))?;
        let mut tokens = ptr.tokens();
        let mut obj = &self.root;
        loop {
            let Some(key) = tokens.next() else {
                // Only reached for the root.
                return Err(GetError::Missing);
            };
            let Some(node) = obj.children.get(key.as_ref()) else {
                return Err(GetError::Missing);
            };
            if tokens.is_empty() {
                return Ok(node);
            }
            match &node.kind {
                Kind::Obj(o) => obj = o,
                Kind::Leaf(_) => return Err(GetError::Missing),
            }
        }
    }

    /// The value at `path` (owned copy); the root as an object when `path` is `""`.
    pub fn get_value(&self, path: &str) -> Result<Value<'static>, GetError> {
        if path.is_empty() {
            return Ok(obj_to_value(&self.root));
        }
        self.get(path).map(Node::to_value)
    }

    /// The change set from `since` to now; `Ok(None)` if `since` is older than the floor.
    pub fn changes_since(&self, since: u64) -> Result<Option<ChangeSet>, Error> {
        if since > self.version {
            return Err(Error(format!(
                "version {since} is ahead of the document (version {})",
                self.version
            )));
        }
        if since < self.floor {
            return Ok(None);
        }
        let mut cs = ChangeSet::new(since, self.version);
        if self.root_changed > since {
            // Pre-size from the last one (cursors usually move in similar steps).
            let [e, p, v] = &self.cs_hint;
            cs.entries.reserve(e.get());
            cs.ptrs.reserve(p.get());
            cs.vals.reserve(v.get());
            let mut ptr = Vec::with_capacity(64);
            walk(&self.root, since, &mut ptr, None, &mut cs);
            // Remember the larger of this size and a slowly shrinking memory of the past ones.
            for (h, n) in [
                (e, cs.entries.len()),
                (p, cs.ptrs.len()),
                (v, cs.vals.len()),
            ] {
                h.set(n.max(h.get() - h.get() / 8));
            }
        }
        Ok(Some(cs))
    }
}

/// The root object as a value.
pub(crate) fn obj_to_value(o: &ObjNode) -> Value<'static> {
    Value::Object(
        o.children
            .iter()
            .map(|(k, n)| (Cow::Owned(k.to_string()), n.to_value()))
            .collect(),
    )
}

/// The error for a path that goes through the leaf `v` (its pointer is `tokens.prefix()`).
fn through_leaf(ptr: Pointer<'_>, tokens: &Tokens<'_>, v: &Value<'_>) -> Error {
    if matches!(v, Value::Array(_)) {
        Error(format!(
            "{}: {} is an array: a path cannot go into an array (arrays are atomic)",
            ptr.as_str(),
            tokens.prefix()
        ))
    } else {
        Error(format!(
            "{}: not an object: {} is a {}",
            ptr.as_str(),
            tokens.prefix(),
            v.kind()
        ))
    }
}

/// Walks down `tokens` from `obj` (checking the way before changing anything) and merges /
/// replaces `value` at the end. Missing intermediates are created.
fn write_path<'a, P: Patch<'a>>(
    cx: &mut Ctx<'_>,
    obj: &mut ObjNode,
    frame: Option<&Frame<'_>>,
    ptr: Pointer<'_>,
    mut tokens: Tokens<'_>,
    value: P,
    op: Op,
) -> Result<bool, Error> {
    let Some(key) = tokens.next() else {
        return Ok(false);
    };
    if tokens.is_empty() {
        return Ok(match op {
            Op::Merge => cx.merge_member(obj, frame, key, value),
            Op::Replace => cx.replace_member(obj, frame, key, value).0,
        });
    }
    match obj.children.get_mut_at(key.as_ref(), cx.v) {
        Some(child) => match &mut child.kind {
            Kind::Obj(o) => {
                let f = Frame {
                    parent: frame,
                    key: &key,
                };
                let changed = write_path(cx, o, Some(&f), ptr, tokens, value, op)?;
                if changed {
                    child.changed = cx.v;
                }
                Ok(changed)
            }
            Kind::Leaf(v) => Err(through_leaf(ptr, &tokens, v)),
        },
        None => {
            // Create the missing chain, innermost first.
            let rest: Vec<Cow<'_, str>> = tokens.collect();
            let mut node = Node::from_patch(value, cx.v, op == Op::Merge);
            for k in rest.into_iter().rev() {
                let mut o = ObjNode::default();
                o.children.insert(Key::from(k), node);
                node = Node::obj(cx.v, o);
            }
            obj.children.insert(Key::from(key), node);
            Ok(true)
        }
    }
}

fn remove_path(
    cx: &mut Ctx<'_>,
    obj: &mut ObjNode,
    frame: Option<&Frame<'_>>,
    ptr: Pointer<'_>,
    mut tokens: Tokens<'_>,
) -> Result<bool, Error> {
    let Some(key) = tokens.next() else {
        return Ok(false);
    };
    if tokens.is_empty() {
        return Ok(cx.remove_key(obj, frame, &key));
    }
    match obj.children.get_mut_at(key.as_ref(), cx.v) {
        Some(child) => match &mut child.kind {
            Kind::Obj(o) => {
                let f = Frame {
                    parent: frame,
                    key: &key,
                };
                let changed = remove_path(cx, o, Some(&f), ptr, tokens)?;
                if changed {
                    child.changed = cx.v;
                }
                Ok(changed)
            }
            Kind::Leaf(v) => Err(through_leaf(ptr, &tokens, v)),
        },
        None => Ok(false),
    }
}

// -- change sets ------------------------------------------------------------------------------

/// What an entry of a change set says about its pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// The key is gone.
    Removed,
    /// The node existed at `from_version` and its value is now the entry's value.
    Replace,
    /// The node was created after `from_version`; its value is the entry's value.
    Add,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RawEntry {
    kind: EntryKind,
    section: u32,
    ptr: (usize, usize),
    val: (usize, usize),
}

/// The changes from `from_version` to `to_version`, in walk order.
///
/// Values are read (encoded as MessagePack into one buffer) when the change set is taken, so the
/// change set is independent of later ops; pointers live in one string. Nothing is allocated per
/// entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    pub from_version: u64,
    pub to_version: u64,
    entries: Vec<RawEntry>,
    /// The pointers, back to back (UTF-8: made of keys).
    ptrs: Vec<u8>,
    vals: Vec<u8>,
    /// The distinct first tokens (unescaped) of the entries, in order.
    sections: Vec<Key>,
    /// Per section: (changed values, removals).
    counts: Vec<(u32, u32)>,
    /// No pointer needs escaping as a JSON string.
    ptrs_json_clean: bool,
}

/// One entry of a [`ChangeSet`].
#[derive(Debug, Clone, Copy)]
pub struct Entry<'c> {
    pub kind: EntryKind,
    /// The pointer's UTF-8 bytes (see [`Entry::pointer`]).
    pub pointer_bytes: &'c [u8],
    /// Index into [`ChangeSet::sections`] of the first token of `pointer`.
    pub section: u32,
    /// The value as MessagePack (empty for a removal).
    pub value_msgpack: &'c [u8],
}

impl<'c> Entry<'c> {
    /// The JSON Pointer of the entry.
    pub fn pointer(&self) -> &'c str {
        std::str::from_utf8(self.pointer_bytes).unwrap_or_default()
    }

    pub fn is_removed(&self) -> bool {
        self.kind == EntryKind::Removed
    }

    /// The value (`Null` for a removal).
    pub fn value(&self) -> Value<'c> {
        if self.is_removed() {
            return Value::Null;
        }
        msgpack::parse(self.value_msgpack).unwrap_or(Value::Null)
    }
}

impl ChangeSet {
    fn new(from_version: u64, to_version: u64) -> ChangeSet {
        ChangeSet {
            from_version,
            to_version,
            entries: Vec::new(),
            ptrs: Vec::new(),
            vals: Vec::new(),
            sections: Vec::new(),
            counts: Vec::new(),
            ptrs_json_clean: true,
        }
    }

    /// Whether no pointer needs escaping as a JSON string (`"`, `\\`, control characters).
    pub fn pointers_json_clean(&self) -> bool {
        self.ptrs_json_clean
    }

    /// Per section (as in [`ChangeSet::sections`]): how many changed values and removals.
    pub fn section_counts(&self) -> &[(u32, u32)] {
        &self.counts
    }

    /// Bytes of all pointers and of all values (MessagePack).
    pub fn buffer_sizes(&self) -> (usize, usize) {
        (self.ptrs.len(), self.vals.len())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn sections(&self) -> &[Key] {
        &self.sections
    }

    fn entry(&self, e: &RawEntry) -> Entry<'_> {
        let pointer_bytes = self.ptrs.get(e.ptr.0..e.ptr.1).unwrap_or_default();
        Entry {
            kind: e.kind,
            pointer_bytes,
            section: e.section,
            value_msgpack: self.vals.get(e.val.0..e.val.1).unwrap_or_default(),
        }
    }

    /// Every entry, in order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'_>> + '_ {
        self.entries.iter().map(|e| self.entry(e))
    }

    /// For each section, whether it is in `channels` (`None`: every section).
    pub fn section_mask<S: AsRef<str>>(&self, channels: Option<&[S]>) -> Vec<bool> {
        match channels {
            None => vec![true; self.sections.len()],
            Some(ch) => self
                .sections
                .iter()
                .map(|s| ch.iter().any(|c| c.as_ref() == s.as_str()))
                .collect(),
        }
    }

    /// The entries for `channels`, in order.
    pub fn entries_for<'s, S: AsRef<str>>(
        &'s self,
        channels: Option<&[S]>,
    ) -> impl Iterator<Item = Entry<'s>> + 's {
        let mask = self.section_mask(channels);
        self.entries
            .iter()
            .filter(move |e| mask.get(e.section as usize).copied().unwrap_or(false))
            .map(|e| self.entry(e))
    }

    pub fn is_empty_for<S: AsRef<str>>(&self, channels: Option<&[S]>) -> bool {
        self.entries_for(channels).next().is_none()
    }

    /// `(pointer, value)` of the changed values, in order.
    pub fn changes(&self) -> impl Iterator<Item = (&str, Value<'_>)> {
        self.entries()
            .filter(|e| !e.is_removed())
            .map(|e| (e.pointer(), e.value()))
    }

    /// Removed pointers, in order.
    pub fn removed(&self) -> impl Iterator<Item = &str> {
        self.entries()
            .filter(|e| e.is_removed())
            .map(|e| e.pointer())
    }

    fn add_section(&mut self, key: &str) -> u32 {
        self.sections.push(Key::new(key));
        self.counts.push((0, 0));
        (self.sections.len() - 1) as u32
    }

    /// Records an entry at the pointer `ptr`; `node`: its value (none for a removal).
    fn push(&mut self, kind: EntryKind, ptr: &[u8], section: u32, node: Option<&Node>) {
        let p0 = self.ptrs.len();
        crate::base::put(&mut self.ptrs, ptr);
        let v0 = self.vals.len();
        if let Some(n) = node {
            n.write_msgpack(&mut self.vals);
        }
        self.entries.push(RawEntry {
            kind,
            section,
            ptr: (p0, self.ptrs.len()),
            val: (v0, self.vals.len()),
        });
        if let Some(c) = self.counts.get_mut(section as usize) {
            if kind == EntryKind::Removed {
                c.1 += 1;
            } else {
                c.0 += 1;
            }
        }
    }
}

fn walk(obj: &ObjNode, since: u64, ptr: &mut Vec<u8>, section: Option<u32>, cs: &mut ChangeSet) {
    let mark = ptr.len();
    // Removals first: keys absent now that existed at `since` (one of their tombstones spans it),
    // by (their latest removal, key).
    let start = obj.tombs.partition_point(|t| t.removed <= since);
    if start < obj.tombs.len() {
        let mut gone: Vec<(u64, &Key)> = obj
            .tombs
            .range(start..)
            .filter(|t| t.born <= since && !obj.children.contains_key(&t.key))
            .map(|t| (t.removed, &t.key))
            .collect();
        if !gone.is_empty() {
            latest_removals(&obj.tombs, start, &mut gone);
            gone.sort_unstable();
        }
        for (_, key) in gone {
            cs.ptrs_json_clean &= !key.needs_json_escape();
            pointer::push_token_bytes(ptr, key, key.needs_escape());
            let sec = section.unwrap_or_else(|| cs.add_section(key));
            cs.push(EntryKind::Removed, ptr, sec, None);
            ptr.truncate(mark);
        }
    }
    for (k, child) in obj.children.iter_since(since) {
        if child.changed <= since {
            continue;
        }
        cs.ptrs_json_clean &= !k.needs_json_escape();
        pointer::push_token_bytes(ptr, k, k.needs_escape());
        let sec = section.unwrap_or_else(|| cs.add_section(k));
        if child.created > since {
            cs.push(EntryKind::Add, ptr, sec, Some(child));
        } else {
            match &child.kind {
                Kind::Leaf(_) => cs.push(EntryKind::Replace, ptr, sec, Some(child)),
                Kind::Obj(o) => walk(o, since, ptr, Some(sec), cs),
            }
        }
        ptr.truncate(mark);
    }
}

/// Sets the version of each `(version, key)` in `gone` to the latest removal of `key` (among
/// `tombs[start..]`, the tombstones newer than the cursor).
fn latest_removals(tombs: &VecDeque<Tomb>, start: usize, gone: &mut [(u64, &Key)]) {
    let tail = tombs.range(start..);
    if tail.len() <= 32 || gone.len() <= 2 {
        for g in gone.iter_mut() {
            if let Some(t) = tail.clone().rev().find(|t| t.key == *g.1) {
                g.0 = t.removed;
            }
        }
    } else {
        let mut latest: std::collections::HashMap<&str, u64, Hasher> =
            std::collections::HashMap::with_capacity_and_hasher(tail.len(), Hasher::default());
        for t in tail {
            latest.insert(t.key.as_str(), t.removed);
        }
        for g in gone.iter_mut() {
            if let Some(&r) = latest.get(g.1.as_str()) {
                g.0 = r;
            }
        }
    }
}

#[cfg(test)]
mod tests;
