"""The reload race rule, on a real Redis: a key touched by pub/sub while a reload runs is not
overwritten by the (older) value the reload reads, and is not removed at its end."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from redis_helpers import RedisProcess
from server_helpers import run

from dashboard_server.core.sources import generic_sources, parse_sources
from dashboard_server.ingest.redis.connection import connect_redis
from dashboard_server.ingest.redis.feed import RedisFeed
from dashboard_server.ingest.router import SourceRouter, is_removal
from dashboard_server.telemetry.metrics import RedisMetrics


class Recorder:
    """An ingest target keeping items as Python values (JSON payloads only)."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {"orders": {}}
        self.on_first_replace: Any = None

    def replace_bytes(self, path: str, payload: bytes, fmt: str) -> bool:
        _, section, item_id = path.split("/")
        hook, self.on_first_replace = self.on_first_replace, None
        if hook is not None:
            hook()
        self.items[section][item_id] = orjson.loads(payload)
        return True

    def remove(self, path: str) -> bool:
        _, section, item_id = path.split("/")
        return self.items[section].pop(item_id, None) is not None

    def publish_event(self, channel: str, data: dict[str, Any]) -> None:
        raise AssertionError("no events here")

    def merge(self, path: str, patch: Any) -> bool:
        raise AssertionError("the generic contract replaces items")

    replace = merge

    def note_section_update(self, section: str) -> None:
        pass

    def section_ids(self, section: str) -> list[str]:
        return list(self.items[section])

    def received(self, section: str) -> None:
        pass

    def malformed(self, section: str, name: str, reason: str) -> None:
        raise AssertionError(f"malformed {name}: {reason}")


def test_pubsub_during_a_reload_wins(redis_proc: RedisProcess) -> None:
    r = redis_proc.client()
    pipe = r.pipeline(transaction=False)
    for i in range(3000):  # several SCAN pages
        pipe.set(f"orders:{i}", orjson.dumps({"v": 1}))
    pipe.execute()
    target = Recorder()
    target.items["orders"]["gone"] = {"v": 0}  # absent from Redis, untouched: removed
    metrics = RedisMetrics(CollectorRegistry(), RedisFeed.STATES)
    sources = parse_sources(generic_sources(["orders"]), ["orders"])
    ingest = RedisFeed(SourceRouter(target), url=redis_proc.url, sources=sources, metrics=metrics)

    def newer_messages() -> None:
        """Pub/sub messages that arrive after the first page: newer than what MGET returns."""
        for i in range(3000):
            if i != 7:
                ingest.handle(f"orders:{i}".encode(), orjson.dumps({"v": 2}))
        ingest.handle(b"orders:7", b"")  # removed by pub/sub, still in Redis
        ingest.handle(b"orders:new", orjson.dumps({"v": 2}))  # not in Redis (yet)

    target.on_first_replace = newer_messages

    async def scenario() -> None:
        client = connect_redis(redis_proc.url, 2.0)
        try:
            await ingest.reload(client, "connect")
        finally:
            await client.aclose()

    run(scenario())
    orders = target.items["orders"]
    assert "gone" not in orders and "7" not in orders
    assert orders["new"] == {"v": 2}
    stale = [k for k, v in orders.items() if v != {"v": 2}]
    assert len(stale) <= 1, stale[:10]  # only the key applied when the messages came
    assert len(orders) == 3000
    r.close()


def test_removal_payloads() -> None:
    assert is_removal(b"") and is_removal(b"null") and is_removal(b" null\n")
    assert is_removal(b"\xc0")
    assert not is_removal(b"{}") and not is_removal(b"0") and not is_removal(b'"null"')
