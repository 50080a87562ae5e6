"""A state document whose versions are those of a shared version space.

An instance that builds its document from a shared stream (docs/operations.md, "One version
space") applies the writer's changes one engine op per change, so its document's version moves
in step with the writer's. It starts from a checkpoint, though, at a version of the writer's
that its own engine document (which starts at 0) cannot take. :class:`ShiftedDoc` wraps the engine
document and adds a constant ``offset``: ``version = inner.version + offset``. Everything the hub
and the encoder read goes through it, so snapshots, updates and catch-ups carry the shared
version, ``since`` is read in it, and ``changes_since`` maps it back.

:meth:`ShiftedDoc.rebase` says "the document as it is now is version V": after a checkpoint was
loaded. Versions before V were never held here: ``floor`` becomes V, so an older ``since`` (and
the hub's own cursors) get a snapshot, not a wrong catch-up.

The engine writes the version into the bytes it encodes; :func:`patch_version` rewrites that one
field in place (the envelope's field order is fixed, docs/engine.md), so no message is decoded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgpack

from dashboard_server.core.engine import ChangeSetEngine, StateDocEngine
from dashboard_server.core.protocol import Diff, Format

__all__ = ["ShiftedChanges", "ShiftedDoc", "patch_version"]

_JSON_KEY = b'"version":'
_MSGPACK_KEY = b"\xa7version"


def _msgpack_skip(data: bytes, i: int) -> int:
    """The offset after the MessagePack str or int that starts at ``data[i]``."""
    b = data[i]
    if b <= 0x7F or b >= 0xE0:  # fixint
        return i + 1
    if 0xA0 <= b <= 0xBF:  # fixstr
        return i + 1 + (b & 0x1F)
    sizes = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
    if b in sizes:
        return i + 1 + sizes[b]
    if b == 0xD9:
        return i + 2 + data[i + 1]
    raise ValueError(f"unexpected MessagePack byte 0x{b:02x} in a message envelope")


def patch_version(fmt: Format, payload: bytes, version: int) -> bytes:
    """``payload`` (a ``snapshot`` or ``update`` encoded by the engine) with its ``version``
    field set to ``version``."""
    if fmt == "json":
        start = payload.index(_JSON_KEY) + len(_JSON_KEY)
        end = start
        while payload[end] in b"0123456789-":
            end += 1
        return payload[:start] + str(version).encode() + payload[end:]
    # {"type": str, "seq": int, "version": int, ...}: walk the envelope's first keys
    i = 1 if 0x80 <= payload[0] <= 0x8F else 3  # fixmap or map16
    for _ in range(4):
        key_end = _msgpack_skip(payload, i)
        if payload[i:key_end] == _MSGPACK_KEY:
            value_end = _msgpack_skip(payload, key_end)
            packed = msgpack.packb(version)
            assert isinstance(packed, bytes)
            return payload[:key_end] + packed + payload[value_end:]
        i = _msgpack_skip(payload, key_end)
    raise ValueError("no version field in the message envelope")


class ShiftedChanges:
    """A change set whose versions are shifted by ``offset``."""

    __slots__ = ("inner", "offset")

    def __init__(self, inner: ChangeSetEngine, offset: int) -> None:
        self.inner = inner
        self.offset = offset

    @property
    def from_version(self) -> int:
        """The shared version the changes start from."""
        return self.inner.from_version + self.offset

    @property
    def to_version(self) -> int:
        """The shared version the changes bring a client to."""
        return self.inner.to_version + self.offset

    def __len__(self) -> int:
        return len(self.inner)

    def changes(self) -> dict[str, Any]:
        """Pointer → value, as the engine's."""
        return self.inner.changes()

    def removed(self) -> list[str]:
        """Removed pointers, as the engine's."""
        return self.inner.removed()

    def is_empty(self, channels: Sequence[str] | None = None) -> bool:
        """Nothing for ``channels``."""
        return self.inner.is_empty(channels)

    def encode(
        self,
        fmt: Format,
        diff: Diff,
        channels: Sequence[str] | None,
        seq: int,
        timestamp_ms: int,
    ) -> bytes | None:
        """The engine's ``update`` with the shared version."""
        payload = self.inner.encode(fmt, diff, channels, seq, timestamp_ms)
        return None if payload is None else patch_version(fmt, payload, self.to_version)


