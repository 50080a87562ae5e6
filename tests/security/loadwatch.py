"""A well-behaved bystander, a ``/health`` prober and an RSS sampler next to a test server, and
hostile load run in a process of its own (``attacker.py``).

The bystander's update count in an attack window is compared with its own count in a control
window of the same length just before, in the same test (never with an absolute rate: the
machine is shared); ``/health`` latency and the process's RSS are sampled in both.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sectools import open_ws, ws_url
from server_helpers import decode, http_get, rss_bytes, wait_until

from dashboard_server.server.app import DashboardServer

ATTACKER = Path(__file__).resolve().parent / "attacker.py"
MB = 1024 * 1024


@dataclass
class Window:
    """What the bystander, the prober and the sampler saw in one window."""

    seconds: float
    updates: int
    health_max_s: float
    health_probes: int
    rss_start: int
    rss_peak: int


@dataclass
class Watch:
    """The observers of one server (see the module doc)."""

    srv: DashboardServer
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    health: list[tuple[float, float]] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)
    probing_since: float | None = None

    async def measure(self, seconds: float) -> Window:
        """Observe for ``seconds``."""
        rss_start = rss_bytes()
        started = time.monotonic()
        await asyncio.sleep(seconds)
        ended = time.monotonic()
        updates = sum(1 for t, m in self.messages if started <= t < ended and m["type"] == "update")
        probes = [latency for t, latency in self.health if started <= t < ended]
        if self.probing_since is not None:  # a probe still unanswered counts as it stands
            probes.append(ended - self.probing_since)
        peak = max([r for t, r in self.rss if started <= t < ended] + [rss_start])
        return Window(
            ended - started, updates, max(probes, default=0.0), len(probes), rss_start, peak
        )

    def assert_no_gap(self) -> None:
        """The bystander got one snapshot, then updates whose seq grows by exactly 1."""
        assert self.messages and self.messages[0][1]["type"] == "snapshot"
        seq = self.messages[0][1]["seq"]
        for _, message in self.messages[1:]:
            if message["type"] == "status":  # no seq: the feeds' status, after the snapshot
                continue
            assert message["type"] == "update", message["type"]
            assert message["seq"] == seq + 1, (message["seq"], seq)
            seq = message["seq"]

    def assert_held(self, control: Window, attack: Window, *, rss_growth: int = 64 * MB) -> None:
        """What must hold under attack: no seq gap, >= 80 % of the control window's updates,
        ``/health`` within 500 ms, RSS growth within ``rss_growth``."""
        self.assert_no_gap()
        assert control.updates > 0
        assert attack.updates >= 0.8 * control.updates * attack.seconds / control.seconds, (
            control,
            attack,
        )
        assert attack.health_probes >= 2, attack
        assert attack.health_max_s < 0.5, attack
        assert attack.rss_peak - control.rss_start <= rss_growth, (control, attack)


async def _feed(srv: DashboardServer, stop: asyncio.Event) -> None:
    for step in itertools.count():
        if stop.is_set():
            return
        srv.writer.merge(f"/market_data/S{step % 20}", {"px": float(step), "step": step})
        await asyncio.sleep(0.01)


async def _bystander(url: str, watch: Watch, stop: asyncio.Event) -> None:
    async with open_ws(url) as ws:
        while not stop.is_set():
            try:
                frame = await asyncio.wait_for(ws.recv(), 0.2)
            except TimeoutError:
                continue
            watch.messages.append((time.monotonic(), decode(frame)))


async def _probe(srv: DashboardServer, watch: Watch, stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = watch.probing_since = time.monotonic()
        status, _, _ = await http_get(srv.port, "/health")
        assert status in (200, 503)
        watch.probing_since = None
        watch.health.append((started, time.monotonic() - started))
        await asyncio.sleep(0.1)


async def _sample_rss(watch: Watch, stop: asyncio.Event) -> None:
    while not stop.is_set():
        watch.rss.append((time.monotonic(), rss_bytes()))
        await asyncio.sleep(0.05)


@asynccontextmanager
async def watching(srv: DashboardServer, interval_ms: int = 100) -> AsyncIterator[Watch]:
    """Feed ``srv`` (one change every 10 ms) and observe it; ready once the bystander has had
    its snapshot and a few updates."""
    watch = Watch(srv)
    stop = asyncio.Event()
    url = ws_url(srv, f"type=tui&format=json&channels=market_data&interval_ms={interval_ms}")
    tasks = [
        asyncio.create_task(_feed(srv, stop)),
        asyncio.create_task(_bystander(url, watch, stop)),
        asyncio.create_task(_probe(srv, watch, stop)),
        asyncio.create_task(_sample_rss(watch, stop)),
    ]
    try:
        await wait_until(lambda: len(watch.messages) >= 3)
        yield watch
    finally:
        stop.set()
        await asyncio.gather(*tasks)


class Attacker:
    """``attacker.py`` running in a subprocess."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def result(self) -> dict[str, Any]:
        """Wait for the attacker to finish: its tally."""
        assert self.process.stdout is not None
        out, _ = await self.process.communicate()
        assert self.process.returncode == 0, out
        tally: dict[str, Any] = orjson.loads(out.splitlines()[-1])
        return tally


async def attack(mode: str, port: int, seconds: float, **options: Any) -> Attacker:
    """Start ``attacker.py MODE`` against ``port`` for ``seconds``; returns once it has started."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ATTACKER),
        mode,
        str(port),
        str(seconds),
        *(f"{k}={v}" for k, v in options.items()),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert line.strip() == b"start", line
    return Attacker(process)
