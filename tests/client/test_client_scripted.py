"""DashboardClient against a scripted WebSocket server: gap -> refresh, ping, resume query."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgpack
import pytest
from websockets.asyncio.server import ServerConnection, serve

from dashboard_server.client.connection import ClientClosed, DashboardClient


def snap(seq: int, version: int, data: dict[str, Any]) -> bytes:
    out: bytes = msgpack.packb(
        {
            "type": "snapshot",
            "seq": seq,
            "version": version,
            "epoch": "E1",
            "timestamp": "t",
            "data": data,
        }
    )
    return out


def upd(seq: int, version: int, changes: dict[str, Any]) -> bytes:
    out: bytes = msgpack.packb(
        {"type": "update", "seq": seq, "version": version, "timestamp": "t", "changes": changes}
    )
    return out


def test_gap_refresh_ping_and_resume() -> None:
    queries: list[dict[str, list[str]]] = []
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        queries.append(parse_qs(urlsplit(ws.request.path).query))

        async def recv() -> dict[str, Any]:
            frame = await ws.recv()
            assert isinstance(frame, bytes), "a msgpack client sends binary frames"
            msg: dict[str, Any] = msgpack.unpackb(frame)
            return msg

        if len(queries) == 1:
            await ws.send(snap(1, 10, {"orders": {"1": {"status": "new"}}}))
            await ws.send(upd(2, 11, {"/orders/1/status": "partially_filled"}))
            await ws.send(upd(4, 13, {"/orders/1/status": "filled"}))  # seq 3 went missing
            assert await recv() == {"type": "refresh"}
            await ws.send(upd(5, 14, {"/orders/2": {"status": "new"}}))  # ignored
            await ws.send(snap(9, 20, {"orders": {"1": {"status": "filled"}}}))
            ping = await recv()
            assert ping["type"] == "ping"
            await ws.send(
                msgpack.packb({"type": "pong", "payload": ping["payload"], "timestamp": "t"})
            )
            await received.put(ping)
            await ws.close(1011, "crash")  # an unexpected close: the client must reconnect
        else:
            await ws.send(upd(100, 21, {"/orders/1/fee": 0.5}))  # catch-up for the resume
            await ws.wait_closed()

    async def scenario() -> None:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            client = DashboardClient(
                f"ws://127.0.0.1:{port}/ws?extra=1",
                type="tui",
                channels=["orders", "events"],
                backoff_initial=0.01,
            )
            async with client:
                await client.wait_for(lambda c: c.state.snapshots == 2, 5)
                assert client.gaps == 1 and client.refreshes_sent == 1
                assert client.state.ignored == 1
                assert client.data == {"orders": {"1": {"status": "filled"}}}
                assert await client.ping() >= 0
                await received.get()
                await client.wait_version(21, timeout=5)
                assert client.reconnects == 1 and client.seq == 100
                assert client.data == {"orders": {"1": {"status": "filled", "fee": 0.5}}}
            assert not client.connected

    asyncio.run(asyncio.wait_for(scenario(), 20))
    first, second = queries
    assert first == {
        "extra": ["1"],
        "type": ["tui"],
        "format": ["msgpack"],
        "diff": ["changes"],
        "channels": ["orders,events"],
    }
    assert second["since"] == ["20"] and second["epoch"] == ["E1"]


def test_next_message_and_close_wake_waiters() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(snap(1, 1, {}))
        await ws.wait_closed()

    async def scenario() -> None:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            client = DashboardClient(f"ws://127.0.0.1:{port}/ws")
            await client.connect()
            first = await client.next_message(timeout=5)
            assert first["type"] == "snapshot" and client.version == 1
            pending = asyncio.ensure_future(client.next_message())
            waiter = asyncio.ensure_future(client.wait_version(5))
            await asyncio.sleep(0.05)
            assert not pending.done() and not waiter.done()
            await client.close()
            await asyncio.wait([pending, waiter], timeout=1)
            assert isinstance(pending.exception(), ClientClosed)
            assert isinstance(waiter.exception(), ClientClosed)
            with pytest.raises(ClientClosed):
                await client.next_message()

    asyncio.run(asyncio.wait_for(scenario(), 20))