class ShiftedDoc:
    """An engine document seen in a shared version space (see the module doc)."""

    def __init__(self, inner: StateDocEngine, offset: int = 0) -> None:
        self.inner = inner
        self.offset = offset
        self.base = offset
        """The oldest shared version this document held (its floor, at least)."""

    def rebase(self, version: int, *, seen: int | None = None) -> None:
        """Make the document as it is now stand for shared version ``version``; versions before
        it are no longer answered. ``version`` must not be below ``seen``, the last version
        anyone may have read (default: the current one; a caller that changed the document
        without yielding since it read ``version`` passes that)."""
        floor = self.version if seen is None else seen
        if version < floor:
            raise ValueError(f"cannot rebase version {floor} back to {version}")
        self.offset = version - self.inner.version
        self.base = version

    @property
    def version(self) -> int:
        """The shared version of the document."""
        return self.inner.version + self.offset

    @property
    def floor(self) -> int:
        """The oldest shared version ``changes_since`` answers from."""
        return max(self.inner.floor + self.offset, self.base)

    def changes_since(self, version: int) -> ShiftedChanges | None:
        """The changes from shared ``version`` on; ``None`` before the floor."""
        if version < 0 or version > self.version:
            raise ValueError(f"version {version} outside 0..{self.version}")
        if version < self.floor:
            return None
        inner = self.inner.changes_since(version - self.offset)
        return None if inner is None else ShiftedChanges(inner, self.offset)

    def encode_snapshot(
        self,
        fmt: Format,
        channels: Sequence[str] | None,
        seq: int,
        epoch: str,
        timestamp_ms: int,
    ) -> bytes:
        """The engine's snapshot with the shared version."""
        payload = self.inner.encode_snapshot(fmt, channels, seq, epoch, timestamp_ms)
        return patch_version(fmt, payload, self.version)

    # --- the rest is the engine's --------------------------------------------------------

    def merge(self, path: str, patch: Any) -> bool:
        """As the engine's."""
        return self.inner.merge(path, patch)

    def replace(self, path: str, value: Any) -> bool:
        """As the engine's."""
        return self.inner.replace(path, value)

    def remove(self, path: str) -> bool:
        """As the engine's."""
        return self.inner.remove(path)

    def merge_bytes(self, path: str, payload: bytes, fmt: Format = "json") -> bool:
        """As the engine's."""
        return self.inner.merge_bytes(path, payload, fmt)

    def merge_many(
        self, items: Iterable[tuple[str, bytes]], fmt: Format = "json"
    ) -> list[bool | str]:
        """As the engine's."""
        return self.inner.merge_many(items, fmt)

    def replace_many(
        self, items: Iterable[tuple[str, bytes]], fmt: Format = "json"
    ) -> list[bool | str]:
        """As the engine's."""
        return self.inner.replace_many(items, fmt)

    def replace_bytes(self, path: str, payload: bytes, fmt: Format = "json") -> bool:
        """As the engine's."""
        return self.inner.replace_bytes(path, payload, fmt)

    def get(self, path: str = "") -> Any:
        """As the engine's."""
        return self.inner.get(path)

    def keys(self, path: str = "") -> list[str]:
        """As the engine's."""
        return self.inner.keys(path)

    def stats(self) -> dict[str, int]:
        """The engine's, with the shared version and floor."""
        stats = dict(self.inner.stats())
        stats["version"] = self.version
        stats["floor"] = self.floor
        return stats


def _check(doc: ShiftedDoc) -> StateDocEngine:
    return doc  # mypy: ShiftedDoc is a StateDocEngine
