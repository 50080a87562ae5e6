"""The Redis transport against a real Redis Cluster (redis-server in cluster mode on loopback
ports): bootstrap from every primary, keys that are only SET watched per node, classic and
sharded pub/sub, and a primary's failover survived and resynced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cluster_helpers import LocalCluster
from redis_helpers import clients_of, converge, health, redis_server, wait_health
from server_helpers import run, wait_until

from dashboard_server.ingest.redis.cluster import AutoRedisFeed, ClusterRedisFeed

SECTIONS = ("market_data", "orderbook", "orders")
SOURCES = (
    {"name": "market_data", "transport": "redis-pubsub", "pattern": "market_data:*",
     "section": "market_data"},
    {"name": "orders", "transport": "redis-keys", "pattern": "order:*", "section": "orders"},
    {"name": "orderbook", "transport": "redis-pubsub", "pattern": "orderbook:*",
     "bootstrap": False, "section": "orderbook"},
)  # fmt: skip
SHARDED = ("orderbook:BTC", "orderbook:ETH", "orderbook:SOL")


@pytest.fixture
def cluster(redis_binary: str, tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(redis_binary, tmp_path / "cluster", primaries=3)
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster_with_replicas(redis_binary: str, tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(redis_binary, tmp_path / "cluster", primaries=3, replicas=1)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def cluster_state(r: Any, n_md: int, n_orders: int) -> dict[str, Any]:
    """What the cluster holds, as the document should look (read key by key)."""
    state: dict[str, Any] = {s: {} for s in SECTIONS}
    for i in range(n_md):
        payload = r.get(f"market_data:S{i}")
        if payload:
            state["market_data"][f"S{i}"] = orjson.loads(payload)
    for i in range(n_orders):
        payload = r.get(f"order:{i}")
        if payload:
            state["orders"][str(i)] = orjson.loads(payload)
    return state


def settings(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "sections": SECTIONS,
        "sources": SOURCES,
        "redis_sharded_channels": SHARDED,
        "history_sections": (),
        "redis_reload_interval_s": 0,
        **extra,
    }


def test_cluster_bootstrap_watch_and_pubsub(engine_name: str, cluster: LocalCluster) -> None:
    r = cluster.client()
    # keys spread over the three primaries before the server starts
    for i in range(60):
        r.set(f"market_data:S{i}", orderjson({"last": float(i)}))
        r.set(f"order:{i}", orderjson({"qty": i, "status": "new"}))
    primaries = {cluster.primary_of(f"order:{i}") for i in range(60)}
    assert len(primaries) == 3

    async def scenario() -> None:
        async with (
            redis_server(engine_name, cluster.url, **settings(cluster.url)) as server,
            clients_of(server) as clients,
        ):
            await wait_health(server, "ok")
            feed = server.feeds[0]
            assert isinstance(feed, AutoRedisFeed) and feed.cluster is True
            assert (await health(server))["redis"] == "ok"
            # the bootstrap read every primary (SCAN per node, MGET per slot)
            await converge(clients, cluster_state(r, 60, 60) | {"orderbook": {}})

            # live: keys only SET (keyspace events on their own primary), a DEL and an expiry,
            # classic PUBLISH (heard on one node), SPUBLISH on the channel's shard
            for i in range(0, 60, 3):
                r.set(f"order:{i}", orderjson({"qty": i, "status": "filled"}))
            r.delete("order:1")
            r.set("order:2", orderjson({"qty": 2, "status": "gone"}), px=50)
            for i in range(60):
                payload = orderjson({"last": i + 0.5})
                r.set(f"market_data:S{i}", payload)
                r.publish(f"market_data:S{i}", payload)
            for channel in SHARDED:
                r.execute_command("SPUBLISH", channel, orderjson({"bids": [[1.0, 2.0]]}))
            expected = cluster_state(r, 60, 60)
            expected["orders"].pop("2", None)
            expected["orderbook"] = {c.split(":")[1]: {"bids": [[1.0, 2.0]]} for c in SHARDED}
            await converge(clients, expected)

    run(scenario(), timeout=90)


def orderjson(value: Any) -> bytes:
    return orjson.dumps(value)


def test_cluster_failover_is_survived_and_resynced(
    engine_name: str, cluster_with_replicas: LocalCluster
) -> None:
    cluster = cluster_with_replicas
    backend = [cluster.client()]
    for i in range(30):
        backend[0].set(f"order:{i}", orderjson({"qty": i}))

    async def scenario() -> None:
        async with (
            redis_server(engine_name, cluster.url, **settings(cluster.url)) as server,
            clients_of(server) as clients,
        ):
            await wait_health(server, "ok")
            feed = server.feeds[0]
            assert isinstance(feed, AutoRedisFeed)
            inner = feed.inner
            assert isinstance(inner, ClusterRedisFeed)
            await converge(clients, cluster_state(backend[0], 0, 30) | {"orderbook": {}})
            sessions = inner.sessions

            # a primary other than the node of redis_url (that one stays up)
            victim = next(
                v for v in (cluster.primary_of(f"order:{i}") for i in range(30)) if v != 0
            )
            killed_at = time.monotonic()
            cluster.nodes[victim].kill()
            # while the replica is promoted the backend keeps writing (its client retries)
            for i in range(30):
                for _ in range(300):
                    try:
                        backend[0].set(f"order:{i}", orderjson({"qty": i, "after": True}))
                        break
                    except Exception:
                        await asyncio.sleep(0.1)
                        backend[0] = cluster.client()
            await asyncio.to_thread(cluster.wait_ok, 30.0, skip=(victim,))
            await wait_until(lambda: inner.sessions > sessions, timeout=30)
            await wait_health(server, "ok", timeout=30)
            expected = cluster_state(backend[0], 0, 30) | {"orderbook": {}}
            assert all(item["after"] for item in expected["orders"].values())
            await converge(clients, expected, timeout=30)
            print(f"failover resynced {time.monotonic() - killed_at:.1f} s after the kill")

    run(scenario(), timeout=120)
