"""The ingest writer of a partition: one lease holder reads the backends and writes the stream.

:class:`IngestLeader` is a :class:`~dashboard_server.ingest.feed.Feed` that every writer
candidate runs; at most one of them holds the lease (``SET NX PX``, renewed every third of its
time to live) and is **active**, the others are **standbys** that try to take the lease every
third of its time to live. The active one:

1. rebuilds the lineage's document (the checkpoint, then the stream: the same code as an edge)
   into a document of its own, the *stream document*; with no lineage yet it starts one;
2. seeds its *ingest document* with it, then starts the source feeds (Redis, NATS, HTTP) on the
   ingest document: they reload from the backends as after any reconnect, so keyed items changed
   or deleted while no writer ran are corrected, and the rest keeps its last-known value;
3. every ``flush_ms``: takes the ingest document's changes since the last flush (conflated:
   the latest value of each changed path), applies them to the stream document one op at a time,
   keeps those that changed something, and appends them with the events received meanwhile as
   one entry (a fenced Lua script: docs in :mod:`.stream`). The stream document's version moves
   by one per kept op, which is what makes every edge's version equal to it;
4. every ``checkpoint_s``: stores the stream document as the checkpoint.

It steps down (feeds stopped) when a renewal says the lease is someone else's, when it could not
renew for a whole time to live, or when a write fails (then, holding the lease still, it rebuilds
at once). A write whose outcome is unknown (the connection dropped) is settled the same way: the
rebuild reads what the stream really holds. On a graceful stop it releases the lease, so a
standby takes over at once instead of after the time to live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgpack
import orjson

from dashboard_server.core.engine import StateDocEngine
from dashboard_server.core.pointer import join
from dashboard_server.core.protocol import Format
from dashboard_server.core.shifted import ShiftedDoc
from dashboard_server.ingest.feed import Feed, FeedHealth, FeedState, TaskFeed, describe_failure
from dashboard_server.ingest.redis.connection import close_quietly, connect_redis
from dashboard_server.ingest.replication.stream import (
    REMOVE,
    REPLACE,
    Lineage,
    Position,
    encode_events,
    encode_ops,
    sync,
)

__all__ = ["DocTarget", "IngestLeader", "LeaseLost", "new_owner_id"]

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """The lease is someone else's (or could not be renewed in time)."""


