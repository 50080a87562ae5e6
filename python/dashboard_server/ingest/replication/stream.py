"""The shared version space in Redis: one stream per partition, its checkpoint, the writer lease.

Keys (one hash tag, so they live in one slot of a cluster too)::

    {dashboard:P}:lease       the writer's id, SET NX PX; renewed every third of its time to live
    {dashboard:P}:meta        hash: epoch, version (the head), last_id (the head's entry id)
    {dashboard:P}:stream      one entry per writer flush: f (from version), t (to version),
                              o (MessagePack list of ops), e (MessagePack list of events)
    {dashboard:P}:checkpoint  hash: epoch, version, last_id, data (a MessagePack snapshot)
    {dashboard:P}:reset       set by an instance that found the lineage inconsistent

**The version space.** An entry holds the ops that took the writer's document from version
``f`` to ``t``, exactly one engine op per version (``[0, path, value]``: replace the value at
``path`` by a MessagePack value; ``[1, path]``: remove it), each one effective on the document as
it was. Whoever applies the entries in order to a document that was at ``f`` gets ``t``, with
the same content. The ``epoch`` names the lineage; a new one starts at the current Unix time in
microseconds, so that versions never go back on an instance that lives through a lineage change
(and stay below 2**53, for JavaScript clients). The entry id is ``t-N``.

**Fencing.** Every write of the writer is a Lua script that checks, atomically, that the lease
is still its own and that the head is where its document is (``f``): a writer that lost its lease
(paused, partitioned) can write nothing, and two writers can never interleave entries.

**Trimming.** A checkpoint at version V trims the entries before the previous checkpoint, so the
stream always holds at least one checkpoint interval: an instance away for less catches up from
the stream, one away for longer loads the checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import msgpack
from redis.asyncio import Redis

from dashboard_server.core.pointer import join
from dashboard_server.core.shifted import ShiftedDoc

__all__ = [
    "Diverged",
    "Gap",
    "Lineage",
    "Position",
    "ReplicaTarget",
    "apply_entry",
    "encode_events",
    "encode_ops",
    "load_checkpoint",
    "sync",
]

log = logging.getLogger(__name__)

STREAM_MAXLEN: Final = 1_000_000
"""A bound on the stream's length whatever the checkpoints do (``MAXLEN ~``)."""
PAGE: Final = 1000
"""Entries read per round trip."""

REPLACE: Final = 0
REMOVE: Final = 1

_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""
_FENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('NOTOWNER lease lost') end
if redis.call('EXISTS', KEYS[5]) == 1 then return redis.error_reply('RESET lineage reset asked') end
local head = redis.call('HMGET', KEYS[2], 'epoch', 'version')
if head[1] ~= ARGV[2] or head[2] ~= ARGV[3] then
  return redis.error_reply('HEADMOVED head is ' .. tostring(head[1]) .. '@' .. tostring(head[2]))
end
"""
_APPEND = (
    _FENCE
    + """
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], ARGV[4] .. '-*',
  'f', ARGV[3], 't', ARGV[4], 'o', ARGV[5], 'e', ARGV[6])
redis.call('HSET', KEYS[2], 'version', ARGV[4], 'last_id', id)
return id
"""
)
_CHECKPOINT = (
    _FENCE
    + """
local previous = redis.call('HGET', KEYS[4], 'last_id')
redis.call('HSET', KEYS[4], 'epoch', ARGV[2], 'version', ARGV[3], 'last_id', ARGV[4],
  'data', ARGV[5])
if previous and previous ~= '0-0' then redis.call('XTRIM', KEYS[3], 'MINID', previous) end
return 1
"""
)
_NEW_LINEAGE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('NOTOWNER lease lost') end
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'version', ARGV[3], 'last_id', '0-0')
redis.call('HSET', KEYS[4], 'epoch', ARGV[2], 'version', ARGV[3], 'last_id', '0-0', 'data', ARGV[4])
return 1
"""


class Gap(Exception):
    """The stream no longer holds the entry that follows this document (trimmed, or a new
    lineage): load the checkpoint."""


class Diverged(Exception):
    """This document and the lineage disagree (an op that changes nothing, or a head behind this
    document: the Redis of the stream lost writes). Only a new lineage repairs it."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a document stands in a lineage: its epoch, version, and the id of its last entry."""

    epoch: str
    version: int
    last_id: str


