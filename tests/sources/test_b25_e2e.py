"""End to end: the server with the b25 sources reads the simulated backends (real redis-server,
nats-server, HTTP servers); a client's reconstructed state equals the document built from what
the simulator emitted, events arrive in order, a TTL expiry removes an item, a NATS restart is
followed by a resync, and /health lists every source. With keyspace notifications on and off."""

from __future__ import annotations

from typing import Any

import pytest
from b25env import b25_sources, desk, events_of, source_states, until, wait_events, wait_state
from b25sim import B25Sim
from nats_helpers import NatsProcess
from redis_helpers import RedisProcess, health, metric
from server_helpers import run

from dashboard_server.client.connection import DashboardClient

ORDER_A = "3f2b6c1e-8a4d-4e2b-9c51-7d0e4a1b2c3d"
ORDER_B = "9a0c7d55-1f3e-4b6a-8d2c-5e4f3a2b1c0d"
ORDER_C = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"
T0 = 1736937000  # 2025-01-15T10:30:00Z


async def _before_server(sim: B25Sim) -> None:
    """What the backends hold before the dashboard starts: the keys are bootstrapped."""
    await sim.market_data("BTCUSDT", 67421.3, 67421.4)
    await sim.market_data("ETHUSDT", 3305.0, 3305.2)
    await sim.position("BTCUSDT", "0.003")
    await sim.position(
        "ETHUSDT",
        "-0.05",
        entry_price="3312.45",
        current_price="3305.1",
        realized_pnl="12.3041",
        unrealized_pnl="0.3675",
        total_fees="0.2484",
    )
    await sim.balance("USDT", "14873.21456789")
    await sim.balance("USDC", "5000")
    filled = sim.new_order(ORDER_A, "BTCUSDT", state="FILLED", filled_quantity=0.002)
    await sim.order_key(filled)


async def _live(sim: B25Sim, client: DashboardClient) -> None:
    """Everything the backends emit while the dashboard runs (but the events)."""
    await sim.orderbook(
        "BTCUSDT",
        bids={f"{67400 + i * 0.5:.1f}": 0.1 * (i + 1) for i in range(30)},
        asks={f"{67421.4 + i * 0.5:.1f}": 0.2 * (i + 1) for i in range(25)},
        ts_us=T0 * 1_000_000 + 123456,
    )
    await sim.orderbook("ETHUSDT", {"3305.0": 1.5}, {"3305.2": 2.5}, ts_us=T0 * 1_000_000)
    await sim.market_data("BTCUSDT", 67425.0, 67425.5)
    await sim.order_lifecycle(sim.new_order(ORDER_B, "BTCUSDT", quantity=0.004, price=67400))
    await sim.order_lifecycle(
        sim.new_order(ORDER_C, "ETHUSDT", side="SELL", quantity=0.1, price=3310)
    )
    await sim.position("ETHUSDT", "-0.08", unrealized_pnl="-1.25")
    await sim.position("BTCUSDT", "0")  # flat
    await sim.balance("USDT", "14000.5", "873.21456789")
    await sim.risk_metrics(T0, margin_ratio=9.5, open_positions=2)
    await sim.risk_metrics(T0 + 1, margin_ratio=9.25, position_concentration={"ETHUSDT": 0.7})
    sim.pnl(realized_pnl="20.5", net_pnl="20.25", total_trades=2)
    sim.strategy("momentum", threshold=0.03)
    sim.engine_status(active_strategies=2, signal_queue_size=4)
    await wait_state([client], sim.expected)


async def _events(sim: B25Sim, client: DashboardClient) -> None:
    """The events, a source at a time (each source's messages keep their order; two NATS
    subscriptions are delivered independently, so the next source waits for the previous)."""
    for i in range(3):
        await sim.trade("BTCUSDT", 2456789012 + i, 67421.4 + i, ts_ms=T0 * 1000 + 120 + i)
    await wait_events(client, sim.events)
    policy = "22222222-2222-2222-2222-222222222222"
    for i in range(3):  # repeated while the policy is violated: shown once
        await sim.risk_alert("critical", policy, 10 + i, T0 + i)
    await sim.risk_alert("warning", policy, 13, T0 + 3)  # another level: shown
    await sim.risk_alert("critical", "33333333-3333-3333-3333-333333333333", 1.5, T0 + 4)
    await sim.emergency("Circuit breaker tripped due to repeated violations", T0 + 5)
    await sim.emergency("Daily loss limit", T0 + 6)  # no policy_id: never deduplicated
    await wait_events(client, sim.events)
    await sim.trading_alert(value="0.91", threshold="0.8")
    await wait_events(client, sim.events)
    await sim.fill("fill-1", "BUY", "67400.00", "0.001")
    await sim.fill_v2("fill-2", ORDER_C, "sell", 3310.0)
    await sim.fill("fill-3", "SELL", "67425.5", "0.002")
    await wait_events(client, sim.events)


async def _ttl_expiry(sim: B25Sim, client: DashboardClient) -> None:
    await sim.position("SOLUSDT", "12.5", ttl=2.0)
    await wait_state([client], sim.expected)
    sim.position_expired("SOLUSDT")  # no write: Redis expires the key
    await wait_state([client], sim.expected)


