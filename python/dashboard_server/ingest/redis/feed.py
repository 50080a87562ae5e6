"""Redis ingest: the state and events the trading backends keep in Redis, fed into the server.

The contract (docs/redis.md): a backend writes each item as JSON or MessagePack under the key
``{section}:{id}`` and PUBLISHes the same payload on the channel of the same name. The ingest
PSUBSCRIBEs ``{section}:*`` for every state section and ``trades:*``, ``fills:*``, ``alerts:*``
for the events, then loads the existing keys with SCAN + MGET. Each item payload *replaces* the
item at ``/{section}/{id}`` (through the engine's bytes path: no Python objects are built); an
empty payload, JSON ``null`` or MessagePack nil removes it.

:class:`RedisIngest` supervises the connection: connect with jittered exponential backoff,
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
import enum
import logging
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal, Protocol

import msgpack
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from dashboard_server.core.engine import EnginePanic, is_recoverable
from dashboard_server.core.protocol import EVENT_CHANNELS
from dashboard_server.core.values import decode_payload

__all__ = [
    "IngestTarget",
    "RedisIngest",
    "RedisMetrics",
    "RedisStalled",
    "RedisState",
    "connect_redis",
    "is_removal",
    "payload_format",
    "pointer_token",
]

log = logging.getLogger(__name__)

PayloadFormat = Literal["json", "msgpack"]

SCAN_COUNT: Final = 1000
"""COUNT hint of each SCAN call; the keys of one call are read with one MGET."""
YIELD_EVERY: Final = 256
"""Pub/sub messages handled in a row before yielding to the event loop (flushes keep running)."""
LOG_BURST: Final = 10
"""Malformed-payload warnings logged per second at most; the others are counted and summed up."""


class RedisState(enum.StrEnum):
    """The ingest's view of Redis, as ``/health`` reports it."""

    CONNECTING = "connecting"
    """Not connected yet, or (re)subscribed and reloading: the state may be stale."""
    OK = "ok"
    """Subscribed, reloaded, and answering PINGs."""
    DOWN = "down"
    """The connection failed or was lost; retrying with backoff."""
    STALLED = "stalled"
    """Connected, but a PING is pending and nothing arrived for ``health_timeout``; reconnecting."""


class RedisStalled(ConnectionError):
    """Redis did not answer a PING in time (e.g. the process is stopped)."""


class IngestTarget(Protocol):
    """What the ingest writes into (the server implements it)."""

    def replace_bytes(self, path: str, payload: bytes, fmt: PayloadFormat) -> bool:
        """Make the value at ``path`` equal to the decoded payload; True if it changed."""
        ...

    def remove(self, path: str) -> None:
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


def pointer_token(text: str) -> str:
    """``text`` escaped as one RFC 6901 JSON Pointer token (``~`` -> ``~0``, ``/`` -> ``~1``)."""
    return text.replace("~", "~0").replace("/", "~1")


