"""Past one machine, with real processes: backends on a 3-node Redis Cluster, the stream on a
redis-server, three `dashboard-server serve` processes (each an edge and a writer candidate).
The one that writes is killed (SIGKILL) while the backends keep writing: a standby takes the
lease over within a bound, the killed instance's clients resume on the two others by catch-up
(no snapshot), and every state converges to what the cluster holds (the new writer reloads the
keys: nothing is lost but the pub/sub messages of the gap, which the keys repeat)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cluster_helpers import LocalCluster
from redis_helpers import RedisProcess, free_port
from server_helpers import http_get, run, wait_until

from dashboard_server.client.connection import DashboardClient

LEASE_MS = 1000
TAKEOVER_BOUND_S = 15.0
"""The lease expires at most LEASE_MS after the kill, a standby tries every LEASE_MS/3, then it
rebuilds from the checkpoint + stream (milliseconds here) and starts its feeds; the rest of the
bound is slack for two shared cores (process start-up and scheduling), not expected latency."""
SYMBOLS = 20
ORDERS = 40


@pytest.fixture
def cluster(redis_binary: str, tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(redis_binary, tmp_path / "cluster", primaries=3)
    c.start()
    try:
        yield c
    finally:
        c.stop()


class Instance:
    """One `dashboard-server serve` process."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log = (log_dir / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dashboard_server", "serve"],
            env={**os.environ, **env, "DASHBOARD_PORT": str(self.port)},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def health(self) -> dict[str, Any] | None:
        try:
            status, _, body = await http_get(self.port, "/health")
        except OSError:
            return None
        result: dict[str, Any] = orjson.loads(body)
        return result if status == 200 else None

    async def metric(self, name: str, labels: str) -> float:
        _, _, body = await http_get(self.port, "/metrics")
        for line in body.decode().splitlines():
            if line.startswith(f"{name}{{{labels}}} "):
                return float(line.split()[-1])
        return 0.0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


class Backend(threading.Thread):
    """Writes items to the cluster (SET + PUBLISH, the generic contract) until stopped."""

    def __init__(self, cluster: LocalCluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.stop_event = threading.Event()
        self.writes = 0

    def run(self) -> None:
        r = self.cluster.client()
        n = 0
        while not self.stop_event.is_set():
            n += 1
            key = f"market_data:S{n % SYMBOLS}"
            payload = orjson.dumps({"last": n + 0.5, "n": n})
            r.set(key, payload)
            r.publish(key, payload)
            order = f"orders:{n % ORDERS}"
            if n % 7 == 0:
                r.delete(order)
                r.publish(order, b"")
            else:
                body = orjson.dumps({"qty": n, "status": "new" if n % 2 else "filled"})
                r.set(order, body)
                r.publish(order, body)
            self.writes += 1
            time.sleep(0.005)


def cluster_state(cluster: LocalCluster) -> dict[str, Any]:
    r = cluster.client()
    state: dict[str, Any] = {
        s: {} for s in ("market_data", "orderbook", "orders", "positions", "account", "strategies")
    }
    for i in range(SYMBOLS):
        payload = r.get(f"market_data:S{i}")
        if payload:
            state["market_data"][f"S{i}"] = orjson.loads(payload)
    for i in range(ORDERS):
        payload = r.get(f"orders:{i}")
        if payload:
            state["orders"][str(i)] = orjson.loads(payload)
    return state


def test_writer_killed_standby_takes_over_and_clients_resume_elsewhere(
    cluster: LocalCluster, redis_proc: RedisProcess, tmp_path: Path
) -> None:
    env = {
        "DASHBOARD_REDIS_URL": cluster.url,
        "DASHBOARD_REPLICATION_URL": redis_proc.url,
        "DASHBOARD_REPLICATION_ROLE": "writer",
        "DASHBOARD_REPLICATION_LEASE_MS": str(LEASE_MS),
        "DASHBOARD_REDIS_HEALTH_INTERVAL_S": "0.2",
        "DASHBOARD_REDIS_HEALTH_TIMEOUT_S": "1.0",
        "DASHBOARD_REDIS_BACKOFF_INITIAL_S": "0.05",
        "DASHBOARD_REDIS_BACKOFF_MAX_S": "0.5",
        "DASHBOARD_HISTORY_SECTIONS": "",
        "DASHBOARD_TUI_INTERVAL_MS": "50",
        "DASHBOARD_LOG_LEVEL": "warning",
    }
    backend = Backend(cluster)
    instances: list[Instance] = []

    async def wait_active(candidates: list[Instance], timeout: float) -> Instance:
        found: list[Instance] = []

        async def check() -> bool:
            for inst in candidates:
                body = await inst.health()
                if body and body["status"] == "ok" and body["replication"].get("active"):
                    found.append(inst)
                    return True
            return False

        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.05)
        return found[0]

    async def all_ok(candidates: list[Instance], timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while True:
                bodies = [await i.health() for i in candidates]
                if all(b is not None and b["status"] == "ok" for b in bodies):
                    return
                await asyncio.sleep(0.05)

    async def scenario() -> None:
        backend.start()
        first = Instance("a", env, tmp_path)
        instances.append(first)
        writer = await wait_active([first], 30)
        instances.extend(Instance(n, env, tmp_path) for n in ("b", "c"))
        await all_ok(instances)
        others = instances[1:]
        clients = [
            DashboardClient(writer.ws, type="tui", format=fmt, diff=diff, backoff_max=0.5)
            for fmt, diff in (("msgpack", "changes"), ("json", "json-patch")) * 3
        ]
        for c in clients:
            await c.connect()
            await c.wait_synced(15)
        await asyncio.sleep(1.0)
        epoch = clients[0].epoch
        assert all(c.epoch == epoch for c in clients)

        # the balancer sends the killed instance's clients to the two others
        for i, c in enumerate(clients):
            c.url = others[i % 2].ws
        killed_at = time.monotonic()
        writer.kill()
        new_writer = await wait_active(others, TAKEOVER_BOUND_S)
        takeover_s = time.monotonic() - killed_at
        await wait_until(lambda: all(c.reconnects == 1 and c.state.synced for c in clients), 30)
        catch_ups = [
            await o.metric("dashboard_resumes_total", 'outcome="catch_up"') for o in others
        ]
        snapshots = [
            await o.metric("dashboard_resumes_total", 'outcome="snapshot"') for o in others
        ]
        assert sum(catch_ups) == len(clients) and sum(snapshots) == 0, (catch_ups, snapshots)
        assert all(c.epoch == epoch for c in clients)  # the same lineage goes on

        await asyncio.sleep(1.0)  # the backends keep writing under the new writer
        backend.stop_event.set()
        await asyncio.to_thread(backend.join, 10)
        expected = cluster_state(cluster)
        assert expected["market_data"] and expected["orders"]

        async def converged() -> bool:
            bodies = [await o.health() for o in others]
            versions = {b["version"] for b in bodies if b}
            return (
                len(versions) == 1
                and all(c.version in versions for c in clients)
                and all(c.data == expected for c in clients)
            )

        try:
            async with asyncio.timeout(30):
                while not await converged():
                    await asyncio.sleep(0.1)
        except TimeoutError:
            for c in clients:
                assert c.data == expected
            raise
        print(
            f"takeover by {new_writer.name} {takeover_s:.2f} s after the kill "
            f"(lease {LEASE_MS} ms); {backend.writes} backend writes; "
            f"catch-ups {catch_ups}, snapshots {snapshots}"
        )
        for c in clients:
            await c.close()

    try:
        run(scenario(), timeout=150)
    finally:
        backend.stop_event.set()
        for inst in instances:
            inst.stop()
