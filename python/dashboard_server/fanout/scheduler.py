"""The asyncio shell around the hub: one flush task per interval, writing what the hub decided.

For every distinct interval that has a group (the hub says so through its ``on_new_interval``
hook, so nobody has to remember to start one), a task wakes at the interval's drift-free
deadlines (:func:`~dashboard_server.core.ticker.periodic`), asks the hub for the flush
(:meth:`~dashboard_server.fanout.hub.Hub.flush`: synchronous, so the document cannot change in
between) and writes each encoded message to its members without awaiting any of them
(:class:`~dashboard_server.fanout.writer.FrameWriter`). The hub has already skipped members whose
write buffer is over the cap, so nothing here can grow without bound. A task ends when its
interval has no group left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection

from dashboard_server.core.engine import engine_panics
from dashboard_server.core.ticker import periodic
from dashboard_server.fanout.hub import Flush, Hub, Member
from dashboard_server.fanout.writer import FrameWriter
from dashboard_server.telemetry.metrics import ServerMetrics

__all__ = ["Fanout", "Peer"]

log = logging.getLogger(__name__)


class Peer(Member, Protocol):
    """A hub member backed by a WebSocket connection."""

    @property
    def connection(self) -> ServerConnection:
        """The WebSocket connection to write to."""
        ...

    def close_lagging(self) -> None:
        """Close the connection because it stayed lagging too long (does not block)."""
        ...


class Fanout:
    """Runs the per-interval flush tasks of a :class:`Hub` and performs their writes."""

    def __init__(
        self,
        hub: Hub[Peer],
        metrics: ServerMetrics,
        before_flush: Callable[[], None] | None = None,
    ) -> None:
        self.hub = hub
        self.metrics = metrics
        self.before_flush = before_flush
        """Called right before each flush reads the document: the write side applies the
        batches its transports hold (``StateWriter.apply_pending``)."""
        self.writer = FrameWriter()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._stopped = False
        self._latencies: dict[str, Any] = {}
        self._bytes = {
            True: metrics.bytes_sent.labels("json"),
            False: metrics.bytes_sent.labels("msgpack"),
        }
        hub.on_new_interval = self._start

    def _latency(self, tier: str) -> Any:
        child = self._latencies.get(tier)
        if child is None:
            child = self._latencies[tier] = self.metrics.broadcast_latency.labels(tier)
        return child

    def _start(self, interval_ms: int) -> None:
        """Give ``interval_ms`` a flush task unless it has one (still winding down, say)."""
        if self._stopped or interval_ms in self._tasks:
            return
        self._tasks[interval_ms] = asyncio.get_running_loop().create_task(
            self._run(interval_ms), name=f"flush-{interval_ms}ms"
        )

    def running_intervals(self) -> set[int]:
        """Intervals that currently have a task."""
        return set(self._tasks)

    async def stop(self) -> None:
        """Cancel every flush task and wait for them."""
        self._stopped = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _run(self, interval_ms: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with contextlib.aclosing(periodic(interval_ms / 1000)) as deadlines:
                async for deadline in deadlines:
                    if interval_ms not in self.hub.intervals():
                        break
                    tiers: frozenset[str] = frozenset()
                    try:
                        if self.before_flush is not None:
                            self.before_flush()
                        flush = self.hub.flush(interval_ms)
                        tiers = flush.tiers
                        self.deliver(flush)
                    except engine_panics() as exc:  # a BaseException: it would end this task
                        self.metrics.engine_panic("flush", exc)
                    except Exception:
                        log.exception("flush failed", extra={"interval_ms": interval_ms})
                    latency = max(0.0, loop.time() - deadline)
                    for tier in tiers:
                        self._latency(tier).observe(latency)
        finally:
            if self._tasks.get(interval_ms) is asyncio.current_task():
                del self._tasks[interval_ms]

    def deliver(self, flush: Flush[Peer]) -> None:
        """Write a flush's messages (without awaiting) and close the members it gave up on."""
        for delivery in flush.deliveries:
            count = self.writer.write(
                [member.connection for member in delivery.members],
                delivery.payload,
                delivery.text,
            )
            for tier, members in delivery.tiers:
                self.metrics.sent(tier, delivery.kind).inc(members)
            self._bytes[delivery.text].inc(count * len(delivery.payload))
        for member in flush.lagged_out:
            member.close_lagging()
