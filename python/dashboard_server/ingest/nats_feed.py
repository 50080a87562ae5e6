"""The NATS transport of the sources: subjects with wildcards, supervised.

One connection (:class:`~dashboard_server.ingest.nats_subscriber.NatsSubscriber`, read by the
engine's ``NatsScanner``) serves every ``nats`` source. The feed subscribes to each source's
subject (``orders.updates.>``, ``risk.alerts.>``, ``risk.metrics`` ...) with a subscription id
of its own and hands each message to the :class:`~dashboard_server.ingest.router.SourceRouter`
with its subject as the key.

Core NATS is at-most-once: what is published while the connection is down is lost. So the feed
supervises the connection: after every (re)connect and subscription it asks for the bootstrap of
the sources each source names in ``resync`` (the ``order:*`` keys, the account monitor's HTTP),
and a lost connection is retried with jittered exponential backoff. The feed PINGs every
``health_interval``; the PONG comes after everything the server queued before it, so its round
trip is the lag (``/health``, ``dashboard_ingest_lag_seconds``). A PING unanswered while nothing
at all arrives for ``2 * health_interval`` (at least ``timeout``) ends the connection
(``stalled``); under a burst, data still arriving says the server is alive.

Messages are read in batches (``ingest/scanned.py``): a raw source's latest payload per subject
wins within a batch and the batch is applied with one ``replace_many`` per source; other
messages are applied in order. A batch is applied right before a fan-out flush reads the
document (``StateWriter.apply_pending``), at most ``batch_delay`` after its first message, or at
once when it is big.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Final

from dashboard_server.core.engine import PubSubScannerFactory
from dashboard_server.core.sources import Source
from dashboard_server.ingest.feed import ConnectedFeed, FeedState, describe_failure
from dashboard_server.ingest.nats_subscriber import NatsSubscriber
from dashboard_server.ingest.router import Resyncs, SourceRouter
from dashboard_server.ingest.scanned import MAX_DELAY, Batch

__all__ = ["NatsFeed", "nats_url"]

log = logging.getLogger(__name__)

PATHS_KEPT: Final = 100_000
"""Subject -> state path entries remembered before the memo is cleared."""


def nats_url(url: str) -> str:
    """``host:port`` as ``nats://host:port``; a URL with a scheme as it is."""
    return url if "://" in url else f"nats://{url}"


class NatsStalled(ConnectionError):
    """A PING went unanswered and nothing arrived for too long."""


class NatsFeed(ConnectedFeed):
    """Feeds the ``nats`` sources from the server at ``url`` (see the module doc)."""

    name = "nats"

    def __init__(
        self,
        router: SourceRouter,
        *,
        url: str,
        sources: Sequence[Source],
        resyncs: Resyncs | None = None,
        health_interval: float = 1.0,
        timeout: float = 2.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        rng: random.Random | None = None,
        batch_delay: float = MAX_DELAY,
        scanner: PubSubScannerFactory | None = None,
    ) -> None:
        super().__init__()
        self.router = router
        self.url = nats_url(url)
        self.batch_delay = batch_delay
        """How long a batch may be held to conflate more (a fan-out flush applies it first)."""
        self.scanner = scanner
        """The engine's ``NatsScanner`` (None: the default engine's)."""
        self.sources = tuple(s for s in sources if s.transport == "nats")
        self.resyncs = resyncs
        self.health_interval = health_interval
        self.timeout = timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.rng = rng or random.Random()
        self.connects = 0
        """Successful (re)connections so far."""
        self._by_sid = {str(i).encode(): s for i, s in enumerate(self.sources, start=1)}
        self._conflate = [sid for sid, s in self._by_sid.items() if s.raw]
        self._paths: dict[bytes, tuple[str, str]] = {}
        self._sub: NatsSubscriber | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Keep a connection going, reconnecting with backoff, until ``stop`` is set."""
        with self.router.writer.pending(self._flush):
            await self._run(stop)

    def _flush(self) -> None:
        if self._sub is not None:
            self._sub.flush()

    def _max_payload(self) -> int:
        return self.router.largest_item(self.sources)

    async def _run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            sub: NatsSubscriber | None = None
            try:
                sub = await NatsSubscriber.connect(
                    self.url,
                    self._on_batch,
                    self._conflate,
                    timeout=self.timeout,
                    max_delay=self.batch_delay,
                    max_payload=self._max_payload(),
                    scanner=self.scanner,
                )
                for sid, source in self._by_sid.items():
                    sub.subscribe(source.pattern, int(sid))
                async with asyncio.timeout(self.timeout):
                    await sub.ping()  # every subscription is in
                self._sub = sub
                self.connects += 1
                self.last_error = None
                self._set_state(FeedState.OK)
                failures = 0
                if self.resyncs is not None:
                    for source in self.sources:
                        self.resyncs.request(source.resync, f"nats connected ({source.name})")
                await self._watch(sub, stop)
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                self.last_error = describe_failure(exc)
                self._set_state(
                    FeedState.STALLED if isinstance(exc, NatsStalled) else FeedState.DOWN
                )
                failures += 1
            finally:
                self.lag_s = None
                self.router.writer.lag(self.name, None)
                if sub is not None:
                    sub.flush()  # what was read before the end is applied
                    sub.close()
                self._sub = None
            if not stop.is_set():
                delay = min(self.backoff_max, self.backoff_initial * 2 ** max(0, failures - 1))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.rng.uniform(delay / 2, delay))
        self._set_state(FeedState.STOPPED)

    async def _watch(self, sub: NatsSubscriber, stop: asyncio.Event) -> None:
        """Until ``stop`` or the connection ends (raised): PING every ``health_interval``, the
        round trip is the lag; stalled when a PING is pending and nothing at all arrived for
        ``2 * health_interval`` (at least ``timeout``)."""

        def on_lag(lag: float | None) -> None:
            self.lag_s = lag
            self.router.writer.lag(self.name, lag)

        await sub.watch(
            interval=self.health_interval,
            stalled_after=max(2 * self.health_interval, self.timeout),
            on_lag=on_lag,
            stalled=NatsStalled,
            stop=stop,
        )

    def _on_batch(self, batch: Batch) -> None:
        """Apply one batch: each raw source's latest payload per subject with one
        ``replace_many``, then every other message in order, then the oversized ones (counted
        as malformed)."""
        router = self.router
        if len(self._paths) >= PATHS_KEPT:
            self._paths.clear()
        for sid, latest in batch.conflated.items():
            source = self._by_sid[sid]
            items: list[tuple[str, bytes, str]] = []
            bad = 0
            for subject_key, payload in latest.items():
                entry = self._paths.get(subject_key) or self._raw_path(source, subject_key)
                if entry is None:
                    bad += 1
                    continue
                items.append((entry[0], payload, entry[1]))
            router.apply_conflated(source, items, batch.counts[sid] - bad)
        for sid, subject_bytes, payload in batch.ordered:
            found = self._by_sid.get(sid)
            text = self._subject(found, subject_bytes)
            if found is not None and text is not None:
                router.apply_bytes(found, text, payload, where=text)
        for sid, subject_bytes, size in batch.oversized:
            found = self._by_sid.get(sid)
            if found is not None:
                name = subject_bytes.decode("utf-8", "replace")
                router.skipped_oversized(router.label(found), name, size, self._max_payload())
        router.writer.batch_applied(self.name)

    def _subject(self, source: Source | None, subject: bytes) -> str | None:
        """A subject as text; None (counted as malformed) if it is not UTF-8."""
        try:
            return subject.decode("utf-8")
        except UnicodeDecodeError:
            if source is not None:
                label = self.router.label(source)
                self.router.writer.received(label)
                self.router.writer.malformed(label, repr(subject), "subject is not UTF-8")
            return None

    def _raw_path(self, source: Source, subject_bytes: bytes) -> tuple[str, str] | None:
        """The (path, subject) of a raw source's subject, remembered; None (counted as
        malformed) if the subject names no item."""
        subject = self._subject(source, subject_bytes)
        if subject is None:
            return None
        try:
            entry = (self.router.item_path(source, subject), subject)
        except ValueError as exc:  # a subject over max_id_bytes
            label = self.router.label(source)
            self.router.writer.received(label)
            self.router.writer.malformed(label, subject[:256], str(exc))
            return None
        self._paths[subject_bytes] = entry
        return entry