def glob_escape(text: str) -> str:
    """``text`` escaped for a Redis glob pattern (PSUBSCRIBE, SCAN MATCH)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def connect_redis(url: str, timeout: float) -> Redis:
    """A client for ``url`` that never retries on its own and times out every socket operation.

    redis-py's own retries would hide a lost connection (and re-subscribe silently, losing the
    messages published meanwhile); the ingest supervises the connection itself instead.
    """
    client: Redis = Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return client


async def close_quietly(*closables: Redis | PubSub, timeout: float = 1.0) -> None:
    """Close Redis clients / pub/sub objects, giving up after ``timeout`` (a stopped peer)."""
    for closable in closables:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(closable.aclose(), timeout)


def describe(exc: BaseException) -> str:
    """A one-line description of a failure (the first one of an exception group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RedisMetrics:
    """Ingest and Redis connection metrics, registered in the server's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "dashboard_ingest_messages",
            "Pub/sub messages received from Redis, by section (or event channel).",
            ["section"],
            registry=registry,
        )
        self.malformed = Counter(
            "dashboard_ingest_malformed",
            "Payloads or keys skipped because they could not be used, by section.",
            ["section"],
            registry=registry,
        )
        self.reloads = Counter(
            "dashboard_redis_reloads",
            "Reloads of the state from Redis (SCAN + MGET), by trigger (connect, periodic).",
            ["trigger"],
            registry=registry,
        )
        self.reload_seconds = Histogram(
            "dashboard_redis_reload_seconds",
            "Duration of a reload from Redis.",
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0),
        )
        self.reload_keys = Gauge(
            "dashboard_redis_reload_keys", "Keys read by the last reload.", registry=registry
        )
        self.connected = Gauge(
            "dashboard_redis_connected",
            "1 while the ingest is subscribed, reloaded and Redis answers PINGs, else 0.",
            registry=registry,
        )
        self.state = Gauge(
            "dashboard_redis_state",
            "The ingest's Redis state: 1 for the current one (connecting, ok, down, stalled).",
            ["state"],
            registry=registry,
        )
        self.connects = Counter(
            "dashboard_redis_connects",
            "Successful (re)subscriptions to Redis.",
            registry=registry,
        )
        self.disconnects = Counter(
            "dashboard_redis_disconnects",
            "Failed connection attempts and lost connections, by reason (error, stalled).",
            ["reason"],
            registry=registry,
        )
        for state in RedisState:
            self.state.labels(state.value).set(0)


class _LogLimiter:
    """At most ``burst`` log lines per second; counts the ones it holds back."""

    def __init__(self, burst: int) -> None:
        self.burst = burst
        self.window = 0
        self.logged = 0
        self.suppressed = 0

    def allow(self) -> tuple[bool, int]:
        """Whether to log now, and how many lines were held back since the last one logged."""
        second = int(time.monotonic())
        if second != self.window:
            self.window, self.logged = second, 0
        if self.logged >= self.burst:
            self.suppressed += 1
            return False, 0
        self.logged += 1
        held, self.suppressed = self.suppressed, 0
        return True, held


class RedisIngest:
    """Keeps the server's state equal to what Redis holds (see the module doc).

    ``target`` receives the ops and events, ``url`` is the Redis URL, ``sections`` the state
    sections to subscribe to and load; ``reload_interval`` (seconds, 0: never) is the period of
    the safety-net reload; a PING is sent every ``health_interval``, and Redis is stalled when
    one is pending and nothing arrived for ``health_timeout`` (also the timeout of every socket
    operation); reconnects wait a random
    delay between half and all of ``backoff_initial * 2**failures``, capped at ``backoff_max``.
    """

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
        max_item_bytes: int = 65_536,
        max_id_bytes: int = 256,
        rng: random.Random | None = None,
    ) -> None:
        self.target = target
        self.url = url
        self.sections = tuple(sections)
        self.metrics = metrics
        self.reload_interval = reload_interval
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_item_bytes = max_item_bytes
        """Longer item or event payloads are malformed (skipped, counted)."""
        self.max_id_bytes = max_id_bytes
        """Longer ids (the part of the key after ``{section}:``, UTF-8) are malformed."""
        self.rng = rng or random.Random()
        self.last_error: str | None = None
        """Why the last session ended or the last attempt failed."""
        self._state = RedisState.CONNECTING
        self._state_since = time.monotonic()
        self._patterns = [glob_escape(s) + ":*" for s in (*self.sections, *EVENT_CHANNELS)]
        self._section_set = frozenset(self.sections)
        self._touched: set[str] | None = None
        self._message_counters: dict[str, Any] = {}
        self._malformed_counters: dict[str, Any] = {}
        self._log_limiter = _LogLimiter(LOG_BURST)
        metrics.state.labels(self._state.value).set(1)

    # --- state -----------------------------------------------------------------------------

    @property
    def state(self) -> RedisState:
        """The current connection state."""
        return self._state

    @property
    def state_age(self) -> float:
        """Seconds spent in the current state."""
        return time.monotonic() - self._state_since

    def _set_state(self, state: RedisState) -> None:
        if state is self._state:
            return
        log.log(
            logging.INFO if state is RedisState.OK else logging.WARNING,
            "redis state changed",
            extra={"from": self._state.value, "to": state.value, "error": self.last_error},
        )
        self.metrics.state.labels(self._state.value).set(0)
        self.metrics.state.labels(state.value).set(1)
        self.metrics.connected.set(1 if state is RedisState.OK else 0)
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
            except BaseException as exc:  # an engine panic is a BaseException (and a group)
                if not is_recoverable(exc):
                    raise  # cancelled, KeyboardInterrupt, SystemExit
                self.last_error = describe(exc)
                stalled = isinstance(exc, RedisStalled) or (
                    isinstance(exc, BaseExceptionGroup) and exc.subgroup(RedisStalled) is not None
                )
                self.metrics.disconnects.labels("stalled" if stalled else "error").inc()
                was_ok = self._state is RedisState.OK
                self._set_state(RedisState.STALLED if stalled else RedisState.DOWN)
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
        self._set_state(RedisState.OK)
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
        counter = self._message_counters.get(section)
        if counter is None:
            counter = self._message_counters[section] = self.metrics.messages.labels(section)
        counter.inc()
        if not item_id:
            self._malformed(section, name, "no id after the section name")
            return
        if section in self._section_set:
            if self._touched is not None:
                self._touched.add(name)
            if self._apply(section, name, item_id, payload):
                self.target.note_section_update(section)
        elif section in EVENT_CHANNELS:
            oversized = self._oversized(name, item_id, payload)
            if oversized is not None:
                self._malformed(section, name[:64], oversized)
            else:
                self._event(section, name, payload)
        else:
            self._malformed(section, name, "not a subscribed section")

    def _oversized(self, name: str, item_id: str, payload: bytes) -> str | None:
        """Why ``payload`` or ``item_id`` is over its size limit, if it is."""
        id_bytes = len(item_id) if item_id.isascii() else len(item_id.encode("utf-8", "replace"))
        if id_bytes > self.max_id_bytes:
            return f"id of {id_bytes} bytes over redis_max_id_bytes ({self.max_id_bytes})"
        if len(payload) > self.max_item_bytes:
            return (
                f"payload of {len(payload)} bytes over redis_max_item_bytes ({self.max_item_bytes})"
            )
        return None

    def _apply(self, section: str, name: str, item_id: str, payload: bytes) -> bool:
        """Replace (or remove) one item; False if the payload was malformed."""
        oversized = self._oversized(name, item_id, payload)
        if oversized is not None:
            self._malformed(section, name[:64], oversized)
            return False
        path = f"/{section}/{pointer_token(item_id)}"
        try:
            if is_removal(payload):
                self.target.remove(path)
            else:
                self.target.replace_bytes(path, payload, payload_format(payload))
        except ValueError as exc:
            self._malformed(section, name, str(exc))
            return False
        except EnginePanic:  # logged and counted by the server; the next items still go in
            return False
        return True

    def _event(self, channel: str, name: str, payload: bytes) -> None:
        try:
            # the state's value rules, as for items: no int beyond 64 bits, no NaN/Infinity
            data: Any = decode_payload(payload, payload_format(payload))
            if not isinstance(data, dict):
                raise ValueError(f"an event must be an object, not {type(data).__name__}")
            self.target.publish_event(channel, data)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            self._malformed(channel, name, str(exc) or type(exc).__name__)

    def _malformed(self, section: str, name: str, reason: str) -> None:
        counter = self._malformed_counters.get(section)
        if counter is None:
            counter = self._malformed_counters[section] = self.metrics.malformed.labels(section)
        counter.inc()
        allowed, held = self._log_limiter.allow()
        if allowed:
            log.warning(
                "malformed payload skipped",
                extra={"channel": name, "reason": reason, "suppressed": held},
            )

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
                        self.target.remove(f"/{section}/{pointer_token(item_id)}")
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