@pytest.mark.parametrize("keyspace", [True, False], ids=["keyspace-on", "keyspace-off"])
def test_b25_desk_end_to_end(
    redis_proc: RedisProcess, nats_proc: NatsProcess, engine_name: str, keyspace: bool
) -> None:
    async def main() -> None:
        async with desk(
            redis_proc, nats_proc, engine_name, keyspace=keyspace, before_server=_before_server
        ) as d:
            flags = await _keyspace_flags(d.sim)
            async with (
                d.client(format="msgpack") as client,
                d.client(format="json", diff="json-patch") as other,
            ):
                await wait_state([client, other], d.sim.expected)
                await _live(d.sim, client)
                await _events(d.sim, client)
                await _ttl_expiry(d.sim, client)
                await wait_state([other], d.sim.expected)
                assert events_of(other) == events_of(client)
                assert d.sim.expected["orders"][ORDER_B]["state"] == "FILLED"
                assert isinstance(client.data["positions"]["ETHUSDT"]["quantity"], float)
            states = await source_states(d.server)
            assert set(states) == {
                "market_data", "orderbook", "trades", "orders", "order_updates", "positions",
                "balances", "account", "strategies", "strategy_status", "risk_metrics",
                "risk_alerts", "trading_alerts", "fills",
            }  # fmt: skip
            assert set(states.values()) == {"ok"}, states
            body = await health(d.server)
            assert body["status"] == "ok" and body["feed"] == "custom"
            assert metric(d.server, "dashboard_ingest_malformed_total", {"section": "orders"}) == 0
            # the server never changes the Redis configuration
            assert await _keyspace_flags(d.sim) == flags
            assert ("K" in flags) is keyspace

    run(main(), timeout=120)


def test_b25_preset_and_a_source_without_its_endpoint(
    redis_proc: RedisProcess, nats_proc: NatsProcess
) -> None:
    """``sources: b25`` as is; no strategy engine URL: its two sources are off, the rest run."""

    async def main() -> None:
        async with desk(
            redis_proc,
            nats_proc,
            "native",
            keyspace=True,
            sources="b25",
            sections=None,
            strategy_engine_url=None,
            before_server=_before_server,
        ) as d:
            expected: dict[str, Any] = {**d.sim.expected, "strategies": {}, "strategy_engine": {}}
            async with d.client() as client:
                await wait_state([client], expected)
                await d.sim.risk_metrics(T0)
                await wait_state([client], {**expected, "risk": d.sim.expected["risk"]})
            body = await health(d.server)
            states = {name: s["state"] for name, s in body["sources"].items()}
            assert states.pop("strategies") == states.pop("strategy_status") == "off"
            assert set(states.values()) == {"ok"}, states
            assert body["sources"]["strategies"]["endpoint"] == "strategy_engine"
            assert body["feed"] == "b25" and body["status"] == "ok"
            assert d.strategy_engine.count("/status") == 0

    run(main(), timeout=60)


def test_nats_restart_resyncs_orders_from_their_keys(
    redis_proc: RedisProcess, nats_proc: NatsProcess
) -> None:
    """Kill nats-server; order updates published meanwhile are lost; the order's key changes in
    Redis; nats-server comes back on the same port: the resync shows the key's state. Without
    keyspace notifications, no periodic reload and a scan once an hour, only the resync can."""

    async def main() -> None:
        async with desk(
            redis_proc,
            nats_proc,
            "native",
            keyspace=False,
            sources=b25_sources(keys_interval_s=3600),
            redis_reload_interval_s=0,
        ) as d:
            sim = d.sim
            async with d.client() as client:
                order = sim.new_order(ORDER_B, "BTCUSDT", quantity=0.004, price=67400)
                assert await sim.order_update({**order, "state": "SUBMITTED"}, "SUBMITTED")
                await wait_state([client], sim.expected)
                resyncs = metric(d.server, "dashboard_redis_reloads_total", {"trigger": "resync"})

                nats_proc.kill()
                await until(lambda: _state(d.server, "order_updates") != "ok", "nats seen down", 20)
                partial = {**order, "state": "PARTIALLY_FILLED", "filled_quantity": 0.002}
                assert not await sim.order_update(partial, "PARTIALLY_FILLED")  # into the void
                filled = {**order, "state": "FILLED", "filled_quantity": 0.004}
                assert not await sim.order_update(filled, "FILLED")
                assert sim.lost == 2
                assert sim.expected["orders"][ORDER_B]["state"] == "FILLED"  # the key has it
                assert client.data["orders"][ORDER_B]["state"] == "SUBMITTED"

                nats_proc.restart()
                await sim.connect_nats()
                await wait_state([client], sim.expected)
                assert client.data["orders"][ORDER_B]["state"] == "FILLED"
                assert (
                    metric(d.server, "dashboard_redis_reloads_total", {"trigger": "resync"})
                    > resyncs
                )
                await until(lambda: _state(d.server, "order_updates") == "ok", "nats ok", 20)
                # and the live path works again
                cancelled = sim.new_order(ORDER_C, "ETHUSDT", state="CANCELED")
                assert await sim.order_update(cancelled, "CANCELED")
                await wait_state([client], sim.expected)

    run(main(), timeout=90)


async def _keyspace_flags(sim: B25Sim) -> str:
    config = await sim.redis.config_get("notify-keyspace-events")
    return str(config["notify-keyspace-events"])


def _state(server: Any, source: str) -> str:
    states: dict[str, Any] = server.source_states()
    return str(states[source]["state"])
