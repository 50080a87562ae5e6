"""The server: state document, hub, fan-out, HTTP and WebSocket on one port, and its lifecycle.

:class:`DashboardServer` is used the same way by the CLI and by tests (in-process, ``port=0``)::

    server = DashboardServer(config)
    await server.start()          # listening; server.port is the bound port
    ...                           # server.sink (the server itself) takes ingest ops and events
    await server.shutdown()       # health 503, clients closed with 1001, everything stopped

It is also the :class:`~dashboard_server.ingest.writer.StateSink` the feeds write into: state ops
go to
the engine's ``StateDoc``, events to the hub. The feed is the Redis ingest when ``redis_url`` is
set (:mod:`dashboard_server.ingest.redis.feed`), else the demo feed; the history sampler
(:mod:`dashboard_server.server.history`) runs with either.
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
from dashboard_server.config import Config, security_warnings
from dashboard_server.core.engine import Engine, load_engine
from dashboard_server.core.protocol import (
    CLOSE_GOING_AWAY,
    EVENT_CHANNELS,
    ConnectParams,
    parse_connect_query,
)
from dashboard_server.fanout.hub import Clock, Hub, SystemClock
from dashboard_server.fanout.scheduler import LISTEN_BACKLOG, Fanout, Peer, deflate_extensions
from dashboard_server.ingest.redis.feed import PayloadFormat, RedisIngest, RedisMetrics, RedisState
from dashboard_server.server.auth import Authenticator, select_subprotocol
from dashboard_server.server.gate import Gate, OriginPolicy, ProxyPolicy, connection_class
from dashboard_server.server.gcpolicy import GcPolicy
from dashboard_server.server.history import (
    HistoryMetrics,
    HistorySampler,
    HistoryStore,
    MemoryHistory,
    RedisHistory,
    history_endpoint,
)
from dashboard_server.server.http import HttpFront
from dashboard_server.server.session import Session, close_within
from dashboard_server.server.status import SourceHealth, StatusBoard
from dashboard_server.server.web import static_response
from dashboard_server.telemetry.metrics import ServerMetrics

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
        self.doc: Any = self.engine.StateDoc(
            sections=config.sections, max_tombstones=config.max_tombstones
        )
        self.epoch = uuid.uuid4().hex[:16]
        self._section_updated: dict[str, float] = {}
        self.status_board = StatusBoard(
            sources=self._source_health,
            section_ages=self._section_ages_raw,
            stale_after=config.stale_after(),
            sections=config.sections,
        )
        self.hub: Hub[Peer] = Hub(
            self.doc,
            epoch=self.epoch,
            sections=config.sections,
            clock=self.clock,
            high_water=config.write_buffer_high,
            low_water=config.write_buffer_low,
            lag_timeout=config.lag_timeout_s,
            max_pending_events=config.max_pending_events,
            events_kept=config.events_kept,
            metrics=self.metrics,
            status=self.status_board.current,
        )
        self.fanout = Fanout(self.hub, self.metrics)
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
        self._feed_stop = asyncio.Event()
        self._feed_task: asyncio.Task[None] | None = None
        self._started_at = time.monotonic()
        self.feed_name = "none"
        self.redis: RedisIngest | None = None
        """The Redis ingest (``redis_url`` set), created by :meth:`start`."""
        history_metrics = HistoryMetrics(self.metrics.registry)
        self.history: HistoryStore = (
            MemoryHistory(config.history_size, history_metrics)
            if config.redis_url is None
            else RedisHistory(
                config.redis_url,
                config.history_size,
                history_metrics,
                timeout=config.redis_health_timeout_s,
            )
        )
        self.history_sampler = HistorySampler(
            self.history,
            sections=[s for s in config.history_sections if s in config.sections],
            interval_ms=round(config.history_interval_s * 1000),
            read_section=self._read_section,
            active=lambda: self.redis is None or self.redis.state is RedisState.OK,
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
            create_connection=connection_class(self.gate.handshake_timeout),
            backlog=LISTEN_BACKLOG,
        )
        self._gc_policy.install()
        self._started_at = time.monotonic()
        if self.config.redis_url is not None:
            self.start_redis_ingest(self.config.redis_url)
        elif self.config.demo:
            self.start_demo_feed()
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

    def start_demo_feed(self, *, rate: float | None = None) -> None:
        """Run the built-in demo feed into this server (``rate``: steps/s, default config)."""
        from dashboard_server.ingest.demo import DemoFeed

        feed = DemoFeed(
            self,
            symbols=self.config.demo_symbols,
            updates_per_second=rate or self.config.demo_rate,
            seed=self.config.demo_seed,
        )
        self._feed_stop = asyncio.Event()
        self._feed_task = asyncio.get_running_loop().create_task(self._run_feed(feed.run))
        self.feed_name = "demo"

    def start_redis_ingest(self, url: str) -> None:
        """Feed the state from Redis at ``url`` (docs/redis.md); retries until Redis answers."""
        c = self.config
        self.redis = RedisIngest(
            self,
            url=url,
            sections=c.sections,
            metrics=RedisMetrics(self.metrics.registry),
            reload_interval=c.redis_reload_interval_s,
            health_interval=c.redis_health_interval_s,
            health_timeout=c.redis_health_timeout_s,
            backoff_initial=c.redis_backoff_initial_s,
            backoff_max=c.redis_backoff_max_s,
        )
        self._feed_stop = asyncio.Event()
        self._feed_task = asyncio.get_running_loop().create_task(self._run_feed(self.redis.run))
        self.feed_name = "redis"

    async def _run_feed(self, run: Any) -> None:
        try:
            await run(self._feed_stop)
        except Exception:
            log.exception("feed failed", extra={"feed": self.feed_name})

    async def stop_feed(self) -> None:
        """Stop the feed and wait for it (the state stays as it is)."""
        self._feed_stop.set()
        if self._feed_task is not None:
            await self._feed_task
            self._feed_task = None

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
            await self.stop_feed()
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

    def _parse_params(self, query: str) -> ConnectParams:
        return parse_connect_query(
            query,
            sections=self.config.sections,
            tier_intervals=self.config.tier_intervals(),
            min_interval_ms=self.config.min_interval_ms,
            max_interval_ms=self.config.max_interval_ms,
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
            fanout=self.fanout,
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
        redis_ok = self.redis is None or self.redis.state is RedisState.OK
        status = "shutting_down" if self._shutting_down else "ok" if redis_ok else "degraded"
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
            "redis": "disabled" if self.redis is None else self.redis.state.value,
        }
        if self.redis is not None:
            body["redis_since_s"] = round(self.redis.state_age, 3)
            body["redis_error"] = self.redis.last_error
        body["sections"] = self.section_ages()
        return (503 if self._shutting_down else 200), body

    def _source_health(self) -> list[SourceHealth]:
        """Every feed's health, for the status message."""
        if self.redis is not None:
            redis = self.redis
            return [SourceHealth("redis", redis.state.value, redis.state_age, redis.last_error)]
        if self.feed_name == "demo":
            running = self._feed_task is not None and not self._feed_task.done()
            return [SourceHealth("demo", "ok" if running else "stopped", 0.0)]
        return []

    def _section_ages_raw(self) -> dict[str, float | None]:
        now = time.monotonic()
        updated = self._section_updated
        return {s: now - updated[s] if s in updated else None for s in self.config.sections}

    def section_ages(self) -> dict[str, float | None]:
        """Seconds since each section last changed or got a live update (``None``: never)."""
        now = time.monotonic()
        return {
            s: round(now - self._section_updated[s], 3) if s in self._section_updated else None
            for s in self.config.sections
        }

    async def _history_response(self, query: str) -> tuple[int, dict[str, Any]]:
        return await history_endpoint(
            self.history,
            query,
            types=self.history_sampler.sections,
            max_limit=self.config.history_size,
            interval_ms=self.history_sampler.interval_ms,
        )

    def _read_section(self, section: str) -> Any:
        try:
            return self.doc.get(f"/{section}")
        except KeyError:
            return None

    def _render_metrics(self) -> bytes:
        self.metrics.state_version.set(self.doc.version)
        return self.metrics.render()

    # --- StateSink -------------------------------------------------------------------------

    def merge(self, path: str, patch: Any) -> None:
        """RFC 7386 merge at ``path`` into the state document."""
        self._ingest(self.doc.merge, path, patch)

    def replace(self, path: str, value: Any) -> None:
        """Make the value at ``path`` equal to ``value``."""
        self._ingest(self.doc.replace, path, value)

    def remove(self, path: str) -> None:
        """Remove the value at ``path``."""
        self._ingest(self.doc.remove, path)

    def replace_bytes(self, path: str, payload: bytes, fmt: PayloadFormat) -> bool:
        """Make the value at ``path`` equal to a JSON or MessagePack ``payload``, decoded by the
        engine (no Python objects are built); True if something changed."""
        return self._ingest(self.doc.replace_bytes, path, payload, fmt)

    def note_section_update(self, section: str) -> None:
        """A live update for ``section`` arrived, changed something or not (staleness)."""
        self._section_updated[section] = time.monotonic()

    def section_ids(self, section: str) -> list[str]:
        """The ids of the items in ``section`` (names only: no item is copied)."""
        try:
            ids: list[str] = self.doc.keys(f"/{section}")
        except (KeyError, ValueError):
            return []
        return ids

    def publish_event(self, channel: str, data: dict[str, Any]) -> None:
        """Queue an event for the ``events`` subscribers (sent at their next flush)."""
        if channel not in EVENT_CHANNELS:
            raise ValueError(f"unknown event channel {channel!r}")
        self.hub.publish_event(channel, data)

    def _ingest(self, op: Any, path: str, *args: Any) -> bool:
        try:
            changed = bool(op(path, *args))
        except ValueError:
            self.metrics.ingest_errors.inc()
            raise
        if changed:  # a section's name has no "/" or "~": no unescaping needed
            self._section_updated[path[1:].split("/", 1)[0]] = time.monotonic()
        return changed
