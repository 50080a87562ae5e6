"""One load-generator process: opens its share of the connections and measures what arrives.

The parent (:mod:`dashboard_server.tools.loadtest.runner`) drives each worker over a pipe (the
worker
first says ``("hello",)`` once it is up):

1. ``("connect", at_wall_time, concurrency)``: connect every client, starting at that wall time
   (all at once with ``concurrency`` 0: a reconnect storm), and wait for their snapshots;
   answer ``("ready", summary)``.
2. ``("measure", t0, t1)``: record every message received between the two wall times; answer
   ``("result", WorkerResult)``, then close the connections and exit.
"""

from __future__ import annotations

import asyncio
import resource
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from dashboard_server.tools.loadtest.wsclient import Inspector, LoadClient, MessageInfo

__all__ = ["WorkerPlan", "WorkerResult", "worker_main"]


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """What one worker connects to."""

    host: str
    port: int
    targets: tuple[str, ...]
    """The request target (``/ws?...``) of each of its clients."""
    deflate: bool = False
    snapshot_timeout: float = 30.0


@dataclass(slots=True)
class WorkerResult:
    """What one worker measured in the window (latencies in ms, as array('d') bytes)."""

    connected: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    open_latencies: bytes = b""
    snapshot_latencies: bytes = b""
    latencies: bytes = b""
    """Update latencies to the kernel's receipt (``SO_TIMESTAMPNS``)."""
    read_latencies: bytes = b""
    """Update latencies to the moment this process read the data."""
    messages: int = 0
    """Messages received in the window."""
    types: dict[str, int] = field(default_factory=dict)
    """Messages received in the window, by type."""
    update_bytes: int = 0
    """Bytes of the updates received in the window."""
    gaps: int = 0
    closes: dict[int, int] = field(default_factory=dict)
    cpu_s: float = 0.0
    first_last: dict[bytes, tuple[float, float]] = field(default_factory=dict)
    """Per distinct message (prefix): first and last receipt time in this worker."""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Worker:
    """The clients of one process and what they measured."""

    def __init__(self, plan: WorkerPlan, pipe: Connection) -> None:
        self.plan = plan
        self.pipe = pipe
        self.inspector = Inspector()
        self.clients: list[LoadClient] = []
        self.window = (float("inf"), float("-inf"))
        self.latencies = array("d")
        self.read_latencies = array("d")
        self.messages = 0
        self.types: dict[str, int] = {}
        self.update_bytes = 0
        self.first_last: dict[bytes, tuple[float, float]] = {}

    def on_message(
        self, info: MessageInfo, now: float, kernel: float | None, prefix: bytes, size: int
    ) -> None:
        """Record one data message received in the window."""
        t0, t1 = self.window
        if not t0 <= now <= t1:
            return
        self.messages += 1
        self.types[info.type] = self.types.get(info.type, 0) + 1
        if info.type != "update":  # an event's timestamp is when it happened, not the flush
            return
        self.update_bytes += size
        if info.timestamp_ms is not None:
            self.read_latencies.append(now * 1000.0 - info.timestamp_ms)
            if kernel is not None:
                self.latencies.append(kernel * 1000.0 - info.timestamp_ms)
        if kernel is not None:
            now = kernel
        seen = self.first_last.get(prefix)
        if seen is None:
            self.first_last[prefix] = (now, now)
        elif now > seen[1]:
            self.first_last[prefix] = (seen[0], now)

    async def receive(self) -> Any:
        """The parent's next command, without blocking the event loop."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(self.pipe.fileno(), ready.set)
        try:
            await ready.wait()
        finally:
            loop.remove_reader(self.pipe.fileno())
        return self.pipe.recv()

    async def connect_one(self, target: str, limit: asyncio.Semaphore | None) -> LoadClient:
        """Open one client (failures stay in its stats)."""
        client = LoadClient(
            self.plan.host,
            self.plan.port,
            target,
            self.inspector,
            self.on_message,
            deflate=self.plan.deflate,
        )
        try:
            if limit is None:
                await client.connect()
            else:
                async with limit:
                    await client.connect()
        except OSError:  # ConnectionError included; recorded in the client's stats
            pass
        self.clients.append(client)
        return client

    async def run(self) -> None:
        """The whole conversation with the parent (see the module doc)."""
        self.pipe.send(("hello",))
        command, at, concurrency = await self.receive()
        assert command == "connect"
        await asyncio.sleep(max(0.0, at - time.time()))
        limit = asyncio.Semaphore(concurrency) if concurrency else None
        await asyncio.gather(*(self.connect_one(t, limit) for t in self.plan.targets))
        deadline = time.monotonic() + self.plan.snapshot_timeout
        while time.monotonic() < deadline and any(
            c.stats.snapshot_at is None and c.stats.error is None and not c.closed.done()
            for c in self.clients
        ):
            await asyncio.sleep(0.05)
        self.pipe.send(("ready", len(self.clients)))
        command, t0, t1 = await self.receive()
        assert command == "measure"
        self.window = (t0, t1)
        await asyncio.sleep(max(0.0, t0 - time.time()))
        cpu0 = _cpu()
        await asyncio.sleep(max(0.0, t1 - time.time()))
        cpu1 = _cpu()
        self.pipe.send(("result", self.result(cpu1 - cpu0, at)))
        for client in self.clients:
            client.close()
        await asyncio.sleep(0.2)

    def result(self, cpu_s: float, started: float) -> WorkerResult:
        """Sum up the clients; gaps count over the whole run (stricter than the window)."""
        result = WorkerResult(cpu_s=cpu_s)
        snapshots = array("d")
        opens = array("d")
        for client in self.clients:
            stats = client.stats
            if stats.opened_at is not None:
                opens.append((stats.opened_at - started) * 1000.0)
            if stats.snapshot_at is not None:
                result.connected += 1
                snapshots.append((stats.snapshot_at - started) * 1000.0)
            else:
                result.failed += 1
            if stats.error is not None:
                kind = stats.error.split(":", 1)[0]
                result.errors[kind] = result.errors.get(kind, 0) + 1
            if stats.close_code is not None:
                result.closes[stats.close_code] = result.closes.get(stats.close_code, 0) + 1
            result.gaps += stats.gaps
        result.snapshot_latencies = snapshots.tobytes()
        result.open_latencies = opens.tobytes()
        result.latencies = self.latencies.tobytes()
        result.read_latencies = self.read_latencies.tobytes()
        result.messages = self.messages
        result.types = self.types
        result.update_bytes = self.update_bytes
        result.first_last = self.first_last
        return result


def worker_main(plan: WorkerPlan, pipe: Connection) -> None:
    """Entry point of a worker process (see the module doc)."""
    asyncio.run(_Worker(plan, pipe).run())
