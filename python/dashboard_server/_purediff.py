"""Pure-Python twin of the native engine ``_fastdiff``: same interface, same semantics.

It is the reference the property tests compare the Rust engine with, the fallback when the
extension is not built, and the baseline the benchmarks race against. The contract both follow
is docs/engine.md; the comments here only explain how this implementation meets it.

The document is a tree of nodes. An object node (``_Obj``) holds its children in an insertion
ordered dict plus, once something was removed from it, its tombstones; a leaf node (``_Leaf``)
holds a scalar or a whole array (arrays are atomic). Every node carries ``created`` (the version
that created it) and ``changed`` (the newest version that changed it or, for objects, anything
below it). Values stored in leaves are normalised copies that never leave the engine: readers get
fresh copies.
"""

from __future__ import annotations

import json
import math
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import msgpack
import orjson

from dashboard_server.core import pointer
from dashboard_server.core.pointer import escape_token
from dashboard_server.core.timefmt import rfc3339_ms

__version__: Final = "0.1.0"
MAX_DEPTH: Final = 128

_INT_MIN: Final = -(1 << 63)
_INT_MAX: Final = (1 << 64) - 1
_FORMATS: Final = ("msgpack", "json")
# MessagePack kinds outside the JSON data model, named as the format names them.
_MSGPACK_ONLY: Final = {
    bytes: "bin",
    bytearray: "bin",
    msgpack.ExtType: "ext",
    msgpack.Timestamp: "ext",
}
_DIFF_FORMS: Final = ("changes", "json-patch")


# --------------------------------------------------------------------------------------------
# Values and pointers


def _where(ptr: str) -> str:
    """How an error message names a place: its JSON Pointer, or ``(root)``."""
    return ptr if ptr else "(root)"


def _fail(ptr: str, problem: str) -> ValueError:
    return ValueError(f"{_where(ptr)}: {problem}")


def parse_pointer(path: object) -> list[str]:
    """Split an RFC 6901 JSON Pointer into unescaped tokens (``""`` is the root: no tokens)."""
    if not isinstance(path, str):
        raise ValueError(f"invalid JSON pointer {path!r}: must be a string")
    if path.startswith("/") and path.count("/") > MAX_DEPTH:
        raise ValueError(f"invalid JSON pointer {path[:60]!r}...: more than {MAX_DEPTH} tokens")
    tokens = pointer.parse_pointer(path)
    _check_utf8(path, "")
    return tokens


def _check_utf8(text: str, ptr: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _fail(ptr, "string is not valid UTF-8 (lone surrogate)") from None


def _batch_items(items: object) -> list[tuple[str, bytes]]:
    """The items of ``merge_many`` / ``replace_many``, checked before anything is applied
    (``TypeError``)."""
    if isinstance(items, str | bytes | bytearray):
        raise TypeError(
            f"items must be an iterable of (path, payload) pairs, not {type(items).__name__}"
        )
    try:
        iterator = iter(items)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"items must be an iterable of (path, payload) pairs, not {type(items).__name__}"
        ) from None
    batch: list[tuple[str, bytes]] = []
    for i, item in enumerate(iterator):
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise TypeError(f"items[{i}] must be a (path, payload) pair, not {type(item).__name__}")
        path, payload = item
        if not isinstance(path, str):
            raise TypeError(f"items[{i}]: path must be a str, not {type(path).__name__}")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(
                f"items[{i}]: payload must be bytes, bytearray or memoryview, "
                f"not {type(payload).__name__}"
            )
        batch.append((path, bytes(payload)))
    return batch


def normalize(value: object, ptr: str = "", depth: int = 0) -> Any:
    """Check ``value`` against the JSON data model and return a private normalised copy.

    Subclasses become their base types and tuples become lists, so that two normalised values
    are equal exactly when :func:`values_equal` says so.
    """
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        _check_utf8(value, ptr)
        return str(value)
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return int(value)
        raise _fail(ptr, f"int {value} is out of range (must fit in i64 or u64)")
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        raise _fail(ptr, f"non-finite float {value!r} is not allowed")
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise _fail(ptr, f"nesting depth exceeds {MAX_DEPTH}")
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _fail(ptr, f"non-string key {key!r} ({type(key).__name__})")
            _check_utf8(key, ptr)
            out[str(key)] = normalize(item, f"{ptr}/{escape_token(key)}", depth + 1)
        return out
    kind = _MSGPACK_ONLY.get(type(value))
    if kind is not None:  # before tuples: a msgpack ExtType is a namedtuple
        raise _fail(ptr, f"unsupported type {type(value).__name__}: {kind} is not JSON data")
    if isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise _fail(ptr, f"nesting depth exceeds {MAX_DEPTH}")
        return [normalize(item, f"{ptr}/{i}", depth + 1) for i, item in enumerate(value)]
    raise _fail(ptr, f"unsupported type {type(value).__name__}")


