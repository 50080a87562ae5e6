"""Resume on real sockets: catch-up within the horizon, snapshot outside it or on a new epoch."""

from __future__ import annotations

import asyncio
from typing import Any

from server_helpers import decode, recv_data, run, running_server, wait_until
from websockets.asyncio.client import ClientConnection, connect

from dashboard_server.client.connection import ClientState, DashboardClient, Outcome


async def read_until_synced(ws: ClientConnection, state: ClientState, server: Any) -> None:
    """Apply messages until ``state`` holds the server's document (no gap allowed)."""
    async with asyncio.timeout(5):
        while not (state.synced and state.data == server.doc.get("")):
            assert state.apply(decode(await ws.recv())) is not Outcome.GAP


def resumes(server: Any) -> float:
    """Catch-up updates the server has sent so far."""
    value = server.metrics.registry.get_sample_value(
        "dashboard_resumes_total", {"outcome": "catch_up"}
    )
    return value or 0.0


def churn(server: Any, base: int, removals: int) -> None:
    """Create orders base..base+9, remove the first ``removals`` of base-10..base-1."""
    for i in range(base, base + 10):
        server.writer.merge(f"/orders/{i}", {"qty": i, "px": i + 0.5})
    for i in range(base - 10, base - 10 + removals):
        server.writer.remove(f"/orders/{i}")
    server.writer.merge("/account/main", {"equity": float(base)})


def test_catch_up_within_horizon(engine_name: str) -> None:
    async def scenario() -> None:
        async with running_server(engine_name, max_tombstones=50) as server:
            churn(server, 10, 0)
            url = f"ws://127.0.0.1:{server.port}/ws?type=tui&format=json"
            state = ClientState()
            async with connect(url) as ws:
                await read_until_synced(ws, state, server)
            churn(server, 20, 5)  # removals after the client left: still within the horizon
            assert state.epoch == server.epoch
            state.connection_reset()
            resume = f"{url}&since={state.version}&epoch={state.epoch}"
            async with connect(resume) as ws:
                first = decode(await ws.recv())
                assert first["type"] == "update"
                assert decode(await ws.recv())["type"] == "status"  # right after the catch-up
                assert first["version"] == server.doc.version
                assert sorted(first["removed"]) == [f"/orders/{i}" for i in range(10, 15)]
                assert state.apply(first) is Outcome.APPLIED
                assert state.data == server.doc.get("")
                churn(server, 30, 2)
                second = await recv_data(ws)
                assert second["seq"] == first["seq"] + 1
                assert state.apply(second) is Outcome.APPLIED
                assert state.data == server.doc.get("")
            assert (
                server.metrics.registry.get_sample_value(
                    "dashboard_resumes_total", {"outcome": "catch_up"}
                )
                == 1
            )

    run(scenario())


def test_snapshot_outside_horizon_or_on_new_epoch(engine_name: str) -> None:
    async def scenario() -> None:
        async with running_server(engine_name, max_tombstones=3) as server:
            churn(server, 10, 0)
            url = f"ws://127.0.0.1:{server.port}/ws?format=msgpack&diff=json-patch"
            state = ClientState()
            async with connect(url) as ws:
                await read_until_synced(ws, state, server)
            since = state.version
            churn(server, 20, 8)  # 8 removals > 3 tombstones: the horizon moved past `since`
            assert server.doc.floor > since
            for epoch in (server.epoch, "an-older-epoch"):
                state.connection_reset()
                async with connect(f"{url}&since={since}&epoch={epoch}") as ws:
                    first = decode(await ws.recv())
                    assert first["type"] == "snapshot" and first["epoch"] == server.epoch
                    assert state.apply(first) is Outcome.APPLIED
                    assert state.data == server.doc.get("")
                    churn(server, 40 + len(epoch), 1)
                    await read_until_synced(ws, state, server)
            # and within the horizon but with another epoch: a snapshot too
            state.connection_reset()
            async with connect(f"{url}&since={server.doc.version}&epoch=zzz") as ws:
                assert decode(await ws.recv())["type"] == "snapshot"
            assert (
                server.metrics.registry.get_sample_value(
                    "dashboard_resumes_total", {"outcome": "snapshot"}
                )
                == 3
            )

    run(scenario())


def test_client_reconnects_and_resumes_under_a_live_feed(engine_name: str) -> None:
    async def scenario() -> None:
        async with running_server(engine_name, demo=True, demo_rate=400) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            async with DashboardClient(
                url, type="tui", format="json", backoff_initial=0.05
            ) as client:
                await client.wait_synced(timeout=5)
                for round_ in range(3):
                    await wait_until(lambda: server.hub.member_count() == 1)
                    (session,) = server._sessions
                    session.connection.transport.abort()  # the network drops
                    await wait_until(lambda: client.reconnects == round_ + 1)  # noqa: B023
                    await wait_until(lambda: resumes(server) == round_ + 1)  # noqa: B023
                await server.stop_feeds()
                doc = server.doc.get("")
                await client.wait_for(lambda c: c.data == doc, timeout=5)
                assert client.gaps == 0 and client.state.snapshots == 1  # resumed every time
            assert resumes(server) == 3

    run(scenario())
