"""An edge: the instance's document built from the shared stream (checkpoint + entries).

:class:`StreamFollower` is a :class:`~dashboard_server.ingest.feed.Feed`: it writes into the
instance's write side, which writes into a :class:`~dashboard_server.core.shifted.ShiftedDoc`,
so the document's version is the lineage's. It loads the checkpoint (or, after a short outage,
continues from its last entry), then blocks on ``XREAD`` and applies each entry as it comes, one
engine op per version, in one go (no flush sees half an entry). Every ``check_s`` it reads the
head's epoch: a new lineage is loaded at once even while the stream is idle.

When the lineage changes, :attr:`on_epoch` is called with the new epoch (the server gives it to
its hub: resumes with the old one get a snapshot). When it finds the lineage inconsistent with
its document (:class:`~dashboard_server.ingest.replication.stream.Diverged`: the Redis of the
stream lost writes it had seen) it switches to a private epoch, so that no client gets a wrong
catch-up, asks the writer for a new lineage and waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence

from dashboard_server.core.shifted import ShiftedDoc
from dashboard_server.ingest.feed import FeedHealth, FeedState, TaskFeed, describe_failure
from dashboard_server.ingest.redis.connection import close_quietly, connect_redis
from dashboard_server.ingest.replication.stream import (
    Diverged,
    Gap,
    Lineage,
    Position,
    ReplicaTarget,
    apply_entry,
    sync,
)

__all__ = ["StreamFollower"]

log = logging.getLogger(__name__)


class StreamFollower(TaskFeed):
    """Keeps ``doc`` (through ``target``, the write side) at the head of the partition's stream
    in the Redis at ``url`` (see the module doc)."""

    name = "replica"

    def __init__(
        self,
        target: ReplicaTarget,
        doc: ShiftedDoc,
        *,
        url: str,
        partition: str,
        sections: Sequence[str],
        on_epoch: Callable[[str], None],
        timeout: float = 2.0,
        check_s: float = 1.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        super().__init__()
        self.target = target
        self.doc = doc
        self.url = url
        self.partition = partition
        self.sections = tuple(sections)
        self.on_epoch = on_epoch
        self.timeout = timeout
        self.check_s = check_s
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.position: Position | None = None
        """Where the document stands in the lineage (``None``: nothing loaded yet)."""
        self.entries = 0
        """Entries applied since the start."""
        self.loads = 0
        """Checkpoints loaded (or lineage syncs) since the start."""
        self.last_entry_at: float | None = None
        self._state = FeedState.CONNECTING
        self._since = time.monotonic()
        self._error: str | None = None
        self._private_epoch: str | None = None
        self._epoch: str | None = None

    def health(self) -> FeedHealth:
        """``connecting`` until the document is at the head, ``ok`` while following it,
        ``down`` (with the reason) while the stream's Redis fails or the lineage diverged."""
        failed = super().health()
        if failed.state is FeedState.DOWN:
            return failed
        return FeedHealth(self._state, time.monotonic() - self._since, self._error)

    def _set(self, state: FeedState, error: str | None = None) -> None:
        if error is not None:
            self._error = error
        if state is not self._state:
            log.log(
                logging.INFO if state is FeedState.OK else logging.WARNING,
                "replica state changed",
                extra={"from": self._state.value, "to": state.value, "error": self._error},
            )
            self._state = state
            self._since = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the stream until ``stop``, reconnecting with backoff after any failure."""
        failures = 0
        while not stop.is_set():
            client = connect_redis(self.url, self.timeout)
            lineage = Lineage(client, self.partition)
            try:
                await self._follow(lineage, stop)
                failures = 0
            except Diverged as exc:
                await self._diverged(lineage, str(exc))
            except Exception as exc:
                self._set(FeedState.DOWN, describe_failure(exc))
                failures += 1
            finally:
                await close_quietly(client, timeout=self.timeout)
            delay = min(self.backoff_max, self.backoff_initial * 2**failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), random.uniform(delay / 2, delay))

    async def _follow(self, lineage: Lineage, stop: asyncio.Event) -> None:
        position = await sync(
            lineage, self.target, self.doc, self.sections, self.position, self._adopt_epoch
        )
        if position is None:
            self._set(FeedState.CONNECTING, "no lineage yet: waiting for a writer")
            return
        self._adopt_epoch(position)
        self.position = position
        self.loads += 1
        self._set(FeedState.OK)
        self._error = None
        block_ms = max(10, min(1000, int(self.timeout * 500)))
        next_check = time.monotonic() + self.check_s
        while not stop.is_set():
            entries = await lineage.wait_after(position.last_id, block_ms)
            for entry_id, fields in entries:
                try:
                    apply_entry(self.target, self.doc, fields, events=True)
                except Gap:
                    log.info("gap in the stream; syncing again")
                    return  # run() calls _follow again: from the stream or the checkpoint
                position = Position(position.epoch, self.doc.version, entry_id)
                self.entries += 1
                self.last_entry_at = time.monotonic()
            self.position = position
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.check_s
                head = await lineage.meta()
                if head is None or head.epoch != position.epoch:
                    log.info("the lineage changed; syncing again")
                    return

    def _adopt_epoch(self, position: Position) -> None:
        """Serve in ``position``'s epoch (at once: called as soon as its checkpoint is loaded)."""
        if position.epoch != self._epoch or self._private_epoch:
            self._private_epoch = None
            self._epoch = position.epoch
            self.on_epoch(position.epoch)

    async def _diverged(self, lineage: Lineage, reason: str) -> None:
        if self._private_epoch is None:
            self._private_epoch = uuid.uuid4().hex[:16]
            self.on_epoch(self._private_epoch)  # no client resumes into a diverged document
            log.error("replica diverged from the lineage", extra={"reason": reason})
        self._set(FeedState.DOWN, f"diverged: {reason}; waiting for a new lineage")
        with contextlib.suppress(Exception):
            head = await lineage.meta()
            if self.position is not None and head is not None and head.epoch != self.position.epoch:
                # a new lineage: sync() loads its checkpoint (its version is above ours)
                self.position = None
                return
            await lineage.request_reset(reason)