def values_equal(a: Any, b: Any) -> bool:
    """Strict equality of normalised values: same kind and content; floats by their bits."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is float:
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if kind is list:
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind is dict:
        if len(a) != len(b):
            return False
        return all(key in b and values_equal(item, b[key]) for key, item in a.items())
    return bool(a == b)


def _copy(value: Any) -> Any:
    kind = type(value)
    if kind is list:
        return [_copy(item) for item in value]
    if kind is dict:
        return {key: _copy(item) for key, item in value.items()}
    return value


def _strip_nulls(value: Any) -> Any:
    """RFC 7386 applied to a missing target: the patch without its null members, recursively."""
    if type(value) is dict:
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite float {name} is not allowed")


def decode_payload(payload: object, fmt: str, ptr: str) -> Any:
    """Decode a JSON or MessagePack payload into a normalised value (errors name ``ptr``)."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise _fail(ptr, f"payload must be bytes, not {type(payload).__name__}")
    data = bytes(payload)
    if fmt == "json":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _fail(ptr, f"invalid JSON: not valid UTF-8 at byte {exc.start}") from None
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise _fail(ptr, f"invalid JSON at byte {exc.pos}: {exc.msg}") from None
        except ValueError as exc:
            raise _fail(ptr, f"invalid JSON: {exc}") from None
        except RecursionError:
            raise _fail(ptr, f"invalid JSON: nesting depth exceeds {MAX_DEPTH}") from None
    elif fmt == "msgpack":
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
        except UnicodeDecodeError:
            raise _fail(ptr, "invalid MessagePack: string is not valid UTF-8") from None
        except msgpack.StackError:
            raise _fail(ptr, f"invalid MessagePack: nesting depth exceeds {MAX_DEPTH}") from None
        except Exception as exc:  # the msgpack library raises several unrelated types
            raise _fail(ptr, f"invalid MessagePack: {type(exc).__name__}: {exc}") from None
    else:
        raise _fail(ptr, f"unknown payload format {fmt!r}: expected 'json' or 'msgpack'")
    return normalize(value, ptr)


def _check_format(fmt: str) -> None:
    if fmt not in _FORMATS:
        raise ValueError(f"unknown format {fmt!r}: expected 'msgpack' or 'json'")


def _serialize(message: dict[str, Any], fmt: str) -> bytes:
    if fmt == "json":
        return orjson.dumps(message)
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def _channel_set(channels: Sequence[str] | None) -> frozenset[str] | None:
    if channels is None:
        return None
    if isinstance(channels, str):
        raise ValueError("channels must be a sequence of section names, not a single string")
    return frozenset(channels)


# --------------------------------------------------------------------------------------------
# The document


class _Leaf:
    __slots__ = ("changed", "created", "value")

    def __init__(self, value: Any, version: int) -> None:
        self.value = value
        self.created = version
        self.changed = version


class _Tomb:
    """What an object remembers of a removed key: its latest removal and when it existed."""

    __slots__ = ("intervals", "removed")

    def __init__(self) -> None:
        self.removed = 0
        self.intervals: list[tuple[int, int]] = []  # [created, removed) spans, oldest first

    def existed_at(self, version: int) -> bool:
        return any(start <= version < end for start, end in self.intervals)


class _Obj:
    __slots__ = ("changed", "children", "created", "tombs")

    def __init__(self, version: int) -> None:
        self.children: dict[str, _Obj | _Leaf] = {}
        self.created = version
        self.changed = version
        # Tombstones, ordered by their latest removal (a re-removed key moves to the end).
        self.tombs: dict[str, _Tomb] | None = None


_Node = _Obj | _Leaf


def _build(value: Any, version: int) -> _Node:
    """A new node (subtree) for a normalised value."""
    if type(value) is dict:
        obj = _Obj(version)
        obj.children = {key: _build(item, version) for key, item in value.items()}
        return obj
    return _Leaf(value, version)


def _to_python(node: _Node) -> Any:
    if type(node) is _Obj:
        return {key: _to_python(child) for key, child in node.children.items()}
    return _copy(node.value)  # type: ignore[union-attr]


def _count(node: _Node) -> int:
    if type(node) is _Obj:
        return 1 + sum(_count(child) for child in node.children.values())
    return 1


