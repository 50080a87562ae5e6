"""``GET /api/v1/history``: points recorded at wall-clock multiples of the interval and returned
oldest first, bounded per series, and bad parameters refused with 400 and a JSON error; in
memory without Redis, in Redis Streams with it (503 while Redis is unreachable)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from redis_helpers import RedisProcess, redis_server, wait_health, write_item
from server_helpers import http_get, run, running_server, wait_until

from dashboard_server.server.history import MemoryHistory


async def get(port: int, query: str) -> tuple[int, Any]:
    """Status and decoded JSON body of a history request."""
    status, headers, body = await http_get(port, f"/api/v1/history?{query}")
    assert headers["content-type"] == "application/json"
    return status, orjson.loads(body)


BAD_QUERIES = [
    ("symbol=BTCUSDT", "type"),
    ("type=orders&symbol=BTCUSDT", "type"),
    ("type=nope&symbol=BTCUSDT", "type"),
    ("type=market_data", "symbol"),
    ("type=market_data&symbol=", "symbol"),
    ("type=market_data&symbol=BTCUSDT&limit=0", "limit"),
    ("type=market_data&symbol=BTCUSDT&limit=6", "limit"),
    ("type=market_data&symbol=BTCUSDT&limit=-1", "limit"),
    ("type=market_data&symbol=BTCUSDT&limit=abc", "limit"),
    ("type=market_data&symbol=BTCUSDT&limit=1&limit=2", "limit"),
    ("type=market_data&symbol=BTCUSDT&since=1", "since"),
]


def test_memory_history_records_bounds_and_validates() -> None:
    async def scenario() -> None:
        async with running_server("pure", history_interval_s=0.05, history_size=5) as server:
            server.writer.replace(
                "/market_data/BTCUSDT", {"last_price": 1.5, "volume": 10, "up": True}
            )
            server.writer.replace("/market_data/ETH", {"name": "no numbers"})
            assert isinstance(server.history, MemoryHistory)
            await wait_until(lambda: server.history_sampler.samples >= 3)
            status, body = await get(server.port, "type=market_data&symbol=BTCUSDT&limit=2")
            assert status == 200
            assert body["type"] == "market_data" and body["symbol"] == "BTCUSDT"
            assert body["interval_ms"] == 50
            points = body["points"]
            assert len(points) == 2
            assert points[0]["t"] < points[1]["t"]  # oldest first
            assert all(p["t"] % 50 == 0 for p in points)
            assert points[1]["last_price"] == 1.5 and points[1]["volume"] == 10
            assert "up" not in points[1]  # booleans are not recorded
            assert points[1]["timestamp"].endswith("Z")

            server.writer.replace("/market_data/BTCUSDT", {"last_price": 2.5, "volume": 11})
            await wait_until(lambda: server.history_sampler.samples >= 10)
            status, body = await get(server.port, "type=market_data&symbol=BTCUSDT&limit=5")
            assert len(body["points"]) == 5  # history_size bounds the series
            assert body["points"][-1]["last_price"] == 2.5  # newest last
            status, body = await get(server.port, "type=market_data&symbol=BTCUSDT")
            assert len(body["points"]) == 5  # default limit: 100, capped by history_size

            assert (await get(server.port, "type=market_data&symbol=ETH"))[1]["points"] == []
            assert (await get(server.port, "type=market_data&symbol=NONE"))[1]["points"] == []
            for query, parameter in BAD_QUERIES:
                status, body = await get(server.port, query)
                assert status == 400, query
                assert body["error"] == "bad_parameter" and body["parameter"] == parameter, body

    run(scenario())


def test_redis_history_and_unavailable(redis_proc: RedisProcess) -> None:
    r = redis_proc.client()
    write_item(r, "market_data:BTCUSDT", {"last_price": 3.0})

    async def scenario() -> None:
        async with redis_server(
            "pure", redis_proc.url, history_interval_s=0.05, history_size=50
        ) as server:
            await wait_health(server, "ok")
            await wait_until(lambda: server.history_sampler.samples >= 3)
            status, body = await get(server.port, "type=market_data&symbol=BTCUSDT&limit=50")
            assert status == 200 and body["points"]
            assert body["points"][-1]["last_price"] == 3.0
            stamps = [p["t"] for p in body["points"]]
            assert stamps == sorted(stamps) and all(t % 50 == 0 for t in stamps)
            assert r.xlen("dashboard:history:market_data:BTCUSDT") >= len(stamps)  # still sampling
            status, body = await get(server.port, "type=market_data&symbol=BTCUSDT&limit=51")
            assert status == 400

            redis_proc.stop()
            await wait_health(server, "degraded")
            samples = server.history_sampler.samples
            await asyncio.sleep(0.2)
            assert server.history_sampler.samples == samples  # no sample of a stale state
            status, body = await get(server.port, "type=market_data&symbol=BTCUSDT")
            assert status == 503 and body["error"] == "unavailable"

    run(scenario())
    r.close()


def test_history_query_accepts_a_browser_token() -> None:
    """``?token=`` is a credential (checked by the auth gate), not a bad parameter."""
    from dashboard_server.server.history import parse_history_query

    query = parse_history_query(
        "type=market_data&symbol=BTCUSDT&token=abc", types=["market_data"], max_limit=10
    )
    assert (query.type, query.symbol, query.limit) == ("market_data", "BTCUSDT", 10)
