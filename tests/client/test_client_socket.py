"""DashboardClient against a real in-process server on a real socket (pure engine, demo feed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from websockets.exceptions import InvalidStatus

from dashboard_server.client.connection import DashboardClient
from dashboard_server.config import Config
from dashboard_server.server.app import DashboardServer
from support import canon_unordered

T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 20.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


@asynccontextmanager
async def demo_server(**overrides: Any) -> AsyncIterator[DashboardServer]:
    settings: dict[str, Any] = {
        "port": 0,
        "engine": "pure",
        "demo": True,
        "demo_rate": 200.0,
        "demo_symbols": 10,
        "demo_seed": 5,
    }
    settings.update(overrides)
    server = DashboardServer(Config().replace(**settings))
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown()


def url_of(server: DashboardServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


async def converge(client: DashboardClient, server: DashboardServer) -> None:
    """Stop the feed, wait for the client to reach the final version, compare documents."""
    await server.stop_feeds()
    await client.wait_version(server.doc.version, timeout=5)
    expected = server.doc.get()
    if client.channels is not None:
        expected = {k: v for k, v in expected.items() if k in client.channels}
    assert canon_unordered(client.data) == canon_unordered(expected)


@pytest.mark.parametrize(("fmt", "diff"), [("msgpack", "changes"), ("json", "json-patch")])
def test_client_follows_the_server(fmt: Any, diff: Any) -> None:
    async def scenario() -> None:
        async with (
            demo_server() as server,
            DashboardClient(url_of(server), type="tui", format=fmt, diff=diff) as client,
        ):
            await client.wait_synced(timeout=5)
            assert client.epoch == server.epoch
            assert await client.ping() > 0
            await client.wait_for(lambda c: c.state.updates >= 3 and c.state.events, 5)
            await converge(client, server)
            assert client.gaps == 0 and client.state.snapshots == 1
        assert not client.connected

    run(scenario())


def test_reconnect_resumes_without_a_snapshot() -> None:
    async def scenario() -> None:
        async with (
            demo_server() as server,
            DashboardClient(url_of(server), type="tui", backoff_initial=0.02) as client,
        ):
            await client.wait_for(lambda c: c.state.updates >= 2, 5)
            assert server._ws is not None
            for connection in list(server._ws.connections):
                connection.transport.abort()  # the network drops: no close handshake
            await client.wait_for(lambda c: c.reconnects == 1 and c.connected, 5)
            await client.wait_for(lambda c: c.state.updates >= 6, 5)
            await converge(client, server)
            # The server answered the resume with a catch-up update, not a snapshot.
            assert client.state.snapshots == 1 and client.gaps == 0

    run(scenario())


def test_subscription_changes() -> None:
    async def scenario() -> None:
        async with (
            demo_server() as server,
            DashboardClient(
                url_of(server), channels=["market_data", "orders"], interval_ms=50
            ) as client,
        ):
            await client.wait_synced(timeout=5)
            assert set(client.data) == {"market_data", "orders"}
            await client.subscribe(["account"])
            await client.wait_for(lambda c: "account" in c.data, 5)
            await client.unsubscribe(["orders"])
            await client.wait_for(lambda c: "orders" not in c.data, 5)
            assert client.channels == ["market_data", "account"]
            await converge(client, server)

    run(scenario())


def test_refused_handshake_is_raised() -> None:
    async def scenario() -> None:
        async with demo_server(demo=False) as server:
            client = DashboardClient(url_of(server), channels=["nonsense"])
            with pytest.raises(InvalidStatus) as info:
                await client.connect()
            assert info.value.response.status_code == 400

    run(scenario())
