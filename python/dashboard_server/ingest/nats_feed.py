"""The NATS transport of the sources (nats-py): subjects with wildcards, supervised.

One connection serves every ``nats`` source. The feed subscribes to each source's subject
(``orders.updates.>``, ``risk.alerts.>``, ``risk.metrics`` ...) and hands each message to the
:class:`~dashboard_server.ingest.router.SourceRouter` with its subject as the key.

Core NATS is at-most-once: what is published while the connection is down is lost. So the feed
supervises the connection itself (nats-py's own reconnect is off): after every (re)connect and
subscription it asks for the bootstrap of the sources each source names in ``resync`` (the
``order:*`` keys, the account monitor's HTTP), and a lost connection is retried with jittered
exponential backoff. The client PINGs every ``health_interval``; two unanswered pings end the
connection (``stalled``).

Messages of raw sources are conflated per batch: the latest payload per subject wins, and each
batch is applied with one ``replace_many`` at most ``batch_delay`` after its first message, or
sooner: right before a fan-out flush reads the document (``StateWriter.apply_pending``), so
holding a batch never delays a client. Every other message is applied as it comes, in order. Every
``health_interval`` the round trip of a PING is measured (the feed's lag, ``/health`` and
``dashboard_ingest_lag_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from typing import Any, Final

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from dashboard_server.core.sources import Source
from dashboard_server.ingest.feed import ConnectedFeed, FeedState, describe_failure
from dashboard_server.ingest.router import Resyncs, SourceRouter

__all__ = ["NatsFeed", "nats_url"]

log = logging.getLogger(__name__)

MAX_PENDING: Final = 20_000
"""Distinct subjects pending in one batch before it is applied at once."""
BATCH_DELAY: Final = 0.05
"""No raw message waits longer than this (seconds) for its batch to be applied."""


def nats_url(url: str) -> str:
    """``host:port`` as ``nats://host:port``; a URL with a scheme as it is."""
    return url if "://" in url else f"nats://{url}"


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
        batch_delay: float = BATCH_DELAY,
    ) -> None:
        super().__init__()
        self.router = router
        self.url = nats_url(url)
        self.batch_delay = batch_delay
        """How long a batch of raw messages may be held to conflate more."""
        self.sources = tuple(s for s in sources if s.transport == "nats")
        self.resyncs = resyncs
        self.health_interval = health_interval
        self.timeout = timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.rng = rng or random.Random()
        self.connects = 0
        """Successful (re)connections so far."""
        self._pending: dict[str, tuple[Source, dict[str, bytes], list[int]]] = {}
        """Per raw source: the latest payload per subject, and how many messages, since the
        last flush."""
        self._pending_keys = 0
        self._timer: asyncio.TimerHandle | None = None
        self._paths: dict[str, str] = {}
        self._last_slow = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Keep a connection going, reconnecting with backoff, until ``stop`` is set."""
        with self.router.writer.pending(self.flush):
            await self._run(stop)
        self.flush()

    async def _run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            lost = asyncio.Event()
            client: Client | None = None
            try:
                client = await self._connect(lost)
                await self._subscribe(client)
                self.connects += 1
                self.last_error = None
                self._set_state(FeedState.OK)
                failures = 0
                if self.resyncs is not None:
                    for source in self.sources:
                        self.resyncs.request(source.resync, f"nats connected ({source.name})")
                stop_wait = asyncio.ensure_future(stop.wait())
                lost_wait = asyncio.ensure_future(lost.wait())
                lag = asyncio.ensure_future(self._lag_loop(client))
                await asyncio.wait([stop_wait, lost_wait], return_when=asyncio.FIRST_COMPLETED)
                stop_wait.cancel()
                lost_wait.cancel()
                lag.cancel()
                self.lag_s = None
                self.router.writer.lag(self.name, None)
                if not stop.is_set():
                    raise ConnectionError(self.last_error or "connection lost")
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                self.last_error = describe_failure(exc)
                self._set_state(FeedState.DOWN)
                failures += 1
            finally:
                if client is not None and not client.is_closed:
                    try:
                        await asyncio.wait_for(client.close(), self.timeout)
                    except Exception as exc:  # closing a dead connection: nothing to save
                        log.debug("nats close failed", extra={"error": str(exc)})
            if not stop.is_set():
                delay = min(self.backoff_max, self.backoff_initial * 2 ** max(0, failures - 1))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.rng.uniform(delay / 2, delay))
        self._set_state(FeedState.STOPPED)

    async def _connect(self, lost: asyncio.Event) -> Client:
        async def on_disconnect() -> None:
            lost.set()

        async def on_error(exc: Exception) -> None:
            if isinstance(exc, nats.errors.SlowConsumerError):
                # messages were dropped on our side, the connection is fine: reload what can be
                # reloaded (once per burst of drops) instead of reconnecting
                self._slow_consumer(getattr(exc, "subject", "?"))
                return
            self.last_error = describe_failure(exc)
            if isinstance(exc, nats.errors.StaleConnectionError) or "stale" in str(exc).lower():
                self._set_state(FeedState.STALLED)
            lost.set()

        client: Client = await nats.connect(
            self.url,
            allow_reconnect=False,
            connect_timeout=self.timeout,
            ping_interval=max(1, round(self.health_interval)),
            max_outstanding_pings=2,
            disconnected_cb=on_disconnect,
            closed_cb=on_disconnect,
            error_cb=on_error,
            name="dashboard-server",
        )
        return client

    def _slow_consumer(self, subject: str) -> None:
        now = time.monotonic()
        if now - self._last_slow < 1.0:
            return
        self._last_slow = now
        log.warning("nats messages dropped (slow consumer)", extra={"subject": subject})
        if self.resyncs is not None:
            for source in self.sources:
                self.resyncs.request(source.resync, f"nats slow consumer ({source.name})")

    async def _subscribe(self, client: Client) -> None:
        for source in self.sources:
            await client.subscribe(source.pattern, cb=self._handler(source))
        await client.flush(timeout=max(1, round(self.timeout)))  # every subscription is in

    async def _lag_loop(self, client: Client) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                self.lag_s = await client.rtt()
            except Exception as exc:  # the connection's own checks report a lost one
                log.debug("nats rtt failed", extra={"error": str(exc)})
                continue
            self.router.writer.lag(self.name, self.lag_s)

    def _handler(self, source: Source) -> Any:
        router = self.router
        if source.raw:
            latest: dict[str, bytes] = {}
            count = [0]
            self._pending[source.name] = (source, latest, count)

            async def on_raw(msg: Msg) -> None:
                latest[msg.subject] = msg.data
                count[0] += 1
                self._pending_keys += 1
                if self._pending_keys >= MAX_PENDING:
                    self.flush()
                elif self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(
                        self.batch_delay, self.flush
                    )

            return on_raw

        async def on_message(msg: Msg) -> None:
            router.apply_bytes(source, msg.subject, msg.data, where=msg.subject)

        return on_message

    def flush(self) -> None:
        """Apply the raw sources' pending messages: the latest payload per subject, one
        ``replace_many`` per source and payload format."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending_keys = 0
        applied = False
        paths = self._paths
        if len(paths) > 100_000:
            paths.clear()
        for source, latest, count in self._pending.values():
            if not count[0]:
                continue
            items = []
            received = count[0]
            for subject, payload in latest.items():
                path = paths.get(subject)
                if path is None:
                    try:
                        path = paths[subject] = self.router.item_path(source, subject)
                    except ValueError as exc:  # a subject over max_id_bytes
                        label = self.router.label(source)
                        self.router.writer.received(label)
                        self.router.writer.malformed(label, subject[:256], str(exc))
                        received -= 1
                        continue
                items.append((path, payload, subject))
            latest.clear()
            count[0] = 0
            self.router.apply_conflated(source, items, received)
            applied = True
        if applied:
            self.router.writer.batch_applied(self.name)
