"""History: numeric fields of state items sampled at a fixed interval, served over HTTP.

A :class:`HistorySampler` wakes at every wall-clock multiple of ``interval_ms`` (so several
instances sample the same instants) and records, for every item of the recorded sections, one
point holding the item's numeric top-level fields. Points go to a store:

* :class:`MemoryHistory` (no Redis): a bounded deque per series, and a bounded number of series;
* :class:`RedisHistory` (Redis configured): one Redis Stream per series, ``XADD`` with the explicit
  ID ``<sample ms>-0`` and ``MAXLEN ~ size``. When several instances record the same series, the
  first XADD of an instant wins and the others fail with "equal or smaller ID": no duplicates.

``GET /api/v1/history?type=market_data&symbol=BTCUSDT,ETHUSDT&fields=last_price&from=..&to=..``
returns the newest ``limit`` points of each series, oldest first; a longer, coarser tier keeps the
first point of every ``history_downsample_s`` bucket (``history_downsampled_size`` of them), used
for the part of a range older than the full-resolution points. ``/api/v1/history/series`` lists
the series (docs/protocol.md, "GET /api/v1/history").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol, TypeVar
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
    "MAX_SYMBOLS",
    "HistoryQuery",
    "HistorySampler",
    "HistoryStore",
    "HistoryUnavailable",
    "MemoryHistory",
    "Point",
    "RedisHistory",
    "history_endpoint",
    "parse_history_query",
    "parse_instant",
    "series_endpoint",
]

log = logging.getLogger(__name__)

DEFAULT_LIMIT: Final = 100
"""Points returned per series when the request has no ``limit``."""
MAX_SYMBOLS: Final = 20
"""Series one request may name (``symbol=A,B,...``)."""
MAX_SERIES: Final = 10_000
"""Series the in-memory store keeps at most (the least recently recorded one goes first); also
the most ``/api/v1/history/series`` lists."""
STREAM_PREFIX: Final = "dashboard:history:"
"""Redis key prefix of the history streams: ``dashboard:history:{type}:{symbol}``."""
COARSE_PREFIX: Final = "dashboard:history-coarse:"
"""Redis key prefix of the downsampled streams: ``dashboard:history-coarse:{type}:{symbol}``."""

Point = dict[str, Any]
"""One recorded point: ``{"t": ms, "timestamp": "...", field: number, ...}``."""
P = TypeVar("P")


class HistoryUnavailable(RuntimeError):
    """The history store cannot answer right now (Redis unreachable)."""


@dataclass(frozen=True, slots=True)
class Retention:
    """What a store keeps per series: ``size`` points at the sampling interval, then
    ``coarse_size`` points one per ``coarse_ms`` (the first sample of each such bucket)."""

    size: int
    coarse_ms: int = 60_000
    coarse_size: int = 0

    @property
    def max_points(self) -> int:
        """The most points one series can return."""
        return self.size + self.coarse_size

    def bucket(self, t: int) -> int:
        """The downsampling bucket of the instant ``t`` (its start, ms)."""
        return t // self.coarse_ms * self.coarse_ms


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A validated ``/api/v1/history`` request (``start``/``end``: inclusive, Unix ms)."""

    type: str
    symbols: tuple[str, ...]
    limit: int
    start: int | None = None
    end: int | None = None
    fields: tuple[str, ...] | None = None

    @property
    def symbol(self) -> str:
        """The first symbol (the only one, in the single-series form)."""
        return self.symbols[0]


def parse_instant(name: str, text: str) -> int:
    """An instant given as Unix milliseconds or RFC 3339 (``2026-11-27T10:30:00Z``, an offset
    or ``Z`` required), as Unix ms; :class:`ParamError` otherwise."""
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise ParamError(
            name, f"expected Unix milliseconds or an RFC 3339 time, got {text[:40]!r}"
        ) from None
    if moment.tzinfo is None:
        raise ParamError(name, f"an RFC 3339 time needs Z or an offset, got {text[:40]!r}")
    return int(moment.timestamp() * 1000)