class ReplicaTarget(Protocol):
    """What entries are applied to: the write side of an instance, or a bare document."""

    def replace(self, path: str, value: Any) -> bool: ...
    def replace_bytes(self, path: str, payload: bytes, fmt: Any) -> bool: ...
    def remove(self, path: str) -> bool: ...
    def publish_event(self, channel: str, data: dict[str, Any]) -> None: ...


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def encode_ops(ops: Sequence[Sequence[Any]]) -> bytes:
    """The ``o`` field: ``[[0, path, value_bytes], [1, path], ...]``."""
    packed = msgpack.packb(list(ops), use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed


def encode_events(events: Sequence[tuple[str, Mapping[str, Any]]]) -> bytes:
    """The ``e`` field: ``[[channel, data], ...]`` (empty bytes for none)."""
    if not events:
        return b""
    packed = msgpack.packb([[c, d] for c, d in events], use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed


def apply_entry(
    target: ReplicaTarget, doc: ShiftedDoc, fields: Mapping[bytes, bytes], *, events: bool
) -> None:
    """Apply one entry (its ops, then, if ``events``, its events); :class:`Gap` if it does not
    start at the document's version, :class:`Diverged` if an op changes nothing."""
    start, end = int(fields[b"f"]), int(fields[b"t"])
    if start != doc.version:
        raise Gap(f"entry from {start}, document at {doc.version}")
    for op in msgpack.unpackb(fields[b"o"], raw=False):
        changed = (
            target.replace_bytes(op[1], op[2], "msgpack")
            if op[0] == REPLACE
            else target.remove(op[1])
        )
        if not changed:
            raise Diverged(f"op on {op[1]!r} changed nothing at version {doc.version}")
    if doc.version != end:
        raise Diverged(f"entry to {end}, document at {doc.version}")
    if events and fields.get(b"e"):
        for channel, data in msgpack.unpackb(fields[b"e"], raw=False):
            target.publish_event(channel, data)


def load_checkpoint(
    target: ReplicaTarget, doc: ShiftedDoc, data: bytes, sections: Iterable[str], version: int
) -> None:
    """Make ``doc`` equal to a checkpoint's snapshot (structurally: only what differs changes)
    and rebase it on the checkpoint's ``version`` (all without yielding: nobody reads the
    versions in between)."""
    seen = doc.version
    snapshot = msgpack.unpackb(data, raw=False)
    content: dict[str, Any] = snapshot["data"]
    for key, value in content.items():
        target.replace(join(key), value)
    known = set(sections)
    for key in doc.keys(""):
        if key not in content:
            if key in known:
                target.replace(join(key), {})
            else:
                target.remove(join(key))
    doc.rebase(version, seen=seen)


class Lineage:
    """The Redis side of one partition (see the module doc); ``client`` is any redis-py asyncio
    client for the Redis of the stream."""

    def __init__(self, client: Redis, partition: str) -> None:
        self.client = client
        tag = "{dashboard:" + partition + "}"
        self.lease_key = tag + ":lease"
        self.meta_key = tag + ":meta"
        self.stream_key = tag + ":stream"
        self.checkpoint_key = tag + ":checkpoint"
        self.reset_key = tag + ":reset"
        self._keys = [
            self.lease_key,
            self.meta_key,
            self.stream_key,
            self.checkpoint_key,
            self.reset_key,
        ]

    async def _eval(self, script: str, keys: Sequence[str], *args: Any) -> Any:
        return await self.client.eval(script, len(keys), *keys, *args)

    # --- lease -----------------------------------------------------------------------------

    async def acquire(self, owner: str, ttl_ms: int) -> bool:
        """Take the lease if it is free (or already ours: renewed)."""
        return bool(await self._eval(_ACQUIRE, [self.lease_key], owner, ttl_ms))

    async def renew(self, owner: str, ttl_ms: int) -> bool:
        """Extend the lease if it is still ours."""
        return bool(await self._eval(_RENEW, [self.lease_key], owner, ttl_ms))

    async def release(self, owner: str) -> None:
        """Give the lease up if it is ours (a standby takes over at once)."""
        await self._eval(_RELEASE, [self.lease_key], owner)

    async def holder(self) -> str | None:
        """Who holds the lease."""
        value = await self.client.get(self.lease_key)
        return None if value is None else _s(value)

    # --- reading ---------------------------------------------------------------------------

    async def meta(self) -> Position | None:
        """The head of the lineage (``None``: no lineage yet)."""
        raw = await self.client.hgetall(self.meta_key)
        if not raw:
            return None
        return Position(_s(raw[b"epoch"]), int(raw[b"version"]), _s(raw[b"last_id"]))

    async def checkpoint(self) -> tuple[Position, bytes] | None:
        """The checkpoint's position and snapshot bytes."""
        raw: Any = await self.client.hgetall(self.checkpoint_key)
        if not raw:
            return None
        position = Position(_s(raw[b"epoch"]), int(raw[b"version"]), _s(raw[b"last_id"]))
        data: bytes = raw[b"data"]
        return position, data

    async def after(self, last_id: str, count: int = PAGE) -> list[tuple[str, dict[bytes, bytes]]]:
        """Up to ``count`` entries after ``last_id``."""
        entries: Any = await self.client.xrange(self.stream_key, min="(" + last_id, count=count)
        return [(_s(i), f) for i, f in entries]

    async def wait_after(
        self, last_id: str, block_ms: int, count: int = PAGE
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        """Entries after ``last_id``, waiting up to ``block_ms`` for the first."""
        reply: Any = await self.client.xread(
            {self.stream_key: last_id}, count=count, block=block_ms
        )
        if not reply:
            return []
        return [(_s(i), f) for i, f in reply[0][1]]

    # --- writing (the lease holder) --------------------------------------------------------

    async def append(
        self, owner: str, epoch: str, start: int, end: int, ops: bytes, events: bytes
    ) -> str:
        """Append one entry from ``start`` to ``end``; fails unless fenced (module doc)."""
        entry_id = await self._eval(
            _APPEND, self._keys, owner, epoch, start, end, ops, events, STREAM_MAXLEN
        )
        return _s(entry_id)

    async def write_checkpoint(self, owner: str, position: Position, data: bytes) -> None:
        """Store the checkpoint at ``position`` (the head) and trim the stream before the
        previous one."""
        await self._eval(
            _CHECKPOINT, self._keys, owner, position.epoch, position.version, position.last_id, data
        )

    async def new_lineage(self, owner: str, epoch: str, version: int, data: bytes) -> Position:
        """Start a lineage at ``version`` whose checkpoint is ``data`` (the stream is emptied)."""
        await self._eval(_NEW_LINEAGE, self._keys, owner, epoch, version, data)
        return Position(epoch, version, "0-0")

    async def reset_requested(self) -> bool:
        """Whether an instance asked for a new lineage."""
        return bool(await self.client.exists(self.reset_key))

    async def request_reset(self, reason: str) -> None:
        """Ask the writer for a new lineage (this instance found the current one inconsistent)."""
        await self.client.set(self.reset_key, reason)


async def replay(
    lineage: Lineage, target: ReplicaTarget, doc: ShiftedDoc, position: Position, *, events: bool
) -> Position:
    """Apply every entry after ``position`` (whose version is the document's); raises
    :class:`Gap` when the next entry does not follow it."""
    last = position
    while True:
        entries = await lineage.after(last.last_id)
        if not entries:
            return last
        for entry_id, fields in entries:
            apply_entry(target, doc, fields, events=events)
            last = Position(position.epoch, doc.version, entry_id)
        await asyncio.sleep(0)


async def sync(
    lineage: Lineage,
    target: ReplicaTarget,
    doc: ShiftedDoc,
    sections: Iterable[str],
    current: Position | None,
    on_load: Callable[[Position], None] | None = None,
) -> Position | None:
    """Bring ``doc`` to the head of the lineage: from ``current`` through the stream when it
    still can, else from the checkpoint (``None``: there is no lineage yet). Events are applied
    only on the first path (the others are from before this document's gap). ``on_load`` is
    called right after a checkpoint is loaded, before anything can read the document (a new
    epoch must be in place before the next snapshot is encoded)."""
    head = await lineage.meta()
    if head is None:
        return None
    if current is not None and current.epoch == head.epoch and current.version == doc.version:
        try:
            return await replay(lineage, target, doc, current, events=True)
        except Gap:
            log.info("stream trimmed past this instance; loading the checkpoint")
    found = await lineage.checkpoint()
    if found is None:
        return None
    position, data = found
    if current is not None and position.epoch == current.epoch and position.version < doc.version:
        raise Diverged(
            f"checkpoint at {position.version} is behind this document ({doc.version}) "
            "in the same lineage"
        )
    if position.version < doc.version:
        # another lineage that started below this document's version (clock set back): the
        # document stays monotonic, clients get snapshots (another epoch)
        raise Diverged(f"lineage {position.epoch} starts below this document ({doc.version})")
    load_checkpoint(target, doc, data, sections, position.version)
    if on_load is not None:
        on_load(position)
    return await replay(lineage, target, doc, position, events=False)
