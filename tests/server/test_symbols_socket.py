"""Per-symbol subscriptions on real sockets: ``symbols=`` on /ws, ``subscribe``/``unsubscribe``
with ``symbols``, the 400 and ``error`` answers, and the Python client keeping its filter."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from server_helpers import decode, http_get, run, running_server, wait_until
from websockets.asyncio.client import connect

from dashboard_server.client.connection import DashboardClient


def seed(server: Any) -> None:
    for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        server.writer.merge(f"/market_data/{s}", {"last_price": 1.0})
        server.writer.merge(f"/orders/o-{s}", {"symbol": s, "qty": 1.0})
    server.writer.merge("/account/main", {"equity": 5.0})


def test_query_filter_subscribe_and_resume(engine_name: str) -> None:
    async def scenario() -> None:
        async with running_server(engine_name, max_symbols=3) as server:
            seed(server)
            url = f"ws://127.0.0.1:{server.port}/ws"
            async with DashboardClient(
                url, type="tui", format="json", symbols=["BTCUSDT"], backoff_max=0.2
            ) as client:
                await client.wait_synced(5)
                assert set(client.data["market_data"]) == {"BTCUSDT"}
                assert set(client.data["orders"]) == {"o-BTCUSDT"}
                assert client.data["account"] == {"main": {"equity": 5.0}}
                await client.subscribe(symbols=["ETHUSDT"])
                await wait_until(lambda: "ETHUSDT" in client.data.get("market_data", {}))
                assert set(client.data["orders"]) == {"o-BTCUSDT", "o-ETHUSDT"}
                await client.unsubscribe(symbols=["BTCUSDT"])
                await wait_until(lambda: "BTCUSDT" not in client.data["market_data"])
                # an order moving into the filter appears whole; out of it, disappears
                server.writer.merge("/orders/o-SOLUSDT", {"symbol": "ETHUSDT"})
                server.writer.merge("/orders/o-ETHUSDT", {"symbol": "BTCUSDT"})
                await wait_until(lambda: set(client.data["orders"]) == {"o-SOLUSDT"})
                assert client.data["orders"]["o-SOLUSDT"] == {"symbol": "ETHUSDT", "qty": 1.0}
                # a dropped connection resumes with the current filter
                assert client.symbols == ["ETHUSDT"]
                assert "symbols=ETHUSDT" in client.connect_url()
                before = client.reconnects
                assert client._ws is not None
                client._ws.transport.abort()
                await wait_until(lambda: client.reconnects > before and client.connected)
                server.writer.merge("/market_data/ETHUSDT", {"last_price": 2.0})
                server.writer.merge("/market_data/BTCUSDT", {"last_price": 2.0})
                await wait_until(lambda: client.data["market_data"]["ETHUSDT"]["last_price"] == 2.0)
                assert set(client.data["market_data"]) == {"ETHUSDT"}
                assert client.gaps == 0
                caught_up = server.metrics.registry.get_sample_value(
                    "dashboard_resumes_total", {"outcome": "catch_up"}
                )
                assert caught_up == 1

    run(scenario())


def test_bad_symbols_are_refused(engine_name: str) -> None:
    async def scenario() -> None:
        async with running_server(engine_name, max_symbols=2) as server:
            for query in ("symbols=", "symbols=A,B,C", "symbols=A%00"):
                status, _, body = await http_get(server.port, f"/ws?{query}")
                assert status == 400, query
                assert orjson.loads(body)["parameter"] == "symbols"
            url = f"ws://127.0.0.1:{server.port}/ws?format=json"
            async with connect(url) as ws:
                assert decode(await ws.recv())["type"] == "snapshot"
                for msg, code in (
                    ({"type": "subscribe", "symbols": "A"}, "bad_symbols"),
                    ({"type": "unsubscribe", "symbols": ["A"]}, "bad_symbols"),  # no filter
                    ({"type": "subscribe", "symbols": ["A", "B", "C"]}, "bad_symbols"),
                ):
                    await ws.send(orjson.dumps(msg).decode())
                    async with asyncio.timeout(5):
                        while (reply := decode(await ws.recv()))["type"] != "error":
                            pass
                    assert reply["code"] == code, msg
                await ws.send('{"type":"subscribe","symbols":["A","B"]}')
                await ws.send('{"type":"subscribe","symbols":["C"]}')  # 3 in all: too many
                async with asyncio.timeout(5):
                    while (reply := decode(await ws.recv()))["type"] != "error":
                        pass
                assert reply["code"] == "bad_symbols" and "at most 2" in reply["message"]

    run(scenario())
