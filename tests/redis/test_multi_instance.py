"""Two server instances on one Redis, fed by ``publish-demo``: their clients converge to the same
state (what Redis holds), and the history they both record in Redis Streams has no duplicate."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
from redis_helpers import (
    RedisProcess,
    clients_of,
    converge,
    metric,
    redis_server,
    redis_state,
    wait_health,
)
from server_helpers import http_get, run, wait_until

from dashboard_server.server.history import RedisHistory
from dashboard_server.tools.publish import publish_demo

INTERVAL_MS = 100


def test_two_instances_same_state_and_no_duplicate_history(
    engine_name: str, redis_proc: RedisProcess
) -> None:
    r = redis_proc.client()

    async def scenario() -> None:
        async with (
            redis_server(
                engine_name,
                redis_proc.url,
                history_interval_s=INTERVAL_MS / 1000,
                history_sections=("market_data",),
            ) as a,
            redis_server(
                "pure",
                redis_proc.url,
                history_interval_s=INTERVAL_MS / 1000,
                history_sections=("market_data",),
            ) as b,
            clients_of(a) as clients_a,
            clients_of(b) as clients_b,
        ):
            await wait_health(a, "ok")
            await wait_health(b, "ok")
            stop = asyncio.Event()
            feed = asyncio.create_task(
                publish_demo(redis_proc.url, symbols=5, rate=200, seed=7, fmt="msgpack", stop=stop)
            )
            await wait_until(
                lambda: a.history_sampler.samples >= 10 and b.history_sampler.samples >= 10
            )
            stop.set()
            publisher = await feed
            assert publisher.writes > 0 and publisher.events > 0 and publisher.failures == 0
            expected = redis_state(r)
            assert len(expected["market_data"]) == 5 and expected["orders"]
            await converge([*clients_a, *clients_b], expected)
            await a.stop_history()
            await b.stop_history()

            # one stream per symbol; every sample instant once, at a multiple of the interval
            key = RedisHistory.stream_key("market_data", "BTCUSDT")
            entries = r.xrange(key)
            ids = [entry_id.decode() for entry_id, _ in entries]
            assert len(ids) >= 5  # the first samples may come before the first prices
            assert all(i.endswith("-0") and int(i[:-2]) % INTERVAL_MS == 0 for i in ids), ids
            stamps = [int(i[:-2]) for i in ids]
            assert stamps == sorted(set(stamps))
            # every point either instance recorded is one entry; the other's attempt was refused
            recorded = sum(metric(s, "dashboard_history_points_total") for s in (a, b))
            refused = sum(metric(s, "dashboard_history_duplicates_total") for s in (a, b))
            streams = [
                RedisHistory.stream_key("market_data", sym) for sym in expected["market_data"]
            ]
            assert recorded == sum(r.xlen(k) for k in streams)
            assert refused >= recorded - 2 * len(streams)  # both sampled (almost) every instant
            query = "/api/v1/history?type=market_data&symbol=BTCUSDT&limit=1000"
            bodies = [orjson.loads((await http_get(s.port, query))[2]) for s in (a, b)]
            assert bodies[0] == bodies[1]
            points = bodies[0]["points"]
            assert [p["t"] for p in points] == stamps
            assert all(isinstance(p["last_price"], float) for p in points)

    run(scenario(), timeout=60)
    r.close()


def test_publish_demo_command(redis_proc: RedisProcess) -> None:
    command = [
        sys.executable,
        "-m",
        "dashboard_server",
        "publish-demo",
        "--redis-url",
        redis_proc.url,
        "--symbols",
        "3",
        "--rate",
        "100",
        "--duration",
        "0.5",
    ]
    done = subprocess.run(command, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    state = redis_state(redis_proc.client())
    assert len(state["market_data"]) == 3 and len(state["orderbook"]) == 3
    assert state["account"]["main"]["equity"] > 0