def _names(parameter: str, text: str, most: int) -> tuple[str, ...]:
    out: list[str] = []
    for raw in text.split(","):
        name = raw.strip()
        if name and name not in out:
            out.append(name)
    if not out:
        raise ParamError(parameter, "missing")
    if len(out) > most:
        raise ParamError(parameter, f"at most {most} names, got {len(out)}")
    return tuple(out)


def parse_history_query(query: str, *, types: Sequence[str], max_limit: int) -> HistoryQuery:
    """Validate the query string of ``/api/v1/history``; :class:`ParamError` names the problem.

    ``type`` must be a recorded section; ``symbol`` one or more comma-separated ids (at most
    :data:`MAX_SYMBOLS`); ``fields`` optional comma-separated field names; ``from``/``to``
    optional instants (Unix ms or RFC 3339, ``from`` <= ``to``); ``limit`` (default
    :data:`DEFAULT_LIMIT`, capped by ``max_limit``) an integer in ``1..max_limit``. A parameter
    may appear once, and no other parameter is accepted but ``token`` (the credential a browser
    may pass in the query; the auth gate has checked it before this runs).
    """
    values: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "token":
            continue
        if name not in ("type", "symbol", "limit", "from", "to", "fields"):
            raise ParamError(name, "unknown parameter")
        if name in values:
            raise ParamError(name, "given more than once")
        values[name] = value
    kind = values.get("type")
    if kind is None:
        raise ParamError("type", "missing")
    if kind not in types:
        raise ParamError("type", f"expected one of {', '.join(types)}, got {kind!r}")
    symbols = _names("symbol", values.get("symbol", ""), MAX_SYMBOLS)
    fields = _names("fields", values["fields"], 100) if "fields" in values else None
    text = values.get("limit")
    limit = min(DEFAULT_LIMIT, max_limit)
    if text is not None:
        if not text.isascii() or not text.isdigit():
            raise ParamError("limit", f"expected an integer, got {text!r}")
        limit = int(text)
        if not 1 <= limit <= max_limit:
            raise ParamError("limit", f"must be between 1 and {max_limit}, got {limit}")
    start = parse_instant("from", values["from"]) if "from" in values else None
    end = parse_instant("to", values["to"]) if "to" in values else None
    if start is not None and end is not None and start > end:
        raise ParamError("from", "must not be after to")
    return HistoryQuery(kind, symbols, limit, start, end, fields)


class HistoryStore(Protocol):
    """Where points are kept."""

    retention: Retention

    async def record(self, sample_ms: int, points: Sequence[tuple[str, str, Point]]) -> None:
        """Record one sample: ``(type, symbol, point)`` for each series."""
        ...

    async def read(
        self, kind: str, symbol: str, limit: int, start: int | None, end: int | None
    ) -> list[Point] | None:
        """The newest ``limit`` points of a series within ``[start, end]``, oldest first (the
        downsampled ones before the others); ``None`` when the series does not exist."""
        ...

    async def series(self, kinds: Sequence[str]) -> list[dict[str, Any]]:
        """``{"type", "symbol", "fields", "newest"}`` of every series of ``kinds``."""
        ...

    async def close(self) -> None:
        """Release what the store holds (connections)."""
        ...


def _combine(coarse: list[tuple[int, P]], raw: list[tuple[int, P]], limit: int) -> list[P]:
    """The newest ``limit`` of ``raw`` (in range), then as many older downsampled points."""
    picked = raw[-limit:]
    room = limit - len(picked)
    if room > 0:
        oldest = raw[0][0] if raw else None
        older = [p for t, p in coarse if oldest is None or t < oldest]
        picked = [(0, p) for p in older[-room:]] + picked
    return [p for _, p in picked]


def _in_range(t: int, start: int | None, end: int | None) -> bool:
    return (start is None or t >= start) and (end is None or t <= end)


@dataclass(slots=True)
class _MemorySeries:
    raw: deque[tuple[int, bytes]]
    coarse: deque[tuple[int, bytes]]
    bucket: int = -1


