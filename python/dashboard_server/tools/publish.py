"""``dashboard-server publish-demo``: the demo feed written into Redis through the contract.

:class:`RedisPublisher` is a :class:`~dashboard_server.ingest.writer.StateSink` that behaves like
the
trading backends: it keeps every item whole, and for each changed item SETs the whole item as
JSON (or MessagePack) under ``{section}:{id}`` and PUBLISHes the same payload on the channel of
that name; a removed item is DELeted and an empty payload is published; an event is PUBLISHed
on ``{channel}:{symbol}`` (``fills:BTCUSDT``, ``alerts:ETHUSDT``, ...) and not stored. Writes are
buffered and sent in one pipeline per :meth:`RedisPublisher.flush`; the latest version of an item
supersedes any unsent one, and a failed flush is retried with the newest data at the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final, Literal, Protocol

import msgpack
import orjson

from dashboard_server.core.pointer import unescape_token
from dashboard_server.core.ticker import periodic
from dashboard_server.ingest.demo import DemoFeed
from dashboard_server.ingest.feed import describe_failure
from dashboard_server.ingest.redis.connection import close_quietly, connect_redis

__all__ = ["Publisher", "RedisPublisher", "merge_patch", "publish_demo"]

log = logging.getLogger(__name__)

MAX_BUFFERED_EVENTS: Final = 100_000
"""Events kept while Redis is unreachable; the oldest are dropped beyond it."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: ``patch`` merged into ``target`` (a new value; ``target`` is not changed)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class RedisPublisher:
    """A state sink writing whole items to Redis like a backend would (see the module doc)."""

    def __init__(
        self, url: str, *, fmt: Literal["json", "msgpack"] = "json", timeout: float = 2.0
    ) -> None:
        self.fmt = fmt
        self._client = connect_redis(url, timeout)
        self._items: dict[str, Any] = {}
        self._dirty: dict[str, bytes | None] = {}
        self._events: list[tuple[str, bytes]] = []
        self.writes = 0
        """Items written (SET or DEL) so far."""
        self.events = 0
        """Events published so far."""
        self.failures = 0
        """Flushes that failed (Redis unreachable)."""

    def _encode(self, value: Any) -> bytes:
        if self.fmt == "json":
            return orjson.dumps(value)
        packed: bytes = msgpack.packb(value, use_bin_type=True)
        return packed

    @staticmethod
    def _key(path: str) -> tuple[str, str]:
        """``/{section}/{id}`` -> (``{section}:{id}``, the section)."""
        _, section, item_id = path.split("/", 2)
        item_id = unescape_token(item_id)
        return f"{section}:{item_id}", section

    # --- StateSink -------------------------------------------------------------------------

    def merge(self, path: str, patch: Any) -> None:
        """Merge ``patch`` into the item at ``path``; the whole item is written."""
        key, _ = self._key(path)
        value = merge_patch(self._items.get(key), patch)
        self._items[key] = value
        self._dirty[key] = self._encode(value)

    def replace(self, path: str, value: Any) -> None:
        """Make the item at ``path`` equal to ``value``."""
        key, _ = self._key(path)
        self._items[key] = value
        self._dirty[key] = self._encode(value)

    def remove(self, path: str) -> None:
        """Delete the item at ``path``."""
        key, _ = self._key(path)
        self._items.pop(key, None)
        self._dirty[key] = None

    def publish_event(self, channel: str, data: dict[str, Any]) -> None:
        """Publish an event on ``{channel}:{symbol}`` (``all`` without a symbol)."""
        symbol = data.get("symbol")
        suffix = symbol if isinstance(symbol, str) and symbol else "all"
        self._events.append((f"{channel}:{suffix}", self._encode(data)))
        if len(self._events) > MAX_BUFFERED_EVENTS:
            del self._events[: len(self._events) - MAX_BUFFERED_EVENTS]

    # --- I/O -------------------------------------------------------------------------------

    async def flush(self) -> bool:
        """Send the buffered writes in one pipeline; False (data kept for the next) on failure."""
        if not self._dirty and not self._events:
            return True
        dirty, events = self._dirty, self._events
        self._dirty, self._events = {}, []
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, payload in dirty.items():
                    if payload is None:
                        pipe.delete(key)
                        pipe.publish(key, b"")
                    else:
                        pipe.set(key, payload)
                        pipe.publish(key, payload)
                for channel, payload in events:
                    pipe.publish(channel, payload)
                await pipe.execute()
        except Exception as exc:
            self.failures += 1
            log.warning("publish failed; retrying", extra={"error": describe_failure(exc)})
            dirty.update(self._dirty)  # newer writes made meanwhile win
            self._dirty = dirty
            self._events = events + self._events
            return False
        self.writes += len(dirty)
        self.events += len(events)
        return True

    async def close(self) -> None:
        """Close the connection."""
        await close_quietly(self._client)


class Publisher(Protocol):
    """What :func:`publish_demo` drives: a state sink that is flushed, then closed."""

    writes: int
    events: int
    failures: int

    def merge(self, path: str, patch: Any) -> None: ...
    def replace(self, path: str, value: Any) -> None: ...
    def remove(self, path: str) -> None: ...
    def publish_event(self, channel: str, data: dict[str, Any]) -> None: ...
    async def flush(self) -> bool: ...
    async def close(self) -> None: ...


async def publish_demo(
    url: str,
    *,
    symbols: int = 20,
    rate: float = 50.0,
    seed: int | None = None,
    fmt: Literal["json", "msgpack"] = "json",
    duration: float | None = None,
    flush_interval: float = 0.01,
    stop: asyncio.Event | None = None,
    sources: Literal["generic", "b25"] = "generic",
    nats_url: str = "nats://127.0.0.1:4222",
) -> Publisher:
    """Run the demo feed into Redis at ``url`` until ``stop`` is set or ``duration`` passes:
    through the generic contract (docs/redis.md), or with ``sources="b25"`` through the original
    system's (Redis and the NATS server at ``nats_url``; :mod:`dashboard_server.tools.publish_b25`).

    Writes are flushed every ``flush_interval`` seconds; a flush that fails (Redis down) is
    retried at the next, with the newest data. Returns the (closed) publisher for its counters.
    """
    stop = stop or asyncio.Event()
    publisher: Publisher
    if sources == "b25":
        from dashboard_server.tools.publish_b25 import B25Publisher  # it imports merge_patch

        publisher = B25Publisher(url, nats_url)
    else:
        publisher = RedisPublisher(url, fmt=fmt)
    feed = DemoFeed(publisher, symbols=symbols, updates_per_second=rate, seed=seed)
    loop = asyncio.get_running_loop()
    feed_task = loop.create_task(feed.run(stop))
    if duration is not None:
        loop.call_later(duration, stop.set)
    try:
        async with contextlib.aclosing(periodic(flush_interval, stop)) as ticks:
            async for _ in ticks:
                if not await publisher.flush():
                    with contextlib.suppress(TimeoutError):  # back off while Redis is away
                        await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        stop.set()
        await feed_task
        await publisher.flush()
        await publisher.close()
    return publisher
