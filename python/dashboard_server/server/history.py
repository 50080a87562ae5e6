"""History: numeric fields of state items sampled at a fixed interval, served over HTTP.

A :class:`HistorySampler` wakes at every wall-clock multiple of ``interval_ms`` (so several
instances sample the same instants) and records, for every item of the recorded sections, one
point holding the item's numeric top-level fields. Points go to a store:

* :class:`MemoryHistory` (no Redis): a bounded deque per series, and a bounded number of series;
* :class:`RedisHistory` (Redis configured): one Redis Stream per series, ``XADD`` with the explicit
  ID ``<sample ms>-0`` and ``MAXLEN ~ size``. When several instances record the same series, the
  first XADD of an instant wins and the others fail with "equal or smaller ID": no duplicates.

``GET /api/v1/history?type=market_data&symbol=BTCUSDT&limit=100`` returns the newest ``limit``
points, oldest first (docs/redis.md, "History").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl

import orjson
from redis.exceptions import RedisError, ResponseError

from dashboard_server.core.protocol import ParamError
from dashboard_server.core.ticker import periodic
from dashboard_server.core.timefmt import now_ms, rfc3339_ms
from dashboard_server.ingest.feed import describe_failure
from dashboard_server.ingest.redis.connection import close_quietly, connect_redis
from dashboard_server.telemetry.metrics import HistoryMetrics

__all__ = [
    "DEFAULT_LIMIT",
    "HistoryQuery",
    "HistorySampler",
    "HistoryStore",
    "HistoryUnavailable",
    "MemoryHistory",
    "Point",
    "RedisHistory",
    "history_endpoint",
    "parse_history_query",
]

log = logging.getLogger(__name__)

DEFAULT_LIMIT: Final = 100
"""Points returned when the request has no ``limit``."""
MAX_SERIES: Final = 10_000
"""Series the in-memory store keeps at most (the least recently recorded one goes first)."""
STREAM_PREFIX: Final = "dashboard:history:"
"""Redis key prefix of the history streams: ``dashboard:history:{type}:{symbol}``."""

Point = dict[str, Any]
"""One recorded point: ``{"t": ms, "timestamp": "...", field: number, ...}``."""


class HistoryUnavailable(RuntimeError):
    """The history store cannot answer right now (Redis unreachable)."""


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A validated ``/api/v1/history`` request."""

    type: str
    symbol: str
    limit: int


def parse_history_query(query: str, *, types: Sequence[str], max_limit: int) -> HistoryQuery:
    """Validate the query string of ``/api/v1/history``; :class:`ParamError` names the problem.

    ``type`` must be a recorded section, ``symbol`` non-empty, ``limit`` (default
    :data:`DEFAULT_LIMIT`, capped by ``max_limit``) an integer in ``1..max_limit``; a parameter
    may appear once, and no other parameter is accepted but ``token`` (the credential a browser
    may pass in the query; the auth gate has checked it before this runs).
    """
    values: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "token":
            continue
        if name not in ("type", "symbol", "limit"):
            raise ParamError(name, "unknown parameter")
        if name in values:
            raise ParamError(name, "given more than once")
        values[name] = value
    kind = values.get("type")
    if kind is None:
        raise ParamError("type", "missing")
    if kind not in types:
        raise ParamError("type", f"expected one of {', '.join(types)}, got {kind!r}")
    symbol = values.get("symbol")
    if not symbol:
        raise ParamError("symbol", "missing")
    text = values.get("limit")
    limit = min(DEFAULT_LIMIT, max_limit)
    if text is not None:
        if not text.isascii() or not text.isdigit():
            raise ParamError("limit", f"expected an integer, got {text!r}")
        limit = int(text)
        if not 1 <= limit <= max_limit:
            raise ParamError("limit", f"must be between 1 and {max_limit}, got {limit}")
    return HistoryQuery(kind, symbol, limit)


class HistoryStore(Protocol):
    """Where points are kept."""

    async def record(self, sample_ms: int, points: Sequence[tuple[str, str, Point]]) -> None:
        """Record one sample: ``(type, symbol, point)`` for each series."""
        ...

    async def read(self, kind: str, symbol: str, limit: int) -> list[Point]:
        """The newest ``limit`` points of a series, oldest first."""
        ...

    async def close(self) -> None:
        """Release what the store holds (connections)."""
        ...


class MemoryHistory:
    """Points in memory: ``size`` per series, at most :data:`MAX_SERIES` series."""

    def __init__(self, size: int, metrics: HistoryMetrics, max_series: int = MAX_SERIES) -> None:
        self.size = size
        self.metrics = metrics
        self.max_series = max_series
        self._series: OrderedDict[tuple[str, str], deque[Point]] = OrderedDict()

    async def record(self, sample_ms: int, points: Sequence[tuple[str, str, Point]]) -> None:
        """Append each point to its series (a new series may evict the stalest one)."""
        for kind, symbol, point in points:
            key = (kind, symbol)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = deque(maxlen=self.size)
                if len(self._series) > self.max_series:
                    self._series.popitem(last=False)
            else:
                self._series.move_to_end(key)
            series.append(point)
        self.metrics.points.inc(len(points))

    async def read(self, kind: str, symbol: str, limit: int) -> list[Point]:
        """The newest ``limit`` points, oldest first (empty for an unknown series)."""
        series = self._series.get((kind, symbol))
        if series is None:
            return []
        return list(series)[-limit:]

    async def close(self) -> None:
        """Nothing to release."""


