"""Prometheus metrics: every metric the package exports is declared here, and only here.

Each :class:`ServerMetrics` owns a :class:`~prometheus_client.CollectorRegistry`, so several
servers (tests start many in one process) never share or clash; ``/metrics`` renders it. The
groups a part of the server registers only when it runs (:class:`IngestMetrics`,
:class:`RedisMetrics`, :class:`HistoryMetrics`) take that registry. The registry also has the
standard process (``process_*``), platform (``python_info``) and garbage collector
(``python_gc_*``) collectors and ``dashboard_build_info``.

The first eight families keep the original service's names and labels exactly
(``dashboard_connected_clients{client_type}``, ``dashboard_messages_sent_total{client_type,
message_type}``, ``dashboard_messages_received_total{message_type}``,
``dashboard_broadcast_latency_seconds{client_type}``,
``dashboard_serialization_duration_seconds{format}``,
``dashboard_message_size_bytes{format,message_type}``,
``dashboard_client_subscriptions{channel}``, ``dashboard_active_connections``), so dashboards
and alerts written for it keep working. No ``_created`` series are exported.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

__all__ = ["HistoryMetrics", "IngestMetrics", "RedisMetrics", "ServerMetrics"]

log = logging.getLogger(__name__)
disable_created_metrics()  # type: ignore[no-untyped-call]

_SIZE_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
_SECONDS_BUCKETS = (
    0.00001,
    0.00005,
    0.0001,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
_COUNT_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64)


class ServerMetrics:
    """Every metric the server exports (names under ``dashboard_``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge(
            "dashboard_build_info",
            "Always 1: the running version, diff engine and Python.",
            ["version", "engine", "python"],
            registry=r,
        )
        self.connected_clients = Gauge(
            "dashboard_connected_clients",
            "WebSocket clients connected, by tier (tui, web).",
            ["client_type"],
            registry=r,
        )
        self.active_connections = Gauge(
            "dashboard_active_connections",
            "Open WebSocket connections (all tiers, lagging ones included).",
            registry=r,
        )
        self.messages_sent = Counter(
            "dashboard_messages_sent",
            "Messages written to clients, by tier and message type.",
            ["client_type", "message_type"],
            registry=r,
        )
        self.bytes_sent = Counter(
            "dashboard_bytes_sent",
            "Payload bytes written to clients, by format.",
            ["format"],
            registry=r,
        )
        self.messages_received = Counter(
            "dashboard_messages_received",
            "Client messages received, by type (invalid: could not be used).",
            ["message_type"],
            registry=r,
        )
        self.broadcast_latency = Histogram(
            "dashboard_broadcast_latency_seconds",
            "From a flush's scheduled time to the end of its writes, by the tiers it served.",
            ["client_type"],
            registry=r,
            buckets=_SECONDS_BUCKETS,
        )
        self.serialization_duration = Histogram(
            "dashboard_serialization_duration_seconds",
            "Time to encode one message, by format.",
            ["format"],
            registry=r,
            buckets=_SECONDS_BUCKETS,
        )
        self.serialization = Histogram(
            "dashboard_serialization_seconds",
            "Time to encode one message, by format and message type.",
            ["format", "type"],
            registry=r,
            buckets=_SECONDS_BUCKETS,
        )
        self.message_size = Histogram(
            "dashboard_message_size_bytes",
            "Size of encoded messages, by format and type.",
            ["format", "message_type"],
            registry=r,
            buckets=_SIZE_BUCKETS,
        )
        self.subscriptions = Gauge(
            "dashboard_client_subscriptions",
            "Connections subscribed to each channel.",
            ["channel"],
            registry=r,
        )
        self.groups = Gauge(
            "dashboard_groups",
            "Groups (interval, format, channels, diff form) with at least one member.",
            registry=r,
        )
        self.lagging_clients = Gauge(
            "dashboard_lagging_clients",
            "Clients skipped because their write buffer is above the high-water mark.",
            registry=r,
        )
        self.resyncs = Counter(
            "dashboard_resyncs",
            "Snapshots sent to already connected clients, by reason "
            "(refresh, subscription, lag, horizon).",
            ["reason"],
            registry=r,
        )
        self.resumes = Counter(
            "dashboard_resumes",
            "Reconnects with since/epoch, by outcome (catch_up, snapshot).",
            ["outcome"],
            registry=r,
        )
        self.lag_closes = Counter(
            "dashboard_lag_closes",
            "Clients closed because they stayed lagging too long.",
            registry=r,
        )
        self.bad_message_closes = Counter(
            "dashboard_bad_message_closes",
            "Clients closed because they kept sending unusable messages.",
            registry=r,
        )
        self.snapshot_encodes = Counter(
            "dashboard_snapshot_encodes", "Snapshot messages encoded.", registry=r
        )
        self.snapshot_encodes_per_flush = Histogram(
            "dashboard_snapshot_encodes_per_flush",
            "Snapshots encoded in one flush (one per group with joiners).",
            registry=r,
            buckets=_COUNT_BUCKETS,
        )
        self.flushes = Counter(
            "dashboard_flushes", "Flushes run, by interval.", ["interval_ms"], registry=r
        )
        self.events_dropped = Counter(
            "dashboard_events_dropped",
            "Events dropped because the pending event log was full.",
            registry=r,
        )
        self.state_version = Gauge(
            "dashboard_state_version", "Current version of the state document.", registry=r
        )
        self.engine_panics = Counter(
            "dashboard_engine_panics",
            "Panics of the engine caught (the process goes on, /health says degraded), by "
            "where (ingest, flush, session, feed, history).",
            ["where"],
            registry=r,
        )
        self.security_refusals = Counter(
            "dashboard_security_refusals",
            "Requests refused and connections closed by a security check or limit, by reason "
            "(docs/security.md).",
            ["reason"],
            registry=r,
        )
        self._encoded: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._sent: dict[tuple[str, str], Any] = {}

    def set_build_info(self, version: str, engine: str) -> None:
        """Publish ``dashboard_build_info`` (once the engine is known)."""
        self.build_info.clear()
        self.build_info.labels(version, engine, platform.python_version()).set(1)

    def encoded(self, fmt: str, kind: str) -> tuple[Any, Any, Any]:
        """The pre-bound children observing one encode of a ``kind`` message in ``fmt``:
        (serialization duration by format, serialization by format and type, size)."""
        key = (fmt, kind)
        children = self._encoded.get(key)
        if children is None:
            children = self._encoded[key] = (
                self.serialization_duration.labels(fmt),
                self.serialization.labels(fmt, kind),
                self.message_size.labels(fmt, kind),
            )
        return children

    def sent(self, tier: str, kind: str) -> Any:
        """The pre-bound ``dashboard_messages_sent_total`` child of ``tier`` and ``kind``."""
        child = self._sent.get((tier, kind))
        if child is None:
            child = self._sent[tier, kind] = self.messages_sent.labels(tier, kind)
        return child

    def engine_panic(self, where: str, exc: BaseException) -> None:
        """Log and count an engine panic caught at ``where`` (ingest, flush, session, feed,
        history)."""
        self.engine_panics.labels(where).inc()
        log.error(
            "engine panic caught",
            extra={"where": where, "panic": str(exc)[:500]},
            exc_info=(type(exc), exc, exc.__traceback__),
        )

    def engine_panic_count(self) -> int:
        """Engine panics caught so far, everywhere."""
        return int(
            sum(
                sample.value
                for metric in self.engine_panics.collect()
                for sample in metric.samples
                if sample.name.endswith("_total")
            )
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class IngestMetrics:
    """What the write side counts of the backends' messages."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "dashboard_ingest_messages",
            "Messages received from the backends, by section (or event channel).",
            ["section"],
            registry=registry,
        )
        self.malformed = Counter(
            "dashboard_ingest_malformed",
            "Payloads or keys skipped because they could not be used, by section.",
            ["section"],
            registry=registry,
        )
        self.conflated = Counter(
            "dashboard_ingest_conflated",
            "Messages of raw sources superseded by a newer payload for the same key within one "
            "read, so never applied (counted in dashboard_ingest_messages too), by section.",
            ["section"],
            registry=registry,
        )
        self.batches = Counter(
            "dashboard_ingest_batches",
            "Batches applied to the engine by the feeds (one per read or flush), by feed.",
            ["feed"],
            registry=registry,
        )
        self.lag = Gauge(
            "dashboard_ingest_lag_seconds",
            "How far behind its source a feed is: the round trip of its last PING through the "
            "message stream (or the age of a PING still pending, if larger), by feed.",
            ["feed"],
            registry=registry,
        )
        self.backlog = Gauge(
            "dashboard_ingest_backlog_bytes",
            "Bytes a feed's source holds for it, not yet read: Redis's output buffer for the "
            "subscriber (CLIENT LIST omem), by feed.",
            ["feed"],
            registry=registry,
        )


class RedisMetrics:
    """The Redis feed's connection and reload metrics."""

    def __init__(self, registry: CollectorRegistry, states: Iterable[str]) -> None:
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
        for state in states:
            self.state.labels(state).set(0)


class HistoryMetrics:
    """The history store's metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.points = Counter(
            "dashboard_history_points",
            "History points recorded by this instance.",
            registry=registry,
        )
        self.duplicates = Counter(
            "dashboard_history_duplicates",
            "History points not recorded because another instance recorded that instant first.",
            registry=registry,
        )
        self.errors = Counter(
            "dashboard_history_errors",
            "Samples that could not be written to the history store.",
            registry=registry,
        )
