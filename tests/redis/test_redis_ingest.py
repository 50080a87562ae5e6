"""The Redis ingest against a real redis-server: load + live, removals, both payload formats,
events, and every failure (kill -9 with changes while down, down at start, SIGSTOP, malformed
payloads). Clients are real DashboardClients on real sockets; convergence means their state
equals what Redis holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

import msgpack
import pytest
from redis.client import Redis
from redis.exceptions import RedisError
from redis_helpers import (
    RedisProcess,
    async_backend,
    clients_of,
    converge,
    delete_item,
    encode,
    health,
    metric,
    metric_sum,
    redis_server,
    redis_state,
    wait_health,
    write_item,
)
from server_helpers import run, wait_until

from dashboard_server.client.connection import DashboardClient


def seed(r: Redis) -> None:
    """Items in both formats, an id with '/' and '~', and keys that hold no item."""
    write_item(r, "market_data:BTCUSDT", {"symbol": "BTCUSDT", "last_price": 50_000.5, "bid": 1})
    write_item(r, "market_data:ETHUSDT", {"symbol": "ETHUSDT", "last_price": 3_000.0}, "msgpack")
    write_item(r, "orders:42", {"id": "42", "qty": 1.5, "status": "new", "tags": ["a", "b"]})
    write_item(r, "positions:BTC/USD~1", {"qty": -2, "entry": 49_000.0}, "msgpack")
    write_item(r, "account:main", {"equity": 1_000_000.0, "balances": {"USDT": 5.0}})
    r.set("orders:empty", b"")  # no item
    r.hset("orders:hash", "a", "1")  # not a string: no item
    r.set("strategies:null", b"null")  # no item


def test_load_then_live_updates_removals_and_events(
    engine_name: str, redis_proc: RedisProcess
) -> None:
    r = redis_proc.client()
    seed(r)

    async def scenario() -> None:
        async with (
            redis_server(engine_name, redis_proc.url, events_kept=5) as server,
            clients_of(server) as clients,
        ):
            await wait_health(server, "ok")
            expected = redis_state(r)
            assert expected["positions"] == {"BTC/USD~1": {"qty": -2, "entry": 49_000.0}}
            assert set(expected["orders"]) == {"42"}
            await converge(clients, expected)
            assert metric(server, "dashboard_redis_reloads_total", {"trigger": "connect"}) == 1

            # live: new items, changes (fields dropped: replace, not merge), both formats
            write_item(r, "orders:43", {"id": "43", "qty": 2.0, "status": "new"}, "msgpack")
            write_item(r, "market_data:BTCUSDT", {"symbol": "BTCUSDT", "last_price": 50_001.0})
            write_item(r, "strategies:mm", {"pnl": 12.5, "enabled": True})
            await converge(clients, redis_state(r))
            assert "bid" not in clients[0].data["market_data"]["BTCUSDT"]

            # removals: empty payload, JSON null, MessagePack nil
            delete_item(r, "orders:42", b"")
            delete_item(r, "market_data:ETHUSDT", b" null ")
            delete_item(r, "positions:BTC/USD~1", msgpack.packb(None))
            state = redis_state(r)
            assert state["orders"] == {"43": {"id": "43", "qty": 2.0, "status": "new"}}
            await converge(clients, state)
            assert metric(server, "dashboard_ingest_messages_total", {"section": "orders"}) == 2

            # events: delivered in order to subscribers, the last N replayed to a joiner
            for i in range(5):
                r.publish(f"trades:BTCUSDT{i % 2}", encode({"n": i, "price": 1.5}, "json"))
            r.publish("fills:43", encode({"order_id": "43", "qty": 1.0}, "msgpack"))
            r.publish("alerts:risk", b'{"level":"warning"}')
            for c in clients:
                await c.wait_for(lambda c: len(c.state.events) == 7, timeout=10)
                got = [(e["channel"], e["data"]) for e in c.state.events]
                assert got == [("trades", {"n": i, "price": 1.5}) for i in range(5)] + [
                    ("fills", {"order_id": "43", "qty": 1.0}),
                    ("alerts", {"level": "warning"}),
                ]
            url = f"ws://127.0.0.1:{server.port}/ws"
            async with DashboardClient(url, format="json", type="tui") as late:
                await late.wait_for(lambda c: c.state.recent_events, timeout=10)
                recent = [(e["channel"], e["data"]) for e in late.state.recent_events]
                assert recent == got[2:]  # the last events_kept, oldest first
                await converge([late], redis_state(r))
                r.publish("alerts:risk", b'{"level":"info"}')  # live after the backlog: seq + 1
                await late.wait_for(lambda c: len(c.state.events) == 1, timeout=10)
                assert late.state.events[0]["data"] == {"level": "info"} and late.gaps == 0

            body = await health(server)
            assert body["redis"] == "ok"
            assert metric_sum(server, "dashboard_redis_disconnects_total") == 0
            assert body["sections"]["orders"] is not None
            assert body["sections"]["orderbook"] is None  # never updated

    run(scenario())
    r.close()


def test_kill_9_with_changes_while_down_converges(
    engine_name: str, make_redis: Any, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    main = make_redis(data_dir, persistent=True)
    main.start()
    r = main.client()
    for i in range(40):
        write_item(
            r, f"market_data:S{i}", {"last_price": float(i), "n": 0}, ("json", "msgpack")[i % 2]
        )
        write_item(r, f"orders:{i}", {"qty": i})

    async def backend(stop: asyncio.Event, written: list[int]) -> None:
        """Keeps writing market data, through the outage (errors are retried)."""
        client = async_backend(main.port)
        n = 0
        try:
            while not stop.is_set():
                n += 1
                key = f"market_data:S{n % 40}"
                payload = encode({"last_price": float(n), "n": n}, "json")
                with contextlib.suppress(RedisError, OSError):
                    async with client.pipeline(transaction=False) as pipe:
                        pipe.set(key, payload)
                        pipe.publish(key, payload)
                        await pipe.execute()
                    written.append(n)
                await asyncio.sleep(0.005)
        finally:
            await client.aclose()

    async def scenario() -> None:
        async with redis_server(engine_name, main.url) as server, clients_of(server) as clients:
            await wait_health(server, "ok")
            await converge(clients, redis_state(r))
            stop, written = asyncio.Event(), []
            writer = asyncio.create_task(backend(stop, written))
            await wait_until(lambda: len(written) > 50)

            main.kill()
            await wait_health(server, "degraded")
            assert (await health(server))["redis"] in ("down", "stalled")

            # while the server cannot see it: another instance on the same data changes things
            other = make_redis(data_dir, persistent=True)
            other.start()
            o = other.client()
            for i in range(0, 10):
                o.set(f"market_data:S{i}", encode({"last_price": -1.0, "changed": True}, "json"))
            for i in range(10, 20):
                o.delete(f"orders:{i}")
            o.delete("market_data:S39")
            o.set("positions:NEW", encode({"qty": 3}, "msgpack"))
            o.close()
            other.stop()

            main.start()  # same port, same data
            await wait_health(server, "ok")
            stop.set()
            await writer
            expected = redis_state(r)
            assert "10" not in expected["orders"] and expected["positions"] == {"NEW": {"qty": 3}}
            await converge(clients, expected)
            assert metric(server, "dashboard_redis_connects_total") == 2
            assert metric_sum(server, "dashboard_redis_disconnects_total") >= 1
            for c in clients:
                assert c.gaps == 0

    run(scenario(), timeout=90)
    r.close()


def test_redis_down_at_start_then_up(make_redis: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    seeder = make_redis(data_dir, persistent=True)
    seeder.start()
    s = seeder.client()
    for i in range(30):
        s.set(f"orders:{i}", encode({"qty": i}, "msgpack"))  # stored only: the reload must find it
    s.close()
    seeder.stop()
    later = make_redis(data_dir, persistent=True)  # the same data on a port nobody serves yet

    async def scenario() -> None:
        async with redis_server("pure", later.url) as server, clients_of(server) as clients:
            body = await health(server)
            assert body["status"] == "degraded" and body["redis"] in ("connecting", "down")
            await converge(clients, redis_state_empty())
            async with asyncio.timeout(15):  # a failed attempt, however long it takes
                while (await health(server))["redis"] != "down":
                    await asyncio.sleep(0.05)
            later.start()
            await wait_health(server, "ok")
            r = later.client()
            await converge(clients, redis_state(r))
            assert len(clients[0].data["orders"]) == 30
            r.close()

    run(scenario())


def redis_state_empty() -> dict[str, Any]:
    """The state with no item at all."""
    from dashboard_server.config import DEFAULT_SECTIONS

    return {s: {} for s in DEFAULT_SECTIONS}


def test_sigstop_longer_than_health_interval(redis_proc: RedisProcess) -> None:
    r = redis_proc.client()
    write_item(r, "account:main", {"equity": 1.0})

    async def scenario() -> None:
        async with redis_server("pure", redis_proc.url) as server, clients_of(server) as clients:
            await wait_health(server, "ok")
            await converge(clients, redis_state(r))
            redis_proc.signal(signal.SIGSTOP)
            try:
                await wait_health(server, "degraded", timeout=5)
                assert (await health(server))["redis"] in ("stalled", "down")
                await asyncio.sleep(1.0)  # well past the health interval (0.2 s)
            finally:
                redis_proc.signal(signal.SIGCONT)
            await wait_health(server, "ok")
            write_item(r, "account:main", {"equity": 2.0})
            await converge(clients, redis_state(r))
            assert metric(server, "dashboard_redis_disconnects_total", {"reason": "stalled"}) >= 1

    run(scenario())
    r.close()


def malformed_messages() -> list[tuple[str, bytes]]:
    """(channel, payload) pairs that must each be counted and skipped."""
    return [
        ("market_data:A", b"{not json"),
        ("market_data:A", b"\x82\xa1a"),  # truncated MessagePack
        ("market_data:A", b'{"a": NaN}'),
        ("orders:1", b"[1, 2"),
        ("orders:1", b"[" * 200 + b"]" * 200),  # nested too deep
        ("orders:1", b'{"a": 99999999999999999999999}'),  # int out of range
        ("positions:X", msgpack.packb({"a": b"bytes"}, use_bin_type=True)),  # bin
        ("positions:X", b'{"a": "\xff"}'),  # invalid UTF-8
        ("positions:X", b"{} {}"),  # two values
        ("account:main", b"\xc1"),  # never-used MessagePack byte
        ("orders:", b'{"a": 1}'),  # no id
        ("trades:X", b"[1, 2]"),  # an event must be an object
        ("fills:X", b"{"),
        ("alerts:X", b"\x93\x01"),
    ]


def test_malformed_payloads_are_counted_and_skipped(
    redis_proc: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    r = redis_proc.client()
    write_item(r, "market_data:A", {"last_price": 1.0})

    async def scenario() -> None:
        async with (
            redis_server("native", redis_proc.url) as server,
            clients_of(server, max_events=10_000) as clients,
        ):
            await wait_health(server, "ok")
            await converge(clients, redis_state(r))
            bad = malformed_messages()
            pipe = r.pipeline(transaction=False)
            for i in range(1000):
                channel, payload = bad[i % len(bad)]
                pipe.publish(channel, payload)
                if i % 10 == 0:  # valid updates in between still arrive
                    write_json = encode({"last_price": float(i)}, "json")
                    pipe.set(f"market_data:V{i}", write_json)
                    pipe.publish(f"market_data:V{i}", write_json)
                    pipe.publish("trades:V", encode({"n": i}, "msgpack"))
            pipe.execute()
            await converge(clients, redis_state(r))
            assert clients[0].data["market_data"]["A"] == {"last_price": 1.0}
            assert len(clients[0].data["market_data"]) == 101

            # A bad payload is counted as malformed, unless a newer message for the same key
            # superseded it within the same read: then it is counted as conflated (never
            # decoded). Events are never conflated. Every bad message is one or the other.
            def skipped() -> float:
                return metric_sum(server, "dashboard_ingest_malformed_total") + metric_sum(
                    server, "dashboard_ingest_conflated_total"
                )

            await wait_until(lambda: skipped() >= 1000)
            assert skipped() == 1000
            events_bad = sum(
                1
                for i in range(1000)
                if bad[i % len(bad)][0][0] in "tfa"
                and not bad[i % len(bad)][0].startswith("account")
            )
            assert metric_sum(server, "dashboard_ingest_malformed_total") >= events_bad
            for c in clients:
                await c.wait_for(lambda c: len(c.state.events) == 100, timeout=10)
                assert [e["data"]["n"] for e in c.state.events] == list(range(0, 1000, 10))
            assert (await health(server))["status"] == "ok"

    caplog.set_level(logging.WARNING, logger="dashboard_server.ingest.writer")
    run(scenario())
    logged = [r for r in caplog.records if r.getMessage() == "malformed payload skipped"]
    assert 1 <= len(logged) < 1000  # rate-limited
    assert {"channel", "reason"} <= set(vars(logged[0]))
    first = logged[0]
    assert first.channel == "market_data:A" and "invalid JSON" in first.reason, vars(first)
    r.close()


def test_a_burst_longer_than_the_health_timeout_is_not_a_stall(redis_proc: RedisProcess) -> None:
    """The PONG waits behind a backlog of messages; while they arrive, Redis is alive."""
    r = redis_proc.client()

    async def scenario() -> None:
        async with redis_server(
            "pure", redis_proc.url, redis_health_interval_s=0.02, redis_health_timeout_s=0.2
        ) as server:
            await wait_health(server, "ok")
            count = 30_000

            def burst() -> None:
                pipe = r.pipeline(transaction=False)
                for i in range(count):
                    payload = encode({"last_price": float(i), "pad": "x" * 200}, "json")
                    pipe.publish(f"market_data:S{i % 100}", payload)
                pipe.execute()

            await asyncio.to_thread(burst)
            await wait_until(
                lambda: (
                    metric(server, "dashboard_ingest_messages_total", {"section": "market_data"})
                    >= count
                ),
                timeout=30,
            )
            assert metric_sum(server, "dashboard_redis_disconnects_total") == 0
            assert server.doc.get("/market_data/S99/last_price") == float(count - 1)

    run(scenario())
    r.close()


def test_stop_right_after_start_with_redis_unreachable(tmp_path: Path) -> None:
    """Stopping while the ingest is between failed connection attempts always ends (a
    cancellation swallowed by a library call once left the supervisor looping forever)."""
    from redis_helpers import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there

    async def scenario() -> None:
        for _ in range(20):
            async with asyncio.timeout(10):
                async with redis_server("pure", url):
                    await asyncio.sleep(0.005 * (_ % 4))

    run(scenario(), timeout=120)
