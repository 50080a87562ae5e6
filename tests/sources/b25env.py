"""The b25 test desk: redis-server, nats-server, the two HTTP backends, the simulator, and an
in-process dashboard server reading all of them with the b25 sources."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from b25sim import B25_SECTIONS, B25Sim, HttpBackend
from nats_helpers import NatsProcess
from redis_helpers import RedisProcess, health
from server_helpers import make_config

from dashboard_server.client.connection import DashboardClient
from dashboard_server.core.sources import load_preset
from dashboard_server.server.app import DashboardServer

__all__ = ["Desk", "b25_sources", "desk", "events_of", "until", "wait_events", "wait_state"]


def b25_sources(*, keys_interval_s: float = 0.3, http_interval_s: float = 0.3) -> tuple[Any, ...]:
    """The b25 preset as a list of sources, with the scan of the keys that are only SET and the
    HTTP polls every ``keys_interval_s`` / ``http_interval_s`` (the preset's 5 s is slow for a
    test)."""
    _, raw = load_preset("b25")
    for source in raw:
        if source["transport"] == "redis-keys":
            source["interval_s"] = keys_interval_s
        elif source["transport"] == "http-poll":
            source["interval_s"] = http_interval_s
    return tuple(raw)


@dataclass
class Desk:
    """Everything of one b25 test."""

    redis: RedisProcess
    nats: NatsProcess
    account_monitor: HttpBackend
    strategy_engine: HttpBackend
    sim: B25Sim
    server: DashboardServer

    def client(self, **options: Any) -> DashboardClient:
        """A client of the server (tui tier: 50 ms flushes in these tests)."""
        options.setdefault("type", "tui")
        return DashboardClient(f"ws://127.0.0.1:{self.server.port}/ws", **options)


@asynccontextmanager
async def desk(
    redis: RedisProcess,
    nats: NatsProcess,
    engine_name: str,
    *,
    keyspace: bool,
    sources: Any = None,
    before_server: Any = None,
    **overrides: Any,
) -> AsyncIterator[Desk]:
    """Start the backends (keyspace notifications on or off in this test's Redis), run
    ``before_server(sim)`` (what the backends hold before the dashboard starts), then the
    server with ``sources`` (default: the b25 preset with fast scans and polls)."""
    account_monitor, strategy_engine = HttpBackend(), HttpBackend()
    sim = B25Sim(redis.port, nats.url, account_monitor, strategy_engine)
    server: DashboardServer | None = None
    try:
        await sim.start()
        if keyspace:
            await sim.enable_keyspace_notifications()
        if before_server is not None:
            await before_server(sim)
        settings: dict[str, Any] = {
            "sources": b25_sources() if sources is None else sources,
            "sections": B25_SECTIONS,
            "redis_url": redis.url,
            "nats_url": nats.url,
            "account_monitor_url": account_monitor.url,
            "strategy_engine_url": strategy_engine.url,
            "redis_health_interval_s": 0.2,
            "redis_health_timeout_s": 1.0,
            "redis_backoff_initial_s": 0.05,
            "redis_backoff_max_s": 0.3,
            "tui_interval_ms": 50,
        }
        settings.update(overrides)
        settings = {k: v for k, v in settings.items() if v is not None}
        server = DashboardServer(make_config(engine_name, **settings))
        await server.start()
        started = server

        def ready() -> bool:  # subscribed and loaded: what is emitted from now on is seen
            states = started.source_states().values()
            return all(s["state"] in ("ok", "off") for s in states)

        await until(ready, "every source ok")
        yield Desk(redis, nats, account_monitor, strategy_engine, sim, server)
    finally:
        if server is not None:
            await server.shutdown()
        await sim.close()
        account_monitor.close()
        strategy_engine.close()


async def until(predicate: Any, what: str, timeout: float = 20.0) -> None:
    """Poll ``predicate()`` (sync or async) until true; fail naming ``what``."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = predicate()
                if asyncio.iscoroutine(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def wait_state(
    clients: Iterable[DashboardClient], expected: dict[str, Any], timeout: float = 20.0
) -> None:
    """Wait until every client's state equals ``expected``; fail with the diff otherwise."""
    clients = list(clients)
    try:
        await until(
            lambda: all(c.state.synced and c.data == expected for c in clients), "state", timeout
        )
    except AssertionError:
        for c in clients:
            for section in expected:
                assert c.data.get(section) == expected[section], section
            assert c.data == expected
        raise


def events_of(client: DashboardClient) -> list[tuple[str, Any]]:
    """The live events a client received, ``(channel, data)``, oldest first."""
    return [(m["channel"], m["data"]) for m in client.state.events]


async def wait_events(client: DashboardClient, expected: list[Any], timeout: float = 20.0) -> None:
    """Wait until the client received as many events as expected, then compare them."""
    try:
        await until(lambda: len(client.state.events) >= len(expected), "events", timeout)
    finally:
        assert events_of(client) == expected


async def source_states(server: DashboardServer) -> dict[str, str]:
    """Each source's state as ``/health`` reports it."""
    body = await health(server)
    return {name: s["state"] for name, s in body["sources"].items()}