class MemoryHistory:
    """Points in memory (as JSON bytes): ``retention`` per series, at most ``max_series``."""

    def __init__(
        self,
        size: int,
        metrics: HistoryMetrics,
        max_series: int = MAX_SERIES,
        *,
        coarse_ms: int = 60_000,
        coarse_size: int = 0,
    ) -> None:
        self.retention = Retention(size, coarse_ms, coarse_size)
        self.size = size
        self.metrics = metrics
        self.max_series = max_series
        self._series: OrderedDict[tuple[str, str], _MemorySeries] = OrderedDict()

    async def record(self, sample_ms: int, points: Sequence[tuple[str, str, Point]]) -> None:
        """Append each point to its series (a new series may evict the stalest one), and to
        the downsampled one when it is the first of its bucket."""
        for kind, symbol, point in points:
            key = (kind, symbol)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _MemorySeries(
                    deque(maxlen=self.retention.size), deque(maxlen=self.retention.coarse_size)
                )
                if len(self._series) > self.max_series:
                    self._series.popitem(last=False)
            else:
                self._series.move_to_end(key)
            t = int(point["t"])
            encoded = orjson.dumps(point)
            series.raw.append((t, encoded))
            bucket = self.retention.bucket(t)
            if self.retention.coarse_size and bucket != series.bucket:
                series.bucket = bucket
                series.coarse.append((t, encoded))
        self.metrics.points.inc(len(points))

    async def read(
        self, kind: str, symbol: str, limit: int, start: int | None, end: int | None
    ) -> list[Point] | None:
        """See :meth:`HistoryStore.read`."""
        series = self._series.get((kind, symbol))
        if series is None:
            return None
        oldest = series.raw[0][0] if series.raw else None
        raw = [(t, p) for t, p in series.raw if _in_range(t, start, end)]
        coarse = [
            (t, p)
            for t, p in series.coarse
            if _in_range(t, start, end) and (oldest is None or t < oldest)
        ]
        return [orjson.loads(p) for p in _combine(coarse, raw, limit)]

    async def series(self, kinds: Sequence[str]) -> list[dict[str, Any]]:
        """See :meth:`HistoryStore.series`."""
        out = []
        for (kind, symbol), series in self._series.items():
            if kind in kinds and series.raw:
                newest = series.raw[-1][1]
                out.append(_describe(kind, symbol, orjson.loads(newest)))
        return sorted(out, key=lambda d: (d["type"], d["symbol"]))

    async def close(self) -> None:
        """Nothing to release."""


def _describe(kind: str, symbol: str, newest: Point) -> dict[str, Any]:
    fields = sorted(k for k in newest if k not in ("t", "timestamp"))
    return {"type": kind, "symbol": symbol, "fields": fields, "newest": newest.get("t")}


def _decode_entries(entries: Any) -> list[tuple[int, Point]]:
    points: list[tuple[int, Point]] = []
    for _, fields in entries or []:
        try:
            point = orjson.loads((fields or {})[b"p"])
        except (KeyError, TypeError, orjson.JSONDecodeError):
            continue  # not written by a dashboard-server: ignore it
        if isinstance(point, dict) and isinstance(point.get("t"), int):
            points.append((point["t"], point))
    return points


