"""One version space for several instances (in-process, on a real redis-server): a writer
candidate feeding the stream from the demo feed, edges building their document from checkpoint +
stream. Their versions are identical, a client resumes on another edge by a catch-up whose result
equals the state, a late edge loads the checkpoint, and a lost lineage gives a new epoch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis_helpers import RedisProcess, health, metric, wait_health
from server_helpers import make_config, run, wait_until

from dashboard_server.client.connection import DashboardClient
from dashboard_server.ingest.replication.follower import StreamFollower
from dashboard_server.ingest.replication.leader import IngestLeader
from dashboard_server.server.app import DashboardServer


def common(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "replication_url": url,
        "history_sections": (),
        "redis_health_interval_s": 0.2,
        "redis_health_timeout_s": 0.5,
        "redis_backoff_initial_s": 0.05,
        "redis_backoff_max_s": 0.3,
        "replication_lease_ms": 1000,
        "tui_interval_ms": 50,
        **extra,
    }


@asynccontextmanager
async def instance(engine_name: str, url: str, **extra: Any) -> AsyncIterator[DashboardServer]:
    server = DashboardServer(make_config(engine_name, **common(url, **extra)))
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown()


def writer_settings(**extra: Any) -> dict[str, Any]:
    return {
        "replication_role": "writer",
        "demo": True,
        "demo_rate": 200.0,
        "demo_seed": 11,
        **extra,
    }


def leader_of(server: DashboardServer) -> IngestLeader:
    return next(f for f in server.feeds if isinstance(f, IngestLeader))


def follower_of(server: DashboardServer) -> StreamFollower:
    return next(f for f in server.feeds if isinstance(f, StreamFollower))


async def quiesce(writer: DashboardServer, *servers: DashboardServer) -> None:
    """Stop the writer's sources, then wait until every server holds the writer's last entry."""
    leader = leader_of(writer)
    for feed in leader.feeds:
        await feed.stop()
    await asyncio.sleep(0.2)  # its last flush
    stream_doc = leader.stream_doc
    assert stream_doc is not None
    await wait_until(lambda: all(s.doc.version == stream_doc.version for s in servers), 10)


def test_edges_share_versions_and_clients_resume_elsewhere_by_catch_up(
    engine_name: str, redis_proc: RedisProcess
) -> None:
    url = redis_proc.url

    async def scenario() -> None:
        async with (
            instance(engine_name, url, **writer_settings()) as writer,
            instance("pure", url) as edge1,
            instance("native", url) as edge2,
        ):
            for s in (writer, edge1, edge2):
                await wait_health(s, "ok")
            bodies = [await health(s) for s in (writer, edge1, edge2)]
            assert len({b["epoch"] for b in bodies}) == 1
            assert bodies[0]["replication"]["active"] is True
            clients = [
                DashboardClient(f"ws://127.0.0.1:{edge1.port}/ws", type="tui", format=fmt, diff=d)
                for fmt, d in (("msgpack", "changes"), ("json", "json-patch"))
            ]
            for c in clients:
                await c.connect()
                await c.wait_synced(10)
            await asyncio.sleep(0.5)  # a few updates on edge1
            assert all(c.epoch == bodies[0]["epoch"] for c in clients)

            # edge1 goes away; the balancer sends its clients to edge2, which resumes them
            for c in clients:
                c.url = f"ws://127.0.0.1:{edge2.port}/ws"
            await edge1.shutdown()
            await wait_until(lambda: all(c.reconnects == 1 and c.state.synced for c in clients))
            await wait_until(
                lambda: metric(edge2, "dashboard_resumes_total", {"outcome": "catch_up"}) == 2
            )
            assert metric(edge2, "dashboard_resumes_total", {"outcome": "snapshot"}) == 0

            await quiesce(writer, writer, edge2)
            stream_doc = leader_of(writer).stream_doc
            assert stream_doc is not None
            expected = stream_doc.get("")
            assert expected["market_data"] and expected["orders"]
            assert edge2.doc.get("") == expected and writer.doc.get("") == expected
            await wait_until(lambda: all(c.version == edge2.doc.version for c in clients))
            assert all(c.data == expected for c in clients)
            for c in clients:
                await c.close()

    run(scenario(), timeout=90)


def test_late_edge_loads_the_checkpoint_and_matches(
    engine_name: str, redis_proc: RedisProcess
) -> None:
    url = redis_proc.url

    async def scenario() -> None:
        async with instance(
            engine_name, url, **writer_settings(replication_checkpoint_s=0.3)
        ) as writer:
            leader = leader_of(writer)
            await wait_until(lambda: leader.checkpoints >= 3, 15)  # the first entries trimmed
            r = redis_proc.client()
            first = r.xrange("{dashboard:main}:stream", count=1)
            assert first and int(first[0][1][b"f"]) > leader.stream_doc.base  # type: ignore[union-attr]
            async with instance("pure" if engine_name == "native" else "native", url) as late:
                await wait_health(late, "ok")
                assert follower_of(late).loads == 1
                await quiesce(writer, writer, late)
                assert late.doc.get("") == writer.doc.get("")
                assert late.doc.floor > leader.stream_doc.base  # type: ignore[union-attr]

    run(scenario(), timeout=60)


def test_a_lost_lineage_gives_a_new_epoch(engine_name: str, redis_proc: RedisProcess) -> None:
    url = redis_proc.url

    async def scenario() -> None:
        async with (
            instance(engine_name, url, **writer_settings()) as writer,
            instance(engine_name, url) as edge,
        ):
            await wait_health(edge, "ok")
            old_epoch, old_version = edge.epoch, edge.doc.version
            client = DashboardClient(f"ws://127.0.0.1:{edge.port}/ws", type="tui")
            await client.connect()
            await client.wait_synced(10)
            # the stream's Redis loses everything (restarted without persistence)
            redis_proc.client().flushall()
            await wait_until(lambda: edge.epoch != old_epoch, 15)
            assert edge.doc.version > old_version  # versions never go back on an instance
            await wait_until(lambda: writer.epoch == edge.epoch, 15)
            await wait_until(lambda: client.epoch == edge.epoch, 10)  # a snapshot, new epoch
            await quiesce(writer, writer, edge)
            await wait_until(lambda: client.version == edge.doc.version, 10)
            assert client.data == edge.doc.get("")
            await client.close()

    run(scenario(), timeout=60)