class StateDoc:
    """The state document with version-stamped change tracking (see docs/engine.md)."""

    def __init__(self, sections: Iterable[str] = (), *, max_tombstones: int = 100_000) -> None:
        if isinstance(max_tombstones, bool) or not isinstance(max_tombstones, int):
            raise ValueError(f"max_tombstones must be an int, not {max_tombstones!r}")
        if max_tombstones < 0:
            raise ValueError(f"max_tombstones must be >= 0, not {max_tombstones}")
        if isinstance(sections, str):
            raise ValueError("sections must be a sequence of names, not a single string")
        self._root = _Obj(0)
        self._version = 0
        self._floor = 0
        self._nodes = 0
        self._max_tombstones = max_tombstones
        # One entry per removal, oldest first: (version, tokens of the parent object, key).
        self._log: deque[tuple[int, tuple[str, ...], str]] = deque()
        for name in sections:
            if not isinstance(name, str):
                raise ValueError(f"section name must be a string, not {name!r}")
            if name not in self._root.children:
                self._root.children[name] = _Obj(0)
                self._nodes += 1

    # -- reading ------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    @property
    def floor(self) -> int:
        return self._floor

    def get(self, path: str = "") -> Any:
        node: _Node = self._root
        for token in parse_pointer(path):
            if type(node) is not _Obj or token not in node.children:
                raise KeyError(path)
            node = node.children[token]
        return _to_python(node)

    def keys(self, path: str = "") -> list[str]:
        node: _Node = self._root
        for token in parse_pointer(path):
            if type(node) is not _Obj or token not in node.children:
                raise KeyError(path)
            node = node.children[token]
        if type(node) is not _Obj:
            raise _fail(path, "not an object")
        return list(node.children)

    def stats(self) -> dict[str, int]:
        return {
            "version": self._version,
            "floor": self._floor,
            "tombstones": len(self._log),
            "nodes": self._nodes,
        }

    # -- ingest -------------------------------------------------------------------------------

    def merge(self, path: str, patch: Any) -> bool:
        tokens = parse_pointer(path)
        if patch is None and tokens:
            return self._remove(tokens, path)
        return self._apply(tokens, path, normalize(patch, path), merge=True)

    def replace(self, path: str, value: Any) -> bool:
        tokens = parse_pointer(path)
        return self._apply(tokens, path, normalize(value, path), merge=False)

    def remove(self, path: str) -> bool:
        tokens = parse_pointer(path)
        if not tokens:
            raise _fail(path, "cannot remove the root")
        return self._remove(tokens, path)

    def merge_bytes(self, path: str, payload: bytes, fmt: str = "json") -> bool:
        tokens = parse_pointer(path)
        value = decode_payload(payload, fmt, path)
        if value is None and tokens:
            return self._remove(tokens, path)
        return self._apply(tokens, path, value, merge=True)

    def merge_many(self, items: Iterable[Any], fmt: str = "json") -> list[bool | str]:
        """``merge_bytes`` of each ``(path, payload)``, in order; per item its result or the
        message of the ``ValueError`` it raised (that item changes nothing)."""
        return self._many(self.merge_bytes, items, fmt)

    def replace_many(self, items: Iterable[Any], fmt: str = "json") -> list[bool | str]:
        """``replace_bytes`` of each ``(path, payload)``, in order, as :meth:`merge_many`."""
        return self._many(self.replace_bytes, items, fmt)

    @staticmethod
    def _many(op: Any, items: Iterable[Any], fmt: str) -> list[bool | str]:
        if fmt not in ("json", "msgpack"):
            raise ValueError(f"unknown payload format {fmt!r}: expected 'json' or 'msgpack'")
        results: list[bool | str] = []
        for path, payload in _batch_items(items):
            try:
                results.append(op(path, payload, fmt))
            except ValueError as exc:
                results.append(str(exc))
        return results

    def replace_bytes(self, path: str, payload: bytes, fmt: str = "json") -> bool:
        tokens = parse_pointer(path)
        return self._apply(tokens, path, decode_payload(payload, fmt, path), merge=False)

    def _walk_parent(self, tokens: list[str], path: str) -> tuple[_Obj, int]:
        """The deepest existing object on the way to ``tokens[-1]``'s parent, and its depth.

        Raises (before anything is changed) when an existing node on the way is not an object.
        """
        node = self._root
        for depth, token in enumerate(tokens[:-1]):
            child = node.children.get(token)
            if child is None:
                return node, depth
            if type(child) is not _Obj:
                where = "/" + "/".join(escape_token(t) for t in tokens[: depth + 1])
                kind = "an array (arrays are atomic)" if type(child.value) is list else "a scalar"  # type: ignore[union-attr]
                raise ValueError(f"{path}: cannot go inside {where}: it is {kind}, not an object")
            node = child
        return node, len(tokens) - 1

    def _apply(self, tokens: list[str], path: str, value: Any, *, merge: bool) -> bool:
        version = self._version + 1
        if not tokens:
            if type(value) is not dict:
                raise _fail(path, "the root must be an object")
            if merge:
                changed = self._merge_object(self._root, value, (), version)
            else:
                changed = self._replace_object(self._root, value, (), version)
        else:
            parent, depth = self._walk_parent(tokens, path)
            ptokens = tuple(tokens[:depth])
            if depth < len(tokens) - 1:
                # Missing intermediates: build the chain as one new subtree.
                leafvalue = _strip_nulls(value) if merge else value
                for token in reversed(tokens[depth + 1 :]):
                    leafvalue = {token: leafvalue}
                self._set_child(parent, tokens[depth], _build(leafvalue, version), ptokens, version)
                changed = True
            else:
                key = tokens[-1]
                if merge:
                    changed = self._merge_into(parent, key, value, ptokens, version)
                else:
                    changed = self._replace_into(parent, key, value, ptokens, version)
        if changed:
            self._commit(tokens[:-1], version)
        return changed

    def _remove(self, tokens: list[str], path: str) -> bool:
        parent, depth = self._walk_parent(tokens, path)
        if depth < len(tokens) - 1 or tokens[-1] not in parent.children:
            return False
        version = self._version + 1
        self._remove_child(parent, tokens[-1], tuple(tokens[:-1]), version)
        self._commit(tokens[:-1], version)
        return True

    def _commit(self, parent_tokens: list[str], version: int) -> None:
        """Stamp the ancestors of a change and publish the new version."""
        node = self._root
        node.changed = version
        for token in parent_tokens:
            child = node.children[token]
            assert type(child) is _Obj
            child.changed = version
            node = child
        self._version = version
        self._prune()

    def _merge_into(
        self, parent: _Obj, key: str, patch: Any, ptokens: tuple[str, ...], version: int
    ) -> bool:
        existing = parent.children.get(key)
        if type(patch) is dict:
            if type(existing) is _Obj:
                return self._merge_object(existing, patch, (*ptokens, key), version)
            self._set_child(parent, key, _build(_strip_nulls(patch), version), ptokens, version)
            return True
        return self._set_leaf(parent, key, existing, patch, ptokens, version)

    def _merge_object(
        self, obj: _Obj, patch: dict[str, Any], tokens: tuple[str, ...], version: int
    ) -> bool:
        changed = False
        for key, item in patch.items():
            if item is None:
                if key in obj.children:
                    self._remove_child(obj, key, tokens, version)
                    changed = True
            elif self._merge_into(obj, key, item, tokens, version):
                changed = True
        if changed:
            obj.changed = version
        return changed

    def _replace_into(
        self, parent: _Obj, key: str, value: Any, ptokens: tuple[str, ...], version: int
    ) -> bool:
        existing = parent.children.get(key)
        if type(value) is dict:
            if type(existing) is _Obj:
                return self._replace_object(existing, value, (*ptokens, key), version)
            self._set_child(parent, key, _build(value, version), ptokens, version)
            return True
        return self._set_leaf(parent, key, existing, value, ptokens, version)

    def _replace_object(
        self, obj: _Obj, value: dict[str, Any], tokens: tuple[str, ...], version: int
    ) -> bool:
        changed = False
        for key in [k for k in obj.children if k not in value]:
            self._remove_child(obj, key, tokens, version)
            changed = True
        for key, item in value.items():
            if self._replace_into(obj, key, item, tokens, version):
                changed = True
        if changed:
            obj.changed = version
        return changed

    def _set_leaf(
        self,
        parent: _Obj,
        key: str,
        existing: _Node | None,
        value: Any,
        ptokens: tuple[str, ...],
        version: int,
    ) -> bool:
        """Make ``parent[key]`` the scalar or array ``value``; a leaf stays the same node."""
        if type(existing) is _Leaf:
            if values_equal(existing.value, value):
                return False
            existing.value = value
            existing.changed = version
            return True
        self._set_child(parent, key, _Leaf(value, version), ptokens, version)
        return True

    def _set_child(
        self, parent: _Obj, key: str, node: _Node, ptokens: tuple[str, ...], version: int
    ) -> None:
        """Attach a new node at ``parent[key]``; a node it replaces counts as removed."""
        old = parent.children.get(key)
        if old is not None:
            self._record_removal(parent, key, old, ptokens, version)
        parent.children[key] = node
        self._nodes += _count(node)

    def _remove_child(self, parent: _Obj, key: str, ptokens: tuple[str, ...], version: int) -> None:
        old = parent.children.pop(key)
        self._record_removal(parent, key, old, ptokens, version)

    def _record_removal(
        self, parent: _Obj, key: str, old: _Node, ptokens: tuple[str, ...], version: int
    ) -> None:
        self._nodes -= _count(old)
        if parent.tombs is None:
            parent.tombs = {}
        tomb = parent.tombs.pop(key, None) or _Tomb()
        tomb.removed = version
        tomb.intervals.append((old.created, version))
        parent.tombs[key] = tomb  # (re)inserted last: tombs stay ordered by latest removal
        self._log.append((version, ptokens, key))

    def _prune(self) -> None:
        """Drop the oldest tombstones beyond ``max_tombstones``; ``floor`` follows them."""
        while len(self._log) > self._max_tombstones:
            version, ptokens, key = self._log.popleft()
            self._floor = max(self._floor, version)
            node: _Node | None = self._root
            for token in ptokens:
                node = node.children.get(token) if type(node) is _Obj else None
                if node is None:
                    break
            if type(node) is not _Obj or node.tombs is None or key not in node.tombs:
                continue  # the tombstone went away with its object
            tomb = node.tombs[key]
            tomb.intervals = [span for span in tomb.intervals if span[1] > version]
            if not tomb.intervals:
                del node.tombs[key]
                if not node.tombs:
                    node.tombs = None

    # -- changes and messages -------------------------------------------------------------------

    def changes_since(self, version: int) -> ChangeSet | None:
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValueError(f"version must be an int, not {version!r}")
        if version < 0 or version > self._version:
            raise ValueError(f"version {version} is outside 0..{self._version}")
        if version < self._floor:
            return None
        entries: list[_Entry] = []
        self._collect(self._root, "", "", version, entries)
        return ChangeSet(version, self._version, entries)

    def _collect(self, obj: _Obj, prefix: str, channel: str, since: int, out: list[_Entry]) -> None:
        children = obj.children
        if obj.tombs is not None:
            removals: list[tuple[int, str]] = []
            for key, tomb in reversed(obj.tombs.items()):
                if tomb.removed <= since:
                    break
                if key not in children and tomb.existed_at(since):
                    removals.append((tomb.removed, key))
            removals.sort()
            for _, key in removals:
                out.append(_Entry(_REMOVE, prefix + "/" + escape_token(key), None, channel or key))
        for key, child in children.items():
            if child.changed <= since:
                continue
            ptr = prefix + "/" + escape_token(key)
            if child.created > since:
                out.append(_Entry(_ADD, ptr, _to_python(child), channel or key))
            elif type(child) is _Obj:
                self._collect(child, ptr, channel or key, since, out)
            else:
                out.append(_Entry(_REPLACE, ptr, _copy(child.value), channel or key))  # type: ignore[union-attr]

    def encode_snapshot(
        self,
        fmt: str,
        channels: Sequence[str] | None,
        seq: int,
        epoch: str,
        timestamp_ms: int,
    ) -> bytes:
        _check_format(fmt)
        wanted = _channel_set(channels)
        data = {
            name: _to_python(node)
            for name, node in self._root.children.items()
            if wanted is None or name in wanted
        }
        message = {
            "type": "snapshot",
            "seq": seq,
            "version": self._version,
            "epoch": epoch,
            "timestamp": rfc3339_ms(timestamp_ms),
            "data": data,
        }
        return _serialize(message, fmt)


