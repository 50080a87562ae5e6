"""Redis ingest: the state and events the trading backends keep in Redis, fed into the server.

The contract (docs/redis.md): a backend writes each item as JSON or MessagePack under the key
``{section}:{id}`` and PUBLISHes the same payload on the channel of the same name. The ingest
PSUBSCRIBEs ``{section}:*`` for every state section and ``trades:*``, ``fills:*``, ``alerts:*``
for the events, then loads the existing keys with SCAN + MGET. Each item payload *replaces* the
item at ``/{section}/{id}`` (through the engine's bytes path: no Python objects are built); an
empty payload, JSON ``null`` or MessagePack nil removes it.

:class:`RedisFeed` supervises the connection: connect with jittered exponential backoff,
PSUBSCRIBE, wait for the confirmations, reload (replace semantics, so clients only see what
really changed; items gone from Redis are removed), then read pub/sub messages while a PING on
the pub/sub connection checks that Redis still answers. Any failure (error, closed socket, a PING
pending with nothing received for ``health_timeout``) ends the session and starts over. A
periodic reload is the safety net against pub/sub messages lost without the connection dropping.

Reload race: a reload reads on another connection while pub/sub messages keep being applied. A
key touched by pub/sub since the reload started is skipped by that reload (every SET is followed
by a PUBLISH of the same payload, so pub/sub holds the newest value), and only items absent from
the SCAN *and* untouched during the reload are removed at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal, Protocol

import msgpack
import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from dashboard_server.core.pointer import escape_token
from dashboard_server.core.protocol import EVENT_CHANNELS
from dashboard_server.ingest.feed import FeedHealth, FeedState, TaskFeed, describe_failure
from dashboard_server.ingest.redis.connection import close_quietly, connect_redis, glob_escape
from dashboard_server.telemetry.metrics import RedisMetrics

__all__ = [
    "IngestTarget",
    "RedisFeed",
    "RedisStalled",
    "is_removal",
    "payload_format",
]

log = logging.getLogger(__name__)

PayloadFormat = Literal["json", "msgpack"]

SCAN_COUNT: Final = 1000
"""COUNT hint of each SCAN call; the keys of one call are read with one MGET."""
YIELD_EVERY: Final = 256
"""Pub/sub messages handled in a row before yielding to the event loop (flushes keep running)."""


class RedisStalled(ConnectionError):
    """Redis did not answer a PING in time (e.g. the process is stopped)."""


def payload_format(payload: bytes) -> PayloadFormat:
    """How a payload is encoded: JSON if its first byte is ASCII (below 0x80), else MessagePack.

    Every JSON text starts with an ASCII byte (``{``, ``[``, a digit, whitespace, ...); a
    MessagePack map, array, string, float, nil or negative int starts with a byte of 0x80 or
    more. The one overlap, a top-level MessagePack positive fixint, is read as JSON.
    """
    return "msgpack" if payload and payload[0] >= 0x80 else "json"


def is_removal(payload: bytes) -> bool:
    """An empty payload, JSON ``null`` (whitespace allowed) or MessagePack nil: remove the item."""
    return not payload or payload == b"\xc0" or (len(payload) <= 32 and payload.strip() == b"null")


class IngestTarget(Protocol):
    """What the feed writes into: the write side (:class:`~dashboard_server.ingest.writer.
    StateWriter` implements it)."""

    def replace_bytes(self, path: str, payload: bytes, fmt: PayloadFormat) -> bool:
        """Make the value at ``path`` equal to the decoded payload; True if it changed."""
        ...

    def remove(self, path: str) -> bool:
        """Remove the value at ``path`` (absent: nothing happens)."""
        ...

    def publish_event(self, channel: str, data: dict[str, Any]) -> None:
        """Queue a never-conflated event on ``channel``."""
        ...

    def note_section_update(self, section: str) -> None:
        """A live update for ``section`` arrived (even if it changed nothing): for staleness."""
        ...

    def section_ids(self, section: str) -> Iterable[str]:
        """The ids of the items the state holds in ``section``."""
        ...

    def received(self, section: str) -> None:
        """Count one message for ``section``."""
        ...

    def malformed(self, section: str, name: str, reason: str) -> None:
        """Count and log a message that could not be used."""
        ...


class RedisFeed(TaskFeed):
    """Keeps the server's state equal to what Redis holds (see the module doc).

    ``target`` receives the ops and events, ``url`` is the Redis URL, ``sections`` the state
    sections to subscribe to and load; ``reload_interval`` (seconds, 0: never) is the period of
    the safety-net reload; a PING is sent every ``health_interval``, and Redis is stalled when
    one is pending and nothing arrived for ``health_timeout`` (also the timeout of every socket
    operation); reconnects wait a random delay between half and all of
    ``backoff_initial * 2**failures``, capped at ``backoff_max``.
    """

    name = "redis"
    STATES = (FeedState.CONNECTING, FeedState.OK, FeedState.DOWN, FeedState.STALLED)
    """The states this feed goes through (``dashboard_redis_state{state}``)."""

    def __init__(
        self,
        target: IngestTarget,
        *,
        url: str,
        sections: Sequence[str],
        metrics: RedisMetrics,
        reload_interval: float = 30.0,
        health_interval: float = 1.0,
        health_timeout: float = 2.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self.target = target
        self.url = url
        self.sections = tuple(sections)
        self.metrics = metrics
        self.reload_interval = reload_interval
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.rng = rng or random.Random()
        self.last_error: str | None = None
        """Why the last session ended or the last attempt failed."""
        self._state = FeedState.CONNECTING
        self._state_since = time.monotonic()
        self._patterns = [glob_escape(s) + ":*" for s in (*self.sections, *EVENT_CHANNELS)]
        self._section_set = frozenset(self.sections)
        self._touched: set[str] | None = None
        metrics.state.labels(self._state.value).set(1)

    # --- state -----------------------------------------------------------------------------

    @property
    def state(self) -> FeedState:
        """The current connection state."""
        return self._state

    @property
    def state_age(self) -> float:
        """Seconds spent in the current state."""
        return time.monotonic() - self._state_since

    def health(self) -> FeedHealth:
        """The connection state (a failure of the feed itself wins), its age and last error."""
        failed = super().health()
        if failed.state is FeedState.DOWN:
            return failed
        return FeedHealth(self._state, self.state_age, self.last_error)

    def _set_state(self, state: FeedState) -> None:
        if state is self._state:
            return
        log.log(
            logging.INFO if state is FeedState.OK else logging.WARNING,
            "redis state changed",
            extra={"from": self._state.value, "to": state.value, "error": self.last_error},
        )
        self.metrics.state.labels(self._state.value).set(0)
        self.metrics.state.labels(state.value).set(1)
        self.metrics.connected.set(1 if state is FeedState.OK else 0)
        self._state = state
        self._state_since = time.monotonic()

    # --- supervision -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Keep a session with Redis going, reconnecting after any failure, until ``stop``."""
        supervisor = asyncio.get_running_loop().create_task(self._supervise())
        try:
            await stop.wait()
        finally:
            # A cancellation can be swallowed when a library call completes at the same moment
            # (asyncio.wait_for in Python 3.11 does this), and the supervisor would then loop on
            # forever: cancel again until it has really ended.
            while not supervisor.done():
                supervisor.cancel()
                await asyncio.wait([supervisor], timeout=0.5)
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor

    async def _supervise(self) -> None:
        failures = 0
        while True:
            try:
                await self._session()
            except Exception as exc:
                self.last_error = describe_failure(exc)
                stalled = isinstance(exc, RedisStalled) or (
                    isinstance(exc, BaseExceptionGroup) and exc.subgroup(RedisStalled) is not None
                )
                self.metrics.disconnects.labels("stalled" if stalled else "error").inc()
                was_ok = self._state is FeedState.OK
                self._set_state(FeedState.STALLED if stalled else FeedState.DOWN)
                failures = 0 if was_ok else failures + 1
            delay = min(self.backoff_max, self.backoff_initial * 2**failures)
            await asyncio.sleep(self.rng.uniform(delay / 2, delay))

    async def _session(self) -> None:
        """One connection: subscribe, reload, then read and reload until something fails."""
        client = connect_redis(self.url, self.health_timeout)
        pubsub = client.pubsub()
        try:
            await pubsub.psubscribe(*self._patterns)
            await self._await_subscribed(pubsub)
            self.metrics.connects.inc()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._read(pubsub))
                tasks.create_task(self._reload_loop(client))
        finally:
            await close_quietly(pubsub, client, timeout=self.health_timeout)

    async def _await_subscribed(self, pubsub: PubSub) -> None:
        """Read until Redis has confirmed every pattern (so a reload cannot miss a message)."""
        pending = len(self._patterns)
        async with asyncio.timeout(self.health_timeout):
            while pending:
                message = await pubsub.get_message(timeout=self.health_timeout)
                if message is None:
                    continue
                if message["type"] == "psubscribe":
                    pending -= 1
                elif message["type"] == "pmessage":
                    self.handle(message["channel"], message["data"])

    async def _read(self, pubsub: PubSub) -> None:
        """Apply pub/sub messages; PING every ``health_interval``; fail when a PING is pending
        and nothing at all arrived for ``health_timeout``.

        The PONG comes after every message published before it, so under a burst it can take
        longer than ``health_timeout``: as long as messages keep arriving, Redis is alive.
        """
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.health_interval
        ping_sent: float | None = None
        last_data = loop.time()
        handled = 0
        while True:
            now = loop.time()
            if ping_sent is None and now >= next_ping:
                await pubsub.ping()
                ping_sent = now
            if ping_sent is None:
                wait = next_ping - now
            else:
                silent_since = max(ping_sent, last_data)
                if now - silent_since > self.health_timeout:
                    raise RedisStalled(f"PING unanswered and no data for {self.health_timeout} s")
                wait = silent_since + self.health_timeout - now
            message = await pubsub.get_message(timeout=max(wait, 0.001))
            if message is None:
                continue
            last_data = loop.time()
            kind = message["type"]
            if kind == "pmessage":
                self.handle(message["channel"], message["data"])
                handled += 1
                if handled % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            elif kind == "pong":
                ping_sent = None
                next_ping = loop.time() + self.health_interval

    async def _reload_loop(self, client: Redis) -> None:
        await self.reload(client, "connect")
        self._set_state(FeedState.OK)
        if self.reload_interval <= 0:
            return
        while True:
            await asyncio.sleep(self.reload_interval)
            await self.reload(client, "periodic")

    # --- messages --------------------------------------------------------------------------

    def handle(self, channel: bytes, payload: bytes) -> None:
        """Apply one pub/sub message (never raises for a bad channel or payload)."""
        try:
            name = channel.decode("utf-8")
        except UnicodeDecodeError:
            self._malformed("unknown", repr(channel), "channel name is not UTF-8")
            return
        section, _, item_id = name.partition(":")
        self.target.received(section)
        if not item_id:
            self._malformed(section, name, "no id after the section name")
            return
        if section in self._section_set:
            if self._touched is not None:
                self._touched.add(name)
            if self._apply(section, name, item_id, payload):
                self.target.note_section_update(section)
        elif section in EVENT_CHANNELS:
            self._event(section, name, payload)
        else:
            self._malformed(section, name, "not a subscribed section")

    def _apply(self, section: str, name: str, item_id: str, payload: bytes) -> bool:
        """Replace (or remove) one item; False if the payload was malformed."""
        path = f"/{section}/{escape_token(item_id)}"
        try:
            if is_removal(payload):
                self.target.remove(path)
            else:
                self.target.replace_bytes(path, payload, payload_format(payload))
        except ValueError as exc:
            self._malformed(section, name, str(exc))
            return False
        return True

    def _event(self, channel: str, name: str, payload: bytes) -> None:
        try:
            data: Any = (
                msgpack.unpackb(payload, raw=False)
                if payload_format(payload) == "msgpack"
                else orjson.loads(payload)
            )
            if not isinstance(data, dict):
                raise ValueError(f"an event must be an object, not {type(data).__name__}")
            self.target.publish_event(channel, data)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            self._malformed(channel, name, str(exc) or type(exc).__name__)

    def _malformed(self, section: str, name: str, reason: str) -> None:
        self.target.malformed(section, name, reason)

    # --- reload ----------------------------------------------------------------------------

    async def reload(self, client: Redis, trigger: str) -> None:
        """Make the state equal to what Redis holds (see the module doc for the race rule)."""
        started = time.perf_counter()
        touched: set[str] = set()
        self._touched = touched
        keys = 0
        try:
            for section in self.sections:
                seen: set[str] = set()
                pattern = glob_escape(section) + ":*"
                cursor = 0
                pending: list[bytes] = []
                while True:  # each round trip: MGET of the previous SCAN page + the next SCAN
                    async with client.pipeline(transaction=False) as pipe:
                        if pending:
                            pipe.mget(pending)
                        pipe.scan(cursor, match=pattern, count=SCAN_COUNT)
                        results = await pipe.execute()
                    if pending:
                        self._apply_loaded(section, pending, results[0], touched, seen)
                        keys += len(pending)
                    cursor, found = results[-1]
                    pending = list(found)
                    if cursor == 0:
                        break
                if pending:
                    values = await client.mget(pending)
                    self._apply_loaded(section, pending, values, touched, seen)
                    keys += len(pending)
                for item_id in list(self.target.section_ids(section)):
                    if item_id not in seen and f"{section}:{item_id}" not in touched:
                        self.target.remove(f"/{section}/{escape_token(item_id)}")
        finally:
            self._touched = None
        self.metrics.reloads.labels(trigger).inc()
        self.metrics.reload_seconds.observe(time.perf_counter() - started)
        self.metrics.reload_keys.set(keys)

    def _apply_loaded(
        self,
        section: str,
        keys: list[bytes],
        values: Sequence[Any],
        touched: set[str],
        seen: set[str],
    ) -> None:
        prefix = len(section) + 1
        for raw_key, payload in zip(keys, values, strict=True):
            try:
                name = raw_key.decode("utf-8")
            except UnicodeDecodeError:
                self._malformed(section, repr(raw_key), "key is not UTF-8")
                continue
            item_id = name[prefix:]
            if not item_id or payload is None or name in touched:
                continue  # no id; gone or not a string; pub/sub has a newer value
            if is_removal(payload):
                continue  # absent from ``seen``: removed at the end unless touched
            seen.add(item_id)  # a malformed payload keeps the item as it was
            self._apply(section, name, item_id, payload)
