"""End to end on real sockets: many clients of every kind converge on the server's document."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from server_helpers import decode, restricted, run, running_server, wait_until
from websockets.asyncio.client import connect

from dashboard_server.client.connection import DashboardClient
from dashboard_server.config import DEFAULT_SECTIONS

FEED_SECONDS = float(os.environ.get("DASHBOARD_TEST_FEED_SECONDS", "10"))
CHANNEL_SETS: list[list[str] | None] = [
    None,
    [*DEFAULT_SECTIONS],
    ["orders", "events"],
    ["market_data", "orderbook"],
    ["positions", "account", "strategies", "events"],
]


def flushes(server: Any, interval_ms: int) -> float:
    """Flushes run so far for ``interval_ms``."""
    value = server.metrics.registry.get_sample_value(
        "dashboard_flushes_total", {"interval_ms": str(interval_ms)}
    )
    return value or 0.0


def client_matrix(url: str) -> list[DashboardClient]:
    """20 clients: every tier x format x diff form, spread over five channel sets."""
    clients = []
    for i in range(20):
        clients.append(
            DashboardClient(
                url,
                type=("tui", "web")[i % 2],
                format=("msgpack", "json")[(i // 2) % 2],
                diff=("changes", "json-patch")[(i // 4) % 2],
                channels=CHANNEL_SETS[i % 5],
                interval_ms=50 if i == 19 else None,  # one group with its own interval
                reconnect=False,
                max_events=1_000_000,
            )
        )
    return clients


def test_twenty_clients_converge_under_a_fast_feed(engine_name: str) -> None:
    async def scenario() -> None:
        async with running_server(engine_name, demo=True, demo_rate=1000, demo_seed=1) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            published: list[tuple[str, Mapping[str, Any]]] = []
            publish = server.hub.publish_event

            def record(channel: str, data: Mapping[str, Any]) -> None:
                published.append((channel, data))
                publish(channel, data)

            server.hub.publish_event = record  # type: ignore[method-assign]
            clients = client_matrix(url)
            for c in clients:
                await c.connect()
            # one scheduler task per distinct interval: tui, web and the client's own
            await wait_until(lambda: server.fanout.running_intervals() == {50, 100, 250})
            flushes_before = flushes(server, 100)
            events_before = len(published)
            started = asyncio.get_running_loop().time()
            await asyncio.sleep(FEED_SECONDS)
            # A fast feed: a fixed amount of work, however long a loaded machine takes for it
            # (the timeout only bounds the wait; the feed's rate is the load test's business).
            await wait_until(
                lambda: (
                    server.doc.version > 500 * FEED_SECONDS and len(published) - events_before > 100
                ),
                timeout=120,
            )
            elapsed = asyncio.get_running_loop().time() - started
            # drift-free: never more than one tui flush per 100 ms over the whole run (how many
            # deadlines a loaded machine skips is not asserted)
            ticks = flushes(server, 100) - flushes_before
            assert ticks <= elapsed * 10 + 2, (ticks, elapsed)
            await server.stop_feeds()
            doc = server.doc.get("")
            # two flushes of the slowest tier, then everyone must be there (the extra wait,
            # bounded, is only for a loaded machine)
            await asyncio.sleep(2 * server.config.web_interval_ms / 1000)
            for c in clients:
                await c.wait_for(lambda c: c.data == restricted(doc, c.channels), timeout=30)
            for i, c in enumerate(clients):
                assert c.gaps == 0 and c.refreshes_sent == 0, (i, c.state.last_problem)
                assert c.data == restricted(doc, c.channels), i
                if c.channels is None or "events" in c.channels:
                    # every event since the client joined, in order, none conflated or lost
                    got = [(e["channel"], e["data"]) for e in c.state.events]
                    assert len(got) > 100
                    start = published.index(got[0])
                    assert got == published[start:], i
                assert c.state.snapshots == 1
            for c in clients:
                await c.close()
            await wait_until(lambda: server.hub.member_count() == 0)
            await wait_until(lambda: not server.fanout.running_intervals())  # tasks end too

    run(scenario(), timeout=FEED_SECONDS + 240)


def test_group_members_receive_identical_bytes_and_one_snapshot_encode(engine_name: str) -> None:
    async def scenario() -> None:
        async with running_server(engine_name, demo=True, demo_rate=300) as server:
            url = f"ws://127.0.0.1:{server.port}/ws?type=tui&format=json&channels=market_data"
            registry = server.metrics.registry
            before = registry.get_sample_value("dashboard_snapshot_encodes_total") or 0
            flushes_before = flushes(server, 100)
            sockets = await asyncio.gather(*(connect(url) for _ in range(30)))
            snapshots = [decode(await ws.recv()) for ws in sockets]
            assert {s["type"] for s in snapshots} == {"snapshot"}
            # joiners of one flush share one snapshot encode: at most one per flush, however
            # many flushes a loaded machine needs to let all 30 in
            encodes = (registry.get_sample_value("dashboard_snapshot_encodes_total") or 0) - before
            assert 1 <= encodes <= flushes(server, 100) - flushes_before
            # from the first update after the last snapshot, frames are byte-identical
            last_snapshot_seq = max(s["seq"] for s in snapshots)
            tails: list[list[str | bytes]] = []
            for ws in sockets:
                tail: list[str | bytes] = []
                while len(tail) < 3:
                    frame = await ws.recv()
                    if decode(frame).get("seq", -1) > last_snapshot_seq:  # no status
                        tail.append(frame)
                tails.append(tail)
            for tail in tails:
                assert tail == tails[0]
            seqs = [decode(x)["seq"] for x in tails[0]]
            assert seqs == list(range(last_snapshot_seq + 1, last_snapshot_seq + 4))
            for ws in sockets:
                await ws.close()

    run(scenario())