def new_owner_id() -> str:
    """A writer candidate's id: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class DocTarget:
    """Entries applied straight to a document (the stream document: events are not kept)."""

    def __init__(self, doc: StateDocEngine) -> None:
        self.doc = doc

    def replace(self, path: str, value: Any) -> bool:
        return self.doc.replace(path, value)

    def replace_bytes(self, path: str, payload: bytes, fmt: Format) -> bool:
        return self.doc.replace_bytes(path, payload, fmt)

    def remove(self, path: str) -> bool:
        return self.doc.remove(path)

    def publish_event(self, channel: str, data: dict[str, Any]) -> None:
        return None


class IngestLeader(TaskFeed):
    """A writer candidate (see the module doc). ``ingest`` is the document the ``feeds`` write
    into; ``new_doc()`` makes a fresh engine document for the stream document."""

    name = "ingest"

    def __init__(
        self,
        ingest: StateDocEngine,
        feeds: Sequence[Feed],
        *,
        new_doc: Callable[[], StateDocEngine],
        url: str,
        partition: str,
        sections: Sequence[str],
        owner: str | None = None,
        lease_ms: int = 3000,
        flush_ms: int = 20,
        checkpoint_s: float = 10.0,
        timeout: float = 2.0,
        max_pending_events: int = 10_000,
    ) -> None:
        super().__init__()
        self.ingest = ingest
        self.feeds = list(feeds)
        self.new_doc = new_doc
        self.url = url
        self.partition = partition
        self.sections = tuple(sections)
        self.owner = owner or new_owner_id()
        self.lease_ms = lease_ms
        self.flush_ms = flush_ms
        self.checkpoint_s = checkpoint_s
        self.timeout = timeout
        self.max_pending_events = max_pending_events
        self.before_flush: Callable[[], None] | None = None
        """Called before each flush reads the ingest document: the write side applies the
        batches its transports hold (``StateWriter.apply_pending``)."""
        self.active = False
        """Whether this candidate holds the lease and writes the stream."""
        self.takeovers = 0
        self.appended = 0
        """Entries appended."""
        self.ops_appended = 0
        self.checkpoints = 0
        self.events_dropped = 0
        self.position: Position | None = None
        self.stream_doc: ShiftedDoc | None = None
        self._events: list[tuple[str, dict[str, Any]]] = []
        self._cursor = 0
        self._lock = asyncio.Lock()
        self._error: str | None = None
        self._since = time.monotonic()

    # --- what the ingest side calls --------------------------------------------------------

    def publish_event(self, channel: str, data: Mapping[str, Any]) -> None:
        """An event from a feed: appended with the next entry (dropped while standing by)."""
        if not self.active:
            return
        self._events.append((channel, orjson.loads(orjson.dumps(data))))
        if len(self._events) > self.max_pending_events:
            del self._events[0]
            self.events_dropped += 1

    def health(self) -> FeedHealth:
        """Active: the worst of the source feeds' states; standing by: ``ok``."""
        failed = super().health()
        if failed.state is FeedState.DOWN:
            return failed
        age = time.monotonic() - self._since
        if self._error is not None and not self.active:
            return FeedHealth(FeedState.DOWN, age, self._error)
        if self.active:
            for feed in self.feeds:
                h = feed.health()
                if h.state is not FeedState.OK:
                    return FeedHealth(h.state, h.since_s, f"{feed.name}: {h.error or h.state}")
        return FeedHealth(FeedState.OK if self.running else FeedState.STOPPED, age)

    # --- the candidate ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Stand by, take the lease when it is free, lead until it is lost or ``stop``."""
        poll = self.lease_ms / 3000
        while not stop.is_set():
            client = connect_redis(self.url, self.timeout)
            lineage = Lineage(client, self.partition)
            try:
                if await lineage.acquire(self.owner, self.lease_ms):
                    await self._lead(lineage, stop)
                self._error = None
            except LeaseLost as exc:
                log.warning("ingest writer lease lost", extra={"reason": str(exc)})
            except Exception as exc:
                self._error = describe_failure(exc)
                log.warning("ingest writer failed", extra={"error": self._error})
            finally:
                was_active = self.active
                await self._step_down()
                if was_active and stop.is_set():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(lineage.release(self.owner), self.timeout)
                await close_quietly(client, timeout=self.timeout)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll)

    async def _step_down(self) -> None:
        if not self.active:
            return
        self.active = False
        self._since = time.monotonic()
        for feed in self.feeds:
            with contextlib.suppress(Exception):
                await feed.stop()
        self._events.clear()
        log.info("ingest writer standing by", extra={"owner": self.owner})

    async def _lead(self, lineage: Lineage, stop: asyncio.Event) -> None:
        started = time.monotonic()
        renewed = time.monotonic()
        doc = ShiftedDoc(self.new_doc())
        position = await sync(lineage, DocTarget(doc), doc, self.sections, None)
        seed = True
        if position is None:
            # no lineage (a first start, or the stream's Redis lost it): start one from what the
            # ingest document holds (empty on a first start; else the backends' last state)
            target = DocTarget(doc)
            for key, value in self.ingest.get("").items():
                target.replace(join(key), value)
            epoch = uuid.uuid4().hex[:16]
            doc.rebase(time.time_ns() // 1000, seen=0)
            position = await lineage.new_lineage(self.owner, epoch, doc.version, self._data(doc))
            self._cursor = self.ingest.version
            seed = False
            log.info("lineage started", extra={"epoch": epoch, "version": doc.version})
        elif await lineage.reset_requested():
            # an instance found the lineage inconsistent: a new one, from this document
            epoch = uuid.uuid4().hex[:16]
            doc.rebase(max(time.time_ns() // 1000, doc.version + 1))
            position = await lineage.new_lineage(self.owner, epoch, doc.version, self._data(doc))
            log.warning("lineage restarted", extra={"epoch": epoch, "version": doc.version})
        self.stream_doc, self.position = doc, position
        if seed:
            self._seed(doc)
        self._events.clear()
        self.active = True
        self.takeovers += 1
        self._since = time.monotonic()
        log.info(
            "ingest writer active",
            extra={
                "owner": self.owner,
                "epoch": position.epoch,
                "version": position.version,
                "rebuild_s": round(time.monotonic() - started, 3),
            },
        )
        for feed in self.feeds:
            await feed.start()
        next_checkpoint = time.monotonic() + self.checkpoint_s
        next_renew = time.monotonic() + self.lease_ms / 3000
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.flush_ms / 1000)
            now = time.monotonic()
            if now >= next_renew:
                try:
                    owned = await lineage.renew(self.owner, self.lease_ms)
                except Exception as exc:
                    if time.monotonic() - renewed > self.lease_ms / 1000:
                        raise LeaseLost(f"not renewed for a whole lease: {exc}") from exc
                    owned = True
                else:
                    renewed = time.monotonic()
                if not owned:
                    raise LeaseLost("the lease is held by another writer")
                next_renew = now + self.lease_ms / 3000
            await self.flush(lineage)
            if now >= next_checkpoint:
                await self.checkpoint(lineage)
                next_checkpoint = now + self.checkpoint_s

    def _seed(self, doc: ShiftedDoc) -> None:
        """Make the ingest document equal to the stream document; changes count from here."""
        content = doc.get("")
        for key, value in content.items():
            self.ingest.replace(join(key), value)
        for key in self.ingest.keys(""):
            if key not in content:
                if key in self.sections:
                    self.ingest.replace(join(key), {})
                else:
                    self.ingest.remove(join(key))
        self._cursor = self.ingest.version

    @staticmethod
    def _data(doc: ShiftedDoc) -> bytes:
        return doc.inner.encode_snapshot("msgpack", None, 0, "", 0)

    def _collect(self, doc: ShiftedDoc) -> list[list[Any]]:
        """The ingest document's changes since the last flush, as ops that each change the
        stream document (applied to it)."""
        ops: list[list[Any]] = []
        if self.ingest.version == self._cursor:
            return ops
        changes = self.ingest.changes_since(self._cursor)
        self._cursor = self.ingest.version
        if changes is None:  # the ingest document's horizon passed (a huge burst): whole sections
            content = self.ingest.get("")
            for key in set(content) | set(doc.keys("")):
                path = join(key)
                if key in content:
                    if doc.replace(path, content[key]):
                        ops.append([REPLACE, path, _pack(content[key])])
                elif doc.remove(path):
                    ops.append([REMOVE, path])
            return ops
        for path in changes.removed():
            if doc.remove(path):
                ops.append([REMOVE, path])
        for path, value in changes.changes().items():
            if doc.replace(path, value):
                ops.append([REPLACE, path, _pack(value)])
        return ops

    async def flush(self, lineage: Lineage) -> None:
        """Append what changed since the last flush (nothing: no entry)."""
        doc, position = self.stream_doc, self.position
        assert doc is not None and position is not None
        async with self._lock:
            if self.before_flush is not None:
                self.before_flush()
            start = doc.version
            ops = self._collect(doc)
            events, self._events = self._events, []
            if not ops and not events:
                return
            entry_id = await lineage.append(
                self.owner,
                position.epoch,
                start,
                doc.version,
                encode_ops(ops),
                encode_events(events),
            )
            self.position = Position(position.epoch, doc.version, entry_id)
            self.appended += 1
            self.ops_appended += len(ops)

    async def checkpoint(self, lineage: Lineage) -> None:
        """Store the stream document as the checkpoint (at the head)."""
        doc, position = self.stream_doc, self.position
        assert doc is not None and position is not None
        async with self._lock:
            await lineage.write_checkpoint(self.owner, position, self._data(doc))
            self.checkpoints += 1


def _pack(value: Any) -> bytes:
    packed = msgpack.packb(value, use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed
