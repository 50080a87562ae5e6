"""The Redis transport of the sources: keys bootstrapped and watched, and pub/sub channels.

Every Redis source (docs/sources.md) names a ``PREFIX*`` pattern:

- ``redis-pubsub``: the feed PSUBSCRIBEs the pattern; each message is applied by the source's
  outputs. With ``bootstrap`` (the default) the keys of the same pattern are loaded too, for the
  contracts that SET an item and PUBLISH the same payload (the ``generic`` preset, docs/redis.md);
- ``redis-keys``: keys that are only SET. They are loaded with SCAN + MGET, then watched through
  keyspace notifications when the server has them on (``CONFIG GET notify-keyspace-events``;
  this feed never changes the server's configuration), else by a bounded scan every
  ``interval_s``. A key that is deleted, expires or is evicted removes its item.

The item's id is the key (or channel) after the prefix. A raw source's payload *replaces* the item
through the engine's bytes path (no Python objects are built); an empty payload, JSON ``null`` or
MessagePack nil removes it.

:class:`RedisFeed` supervises one connection for all of them: connect with jittered exponential
backoff, PSUBSCRIBE, wait for the confirmations, reload (replace semantics, so clients only see
what really changed; items gone from Redis are removed), then read pub/sub messages while a PING
on the pub/sub connection checks that Redis still answers. Any failure (error, closed socket, a
PING pending with nothing received for ``health_timeout``) ends the session and starts over. A
periodic reload is the safety net against pub/sub messages lost without the connection dropping.

Reload race: a reload reads on another connection while pub/sub messages keep being applied. A
key touched by pub/sub (or a keyspace event) since the reload started is skipped by that reload
(pub/sub holds the newest value), and only items absent from the SCAN *and* untouched during the
reload are removed at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Literal

from redis.asyncio import Redis

from dashboard_server.core.engine import PubSubScannerFactory, is_recoverable
from dashboard_server.core.sources import Source
from dashboard_server.ingest.feed import ConnectedFeed, FeedState, describe_failure
from dashboard_server.ingest.redis.connection import close_quietly, connect_redis, glob_escape
from dashboard_server.ingest.redis.subscriber import Subscriber
from dashboard_server.ingest.router import Resyncs, SourceRouter, is_removal
from dashboard_server.ingest.scanned import MAX_DELAY, Batch
from dashboard_server.telemetry.metrics import RedisMetrics

__all__ = ["RedisFeed", "RedisStalled"]

log = logging.getLogger(__name__)

Reload = Callable[[str, Sequence[Source] | None], Awaitable[None]]
"""Reload the keyed sources (``None``: all) for a trigger (``connect``, ``periodic``, ...)."""

PayloadFormat = Literal["json", "msgpack"]

SCAN_COUNT: Final = 1000
"""COUNT hint of each SCAN call; the keys of one call are read with one MGET."""
YIELD_EVERY: Final = 256
"""Messages handled in a row before yielding to the event loop, where a feed reads one message
at a time (the Redis Cluster feed's per-node readers)."""
PATHS_KEPT: Final = 100_000
"""Channels whose state path is remembered (the cache starts over beyond this)."""


class RedisStalled(ConnectionError):
    """Redis did not answer a PING in time (e.g. the process is stopped)."""


class RedisFeed(ConnectedFeed):
    """Keeps the server's state equal to what Redis holds (see the module doc).

    ``router`` applies the messages of ``sources`` (the Redis ones), ``url`` is the Redis URL;
    ``resyncs``, if given, learns how to bootstrap each keyed source; ``reload_interval``
    (seconds, 0: never) is the period of the safety-net reload; a PING is sent every
    ``health_interval``, and Redis is stalled when one is pending and nothing arrived for
    ``health_timeout`` (also the timeout of every socket operation); reconnects wait a random
    delay between half and all of ``backoff_initial * 2**failures``, capped at ``backoff_max``.
    """

    name = "redis"
    STATES = (FeedState.CONNECTING, FeedState.OK, FeedState.DOWN, FeedState.STALLED)
    """The states this feed goes through (``dashboard_redis_state{state}``)."""

    def __init__(
        self,
        router: SourceRouter,
        *,
        url: str,
        sources: Sequence[Source],
        metrics: RedisMetrics,
        resyncs: Resyncs | None = None,
        reload_interval: float = 30.0,
        health_interval: float = 1.0,
        health_timeout: float = 2.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        rng: random.Random | None = None,
        scanner: PubSubScannerFactory | None = None,
        batch_delay: float = MAX_DELAY,
    ) -> None:
        super().__init__()
        self.router = router
        self.scanner = scanner
        """The engine's ``PubSubScanner`` (None: the default engine's)."""
        self.batch_delay = batch_delay
        """How long a pub/sub batch may be held to conflate more (a fan-out flush applies it
        first: clients never wait for it; HTTP reads and history samples may)."""
        self.url = url
        self.sources = tuple(s for s in sources if s.transport.startswith("redis"))
        self.metrics = metrics
        self.reload_interval = reload_interval
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.rng = rng or random.Random()
        self._pubsub = {s.prefix: s for s in self.sources if s.transport == "redis-pubsub"}
        self._keyed = [s for s in self.sources if s.transport == "redis-keys" or s.bootstrap]
        self._watched = {s.prefix: s for s in self.sources if s.transport == "redis-keys"}
        self._keyspace = ""
        """``__keyspace@{db}__:`` while keyspace notifications are on, else empty."""
        self._by_pattern = {
            (glob_escape(prefix) + "*").encode(): source for prefix, source in self._pubsub.items()
        }
        self._conflate = [p for p, source in self._by_pattern.items() if source.raw]
        self._paths: dict[bytes, tuple[str, str]] = {}
        """Channel -> (state path, channel name) of the raw sources' channels."""
        self._fetch: set[str] = set()
        self._fetch_wanted = asyncio.Event()
        self._touched: list[set[str]] = []
        """One set per reload in progress (a periodic reload, a scan, a resync can overlap):
        the keys pub/sub or a keyspace event touched since that reload started."""
        for source in self._keyed:
            if resyncs is not None:
                resyncs.register(source.name, functools.partial(self.resync, source))
        metrics.state.labels(self._state.value).set(1)

    # --- state -----------------------------------------------------------------------------

    def _state_changed(self, old: FeedState, new: FeedState) -> None:
        self.metrics.state.labels(old.value).set(0)
        self.metrics.state.labels(new.value).set(1)
        self.metrics.connected.set(1 if new is FeedState.OK else 0)

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
        sub: Subscriber | None = None
        try:
            self._keyspace = await self._keyspace_prefix(client) if self._watched else ""
            patterns = self._patterns()
            if patterns:
                sub = await Subscriber.connect(
                    self.url,
                    self._on_batch,
                    self._conflate,
                    timeout=self.health_timeout,
                    max_delay=self.batch_delay,
                    max_payload=self._max_payload(),
                    scanner=self.scanner,
                )
                await sub.psubscribe(patterns, self.health_timeout)
            else:
                await asyncio.wait_for(client.ping(), self.health_timeout)
            self.metrics.connects.inc()
            # a fan-out flush applies the subscriber's pending batch before it reads
            pending: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
            if sub is not None:
                pending = self.router.writer.pending(sub.flush)
            with pending:
                async with asyncio.TaskGroup() as tasks:
                    # only keys that are only SET and no keyspace notifications: nothing to read,
                    # Redis is watched with PINGs on the command connection
                    if sub is not None:
                        tasks.create_task(self._read(sub))
                        tasks.create_task(self._backlog_loop(client, sub))
                    else:
                        tasks.create_task(self._ping_loop(client))
                    reload = functools.partial(self.reload, client)
                    tasks.create_task(self._reload_loop(reload))
                    if self._keyspace:
                        tasks.create_task(self._fetch_loop(client.mget))
                    else:
                        for source in self._watched.values():
                            tasks.create_task(self._scan_loop(reload, source))
        finally:
            self.lag_s = None
            self.router.writer.lag(self.name, None)
            if sub is not None:
                sub.close()
            await close_quietly(client, timeout=self.health_timeout)

    def _patterns(self) -> list[str]:
        patterns = [glob_escape(prefix) + "*" for prefix in self._pubsub]
        if self._keyspace:
            patterns += [self._keyspace + glob_escape(prefix) + "*" for prefix in self._watched]
        return patterns

    async def _keyspace_prefix(self, client: Redis) -> str:
        """``__keyspace@{db}__:`` if the server notifies key changes, expiry and deletion (flags
        ``K`` and ``A``, or ``K`` with ``g``, ``$`` and ``x``), else ``""``: scan instead."""
        try:
            flags = str(
                (await client.config_get("notify-keyspace-events")).get(
                    "notify-keyspace-events", ""
                )
            )
        except Exception as exc:  # CONFIG may be renamed or forbidden: not a failure
            log.info("keyspace notifications unknown; scanning", extra={"error": str(exc)})
            return ""
        on = "K" in flags and ("A" in flags or all(f in flags for f in "g$x"))
        if not on:
            log.info(
                "keyspace notifications off; scanning keys that are only SET",
                extra={
                    "notify_keyspace_events": flags,
                    "sources": sorted(s.name for s in self._watched.values()),
                },
            )
            return ""
        db = client.connection_pool.connection_kwargs.get("db", 0)
        return f"__keyspace@{db}__:"

    async def _read(self, sub: Subscriber) -> None:
        """Watch the pub/sub connection (its messages are applied by :meth:`_on_batch` as they
        are read): PING every ``health_interval`` (the round trip is the lag), fail when a PING
        is pending and nothing at all arrived for ``health_timeout``, or when the connection
        closes."""
        writer = self.router.writer

        def on_lag(lag: float | None) -> None:
            self.lag_s = lag
            writer.lag(self.name, lag)

        await sub.watch(
            interval=self.health_interval,
            stalled_after=self.health_timeout,
            on_lag=on_lag,
            stalled=RedisStalled,
        )

    async def _backlog_loop(self, client: Redis, sub: Subscriber) -> None:
        """Every ``health_interval``: Redis's output buffer for the subscriber (``CLIENT LIST``
        ``omem``), the distance to Redis's ``client-output-buffer-limit pubsub``."""
        if sub.client_id is None:
            return
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                found = await client.client_list(client_id=[sub.client_id])
            except Exception as exc:  # CLIENT may be renamed or forbidden: not a failure
                log.info("subscriber backlog unknown", extra={"error": str(exc)})
                return
            if found:
                backlog = int(found[0].get("omem", 0))
                self.router.writer.lag(self.name, self.lag_s, backlog)

    def _on_batch(self, batch: Batch) -> None:
        """Apply one batch read from the pub/sub connection: the raw sources' latest payload
        per channel with one ``replace_many`` each, then every other message in order."""
        paths = self._paths
        router = self.router
        touched = self._touched
        for pattern, latest in batch.conflated.items():
            source = self._by_pattern[pattern]
            items: list[tuple[str, bytes, str]] = []
            bad = 0
            for channel, payload in latest.items():
                entry = paths.get(channel)  # a channel naming no item is never remembered
                if entry is None:
                    entry = self._raw_path(source, channel)
                if entry is None:
                    bad += 1
                    continue
                path, name = entry
                for keys in touched:
                    keys.add(name)
                items.append((path, payload, name))
            router.apply_conflated(source, items, batch.counts[pattern] - bad)
        for _, channel, payload in batch.ordered:
            self.handle(channel, payload)
        for _, channel, size in batch.oversized:
            self._oversized(channel, size)
        router.writer.batch_applied(self.name)

    def _oversized(self, channel: bytes, size: int) -> None:
        """A message skipped unread: its payload of ``size`` bytes was over every limit."""
        name = channel.decode("utf-8", "replace")
        found = self._source_of(name, self._pubsub)
        label = self.router.label(found[0]) if found is not None else "redis"
        self.router.skipped_oversized(label, name, size, self._max_payload())

    def _max_payload(self) -> int:
        return self.router.largest_item(self._pubsub.values())

    def _raw_path(self, source: Source, channel: bytes) -> tuple[str, str] | None:
        """The (path, name) of a raw source's channel, remembered; None (and counted as
        malformed, once per batch) if the channel names no item."""
        if len(self._paths) >= PATHS_KEPT:
            self._paths.clear()
        label = self.router.label(source)
        try:
            name = channel.decode("utf-8")
        except UnicodeDecodeError:
            self.router.writer.received(label)
            self.router.writer.malformed(label, repr(channel), "channel name is not UTF-8")
            return None
        ident = name[len(source.prefix) :]
        if not ident:
            self.router.writer.received(label)
            self.router.writer.malformed(label, name, "no id after the prefix")
            return None
        try:
            entry = (self.router.item_path(source, ident), name)
        except ValueError as exc:  # an id over max_id_bytes
            self.router.writer.received(label)
            self.router.writer.malformed(label, name[:256], str(exc))
            return None
        self._paths[channel] = entry
        return entry

    async def _ping_loop(self, client: Redis) -> None:
        """PING every ``health_interval``; stalled when one is unanswered for ``health_timeout``."""
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                await asyncio.wait_for(client.ping(), self.health_timeout)
            except TimeoutError:
                raise RedisStalled(f"PING unanswered for {self.health_timeout} s") from None

    # The loops of one session, shared by the cluster feed: ``reload`` reloads the keyed sources
    # (all of them, or those given), ``mget`` reads keys (one node, or one MGET per slot).

    async def _reload_loop(self, reload: Reload) -> None:
        await reload("connect", None)
        self._set_state(FeedState.OK)
        if self.reload_interval <= 0:
            return
        while True:
            await asyncio.sleep(self.reload_interval)
            await reload("periodic", None)

    async def _scan_loop(self, reload: Reload, source: Source) -> None:
        """Without keyspace notifications: a bounded scan of ``source`` every ``interval_s``."""
        while True:
            await asyncio.sleep(source.interval_s)
            await reload("scan", [source])

    async def _fetch_loop(self, mget: Callable[[list[str]], Awaitable[list[Any]]]) -> None:
        """GET the keys that keyspace notifications said were set, a batch per round trip."""
        while True:
            await self._fetch_wanted.wait()
            self._fetch_wanted.clear()
            while self._fetch:
                batch = [self._fetch.pop() for _ in range(min(len(self._fetch), SCAN_COUNT))]
                values = await mget(batch)
                for name, payload in zip(batch, values, strict=True):
                    found = self._source_of(name, self._watched)
                    if found is None:
                        continue
                    source, ident = found
                    if payload is None:
                        self.router.remove(source, ident)
                    elif isinstance(payload, bytes):
                        self.router.apply_bytes(source, ident, payload, where=name)

    async def resync(self, source: Source) -> None:
        """Reload ``source`` on a connection of its own (another transport reconnected)."""
        client = connect_redis(self.url, self.health_timeout)
        try:
            await self.reload(client, "resync", [source])
        finally:
            await close_quietly(client, timeout=self.health_timeout)

    # --- messages --------------------------------------------------------------------------

    @staticmethod
    def _source_of(name: str, sources: dict[str, Source]) -> tuple[Source, str] | None:
        for prefix, source in sources.items():
            if name.startswith(prefix):
                return source, name[len(prefix) :]
        return None

    def handle(self, channel: bytes, payload: bytes) -> None:
        """Apply one pub/sub message or keyspace event (never raises for a bad one)."""
        try:
            name = channel.decode("utf-8")
        except UnicodeDecodeError:
            self.router.writer.malformed("unknown", repr(channel), "channel name is not UTF-8")
            return
        if self._keyspace and name.startswith(self._keyspace):
            self._key_event(name[len(self._keyspace) :], payload)
            return
        found = self._source_of(name, self._pubsub)
        if found is None:
            self.router.writer.malformed("unknown", name, "no source has this channel")
            return
        source, ident = found
        if not ident:
            self.router.writer.received(self.router.label(source))
            self.router.writer.malformed(self.router.label(source), name, "no id after the prefix")
            return
        for touched in self._touched:
            touched.add(name)
        self.router.apply_bytes(source, ident, payload, where=name)

    def _key_event(self, key: str, event: bytes) -> None:
        found = self._source_of(key, self._watched)
        if found is None or not found[1]:
            return
        source, ident = found
        for touched in self._touched:
            touched.add(key)
        if event in _KEY_GONE:
            self.router.writer.received(self.router.label(source))
            self.router.remove(source, ident)
        elif event in _KEY_SET:
            self._fetch.add(key)
            self._fetch_wanted.set()

    # --- reload ----------------------------------------------------------------------------

    async def reload(
        self, client: Redis, trigger: str, sources: Sequence[Source] | None = None
    ) -> None:
        """Make the state of the keyed sources equal to what Redis holds (see the module doc
        for the race rule)."""
        started = time.perf_counter()
        touched: set[str] = set()
        self._touched.append(touched)
        keys = 0
        try:
            for source in self._keyed if sources is None else sources:
                keys += await self._reload_source(client, source, touched)
        finally:
            self._touched.remove(touched)
        self.metrics.reloads.labels(trigger).inc()
        self.metrics.reload_seconds.observe(time.perf_counter() - started)
        self.metrics.reload_keys.set(keys)

    async def _reload_source(self, client: Redis, source: Source, touched: set[str]) -> int:
        seen: set[str] = set()
        pattern = glob_escape(source.prefix) + "*"
        cursor = 0
        pending: list[bytes] = []
        keys = 0
        while True:  # each round trip: MGET of the previous SCAN page + the next SCAN
            async with client.pipeline(transaction=False) as pipe:
                if pending:
                    pipe.mget(pending)
                pipe.scan(cursor, match=pattern, count=SCAN_COUNT)
                results = await pipe.execute()
            if pending:
                self._apply_loaded(source, pending, results[0], touched, seen)
                keys += len(pending)
            cursor, found = results[-1]
            pending = list(found)
            if cursor == 0:
                break
        if pending:
            values = await client.mget(pending)
            self._apply_loaded(source, pending, values, touched, seen)
            keys += len(pending)
        out = source.outputs[0]
        if len(source.outputs) == 1 and out.section is not None and out.id == "key":
            for ident in list(self.router.writer.section_ids(out.section)):
                if ident not in seen and source.prefix + ident not in touched:
                    self.router.remove(source, ident)
        return keys

    def _apply_loaded(
        self,
        source: Source,
        keys: list[bytes],
        values: Sequence[Any],
        touched: set[str],
        seen: set[str],
    ) -> None:
        prefix = len(source.prefix)
        for raw_key, payload in zip(keys, values, strict=True):
            try:
                name = raw_key.decode("utf-8")
            except UnicodeDecodeError:
                label = self.router.label(source)
                self.router.writer.malformed(label, repr(raw_key), "key is not UTF-8")
                continue
            ident = name[prefix:]
            if not ident or payload is None or name in touched:
                continue  # no id; gone or not a string; pub/sub has a newer value
            if is_removal(payload):
                continue  # absent from ``seen``: removed at the end unless touched
            seen.add(ident)  # a malformed payload keeps the item as it was
            self.router.apply_bytes(source, ident, payload, where=name, live=False)


_KEY_SET: Final = frozenset({b"set", b"rename_to", b"restore", b"copy_to", b"setrange", b"append"})
_KEY_GONE: Final = frozenset({b"del", b"expired", b"evicted", b"rename_from"})
