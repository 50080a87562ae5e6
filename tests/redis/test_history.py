"""``GET /api/v1/history``: points recorded at wall-clock multiples of the interval and returned
oldest first, bounded per series, and bad parameters refused with 400 and a JSON error; in
memory without Redis, in Redis Streams with it (503 while Redis is unreachable)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from redis_helpers import RedisProcess, redis_server, wait_health, write_item
from server_helpers import http_get, run, running_server, wait_until

from dashboard_server.core.timefmt import rfc3339_ms
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
    ("type=market_data&symbol=BTCUSDT&from=yesterday", "from"),
    ("type=market_data&symbol=BTCUSDT&to=2026-11-27T10:30:00", "to"),  # no offset
    ("type=market_data&symbol=BTCUSDT&from=20&to=10", "from"),
    ("type=market_data&symbol=BTCUSDT&fields=", "fields"),
    ("type=market_data&symbol=" + ",".join(f"S{i}" for i in range(21)), "symbol"),
]


def test_memory_history_records_bounds_and_validates() -> None:
    async def scenario() -> None:
        async with running_server(
            "pure", history_interval_s=0.05, history_size=5, history_downsampled_size=0
        ) as server:
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

            for unknown in ("ETH", "NONE", "btcusdt"):  # no numbers, no item, wrong case: 404
                status, body = await get(server.port, f"type=market_data&symbol={unknown}")
                assert status == 404 and body["error"] == "not_found", unknown
                assert body["symbol"] == unknown and "case-sensitive" in body["message"]
            for query, parameter in BAD_QUERIES:
                status, body = await get(server.port, query)
                assert status == 400, query
                assert body["error"] == "bad_parameter" and body["parameter"] == parameter, body

    run(scenario())


async def check_ranges_fields_series(port: int, interval_ms: int) -> None:
    """Several symbols and fields, ``from``/``to`` in ms and RFC 3339, the series list."""
    status, body = await get(port, "type=market_data&symbol=BTCUSDT,ETHUSDT&fields=last_price")
    assert status == 200, body
    assert [s["symbol"] for s in body["series"]] == ["BTCUSDT", "ETHUSDT"]
    assert "points" not in body  # several series: only "series"
    for series in body["series"]:
        assert series["points"]
        assert all(set(p) == {"t", "timestamp", "last_price"} for p in series["points"])
    points = body["series"][0]["points"]
    middle = points[len(points) // 2]["t"]
    status, body = await get(port, f"type=market_data&symbol=BTCUSDT&from={middle}")
    assert status == 200 and body["points"][0]["t"] == middle
    assert body["series"] == [{"symbol": "BTCUSDT", "points": body["points"]}]
    stamp = rfc3339_ms(middle)
    status, body = await get(port, f"type=market_data&symbol=BTCUSDT&to={stamp}&limit=2")
    got = [p["t"] for p in body["points"]]
    assert status == 200 and len(got) == 2 and got[0] < got[1] == middle
    status, body = await get(port, "type=market_data&symbol=BTCUSDT&from=1&to=2")
    assert status == 200 and body["points"] == []  # a known series, nothing in that range
    status, body = await get(port, "type=market_data&symbol=BTCUSDT,NOPE")
    assert status == 404 and body["symbol"] == "NOPE"
    status, _, raw = await http_get(port, "/api/v1/history/series")
    listed = orjson.loads(raw)
    assert status == 200 and listed["interval_ms"] == interval_ms
    names = {(s["type"], s["symbol"]) for s in listed["series"]}
    assert {("market_data", "BTCUSDT"), ("market_data", "ETHUSDT"), ("account", "main")} <= names
    btc = next(s for s in listed["series"] if s["symbol"] == "BTCUSDT")
    assert "last_price" in btc["fields"] and btc["newest"] >= middle
    status, _, raw = await http_get(port, "/api/v1/history/series?type=account")
    assert [s["symbol"] for s in orjson.loads(raw)["series"]] == ["main"]
    status, _, raw = await http_get(port, "/api/v1/history/series?type=orders")
    assert status == 400


def test_memory_ranges_fields_series_and_downsampling() -> None:
    async def scenario() -> None:
        async with running_server(
            "pure",
            history_interval_s=0.05,
            history_size=5,
            history_downsample_s=0.2,
            history_downsampled_size=4,
        ) as server:
            for symbol in ("BTCUSDT", "ETHUSDT"):
                server.writer.replace(f"/market_data/{symbol}", {"last_price": 1.0, "bid": 0.5})
            server.writer.replace("/account/main", {"equity": 10.0, "unrealized_pnl": -1.0})
            await wait_until(lambda: server.history_sampler.samples >= 30, timeout=20)
            await check_ranges_fields_series(server.port, 50)
            status, body = await get(server.port, "type=market_data&symbol=BTCUSDT&limit=9")
            assert status == 200 and body["downsampled_ms"] == 200
            stamps = [p["t"] for p in body["points"]]
            # 5 points at 50 ms, after the downsampled ones older than those (4 buckets of
            # 200 ms are kept; the newest one or two overlap the 5 points and are not repeated)
            assert 7 <= len(stamps) <= 9 and stamps == sorted(stamps)
            raw, coarse = stamps[-5:], stamps[:-5]
            assert all(t % 50 == 0 for t in stamps)
            buckets = [t // 200 for t in coarse]  # one downsampled point per 200 ms bucket
            assert buckets == sorted(set(buckets))
            assert coarse[-1] < raw[0]
            status, body = await get(server.port, "type=account&symbol=main&fields=equity")
            assert status == 200 and body["points"][-1]["equity"] == 10.0

    run(scenario())


def test_redis_history_and_unavailable(redis_proc: RedisProcess) -> None:
    r = redis_proc.client()
    write_item(r, "market_data:BTCUSDT", {"last_price": 3.0})
    write_item(r, "market_data:ETHUSDT", {"last_price": 2.0})
    write_item(r, "account:main", {"equity": 3.0})

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
            status, body = await get(server.port, "type=market_data&symbol=BTCUSDT&limit=1491")
            assert status == 400  # history_size + history_downsampled_size
            await check_ranges_fields_series(server.port, 50)
            status, body = await get(server.port, "type=market_data&symbol=btcusdt")
            assert status == 404
            coarse = r.xrange("dashboard:history-coarse:market_data:BTCUSDT")
            assert len(coarse) == 1 or len({i for i, _ in coarse}) == len(coarse)

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
    query = parse_history_query(
        "type=market_data&symbol=A,B,A&from=2026-11-27T10:30:00Z&to=2026-11-27T10:30:00.500%2B00:00",
        types=["market_data"],
        max_limit=10,
    )
    assert query.symbols == ("A", "B") and query.end is not None and query.start is not None
    assert query.end - query.start == 500