_REMOVE: Final = 0
_REPLACE: Final = 1
_ADD: Final = 2
_OPS: Final = ("remove", "replace", "add")


class _Entry:
    __slots__ = ("channel", "kind", "path", "value")

    def __init__(self, kind: int, path: str, value: Any, channel: str) -> None:
        self.kind = kind
        self.path = path
        self.value = value
        self.channel = channel


class ChangeSet:
    """What changed between two versions, with values read when it was taken."""

    __slots__ = ("_entries", "from_version", "to_version")

    def __init__(self, from_version: int, to_version: int, entries: list[_Entry]) -> None:
        self.from_version = from_version
        self.to_version = to_version
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<ChangeSet {self.from_version}..{self.to_version}: {len(self)} entries>"

    def changes(self) -> dict[str, Any]:
        return {e.path: _copy(e.value) for e in self._entries if e.kind != _REMOVE}

    def removed(self) -> list[str]:
        return [e.path for e in self._entries if e.kind == _REMOVE]

    def _select(self, channels: Sequence[str] | None) -> list[_Entry]:
        wanted = _channel_set(channels)
        if wanted is None:
            return self._entries
        return [e for e in self._entries if e.channel in wanted]

    def is_empty(self, channels: Sequence[str] | None = None) -> bool:
        return not self._select(channels)

    def encode(
        self,
        fmt: str,
        diff: str,
        channels: Sequence[str] | None,
        seq: int,
        timestamp_ms: int,
    ) -> bytes | None:
        _check_format(fmt)
        if diff not in _DIFF_FORMS:
            raise ValueError(f"unknown diff form {diff!r}: expected 'changes' or 'json-patch'")
        entries = self._select(channels)
        if not entries:
            return None
        message: dict[str, Any] = {
            "type": "update",
            "seq": seq,
            "version": self.to_version,
            "timestamp": rfc3339_ms(timestamp_ms),
        }
        if diff == "changes":
            message["changes"] = {e.path: e.value for e in entries if e.kind != _REMOVE}
            removed = [e.path for e in entries if e.kind == _REMOVE]
            if removed:
                message["removed"] = removed
        else:
            message["patch"] = [
                {"op": "remove", "path": e.path}
                if e.kind == _REMOVE
                else {"op": _OPS[e.kind], "path": e.path, "value": e.value}
                for e in entries
            ]
        return _serialize(message, fmt)