class RedisHistory:
    """Points in Redis Streams (one per series), shared by every instance on that Redis."""

    def __init__(self, url: str, size: int, metrics: HistoryMetrics, timeout: float) -> None:
        self.size = size
        self.metrics = metrics
        self._client = connect_redis(url, timeout)

    @staticmethod
    def stream_key(kind: str, symbol: str) -> str:
        """The stream of one series."""
        return f"{STREAM_PREFIX}{kind}:{symbol}"

    async def record(self, sample_ms: int, points: Sequence[tuple[str, str, Point]]) -> None:
        """XADD every point with the ID ``<sample_ms>-0`` in one pipeline.

        An ID another instance has already used (or passed) is a duplicate and skipped; any
        other failure is logged and counted, and the sample is lost (the next one is not).
        """
        if not points:
            return
        stream_id = f"{sample_ms}-0"
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for kind, symbol, point in points:
                    pipe.xadd(
                        self.stream_key(kind, symbol),
                        {"p": orjson.dumps(point)},
                        id=stream_id,
                        maxlen=self.size,
                        approximate=True,
                    )
                results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            self.metrics.errors.inc()
            log.warning("history sample not recorded", extra={"error": describe_failure(exc)})
            return
        recorded = duplicates = 0
        for result in results:
            if not isinstance(result, Exception):
                recorded += 1
            elif isinstance(result, ResponseError) and "equal or smaller" in str(result):
                duplicates += 1
            else:
                self.metrics.errors.inc()
                log.warning("history point not recorded", extra={"error": describe_failure(result)})
        self.metrics.points.inc(recorded)
        self.metrics.duplicates.inc(duplicates)

    async def read(self, kind: str, symbol: str, limit: int) -> list[Point]:
        """XREVRANGE the newest ``limit`` entries; oldest first."""
        try:
            entries = await self._client.xrevrange(
                self.stream_key(kind, symbol), "+", "-", count=limit
            )
        except (RedisError, OSError) as exc:
            reason = describe_failure(exc)
            raise HistoryUnavailable(f"history store unavailable: {reason}") from None
        points: list[Point] = []
        for _, fields in reversed(entries or []):
            try:
                point = orjson.loads((fields or {})[b"p"])
            except (KeyError, TypeError, orjson.JSONDecodeError):
                continue  # not written by a dashboard-server: ignore it
            if isinstance(point, dict):
                points.append(point)
        return points

    async def close(self) -> None:
        """Close the Redis connections."""
        await close_quietly(self._client)


def numeric_fields(item: Any) -> dict[str, int | float]:
    """The int and float (not bool) top-level fields of an item (nothing if not an object)."""
    if not isinstance(item, dict):
        return {}
    return {
        k: v for k, v in item.items() if type(v) in (int, float) and k not in ("t", "timestamp")
    }


class HistorySampler:
    """Samples ``sections`` of the state every ``interval_ms`` into ``store``.

    ``read_section(name)`` returns a section as a Python mapping (or ``None``); ``active()`` says
    whether the state is trustworthy right now (no sample is recorded while it is not, e.g.
    while Redis is down: the last-known state would be recorded as if it were current).
    """

    def __init__(
        self,
        store: HistoryStore,
        *,
        sections: Sequence[str],
        interval_ms: int,
        read_section: Callable[[str], Any],
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self.store = store
        self.sections = tuple(sections)
        self.interval_ms = interval_ms
        self.read_section = read_section
        self.active = active
        self.samples = 0
        """Samples taken so far."""

    def collect(self, sample_ms: int) -> list[tuple[str, str, Point]]:
        """The points of one sample taken now, stamped ``sample_ms``."""
        stamp = rfc3339_ms(sample_ms)
        points: list[tuple[str, str, Point]] = []
        for section in self.sections:
            items = self.read_section(section)
            if not isinstance(items, dict):
                continue
            for symbol, item in items.items():
                values = numeric_fields(item)
                if values:
                    points.append((section, symbol, {"t": sample_ms, "timestamp": stamp, **values}))
        return points

    async def run(self, stop: asyncio.Event) -> None:
        """Sample at every wall-clock multiple of the interval until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        period = self.interval_ms / 1000
        start = loop.time() - (now_ms() % self.interval_ms) / 1000  # the grid on wall multiples
        last_due = -1
        async with contextlib.aclosing(periodic(period, stop, start=start)) as ticks:
            async for _ in ticks:
                due = now_ms() // self.interval_ms * self.interval_ms
                if due == last_due or not self.active():
                    continue
                last_due = due
                try:
                    await self.store.record(due, self.collect(due))
                    self.samples += 1
                except Exception:
                    log.exception("history sample failed")


async def history_endpoint(
    store: HistoryStore, query: str, *, types: Sequence[str], max_limit: int, interval_ms: int
) -> tuple[int, dict[str, Any]]:
    """``GET /api/v1/history``: the status and JSON body for a query string.

    200 ``{"type", "symbol", "interval_ms", "points": [...oldest first]}``; 400
    ``{"error": "bad_parameter", "parameter", "message"}``; 503 ``{"error": "unavailable"}``
    when the store (Redis) cannot be read.
    """
    try:
        request = parse_history_query(query, types=types, max_limit=max_limit)
    except ParamError as exc:
        return 400, {"error": "bad_parameter", "parameter": exc.parameter, "message": str(exc)}
    try:
        points = await store.read(request.type, request.symbol, request.limit)
    except HistoryUnavailable as exc:
        return 503, {"error": "unavailable", "message": str(exc)}
    return 200, {
        "type": request.type,
        "symbol": request.symbol,
        "interval_ms": interval_ms,
        "points": points,
    }
