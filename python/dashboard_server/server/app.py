"""The server's wiring: state document, write side, feeds, hub, fan-out, HTTP and WebSocket on one
port, and its lifecycle. It decides nothing itself: each part it builds does one job.

:class:`DashboardServer` is used the same way by the CLI and by tests (in-process, ``port=0``)::

    server = DashboardServer(config)
    await server.start()          # listening; server.port is the bound port
    ...                           # feeds (or a test) write through server.writer
    await server.shutdown()       # health 503, clients closed with 1001, everything stopped

The data path (docs/architecture.md): a feed (:mod:`dashboard_server.ingest`) writes into the
:class:`~dashboard_server.ingest.writer.StateWriter`, which applies ops to the engine's
``StateDoc`` and hands events to the :class:`~dashboard_server.fanout.hub.Hub`; the
:class:`~dashboard_server.fanout.scheduler.Fanout` runs each interval's flush and writes what the
hub decided; a :class:`~dashboard_server.server.session.Session` per connection handles what the
client sends. The feed is the Redis feed when ``redis_url`` is set, else the demo feed; the
history sampler runs with either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import CloseCode

from dashboard_server import __version__
from dashboard_server.config import Config, endpoint_url, security_warnings, source_specs
from dashboard_server.core.engine import Engine, StateDocEngine, engine_panics, load_engine
from dashboard_server.core.messages import Messages
from dashboard_server.core.protocol import (
    CLOSE_GOING_AWAY,
    ConnectParams,
    Query,
    parse_connect_query,
)
from dashboard_server.core.shifted import ShiftedDoc
from dashboard_server.fanout.hub import Clock, Hub, SystemClock
from dashboard_server.fanout.scheduler import Fanout, Peer
from dashboard_server.fanout.writer import LISTEN_BACKLOG, deflate_extensions
from dashboard_server.ingest.demo import DemoFeed
from dashboard_server.ingest.feed import Feed, FeedState
from dashboard_server.ingest.http_poll import HttpPollFeed
from dashboard_server.ingest.nats_feed import NatsFeed
from dashboard_server.ingest.redis.cluster import redis_feed
from dashboard_server.ingest.redis.feed import RedisFeed
from dashboard_server.ingest.router import Resyncs, SourceRouter
from dashboard_server.ingest.writer import StateWriter
from dashboard_server.server.auth import Authenticator, select_subprotocol
from dashboard_server.server.gate import Gate, OriginPolicy, ProxyPolicy, connection_class
from dashboard_server.server.gcpolicy import GcPolicy
from dashboard_server.server.history import (
    HistorySampler,
    HistoryStore,
    MemoryHistory,
    RedisHistory,
    history_endpoint,
    series_endpoint,
)
from dashboard_server.server.http import HttpFront
from dashboard_server.server.replica import replication_feeds, replication_health
from dashboard_server.server.session import Session, close_within
from dashboard_server.server.status import SourceHealth, StatusBoard
from dashboard_server.server.web import static_response
from dashboard_server.telemetry.metrics import (
    HistoryMetrics,
    IngestMetrics,
    RedisMetrics,
    ServerMetrics,
)

__all__ = ["DashboardServer"]

log = logging.getLogger(__name__)


class DashboardServer:
    """One running instance (see the module doc). Not reusable after :meth:`shutdown`."""

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.metrics = ServerMetrics()
        self.engine: Engine = load_engine(config.engine)
        self.metrics.set_build_info(__version__, self.engine.name)
        self.doc: StateDocEngine = self.engine.StateDoc(
            sections=config.sections, max_tombstones=config.max_tombstones
        )
        if config.replication_url is not None:  # versions of the shared version space
            self.doc = ShiftedDoc(self.doc)
        self.epoch = uuid.uuid4().hex[:16]
        self.hub: Hub[Peer] = Hub(
            self.doc,
            messages=Messages(self.doc, epoch=self.epoch, observe=self._observe_encode),
            sections=config.sections,
            clock=self.clock,
            high_water=config.write_buffer_high,
            low_water=config.write_buffer_low,
            lag_timeout=config.lag_timeout_s,
            max_pending_events=config.max_pending_events,
            events_kept=config.events_kept,
            metrics=self.metrics,
            symbol_fields=dict(config.symbol_fields),
            status=lambda: self.status_board.current(),
        )
        self.fanout = Fanout(self.hub, self.metrics)
        self.writer = StateWriter(
            self.doc,
            self.hub,
            IngestMetrics(self.metrics.registry),
            sections=config.sections,
            on_panic=self.metrics.engine_panic,
        )
        """The write side: every feed (and a test, or code embedding the server) writes here."""
        self.fanout.before_flush = self.writer.apply_pending
        self.feeds: list[Feed] = []
        """The feeds started by :meth:`start`: those of the sources, or the demo feed."""
        self.source_specs = source_specs(config)
        """The sources feeding the state (none: the demo feed)."""
        self.resyncs = Resyncs()
        """Who bootstraps which source, for the at-most-once transports' reconnects."""
        self.status_board = StatusBoard(
            feed=lambda: self.feed_name,
            sources=self._source_health,
            section_ages=self.writer.section_ages,
            stale_after=config.stale_after(),
            sections=config.sections,
        )
        """What the ``status`` message says (the feed, its sources, the stale sections)."""
        self._gc_policy = GcPolicy()
        self.gate = Gate(
            authenticator=Authenticator(
                tokens=config.auth_tokens,
                jwt_secret=config.jwt_secret,
                leeway_s=config.jwt_leeway_s,
            ),
            origins=OriginPolicy(config.allowed_origins),
            metrics=self.metrics,
            metrics_auth=config.metrics_auth,
            max_connections=config.max_connections,
            max_connections_per_address=config.max_connections_per_address,
            proxies=ProxyPolicy(config.trusted_proxies),
        )
        self.http = HttpFront(
            parse_params=self._parse_params,
            health=self.health,
            metrics=self._render_metrics,
            accepting=lambda: not self._shutting_down,
            static=static_response,
            gate=self.gate,
            history=self._history_response,
        )
        self._ws: Server | None = None
        self._sessions: set[Session] = set()
        self._shutting_down = False
        self._stopped = asyncio.Event()
        self._started_at = time.monotonic()
        history_metrics = HistoryMetrics(self.metrics.registry)
        history_url = config.replication_url or config.redis_url
        coarse = {
            "coarse_ms": round(config.history_downsample_s * 1000),
            "coarse_size": config.history_downsampled_size,
        }
        self.history: HistoryStore = (
            MemoryHistory(config.history_size, history_metrics, **coarse)
            if history_url is None
            else RedisHistory(
                history_url,
                config.history_size,
                history_metrics,
                timeout=config.redis_health_timeout_s,
                **coarse,
            )
        )
        self.history_sampler = HistorySampler(
            self.history,
            sections=[s for s in config.history_sections if s in config.sections],
            interval_ms=round(config.history_interval_s * 1000),
            read_section=self._read_section,
            active=self._feeds_ok,
        )
        self._history_stop = asyncio.Event()
        self._history_task: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the port, start the feed (demo unless Redis is configured) and serve."""
        ping_interval = self.config.ping_interval_s or None
        self._ws = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self.http,
            compression=None,
            extensions=deflate_extensions() if self.config.compression else None,
            max_size=self.config.max_message_size,
            ping_interval=ping_interval,
            ping_timeout=self.config.ping_timeout_s or None,
            close_timeout=self.config.close_timeout_s,
            server_header=None,
            open_timeout=self.config.open_timeout_s,
            select_subprotocol=select_subprotocol,
            create_connection=connection_class(
                self.gate.handshake_timeout, self.gate.oversized_head
            ),
            backlog=LISTEN_BACKLOG,
            reuse_port=self.config.reuse_port or None,
        )
        self._gc_policy.install()
        self._started_at = time.monotonic()
        for feed in self._configured_feeds():
            await self.add_feed(feed)
        if self.history_sampler.sections:
            self._history_task = asyncio.get_running_loop().create_task(
                self.history_sampler.run(self._history_stop)
            )
        log.info(
            "listening",
            extra={
                "host": self.config.host,
                "port": self.port,
                "engine": self.engine.name,
                "epoch": self.epoch,
                "feed": self.feed_name,
            },
        )
        for warning in security_warnings(self.config):
            log.warning(warning)

    def _configured_feeds(self) -> list[Feed]:
        """The feeds the configuration asks for: one per transport connection of the sources
        whose endpoint is set (Redis, NATS, each HTTP source), else the demo feed; in a shared
        version space the stream's follower (and the writer candidate) instead."""
        if self.config.replication_url is not None:
            return replication_feeds(self, self._source_feeds)
        return self._source_feeds(self.writer)

    def set_epoch(self, epoch: str) -> None:
        """Serve in version space ``epoch`` from now on (a new lineage of the shared stream)."""
        self.epoch = epoch
        self.hub.epoch = epoch
        self.hub.messages.epoch = epoch
        log.info("epoch changed", extra={"epoch": epoch, "version": self.doc.version})

    def _source_feeds(self, writer: StateWriter) -> list[Feed]:
        """The feeds of the sources (or the demo feed), writing into ``writer``."""
        c = self.config
        if not self.source_specs:
            if not c.demo:
                return []
            demo = DemoFeed(
                writer,
                symbols=c.demo_symbols,
                updates_per_second=c.demo_rate,
                seed=c.demo_seed,
            )
            return [demo]
        router = SourceRouter(writer, max_item_bytes=c.max_item_bytes, max_id_bytes=c.max_id_bytes)
        on = [s for s in self.source_specs if endpoint_url(c, s.endpoint) is not None]
        feeds: list[Feed] = []
        if c.redis_url is not None and any(s.transport.startswith("redis") for s in on):
            feeds.append(
                redis_feed(
                    router,
                    url=c.redis_url,
                    sources=on,
                    resyncs=self.resyncs,
                    metrics=RedisMetrics(self.metrics.registry, RedisFeed.STATES),
                    mode=c.redis_cluster,
                    sharded_channels=c.redis_sharded_channels,
                    reload_interval=c.redis_reload_interval_s,
                    health_interval=c.redis_health_interval_s,
                    health_timeout=c.redis_health_timeout_s,
                    backoff_initial=c.redis_backoff_initial_s,
                    backoff_max=c.redis_backoff_max_s,
                    scanner=self.engine.PubSubScanner,
                )
            )
        if c.nats_url is not None and any(s.transport == "nats" for s in on):
            feeds.append(
                NatsFeed(
                    router,
                    url=c.nats_url,
                    sources=on,
                    resyncs=self.resyncs,
                    health_interval=c.redis_health_interval_s,
                    timeout=c.redis_health_timeout_s,
                    backoff_initial=c.redis_backoff_initial_s,
                    backoff_max=c.redis_backoff_max_s,
                    scanner=self.engine.NatsScanner,
                )
            )
        for source in on:
            base = endpoint_url(c, source.endpoint)
            if source.transport == "http-poll" and base is not None:
                feeds.append(
                    HttpPollFeed(
                        router,
                        source,
                        base_url=base,
                        resyncs=self.resyncs,
                        timeout=c.redis_health_timeout_s,
                    )
                )
        return feeds

    def source_states(self) -> dict[str, dict[str, Any]]:
        """Every configured source: its transport, endpoint and state (``off``: its endpoint is
        not set)."""
        by_transport: dict[str, Feed] = {}
        for feed in self.feeds:
            if isinstance(feed, RedisFeed) or feed.name == "redis":
                by_transport["redis"] = feed
            elif isinstance(feed, NatsFeed):
                by_transport["nats"] = feed
            elif isinstance(feed, HttpPollFeed):
                by_transport["http:" + feed.source.name] = feed
        out: dict[str, dict[str, Any]] = {}
        for source in self.source_specs:
            key = (
                "http:" + source.name
                if source.transport == "http-poll"
                else "redis"
                if source.transport.startswith("redis")
                else "nats"
            )
            found = by_transport.get(key)
            health = found.health() if found is not None else None
            out[source.name] = {
                "transport": source.transport,
                "endpoint": source.endpoint,
                "state": "off" if health is None else health.state.value,
                "error": None if health is None else health.error,
            }
        return out

    async def add_feed(self, feed: Feed) -> None:
        """Start ``feed`` writing into this server; :meth:`stop_feeds` stops it."""
        self.feeds.append(feed)
        await feed.start()

    async def stop_feeds(self) -> None:
        """Stop every feed and wait for them (the state stays as it is)."""
        for feed in self.feeds:
            await feed.stop()

    @property
    def feed_name(self) -> str:
        """What feeds the state: ``demo``, the sources' preset (``generic``, ``b25``),
        ``custom`` for a list of sources, or ``none``."""
        c = self.config
        if c.replication_url is not None and c.replication_role == "edge":
            return "replica"
        if self.source_specs:
            return c.sources if isinstance(c.sources, str) else "custom" if c.sources else "generic"
        return "demo" if self.feeds else "none"

    def _source_health(self) -> list[SourceHealth]:
        """Every feed's health, for the ``status`` message."""
        healths = []
        for feed in self.feeds:
            health = feed.health()
            healths.append(
                SourceHealth(
                    feed.name, health.state.value, health.since_s, health.error, health.lag_s
                )
            )
        return healths

    def _feeds_ok(self) -> bool:
        return all(f.health().state is FeedState.OK for f in self.feeds)

    async def stop_history(self) -> None:
        """Stop the history sampler and wait for it (what it recorded stays readable)."""
        self._history_stop.set()
        if self._history_task is not None:
            await self._history_task
            self._history_task = None

    @property
    def port(self) -> int:
        """The bound TCP port (useful with ``port=0``)."""
        if self._ws is None:
            raise RuntimeError("server not started")
        return int(self._ws.sockets[0].getsockname()[1])

    @property
    def shutting_down(self) -> bool:
        """True from the start of :meth:`shutdown` on."""
        return self._shutting_down

    def request_shutdown(self) -> None:
        """Start :meth:`shutdown` in the background (signal handlers call this)."""
        if not self._shutting_down:
            asyncio.get_running_loop().create_task(self.shutdown())

    async def wait_stopped(self) -> None:
        """Return once :meth:`shutdown` has finished."""
        await self._stopped.wait()

    async def shutdown(self) -> None:
        """Stop gracefully: health 503 and new ``/ws`` refused, then after ``shutdown_grace_s``
        every client is closed with 1001 (aborted after ``close_timeout_s``), then the listener.
        """
        if self._shutting_down:
            await self._stopped.wait()
            return
        self._shutting_down = True
        log.info("shutting down", extra={"clients": len(self._sessions)})
        try:
            if self.config.shutdown_grace_s > 0:
                await asyncio.sleep(self.config.shutdown_grace_s)
            await self.stop_feeds()
            await self.stop_history()
            await self.history.close()
            await self.fanout.stop()
            await asyncio.gather(
                *(
                    close_within(
                        s.connection,
                        CLOSE_GOING_AWAY,
                        "server shutting down",
                        self.config.close_timeout_s,
                    )
                    for s in list(self._sessions)
                )
            )
            if self._ws is not None:
                # also closes (1001) any connection that slipped in while clients were closed
                self._ws.close(close_connections=True, code=CLOSE_GOING_AWAY)
                with contextlib.suppress(TimeoutError):  # normally immediate: all are closed
                    await asyncio.wait_for(self._ws.wait_closed(), 1.0)
        finally:
            self._gc_policy.uninstall()
            self._stopped.set()
            log.info("stopped")

    # --- connections -----------------------------------------------------------------------

    def _parse_params(self, query: Query) -> ConnectParams:
        return parse_connect_query(
            query,
            sections=self.config.sections,
            tier_intervals=self.config.tier_intervals(),
            min_interval_ms=self.config.min_interval_ms,
            max_interval_ms=self.config.max_interval_ms,
            interval_steps=self.config.allowed_intervals(),
            max_symbols=self.config.max_symbols,
        )

    async def _handle(self, connection: ServerConnection) -> None:
        params = self.http.take_params(connection)
        if params is None or self._shutting_down:
            code, reason = (
                (CLOSE_GOING_AWAY, "server shutting down")
                if self._shutting_down
                else (CloseCode.INTERNAL_ERROR, "no validated parameters")
            )
            await close_within(connection, code, reason, self.config.close_timeout_s)
            return
        principal = self.gate.principal(connection)
        session = Session(
            connection,
            params,
            hub=self.hub,
            metrics=self.metrics,
            config=self.config,
            clock=self.clock,
            allowed_channels=principal.channels,
            remote=self.gate.address(connection),
        )
        expiry = self.gate.watch_expiry(principal, session.close_expired)
        self._sessions.add(session)
        log.debug(
            "client connected",
            extra={
                "remote": session.remote,
                "tier": params.tier,
                "format": params.fmt,
                "diff": params.diff,
                "channels": sorted(params.channels),
                "interval_ms": params.interval_ms,
            },
        )
        try:
            await session.run()
        finally:
            if expiry is not None:
                expiry.cancel()
            self._sessions.discard(session)
            log.debug(
                "client disconnected",
                extra={
                    "remote": session.remote,
                    "close_code": connection.close_code,
                },
            )

    # --- HTTP ------------------------------------------------------------------------------

    def health(self) -> tuple[int, dict[str, Any]]:
        """The ``/health`` status code and body."""
        clients = {"tui": 0, "web": 0}
        for session in self._sessions:
            clients[session.params.tier] += 1
        feeds = {f.name: f.health() for f in self.feeds}
        ok = all(h.state is FeedState.OK for h in feeds.values())
        panics = self.metrics.engine_panic_count()  # the document may be inconsistent
        ok = ok and not panics
        status = "shutting_down" if self._shutting_down else "ok" if ok else "degraded"
        body: dict[str, Any] = {
            "status": status,
            "engine": self.engine.name,
            "epoch": self.epoch,
            "version": self.doc.version,
            "uptime_s": round(time.monotonic() - self._started_at, 3),
            "clients": clients,
            "lagging": self.hub.lagging_count(),
            "groups": self.hub.group_count(),
            "feed": self.feed_name,
            "feeds": {
                name: {
                    "state": h.state.value,
                    "since_s": round(h.since_s, 3),
                    "error": h.error,
                    **({} if h.lag_s is None else {"lag_s": round(h.lag_s, 4)}),
                }
                for name, h in feeds.items()
            },
            "redis": feeds["redis"].state.value if "redis" in feeds else "disabled",
            "engine_panics": panics,
        }
        if "redis" in feeds:  # the keys of the first release, kept for existing probes
            body["redis_since_s"] = round(feeds["redis"].since_s, 3)
            body["redis_error"] = feeds["redis"].error
        if self.source_specs:
            body["sources"] = self.source_states()
        if self.config.replication_url is not None:
            body["replication"] = replication_health(self)
        body["sections"] = self.writer.section_ages()
        return (503 if self._shutting_down else 200), body

    async def _history_response(self, path: str, query: str) -> tuple[int, dict[str, Any]]:
        if path == "/api/v1/history/series":
            return await series_endpoint(
                self.history,
                query,
                types=self.history_sampler.sections,
                interval_ms=self.history_sampler.interval_ms,
            )
        return await history_endpoint(
            self.history,
            query,
            types=self.history_sampler.sections,
            max_limit=self.history.retention.max_points,
            interval_ms=self.history_sampler.interval_ms,
        )

    def _read_section(self, section: str) -> Any:
        try:
            return self.doc.get(f"/{section}")
        except KeyError:
            return None
        except engine_panics() as exc:
            self.metrics.engine_panic("history", exc)
            return None

    def _render_metrics(self) -> bytes:
        self.metrics.state_version.set(self.doc.version)
        return self.metrics.render()

    def _observe_encode(self, fmt: str, kind: str, seconds: float, size: int) -> None:
        duration, by_type, message_size = self.metrics.encoded(fmt, kind)
        duration.observe(seconds)
        by_type.observe(seconds)
        message_size.observe(size)