class RedisHistory:
    """Points in Redis Streams (one per series, and one downsampled per series), shared by
    every instance on that Redis."""

    def __init__(
        self,
        url: str,
        size: int,
        metrics: HistoryMetrics,
        timeout: float,
        *,
        coarse_ms: int = 60_000,
        coarse_size: int = 0,
    ) -> None:
        self.retention = Retention(size, coarse_ms, coarse_size)
        self.size = size
        self.metrics = metrics
        self._client = connect_redis(url, timeout)
        self._buckets: OrderedDict[tuple[str, str], int] = OrderedDict()

    @staticmethod
    def stream_key(kind: str, symbol: str) -> str:
        """The stream of one series."""
        return f"{STREAM_PREFIX}{kind}:{symbol}"

    @staticmethod
    def coarse_key(kind: str, symbol: str) -> str:
        """The downsampled stream of one series."""
        return f"{COARSE_PREFIX}{kind}:{symbol}"

    async def record(self, sample_ms: int, points: Sequence[tuple[str, str, Point]]) -> None:
        """XADD every point with the ID ``<sample_ms>-0`` in one pipeline; the first point of
        each downsampling bucket also goes to the downsampled stream, with the bucket's start
        as its ID (so instances do not write a bucket twice either).

        An ID another instance has already used (or passed) is a duplicate and skipped; any
        other failure is logged and counted, and the sample is lost (the next one is not).
        """
        if not points:
            return
        stream_id = f"{sample_ms}-0"
        coarse: list[bool] = []
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for kind, symbol, point in points:
                    payload = orjson.dumps(point)
                    pipe.xadd(
                        self.stream_key(kind, symbol),
                        {"p": payload},
                        id=stream_id,
                        maxlen=self.size,
                        approximate=True,
                    )
                    coarse.append(self._new_bucket(kind, symbol, sample_ms))
                    if coarse[-1]:
                        pipe.xadd(
                            self.coarse_key(kind, symbol),
                            {"p": payload},
                            id=f"{self.retention.bucket(sample_ms)}-0",
                            maxlen=self.retention.coarse_size,
                            approximate=True,
                        )
                results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            self.metrics.errors.inc()
            log.warning("history sample not recorded", extra={"error": describe_failure(exc)})
            return
        recorded = duplicates = 0
        at = 0
        for has_coarse in coarse:
            outcomes = results[at : at + 1 + has_coarse]
            at += 1 + has_coarse
            for n, result in enumerate(outcomes):
                duplicate = isinstance(result, ResponseError) and "equal or smaller" in str(result)
                if not isinstance(result, Exception):
                    recorded += n == 0
                elif duplicate:
                    duplicates += n == 0
                else:
                    self.metrics.errors.inc()
                    log.warning(
                        "history point not recorded", extra={"error": describe_failure(result)}
                    )
        self.metrics.points.inc(recorded)
        self.metrics.duplicates.inc(duplicates)

    def _new_bucket(self, kind: str, symbol: str, sample_ms: int) -> bool:
        if not self.retention.coarse_size:
            return False
        key = (kind, symbol)
        bucket = self.retention.bucket(sample_ms)
        if self._buckets.get(key) == bucket:
            return False
        self._buckets[key] = bucket
        self._buckets.move_to_end(key)
        if len(self._buckets) > MAX_SERIES:
            self._buckets.popitem(last=False)
        return True

    async def read(
        self, kind: str, symbol: str, limit: int, start: int | None, end: int | None
    ) -> list[Point] | None:
        """XREVRANGE the newest ``limit`` entries in range (then the downsampled ones older
        than the oldest kept point); oldest first. ``None``: no such stream."""
        high = "+" if end is None else str(end)
        low = "-" if start is None else str(start)
        key = self.stream_key(kind, symbol)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.exists(key)
                pipe.xrevrange(key, high, low, count=limit)
                pipe.xrange(key, "-", "+", count=1)
                exists, entries, first = await pipe.execute()
            if not exists:
                return None
            raw = _decode_entries(reversed(entries or []))
            coarse: list[tuple[int, Point]] = []
            if len(raw) < limit and self.retention.coarse_size:
                oldest = _decode_entries(first)
                below = oldest[0][0] - 1 if oldest else end
                if below is not None and end is not None:
                    below = min(below, end)
                if start is None or below is None or below >= start:
                    low_id = "-" if start is None else str(self.retention.bucket(start))
                    older = await self._client.xrevrange(
                        self.coarse_key(kind, symbol),
                        "+" if below is None else str(below),
                        low_id,
                        count=limit - len(raw),
                    )
                    coarse = [
                        (t, p)
                        for t, p in _decode_entries(reversed(older or []))
                        if _in_range(t, start, below)
                    ]
        except (RedisError, OSError) as exc:
            reason = describe_failure(exc)
            raise HistoryUnavailable(f"history store unavailable: {reason}") from None
        return _combine(coarse, raw, limit)

    async def series(self, kinds: Sequence[str]) -> list[dict[str, Any]]:
        """SCAN the streams of ``kinds`` (at most :data:`MAX_SERIES`), then their newest
        points in one pipeline."""
        keys: list[tuple[str, str]] = []
        try:
            for kind in kinds:
                prefix = self.stream_key(kind, "")
                pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
                async for raw_key in self._client.scan_iter(match=pattern, count=1000):
                    name = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
                    keys.append((kind, name[len(prefix) :]))
                    if len(keys) >= MAX_SERIES:
                        break
            async with self._client.pipeline(transaction=False) as pipe:
                for kind, symbol in keys:
                    pipe.xrevrange(self.stream_key(kind, symbol), "+", "-", count=1)
                newest = await pipe.execute() if keys else []
        except (RedisError, OSError) as exc:
            reason = describe_failure(exc)
            raise HistoryUnavailable(f"history store unavailable: {reason}") from None
        out = []
        for (kind, symbol), entries in zip(keys, newest, strict=True):
            points = _decode_entries(entries)
            if points:
                out.append(_describe(kind, symbol, points[0][1]))
        return sorted(out, key=lambda d: (d["type"], d["symbol"]))

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

    200 ``{"type", "interval_ms", "series": [{"symbol", "points": [...oldest first]}]}`` (with
    one symbol also ``"symbol"`` and ``"points"`` at the top); 400 ``{"error": "bad_parameter",
    "parameter", "message"}``; 404 ``{"error": "not_found"}`` naming an unknown series; 503
    ``{"error": "unavailable"}`` when the store (Redis) cannot be read.
    """
    try:
        request = parse_history_query(query, types=types, max_limit=max_limit)
    except ParamError as exc:
        return 400, {"error": "bad_parameter", "parameter": exc.parameter, "message": str(exc)}
    series: list[dict[str, Any]] = []
    try:
        for symbol in request.symbols:
            points = await store.read(
                request.type, symbol, request.limit, request.start, request.end
            )
            if points is None:
                return 404, {
                    "error": "not_found",
                    "message": f"no history for {request.type} {symbol!r} (symbols are "
                    f"case-sensitive; GET /api/v1/history/series lists them)",
                    "type": request.type,
                    "symbol": symbol,
                }
            if request.fields is not None:
                keep = ("t", "timestamp", *request.fields)
                points = [{k: p[k] for k in keep if k in p} for p in points]
            series.append({"symbol": symbol, "points": points})
    except HistoryUnavailable as exc:
        return 503, {"error": "unavailable", "message": str(exc)}
    body: dict[str, Any] = {"type": request.type}
    if len(series) == 1:
        body["symbol"] = request.symbol
    body["interval_ms"] = interval_ms
    retention = store.retention
    if retention.coarse_size:
        body["downsampled_ms"] = retention.coarse_ms
    if len(series) == 1:
        body["points"] = series[0]["points"]
    body["series"] = series
    return 200, body


async def series_endpoint(
    store: HistoryStore, query: str, *, types: Sequence[str], interval_ms: int
) -> tuple[int, dict[str, Any]]:
    """``GET /api/v1/history/series[?type=T]``: the series kept, and what each holds."""
    kinds = list(types)
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "token":
            continue
        if name != "type":
            problem = ParamError(name, "unknown parameter")
            return 400, {"error": "bad_parameter", "parameter": name, "message": str(problem)}
        if value not in types:
            problem = ParamError("type", f"expected one of {', '.join(types)}, got {value!r}")
            return 400, {"error": "bad_parameter", "parameter": "type", "message": str(problem)}
        kinds = [value]
    try:
        listed = await store.series(kinds)
    except HistoryUnavailable as exc:
        return 503, {"error": "unavailable", "message": str(exc)}
    retention = store.retention
    return 200, {
        "types": kinds,
        "interval_ms": interval_ms,
        "retention": {
            "points": retention.size,
            "span_ms": retention.size * interval_ms,
            "downsampled_ms": retention.coarse_ms if retention.coarse_size else None,
            "downsampled_points": retention.coarse_size,
            "downsampled_span_ms": retention.coarse_size * retention.coarse_ms,
        },
        "series": listed,
    }
