"""The pub/sub connection read in batches (ingest/redis/subscriber.py) against a real
redis-server: RESP2 and RESP3 replies, AUTH, conflation of raw channels and order of the others,
the PING round trip, a connection closed by Redis; and the feed on top of it: reconnects after
its subscriber is killed, the latest payload per key wins, the lag is in /health."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from redis import Redis as SyncRedis
from redis_helpers import (
    RedisProcess,
    clients_of,
    converge,
    health,
    metric,
    metric_sum,
    redis_server,
    redis_state,
    wait_health,
)
from server_helpers import run, wait_until

from dashboard_server.core.engine import Engine
from dashboard_server.ingest.redis.subscriber import Batch, Subscriber, SubscriberClosed


class Collected:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def __call__(self, batch: Batch) -> None:
        self.batches.append(batch)

    def latest(self, pattern: bytes) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for b in self.batches:
            out.update(b.conflated.get(pattern, {}))
        return out

    def count(self, pattern: bytes) -> int:
        return sum(b.counts.get(pattern, 0) for b in self.batches)

    def ordered(self) -> list[tuple[bytes, bytes, bytes]]:
        return [m for b in self.batches for m in b.ordered]


@pytest.mark.parametrize("threaded", [True, False], ids=["reader-thread", "event-loop"])
@pytest.mark.parametrize("resp", [2, 3])
def test_batches_conflate_raw_channels_and_keep_the_order_of_the_others(
    redis_proc: RedisProcess, resp: int, engine: Engine, threaded: bool
) -> None:
    r = redis_proc.client()

    async def scenario() -> None:
        got = Collected()
        url = redis_proc.url + ("?protocol=3" if resp == 3 else "")
        sub = await Subscriber.connect(
            url, got, [b"md:*"], timeout=2.0, scanner=engine.PubSubScanner, threaded=threaded
        )
        assert (sub.reader_thread is not None) == threaded
        assert sub.resp == resp and isinstance(sub.client_id, int)
        await sub.psubscribe(["md:*", "ev:*"], timeout=2.0)
        pipe = r.pipeline(transaction=False)
        for i in range(300):
            pipe.publish(f"md:S{i % 3}", orjson.dumps({"i": i}))
            pipe.publish("ev:x", str(i).encode())
        pipe.execute()
        await wait_until(lambda: got.count(b"md:*") == 300 and len(got.ordered()) == 300)
        latest = got.latest(b"md:*")
        assert {k: orjson.loads(v) for k, v in latest.items()} == {
            b"md:S0": {"i": 297},
            b"md:S1": {"i": 298},
            b"md:S2": {"i": 299},
        }
        assert [int(m[2]) for m in got.ordered()] == list(range(300))
        assert {m[0] for m in got.ordered()} == {b"ev:*"}
        assert {m[1] for m in got.ordered()} == {b"ev:x"}
        # the PING's PONG comes back through the same stream: its round trip is the lag
        rtt = await asyncio.wait_for(sub.ping(), 2.0)
        assert 0 <= rtt < 2.0
        rtts = await asyncio.wait_for(asyncio.gather(sub.ping(), sub.ping()), 2.0)
        assert all(0 <= x < 2.0 for x in rtts)
        # Redis closes the connection: wait_closed says so
        r.client_kill_filter(_type="pubsub")
        with pytest.raises(SubscriberClosed):
            await asyncio.wait_for(sub.wait_closed(), 2.0)
        assert sub.closed
        with pytest.raises(SubscriberClosed):
            sub.ping()
        if sub.reader_thread is not None:  # the reader thread ends with the connection
            await asyncio.to_thread(sub.reader_thread.join, 5.0)
            assert not sub.reader_thread.is_alive()

    run(scenario())
    r.close()


@pytest.mark.parametrize("resp", [2, 3])
def test_auth_with_the_urls_credentials(redis_proc: RedisProcess, resp: int) -> None:
    r = redis_proc.client()
    r.config_set("requirepass", "s3cret")
    base = f"redis://:s3cret@127.0.0.1:{redis_proc.port}/0"
    protocol = "?protocol=3" if resp == 3 else ""

    async def scenario() -> None:
        sub = await Subscriber.connect(base + protocol, Collected(), [], timeout=2.0)
        await sub.psubscribe(["x:*"], timeout=2.0)
        sub.close()
        wrong = f"redis://:nope@127.0.0.1:{redis_proc.port}/0{protocol}"
        with pytest.raises(SubscriberClosed):
            await Subscriber.connect(wrong, Collected(), [], timeout=2.0)

    try:
        run(scenario())
    finally:
        r.close()
        with SyncRedis(port=redis_proc.port, password="s3cret") as r2:
            r2.config_set("requirepass", "")


def test_feed_reconnects_after_its_subscriber_is_killed(redis_proc: RedisProcess) -> None:
    r = redis_proc.client()

    async def scenario() -> None:
        async with (
            redis_server("native", redis_proc.url, redis_health_interval_s=0.05) as server,
            clients_of(server) as clients,
        ):
            await wait_health(server, "ok")
            feed = server.feeds[0]
            await wait_until(lambda: feed.health().lag_s is not None)
            body = await health(server)
            assert body["feeds"]["redis"]["lag_s"] >= 0
            connects = metric(server, "dashboard_redis_connects_total")
            r.client_kill_filter(_type="pubsub")
            await wait_until(lambda: metric(server, "dashboard_redis_connects_total") > connects)
            await wait_health(server, "ok")
            value = orjson.dumps({"last_price": 2.0})
            r.set("market_data:K", value)
            r.publish("market_data:K", value)
            await converge(clients, redis_state(r))

    run(scenario())
    r.close()


def test_a_burst_on_few_keys_ends_with_the_latest_payload_of_each(
    redis_proc: RedisProcess,
) -> None:
    """Every message is counted (applied, or superseded within its batch: conflated) and the
    state ends with the last payload published for each key."""
    r = redis_proc.client()
    total = 20_000

    async def scenario() -> None:
        async with (
            redis_server("native", redis_proc.url) as server,
            clients_of(server) as clients,
        ):
            await wait_health(server, "ok")
            before = metric_sum(server, "dashboard_ingest_messages_total")
            pipe = r.pipeline(transaction=False)
            for i in range(total):
                payload = orjson.dumps({"last_price": float(i), "pad": "x" * 100})
                pipe.set(f"market_data:S{i % 10}", payload)
                pipe.publish(f"market_data:S{i % 10}", payload)
            await asyncio.to_thread(pipe.execute)
            await wait_until(
                lambda: metric_sum(server, "dashboard_ingest_messages_total") - before >= total
            )
            assert metric_sum(server, "dashboard_ingest_messages_total") - before == total
            await converge(clients, redis_state(r))
            data: dict[str, Any] = clients[0].data["market_data"]
            assert {k: v["last_price"] for k, v in data.items()} == {
                f"S{n}": float(total - 10 + n) for n in range(10)
            }
            assert metric_sum(server, "dashboard_ingest_malformed_total") == 0
            assert metric_sum(server, "dashboard_ingest_batches_total") >= 1

    run(scenario())
    r.close()


@pytest.mark.parametrize("resp", [2, 3])
def test_an_oversized_payload_is_skipped_unbuffered_and_the_stream_goes_on(
    redis_proc: RedisProcess, resp: int, engine: Engine
) -> None:
    """A payload over ``max_payload`` is reported (pattern, channel, size) and never buffered:
    the connection stays up and the messages after it are read."""
    r = redis_proc.client()

    async def scenario() -> None:
        got = Collected()
        url = redis_proc.url + ("?protocol=3" if resp == 3 else "")
        sub = await Subscriber.connect(
            url, got, [b"md:*"], timeout=2.0, max_payload=1000, scanner=engine.PubSubScanner
        )
        await sub.psubscribe(["md:*"], timeout=2.0)
        r.publish("md:big", b"x" * 5_000_000)
        r.publish("md:ok", b'{"a":1}')
        await wait_until(lambda: got.count(b"md:*") == 1)
        assert got.latest(b"md:*") == {b"md:ok": b'{"a":1}'}
        assert [m for b in got.batches for m in b.oversized] == [(b"md:*", b"md:big", 5_000_000)]
        assert not sub.closed
        assert sub.messages == 2
        sub.close()

    run(scenario())
    r.close()


def test_a_held_batch_waits_for_max_delay_or_an_explicit_flush(redis_proc: RedisProcess) -> None:
    r = redis_proc.client()

    async def scenario() -> None:
        got = Collected()
        sub = await Subscriber.connect(redis_proc.url, got, [b"md:*"], timeout=2.0, max_delay=30)
        await sub.psubscribe(["md:*"], timeout=2.0)
        r.publish("md:A", b"1")
        r.publish("md:A", b"2")
        await wait_until(lambda: sub.messages == 2)
        await asyncio.sleep(0.2)
        assert got.batches == []  # held: max_delay is 30 s
        sub.flush()
        assert got.latest(b"md:*") == {b"md:A": b"2"} and got.count(b"md:*") == 2
        sub.flush()  # nothing pending: no empty batch
        assert len(got.batches) == 1
        sub.close()

    run(scenario())
    r.close()


def test_a_fanout_flush_applies_the_held_batch_first(redis_proc: RedisProcess) -> None:
    """With batches held for 30 s, a client still sees each value at its next flush: the
    flush applies the subscriber's pending batch before it reads the document."""
    r = redis_proc.client()

    async def scenario() -> None:
        async with (
            redis_server("native", redis_proc.url) as server,
            clients_of(server) as clients,
        ):
            await wait_health(server, "ok")
            feed = server.feeds[0]
            feed.batch_delay = 30.0
            connects = metric(server, "dashboard_redis_connects_total")
            r.client_kill_filter(_type="pubsub")  # the next session's subscriber holds 30 s
            await wait_until(lambda: metric(server, "dashboard_redis_connects_total") > connects)
            await wait_health(server, "ok")
            for i in range(3):
                value = orjson.dumps({"last_price": float(i)})
                r.set("market_data:H", value)
                r.publish("market_data:H", value)
            await converge(clients, redis_state(r), timeout=5.0)
            assert clients[0].data["market_data"]["H"]["last_price"] == 2.0

    run(scenario())
    r.close()


