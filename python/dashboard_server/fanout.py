"""The asyncio shell around the hub: one scheduler task per interval, and non-blocking writes.

For every distinct interval that has a group, a task sleeps until the interval's next drift-free
deadline (:class:`~dashboard_server.scheduler.Ticker`), asks the hub for the flush
(:meth:`~dashboard_server.hub.Hub.flush`, synchronous, so the document cannot change in between)
and writes each encoded message to its members with :func:`websockets.asyncio.server.broadcast`:
the same bytes object for all, queued on each transport without awaiting any client. The hub has
already skipped members whose write buffer is over the cap, so nothing here can grow without
bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from websockets.asyncio.server import ServerConnection, broadcast

from dashboard_server.hub import Flush, Hub, Member
from dashboard_server.metrics import ServerMetrics
from dashboard_server.scheduler import Ticker

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

    def __init__(self, hub: Hub[Peer], metrics: ServerMetrics) -> None:
        self.hub = hub
        self.metrics = metrics
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._stopped = False

    def sync(self) -> None:
        """Start a task for every interval the hub has that has none yet."""
        if self._stopped:
            return
        for interval_ms in self.hub.intervals():
            if interval_ms not in self._tasks:
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
        ticker = Ticker(interval_ms / 1000, loop.time())
        try:
            while interval_ms in self.hub.intervals():
                deadline = ticker.deadline()
                await asyncio.sleep(max(0.0, deadline - loop.time()))
                if interval_ms not in self.hub.intervals():
                    break
                try:
                    self.deliver(self.hub.flush(interval_ms))
                except Exception:
                    log.exception("flush failed", extra={"interval_ms": interval_ms})
                self.metrics.broadcast_latency.observe(max(0.0, loop.time() - deadline))
                ticker.advance(loop.time())
        finally:
            if self._tasks.get(interval_ms) is asyncio.current_task():
                del self._tasks[interval_ms]

    def deliver(self, flush: Flush[Peer]) -> None:
        """Write a flush's messages (without awaiting) and close the members it gave up on."""
        for delivery in flush.deliveries:
            broadcast(
                [member.connection for member in delivery.members],
                delivery.payload,
                text=delivery.text,
            )
            count = len(delivery.members)
            self.metrics.messages_sent.labels(delivery.kind).inc(count)
            self.metrics.bytes_sent.labels("json" if delivery.text else "msgpack").inc(
                count * len(delivery.payload)
            )
        for member in flush.lagged_out:
            member.close_lagging()
