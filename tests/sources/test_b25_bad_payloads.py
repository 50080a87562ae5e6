"""Bad payloads on every transport of the b25 sources (Redis pub/sub, Redis keys, NATS, HTTP):
each is counted in dashboard_ingest_malformed_total{section}, logged (rate-limited), changes
nothing in the state, and the server keeps serving (new clients, then good messages again)."""

from __future__ import annotations

import copy
import logging
from typing import Any

import msgpack
import orjson
import pytest
from b25env import desk, until, wait_state
from b25sim import B25Sim
from nats_helpers import NatsProcess
from redis_helpers import RedisProcess, health, metric
from server_helpers import run

from dashboard_server.ingest.nats_feed import NatsFeed
from dashboard_server.server.app import DashboardServer

T0 = 1736937000
ORDER = "3f2b6c1e-8a4d-4e2b-9c51-7d0e4a1b2c3d"


async def _good_state(sim: B25Sim) -> None:
    await sim.market_data("BTCUSDT", 67421.3, 67421.4)
    await sim.position("BTCUSDT", "0.003")
    await sim.balance("USDT", "14873.21456789")
    await sim.order_key(sim.new_order(ORDER, "BTCUSDT", state="SUBMITTED"))


def _malformed(server: DashboardServer, section: str) -> float:
    return metric(server, "dashboard_ingest_malformed_total", {"section": section})


async def _send_bad_payloads(sim: B25Sim) -> None:
    r = sim.redis
    # Redis pub/sub: a raw item (the engine parses it), a transformed one, events
    await r.publish("market_data:BTCUSDT", b'{"symbol": "BTCUSDT", "last_price": ')
    await r.publish("orderbook:BTCUSDT", orjson.dumps({"bids": {"not a price": 1}, "asks": {}}))
    await r.publish("orderbook:BTCUSDT", b"\xc1")  # never valid MessagePack
    await r.publish("trades:BTCUSDT", b"[1, 2]")
    await r.publish("trades:BTCUSDT", orjson.dumps({"trade_id": 1, "timestamp": 10**17}))
    await r.publish("trades:BTCUSDT", b'{"trade_id": 2, "timestamp": 1e300}')  # was OverflowError
    # Redis keys that are only SET
    await r.set("position:BTCUSDT", orjson.dumps({"symbol": "BTCUSDT", "quantity": "abc"}))
    await r.set("balance:USDT", b"garbage")
    await r.set(f"order:{ORDER}", b'{"order_id": ')
    # NATS
    await sim.publish_nats("orders.updates.BTCUSDT", {"update_type": "FILLED"})  # no order
    await sim.publish_nats("orders.updates.BTCUSDT", {"order": {"symbol": "BTCUSDT"}})  # no id
    await sim.publish_nats("risk.metrics", b"garbage")
    nan = msgpack.packb({"timestamp": T0, "margin_ratio": float("nan")})
    await sim.publish_nats("risk.metrics", nan)  # MessagePack can hold what JSON cannot
    await sim.publish_nats("risk.alerts.critical", b"[]")
    await sim.publish_nats("trading.alerts", {"type": "X", "value": "NaN", "threshold": "1"})
    await sim.publish_nats("trading.fills", {"id": "f", "side": "BUY", "price": "67,400"})
    # HTTP: not JSON, JSON that does not fit, an error status
    sim.account_monitor.set_raw("/api/account", b"<html>502 Bad Gateway</html>")
    sim.strategy_engine.set("/api/service-info", {"strategies": 5})
    sim.strategy_engine.set_raw("/status", b'{"error": "boom"}', status=500)


EXACT = {  # section: bad payloads sent (Redis and NATS deliver each once)
    "market_data": 1,
    "orderbook": 2,
    "trades": 3,
    "positions": 1,
    "balances": 1,
    "orders": 3,
    "risk": 2,
    "alerts": 2,
    "fills": 1,
}


@pytest.mark.parametrize("keyspace", [True, False], ids=["keyspace-on", "keyspace-off"])
def test_bad_payloads_change_nothing(
    redis_proc: RedisProcess,
    nats_proc: NatsProcess,
    keyspace: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with desk(
            redis_proc,
            nats_proc,
            "native",
            keyspace=keyspace,
            before_server=_good_state,
            redis_reload_interval_s=0,  # a key is read once per change (or per scan)
        ) as d:
            sim, server = d.sim, d.server
            async with d.client() as client:
                await sim.risk_metrics(T0)
                await wait_state([client], sim.expected)
                before = copy.deepcopy(client.data)
                caplog.set_level(logging.WARNING, logger="dashboard_server.ingest.writer")

                await _send_bad_payloads(sim)

                def all_counted() -> bool:
                    exact = all(
                        _malformed(server, s) >= n if not keyspace and s in KEYED else
                        _malformed(server, s) == n
                        for s, n in EXACT.items()
                    )  # fmt: skip
                    http = _malformed(server, "pnl") >= 1 and _malformed(server, "strategies") >= 1
                    return exact and http

                await until(all_counted, "every bad payload counted")
                # the error status is seen at the source's next poll, not with the counts above
                await until(
                    lambda: _state(server, "strategy_status") == "down", "strategy_status down"
                )
                # no connection was dropped over a payload
                assert metric(server, "dashboard_redis_connects_total") == 1
                (nats_feed,) = [f for f in server.feeds if isinstance(f, NatsFeed)]
                assert nats_feed.connects == 1
                await until(lambda: client.version == server.doc.version, "client caught up")
                assert client.data == before
                for section, n in EXACT.items():
                    if keyspace or section not in KEYED:
                        assert _malformed(server, section) == n, section

                # still serving: a new client gets the same state, /health answers
                async with d.client(format="json") as late:
                    await wait_state([late], before)
                assert (await health(server))["status"] in ("ok", "degraded")

                # and good messages go through again, on every transport
                await _good_state(sim)
                await sim.risk_metrics(T0 + 1)
                sim.pnl(net_pnl="1.5")
                sim.strategy("momentum", threshold=0.05)
                sim.engine_status(mode="live")
                await wait_state([client], sim.expected)
                await until(lambda: _state(server, "strategy_status") == "ok", "status ok")
                await until(lambda: _state(server, "account") == "ok", "account ok")

        messages = [r for r in caplog.records if r.getMessage() == "malformed payload skipped"]
        assert messages, "no malformed payload was logged"
        assert all(getattr(r, "reason", "") for r in messages)
        channels = {getattr(r, "channel", "") for r in messages}
        assert "market_data:BTCUSDT" in channels  # the first of the burst names where it was

    run(main(), timeout=90)


KEYED = ("positions", "balances", "orders")
"""Sections of keys that are only SET: without keyspace notifications every scan reads a bad key
again (and counts it again)."""


def _state(server: DashboardServer, source: str) -> str:
    states: dict[str, Any] = server.source_states()
    return str(states[source]["state"])