def test_the_server_counts_an_oversized_payload_as_malformed_and_stays_connected(
    redis_proc: RedisProcess,
) -> None:
    r = redis_proc.client()

    async def scenario() -> None:
        async with (
            redis_server("native", redis_proc.url, max_item_bytes=10_000) as server,
            clients_of(server) as clients,
        ):
            await wait_health(server, "ok")
            connects = metric(server, "dashboard_redis_connects_total")
            r.publish("market_data:BIG", b'{"pad":"' + b"x" * 3_000_000 + b'"}')
            value = orjson.dumps({"last_price": 7.0})
            r.set("market_data:OK", value)
            r.publish("market_data:OK", value)
            await converge(clients, redis_state(r))
            await wait_until(lambda: metric_sum(server, "dashboard_ingest_malformed_total") == 1)
            assert metric(server, "dashboard_redis_connects_total") == connects
            assert "BIG" not in clients[0].data["market_data"]

    run(scenario())
    r.close()


def test_the_reader_thread_drains_while_the_event_loop_is_blocked(redis_proc: RedisProcess) -> None:
    """With the event loop blocked (a long fan-out flush, say), the reader thread still drains
    the socket: Redis's output buffer for the subscriber stays small, and the messages are
    there for the loop when it comes back."""
    r = redis_proc.client()

    async def scenario() -> None:
        got = Collected()
        sub = await Subscriber.connect(redis_proc.url, got, [b"md:*"], timeout=2.0)
        await sub.psubscribe(["md:*"], timeout=2.0)
        assert sub.client_id is not None
        payload = b"x" * 1000
        pipe = r.pipeline(transaction=False)
        for i in range(20_000):  # 20 MB
            pipe.publish(f"md:S{i % 100}", payload)

        def block_the_loop() -> int:
            pipe.execute()
            return int(r.client_list(client_id=[sub.client_id])[0]["omem"])

        # the loop is blocked (a synchronous call) while 20 MB are published at us
        omem = block_the_loop()
        assert omem < 8 * 2**20, f"Redis holds {omem} bytes for the subscriber"
        await wait_until(lambda: sub.messages == 20_000)
        sub.flush()
        assert got.count(b"md:*") == 20_000 and len(got.latest(b"md:*")) == 100
        sub.close()

    run(scenario())
    r.close()
