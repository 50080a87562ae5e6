"""What a backend (or whoever can write to Redis) can send, next to a well-behaved bystander:
oversized item ids and payloads, event values the state would refuse, and a payload that makes
the engine panic. Real redis-server, real server, real WebSocket clients."""

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
from loadwatch import watching
from redis_helpers import RedisProcess, redis_server
from sectools import ENGINE, open_ws, sample, ws_url
from server_helpers import decode, http_get, run, wait_until

from dashboard_server.core.values import check_value, decode_payload

SECONDS = 2.0


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProcess]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (make system-deps)")
    proc = RedisProcess(binary, tmp_path / "redis")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def malformed(srv: Any, section: str) -> float:
    return sample(srv, "dashboard_ingest_malformed_total", section=section)


async def health(srv: Any) -> dict[str, Any]:
    status, _, body = await http_get(srv.port, "/health")
    payload: dict[str, Any] = orjson.loads(body)
    assert status == 200
    return payload


def test_oversized_ids_and_items_are_malformed(redis_proc: RedisProcess) -> None:
    """A 1 MB id and a 100 KB item (over the 256-byte and 64 KiB defaults), at the reload and
    live: skipped and counted, so a snapshot stays small and a default client (1 MiB max_size)
    is not closed with 1009."""
    r = redis_proc.client()
    huge_id = "i" * 1_000_000
    r.set(f"orders:{huge_id}", b'{"qty":1}')
    r.set("orders:big", orjson.dumps({"blob": "b" * 100_000}))
    r.set("orders:ok", b'{"qty":2}')

    async def scenario() -> None:
        async with redis_server(ENGINE, redis_proc.url) as srv:
            await wait_until(lambda: srv.health()[1]["redis"] == "ok")
            assert srv.writer.section_ids("orders") == ["ok"]
            assert malformed(srv, "orders") == 2
            async with watching(srv, interval_ms=50) as watch, open_ws(ws_url(srv)) as plain:
                assert decode(await plain.recv())["type"] == "snapshot"
                control = await watch.measure(SECONDS)
                loop = asyncio.get_running_loop()

                def publish() -> None:
                    for i in range(10):
                        r.publish(f"orders:{huge_id}{i}", b'{"qty":3}')
                        r.publish(f"orders:big{i}", orjson.dumps({"blob": "b" * 100_000}))
                    r.publish("orders:ok2", b'{"qty":4}')

                attack = loop.run_in_executor(None, publish)
                during = await watch.measure(SECONDS)
                await attack
                await wait_until(lambda: "ok2" in srv.writer.section_ids("orders"))
                watch.assert_held(control, during)
                assert malformed(srv, "orders") == 22
                assert sorted(srv.writer.section_ids("orders")) == ["ok", "ok2"]
                async with asyncio.timeout(5):  # still open, still getting updates
                    while decode(await plain.recv())["type"] != "update":
                        pass

    run(scenario(), timeout=60)
    r.close()


def test_event_values_follow_the_state_rules(redis_proc: RedisProcess) -> None:
    """An event with an integer beyond 64 bits (JSON) or NaN (MessagePack) is malformed instead
    of becoming a float or null; a good event goes through exactly."""
    r = redis_proc.client()

    async def scenario() -> None:
        async with redis_server(ENGINE, redis_proc.url) as srv:
            await wait_until(lambda: srv.health()[1]["redis"] == "ok")
            async with open_ws(ws_url(srv, "format=json&channels=events")) as ws:
                assert decode(await ws.recv())["type"] == "snapshot"
                r.publish("fills:1", b'{"qty": 123456789012345678901234567890}')
                r.publish("fills:2", msgpack.packb({"px": [1.0, math.nan]}))
                r.publish("fills:3", b'{"qty": 1e400}')
                r.publish("fills:4", msgpack.packb({"qty": 2**64 - 1, "px": 1.5}))
                event = decode(await asyncio.wait_for(ws.recv(), 5))
                while event["type"] == "status":  # the feeds' status follows the snapshot
                    event = decode(await asyncio.wait_for(ws.recv(), 5))
                assert event["type"] == "event" and event["data"] == {"qty": 2**64 - 1, "px": 1.5}
                assert malformed(srv, "fills") == 3
            with pytest.raises(ValueError, match=r"event on 'alerts': /x/1: non-finite float"):
                srv.writer.publish_event("alerts", {"x": [1, math.inf]})
            with pytest.raises(ValueError, match=r"/n: out of range"):
                srv.writer.publish_event("alerts", {"n": -(2**63) - 1})

    run(scenario(), timeout=60)
    r.close()