# --------------------------------------------------------------------------------------------
# Stateless diff


def diff(old: Any, new: Any) -> list[dict[str, Any]]:
    """RFC 6902 operations that turn ``old`` into ``new`` (see docs/engine.md)."""
    a = normalize(old, "")
    b = normalize(new, "")
    ops: list[dict[str, Any]] = []
    _diff_into(a, b, "", ops)
    return ops


def _diff_into(a: Any, b: Any, ptr: str, ops: list[dict[str, Any]]) -> None:
    if type(a) is dict and type(b) is dict:
        for key in a:
            if key not in b:
                ops.append({"op": "remove", "path": f"{ptr}/{escape_token(key)}"})
        for key, item in b.items():
            child = f"{ptr}/{escape_token(key)}"
            if key not in a:
                ops.append({"op": "add", "path": child, "value": item})
            else:
                _diff_into(a[key], item, child, ops)
    elif not values_equal(a, b):
        ops.append({"op": "replace", "path": ptr, "value": b})


# -- the pub/sub scanner ----------------------------------------------------------------------

_MAX_NESTING: Final = 32
_MAX_HEADER: Final = 32
MAX_CHANNEL: Final = 4 * 1024 * 1024
"""A channel name (or pattern) longer than this is refused."""
_RESP_SLACK: Final = MAX_CHANNEL + 64 * 1024
_INCOMPLETE: Final = -1
_SKIPPING: Final = -2


