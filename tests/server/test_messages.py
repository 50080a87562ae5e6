"""Client messages on real sockets: subscribe, unsubscribe, refresh, ping, and garbage."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import orjson
import pytest
from server_helpers import decode, restricted, run, running_server
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError

from dashboard_server.client.connection import ClientState, DashboardClient, Outcome

MALFORMED: list[tuple[str | bytes, str]] = [
    ("not json", "bad_message"),
    (b"\xc1\xc1", "bad_message"),
    ("[1, 2]", "bad_message"),
    ("{}", "bad_message"),
    ('{"type": 5}', "bad_message"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"type": "subscribe"}', "bad_message"),
    ('{"type": "subscribe", "channels": "orders"}', "bad_message"),
    ('{"type": "subscribe", "channels": ["nope"]}', "unknown_channel"),
    (msgpack.packb({"type": "unsubscribe", "channels": [1]}), "bad_message"),
    ("[" * 3000 + "]" * 3000, "message_too_large"),
    ("[" * 100 + "]" * 100, "message_too_complex"),
    (msgpack.packb({"type": "ping", "payload": [0] * 300}), "message_too_complex"),
]
BIN_PING = msgpack.packb({"type": "ping", "payload": b"\x00bin"})
"""A ping whose payload (MessagePack bin) a JSON connection cannot echo."""


async def next_of(ws: ClientConnection, state: ClientState, kind: str) -> dict[str, Any]:
    """Read (applying group messages to ``state``) until a message of type ``kind``."""
    while True:
        msg = decode(await ws.recv())
        state.apply(msg)
        if msg["type"] == kind:
            return msg


def test_subscribe_unsubscribe_refresh_ping(engine_name: str) -> None:
    async def scenario() -> None:
        async with running_server(engine_name, demo=True, demo_rate=300) as server:
            url = f"ws://127.0.0.1:{server.port}/ws?type=tui&format=json&channels=orders"
            async with connect(url) as ws:
                state = ClientState()
                snap = await next_of(ws, state, "snapshot")
                assert set(snap["data"]) <= {"orders"}
                await ws.send(orjson.dumps({"type": "ping", "payload": {"n": 1}}).decode())
                pong = await next_of(ws, state, "pong")
                assert pong["payload"] == {"n": 1} and "seq" not in pong
                await ws.send(msgpack.packb({"type": "ping", "payload": [2, "x"]}))
                assert (await next_of(ws, state, "pong"))["payload"] == [2, "x"]

                await ws.send('{"type":"subscribe","channels":["positions","events"]}')
                snap = await next_of(ws, state, "snapshot")
                assert set(snap["data"]) == {"orders", "positions"}
                await next_of(ws, state, "event")  # events now arrive too

                await ws.send(msgpack.packb({"type": "unsubscribe", "channels": ["orders"]}))
                snap = await next_of(ws, state, "snapshot")
                assert set(snap["data"]) == {"positions"}

                await ws.send('{"type":"refresh"}')
                seq = state.seq
                snap = await next_of(ws, state, "snapshot")
                assert seq is not None and snap["seq"] >= seq
                for _ in range(10):
                    assert state.apply(decode(await ws.recv())) is not Outcome.GAP
                await server.stop_feeds()
                expected = restricted(server.doc.get(""), ["positions"])
                async with asyncio.timeout(5):
                    while state.data != expected:
                        assert state.apply(decode(await ws.recv())) is not Outcome.GAP
            assert state.gaps == 0

    run(scenario())


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_malformed_messages_get_errors_and_disturb_nobody(engine_name: str, fmt: str) -> None:
    async def scenario() -> None:
        bad = [*MALFORMED, (BIN_PING, "bad_message")] if fmt == "json" else MALFORMED
        async with running_server(
            engine_name, demo=True, demo_rate=300, max_bad_messages=len(bad)
        ) as server:
            base = f"ws://127.0.0.1:{server.port}/ws"
            async with DashboardClient(base, format="msgpack", type="tui") as observer:
                await observer.wait_synced(timeout=5)
                async with connect(f"{base}?type=tui&format={fmt}") as ws:
                    state = ClientState()
                    for data, code in bad:
                        await ws.send(data)
                        error = await next_of(ws, state, "error")
                        assert error["code"] == code, (data, error)
                        assert error["message"] and "seq" not in error
                    await ws.send('{"type":"ping","payload":"still here"}')
                    assert (await next_of(ws, state, "pong"))["payload"] == "still here"
                    assert state.gaps == 0
                    # one more within the window: closed with the documented code
                    await ws.send("garbage")
                    with pytest.raises(ConnectionClosedError) as info:
                        while True:
                            await ws.recv()
                    assert info.value.rcvd is not None and info.value.rcvd.code == 4002
                await server.stop_feeds()
                doc = server.doc.get("")
                await observer.wait_for(lambda c: c.data == doc, timeout=5)
                assert observer.gaps == 0
            text = server.metrics.render().decode()
            assert "dashboard_bad_message_closes_total 1.0" in text
            assert (
                f'dashboard_messages_received_total{{message_type="invalid"}} {len(bad) + 1}'
                in text
            )

    run(scenario())


def test_oversized_message_closes_with_1009() -> None:
    async def scenario() -> None:
        async with (
            running_server("pure", max_message_size=1024) as server,
            connect(f"ws://127.0.0.1:{server.port}/ws?format=json") as ws,
        ):
            await ws.recv()
            await ws.send('{"type":"ping","payload":"' + "x" * 2000 + '"}')
            with pytest.raises(ConnectionClosedError) as info:
                while True:
                    await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009

    run(scenario())