def test_value_rules_unit() -> None:
    assert not check_value({"a": [1, 2.5, "x", None, True, {"b": -(2**63)}]})
    assert check_value({"a": 1e19})  # a float that large: JSON may have rounded an int
    for bad, where in (
        ({"a": {"b": float("nan")}}, "/a/b"),
        ({"a/b": [0, 2**64]}, "/a~1b/1"),
        ({"a": {1: 2}}, "/a"),
        ({"a": b"bin"}, "/a"),
        ({"a": {1.5}}, "/a"),
    ):
        with pytest.raises(ValueError, match=f"^{where}: "):
            check_value(bad)
    deep: Any = []
    for _ in range(130):
        deep = [deep]
    with pytest.raises(ValueError, match="depth"):
        check_value(deep)
    with pytest.raises(ValueError, match="/a: out of range"):
        decode_payload(b'{"a": -99999999999999999999}', "json")
    assert decode_payload(b'{"a": 1e300}', "json") == {"a": 1e300}


class Poisoned:
    """The server's document, with ``replace_bytes`` and ``replace_many`` panicking in the engine
    on a payload holding ``poison`` (through the engine's test-only hook)."""

    def __init__(self, doc: Any, panic: Any) -> None:
        self._doc = doc
        self._panic = panic

    def __getattr__(self, name: str) -> Any:
        return getattr(self._doc, name)

    def replace_bytes(self, path: str, payload: bytes, fmt: str) -> bool:
        if b"poison" in payload:
            self._panic("poisoned payload")
        return bool(self._doc.replace_bytes(path, payload, fmt))

    def replace_many(self, items: list[tuple[str, bytes]], fmt: str) -> list[bool | str]:
        # the live ingest's batches (a raw source's conflated items)
        if any(b"poison" in payload for _, payload in items):
            self._panic("poisoned payload")
        return list(self._doc.replace_many(items, fmt))


class PanicOnce:
    """The hub's document, panicking in ``changes_since`` once."""

    def __init__(self, doc: Any, panic: Any) -> None:
        self._doc = doc
        self._panic = panic
        self.armed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._doc, name)

    def changes_since(self, version: int) -> Any:
        if self.armed:
            self.armed = False
            self._panic("flush panic")
        return self._doc.changes_since(version)


def test_engine_panics_are_caught_counted_and_degrade_health(redis_proc: RedisProcess) -> None:
    """A panic (a BaseException) during ingest, during a flush and while handling a client
    message: each is logged and counted, /health turns degraded, and nothing stops: the ingest
    applies the next items, the flush task runs on, the bystander sees no seq gap."""
    r = redis_proc.client()

    async def scenario() -> None:
        async with redis_server(ENGINE, redis_proc.url) as srv:
            panic = srv.engine.module._panic_for_tests
            await wait_until(lambda: srv.health()[1]["redis"] == "ok")
            assert (await health(srv))["status"] == "ok"
            srv.writer.doc = Poisoned(srv.writer.doc, panic)
            hub_doc = srv.hub.doc = PanicOnce(srv.hub.doc, panic)
            async with watching(srv, interval_ms=50) as watch:
                control = await watch.measure(SECONDS)
                r.publish("orders:1", b'{"poison": true}')
                await wait_until(
                    lambda: sample(srv, "dashboard_engine_panics_total", where="ingest") == 1
                )
                r.publish("orders:2", b'{"qty": 2}')
                await wait_until(lambda: srv.writer.section_ids("orders") == ["2"])
                hub_doc.armed = True
                await wait_until(
                    lambda: sample(srv, "dashboard_engine_panics_total", where="flush") == 1
                )
                async with open_ws(ws_url(srv, "format=json&channels=account")) as ws:
                    assert decode(await ws.recv())["type"] == "snapshot"
                    (session,) = [
                        s for s in srv._sessions if s.connection.remote_address == ws.local_address
                    ]
                    handle = session.handle
                    session.handle = lambda data: panic("session panic")  # type: ignore[method-assign]
                    await ws.send('{"type":"ping"}')
                    await wait_until(
                        lambda: sample(srv, "dashboard_engine_panics_total", where="session") == 1
                    )
                    session.handle = handle  # type: ignore[method-assign]
                    await ws.send('{"type":"ping","payload":7}')
                    reply = decode(await ws.recv())
                    while reply["type"] != "pong":
                        reply = decode(await ws.recv())
                    assert reply["payload"] == 7  # the connection goes on
                during = await watch.measure(SECONDS)
                watch.assert_held(control, during)
                # the flush task that panicked runs on (while its bystander is still there:
                # once the last member leaves, its task ends as it should)
                assert 50 in srv.fanout.running_intervals()
            body = await health(srv)
            assert body["status"] == "degraded" and body["engine_panics"] == 3
            assert srv.health()[1]["redis"] == "ok"  # the ingest goes on

    run(scenario(), timeout=60)
    r.close()