def _protocol_error(problem: str) -> ValueError:
    return ValueError(f"RESP protocol error: {problem}")


def _parse_int(digits: bytes) -> int | None:
    negative = digits[:1] == b"-"
    body = digits[1:] if negative else digits
    if not body or len(body) > 18 or not body.isdigit():
        return None
    return -int(body) if negative else int(body)


def _header(buf: bytes, pos: int) -> tuple[int, int] | None:
    """The integer of the header line at ``pos`` and where its body starts; None: incomplete."""
    start = pos + 1
    window = buf[start : start + _MAX_HEADER]
    i = window.find(b"\r")
    if i < 0:
        if len(window) >= _MAX_HEADER:
            raise _protocol_error(f"a header line over {_MAX_HEADER} bytes at byte {pos}")
        return None
    if start + i + 1 >= len(buf):
        return None
    if buf[start + i + 1] != 0x0A:
        raise _protocol_error(f"a header line not ended by CRLF at byte {pos}")
    digits = window[:i]
    value = _parse_int(digits)
    if value is None:
        raise _protocol_error(f'bad length "{digits.decode("utf-8", "replace")}" at byte {pos}')
    return value, start + i + 2


def _crlf(buf: bytes, at: int) -> None:
    if buf[at : at + 2] != b"\r\n":
        raise _protocol_error(f"a bulk string is not followed by CRLF at byte {at}")


def _bulk(buf: bytes, pos: int, limit: int) -> tuple[int, int] | bool:
    """A bulk string at ``pos``: (body start, body end); False: incomplete; True: another type."""
    if pos >= len(buf):
        return False
    if buf[pos] != 0x24:  # $
        return True
    header = _header(buf, pos)
    if header is None:
        return False
    size, body = header
    if size < 0:
        return True
    if size > limit:
        raise ValueError(f"a channel name of {size} bytes is over the limit of {limit} bytes")
    end = body + size
    if end + 2 > len(buf):
        return False
    _crlf(buf, end)
    return body, end


def _value_end(buf: bytes, pos: int, depth: int) -> int | None:
    """Where the reply starting at ``pos`` ends; None: incomplete."""
    if pos >= len(buf):
        return None
    kind = buf[pos]
    if kind in b"+-:_,#(":
        end = buf.find(b"\r\n", pos + 1)
        return None if end < 0 else end + 2
    if kind in b"$!=":
        header = _header(buf, pos)
        if header is None:
            return None
        size, body = header
        if size == -1 and kind == 0x24:
            return body
        if size < 0:
            raise _protocol_error(f"negative length {size} at byte {pos}")
        end = body + size + 2
        if end > len(buf):
            return None
        _crlf(buf, end - 2)
        return end
    if kind in b"*>~%|":
        header = _header(buf, pos)
        if header is None:
            return None
        count, p = header
        if count == -1 and kind == 0x2A:
            return p
        if count < 0:
            raise _protocol_error(f"negative count {count} at byte {pos}")
        if depth >= _MAX_NESTING:
            raise _protocol_error(f"replies nested over {_MAX_NESTING} levels")
        for _ in range(count * 2 if kind in b"%|" else count):
            element_end = _value_end(buf, p, depth + 1)
            if element_end is None:
                return None
            p = element_end
        if kind == 0x7C:  # | attributes come before the reply they describe: one reply here
            return _value_end(buf, p, depth + 1)
        return p
    raise _protocol_error(f"unexpected byte 0x{kind:02x} at the start of a reply (byte {pos})")


_Step = int | tuple[int, int]
"""What a framing's ``_frame`` found at a position: a message's end, ``_INCOMPLETE``,
``_SKIPPING`` (the rest of the read is an oversized payload), or (end, length) of a reply."""


class _Stream:
    """What the two subscriber scanners share (``rust/stream.rs``): a frame cut by the end of a
    read waits for the next, oversized payloads are skipped unbuffered, messages on a conflated
    route keep the latest payload per channel (first-seen order), other messages stay in order,
    other replies are handed over whole."""

    _SLACK = 0
    _ROUTES = ""

    def __init__(self, conflate: Iterable[bytes], max_payload: int) -> None:
        self._routes: dict[bytes, tuple[dict[bytes, bytes], list[int]]] = {}
        for route in conflate:
            if not isinstance(route, bytes):
                raise TypeError(
                    f"conflate: expected bytes {self._ROUTES}, got {type(route).__name__}"
                )
            self._routes.setdefault(route, ({}, [0]))
        if max_payload < 0:
            raise OverflowError("can't convert negative int to unsigned")
        self._max_payload = max_payload
        self._ordered: list[tuple[bytes, bytes, bytes]] = []
        self._oversized: list[tuple[bytes, bytes, int]] = []
        self._pending = b""
        self._skip = 0
        self._keys = 0
        self._failed: str | None = None

    @property
    def pending_keys(self) -> int:
        return self._keys

    @property
    def pending_ordered(self) -> int:
        return len(self._ordered) + len(self._oversized)

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[int, list[bytes]]:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'")
        if self._failed is not None:
            raise ValueError(self._failed)
        try:
            return self._feed(bytes(data))
        except ValueError as exc:
            self._failed = str(exc)
            self._pending = b""
            raise

    def _feed(self, data: bytes) -> tuple[int, list[bytes]]:
        if self._skip:
            skipped = min(self._skip, len(data))
            self._skip -= skipped
            data = data[skipped:]
        if not data:
            return 0, []
        buf = self._pending + data if self._pending else data
        messages, replies, used = self._scan(buf)
        self._pending = buf[used:]
        limit = self._max_payload + self._SLACK
        if len(self._pending) > limit:
            raise ValueError(
                f"an incomplete frame of {len(self._pending)} bytes is over the limit of "
                f"{limit} bytes"
            )
        return messages, replies

    def _scan(self, buf: bytes) -> tuple[int, list[bytes], int]:
        messages = 0
        replies: list[bytes] = []
        pos, n = 0, len(buf)
        while pos < n:
            step = self._frame(buf, pos)
            if isinstance(step, tuple):
                end, length = step
                replies.append(buf[pos : pos + length])
                pos = end
                continue
            if step == _INCOMPLETE:
                break
            messages += 1
            if step == _SKIPPING:
                return messages, replies, n
            pos = step
        return messages, replies, pos

    def _frame(self, buf: bytes, pos: int) -> _Step:
        raise NotImplementedError

    def _deliver(self, route: bytes, conflatable: bool, channel: bytes, payload: bytes) -> None:
        found = self._routes.get(route) if conflatable else None
        if found is None:
            self._ordered.append((route, channel, payload))
            return
        latest, count = found
        count[0] += 1
        if channel not in latest:
            self._keys += 1
        latest[channel] = payload

    def _oversize(self, route: bytes, channel: bytes, size: int) -> None:
        self._oversized.append((route, channel, size))

    def take(
        self,
    ) -> tuple[
        dict[bytes, dict[bytes, bytes]],
        dict[bytes, int],
        list[tuple[bytes, bytes, bytes]],
        list[tuple[bytes, bytes, int]],
    ]:
        conflated: dict[bytes, dict[bytes, bytes]] = {}
        counts: dict[bytes, int] = {}
        for route, (latest, count) in list(self._routes.items()):
            if count[0]:
                conflated[route], counts[route] = latest, count[0]
                self._routes[route] = ({}, [0])
        self._keys = 0
        ordered, self._ordered = self._ordered, []
        oversized, self._oversized = self._oversized, []
        return conflated, counts, ordered, oversized


class PubSubScanner(_Stream):
    """The scanner of a Redis pub/sub connection's bytes (docs/engine.md): messages on a
    ``conflate`` pattern keep the latest payload per channel, other messages stay in order,
    payloads over ``max_payload`` are skipped as they stream by, every other reply is cut out
    whole, as bytes."""

    _SLACK = _RESP_SLACK
    _ROUTES = "patterns"

    def _frame(self, buf: bytes, pos: int) -> _Step:
        if buf[pos] in b"*>":
            step = self._message(buf, pos)
            if step is not None:
                return step
        end = _value_end(buf, pos, 0)
        return _INCOMPLETE if end is None else (end, end - pos)

    def _message(self, buf: bytes, pos: int) -> int | None:
        """The end of the message at ``pos``, _INCOMPLETE, _SKIPPING, or None (not a message)."""
        header = _header(buf, pos)
        if header is None:
            return _INCOMPLETE
        n, p = header
        if n not in (3, 4):
            return None
        found = _bulk(buf, p, sys.maxsize)
        if found is False:
            return _INCOMPLETE
        if found is True:
            return None
        kind = buf[found[0] : found[1]]
        p = found[1] + 2
        if kind == b"pmessage" and n == 4:
            with_pattern = True
        elif kind in (b"message", b"smessage") and n == 3:
            with_pattern = False
        else:
            return None
        pattern = b""
        if with_pattern:
            found = _bulk(buf, p, MAX_CHANNEL)
            if found is False:
                return _INCOMPLETE
            if found is True:
                return None
            pattern, p = buf[found[0] : found[1]], found[1] + 2
        found = _bulk(buf, p, MAX_CHANNEL)
        if found is False:
            return _INCOMPLETE
        if found is True:
            return None
        channel, p = buf[found[0] : found[1]], found[1] + 2
        if p >= len(buf):
            return _INCOMPLETE
        if buf[p] != 0x24:
            return None
        header = _header(buf, p)
        if header is None:
            return _INCOMPLETE
        size, body = header
        if size < 0:
            return None
        end = body + size + 2
        if size > self._max_payload:
            self._oversize(pattern, channel, size)
            if end <= len(buf):  # skipped blind (its CRLF too), whether or not it is all here
                return end
            self._skip = end - len(buf)
            return _SKIPPING
        if end > len(buf):
            return _INCOMPLETE
        _crlf(buf, end - 2)
        self._deliver(pattern, with_pattern, channel, buf[body : end - 2])
        return end


NATS_MAX_LINE: Final = 64 * 1024
"""A NATS control line longer than this is refused."""
_NATS_CONTROL: Final = (b"PING", b"PONG", b"+OK", b"-ERR", b"INFO")


def _nats_error(problem: str) -> ValueError:
    return ValueError(f"NATS protocol error: {problem}")


def _nats_size(field: bytes, pos: int) -> int:
    value = _parse_int(field)
    if value is None or value < 0:
        text = field.decode("utf-8", "replace")
        raise _nats_error(f'bad size "{text}" in a message line at byte {pos}')
    return value


class NatsScanner(_Stream):
    """The scanner of a NATS subscriber connection's bytes (docs/engine.md): ``MSG``/``HMSG``
    go to the batch by subscription id (``conflate``: the ids whose latest payload per subject
    wins), every other operation is handed over as its line, without the CRLF."""

    _SLACK = NATS_MAX_LINE + 2
    _ROUTES = "subscription ids"

    def _frame(self, buf: bytes, pos: int) -> _Step:
        window_end = min(len(buf), pos + NATS_MAX_LINE + 2)
        eol = buf.find(b"\r\n", pos, window_end)
        if eol < 0:
            if window_end - pos >= NATS_MAX_LINE + 2:
                raise _nats_error(f"a control line over {NATS_MAX_LINE} bytes at byte {pos}")
            return _INCOMPLETE
        body = eol + 2
        fields = [f for f in buf[pos:eol].replace(b"\t", b" ").split(b" ") if f]
        op = fields[0] if fields else b""
        upper = op.upper()
        headers = upper == b"HMSG"
        if not headers and upper != b"MSG":
            if upper in _NATS_CONTROL:
                return body, eol - pos
            shown = op[:32].decode("utf-8", "replace")
            raise _nats_error(f'unknown operation "{shown}" at byte {pos}')
        count = len(fields)
        if not headers and count in (4, 5):
            header_size, total = 0, _nats_size(fields[count - 1], pos)
        elif headers and count in (5, 6):
            header_size = _nats_size(fields[count - 2], pos)
            total = _nats_size(fields[count - 1], pos)
        else:
            raise _nats_error(f"a message line with {count} fields at byte {pos}")
        subject, sid = fields[1], fields[2]
        if header_size > total:
            raise _nats_error(
                f"a message's headers ({header_size} bytes) longer than the message ({total}) "
                f"at byte {pos}"
            )
        end = body + total + 2
        if total > self._max_payload:
            self._oversize(sid, subject, total - header_size)
            if end <= len(buf):  # skipped blind (its CRLF too), whether or not it is all here
                return end
            self._skip = end - len(buf)
            return _SKIPPING
        if end > len(buf):
            return _INCOMPLETE
        if buf[end - 2 : end] != b"\r\n":
            raise _nats_error(f"a message is not followed by CRLF at byte {end - 2}")
        self._deliver(sid, True, subject, buf[body + header_size : body + total])
        return end


class PanicException(BaseException):
    """What the native engine raises when it panics (a ``BaseException``, as PyO3's); this
    engine never panics, it only raises this from :func:`_panic_for_tests`."""


def _panic_for_tests(msg: str) -> None:
    """Test-only hook: raise :class:`PanicException` (the native engine really panics)."""
    raise PanicException(msg)


if TYPE_CHECKING:  # mypy checks both engines against the one interface (core/engine.py)
    from dashboard_server import _fastdiff, _purediff
    from dashboard_server.core.engine import EngineModule

    _native: EngineModule = _fastdiff
    _pure: EngineModule = _purediff
