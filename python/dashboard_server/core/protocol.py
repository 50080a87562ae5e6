"""The wire protocol, without I/O: connect parameters, client messages, Python-encoded messages.

Everything here is pure: it parses what a client sends (the ``/ws`` query string, its messages)
and encodes the messages the server writes itself (``event``, ``pong``, ``error``). ``snapshot``
and ``update`` messages are encoded by the engine. docs/protocol.md is the reference.
"""

from __future__ import annotations

import datetime as _dt
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

import msgpack
import orjson

__all__ = [
    "CLOSE_BAD_MESSAGES",
    "CLOSE_GOING_AWAY",
    "CLOSE_LAGGING",
    "CLOSE_RATE_LIMITED",
    "CLOSE_TOKEN_EXPIRED",
    "DIFFS",
    "EVENTS_CHANNEL",
    "EVENT_CHANNELS",
    "FORMATS",
    "TIERS",
    "ClientMessage",
    "ConnectParams",
    "MessageError",
    "ParamError",
    "Ping",
    "Refresh",
    "StrikeCounter",
    "Subscribe",
    "Unsubscribe",
    "empty_update",
    "encode_message",
    "error_message",
    "event_message",
    "parse_channels",
    "parse_client_message",
    "parse_connect_query",
    "pong_message",
    "recent_events_message",
    "rfc3339_ms",
]

Format = Literal["msgpack", "json"]
Diff = Literal["changes", "json-patch"]
Tier = Literal["tui", "web"]

TIERS: Final[tuple[Tier, ...]] = ("tui", "web")
FORMATS: Final[tuple[Format, ...]] = ("msgpack", "json")
DIFFS: Final[tuple[Diff, ...]] = ("changes", "json-patch")

EVENTS_CHANNEL: Final = "events"
"""Pseudo-channel that carries the never-conflated events (fills, alerts, trades)."""
EVENT_CHANNELS: Final = ("fills", "alerts", "trades")
"""The ``channel`` values an ``event`` message may carry."""

CLOSE_GOING_AWAY: Final = 1001
"""Server shutting down."""
CLOSE_LAGGING: Final = 4001
"""The client did not read its messages for longer than ``lag_timeout_s``."""
CLOSE_BAD_MESSAGES: Final = 4002
"""The client sent too many messages the server could not use."""
CLOSE_TOKEN_EXPIRED: Final = 4003
"""The client's credentials (a JWT) expired during the session."""
CLOSE_RATE_LIMITED: Final = 4029
"""The client sent messages faster than ``max_message_rate`` (beyond ``message_burst``)."""

_QUERY_PARAMS: Final = (
    "type",
    "format",
    "channels",
    "diff",
    "interval_ms",
    "since",
    "epoch",
    "token",  # credentials: checked by dashboard_server.server.auth, ignored here
)


class ParamError(ValueError):
    """A ``/ws`` query parameter is missing, repeated, unknown or invalid."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


class MessageError(ValueError):
    """A client message the server cannot use; ``code`` goes into the ``error`` reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ConnectParams:
    """What a client asked for on ``/ws``, validated.

    ``channels`` holds section names and possibly :data:`EVENTS_CHANNEL`; ``interval_ms`` is the
    tier's interval unless the client overrode it; ``since``/``epoch`` are both set (resume) or
    both ``None``.
    """

    tier: Tier
    fmt: Format
    diff: Diff
    channels: frozenset[str]
    interval_ms: int
    since: int | None = None
    epoch: str | None = None


def parse_connect_query(
    query: str,
    *,
    sections: Sequence[str],
    tier_intervals: Mapping[str, int],
    min_interval_ms: int,
    max_interval_ms: int,
) -> ConnectParams:
    """Validate the query string of a ``/ws`` request (without the ``?``).

    Raises :class:`ParamError` naming the first bad parameter.
    """
    values: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False)
    except ValueError as exc:  # pragma: no cover - parse_qsl is lenient
        raise ParamError("query", str(exc)) from exc
    for name, value in pairs:
        if name not in _QUERY_PARAMS:
            raise ParamError(name, "unknown parameter")
        if name in values:
            raise ParamError(name, "given more than once")
        values[name] = value

    tier = values.get("type", "web")
    if tier not in TIERS:
        raise ParamError("type", f"expected one of {', '.join(TIERS)}, got {tier!r}")
    fmt = values.get("format", "msgpack")
    if fmt not in FORMATS:
        raise ParamError("format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")
    diff = values.get("diff", "changes")
    if diff not in DIFFS:
        raise ParamError("diff", f"expected one of {', '.join(DIFFS)}, got {diff!r}")

    if "channels" in values:
        channels = parse_channels(values["channels"].split(","), sections)
        if not channels:
            raise ParamError("channels", "must name at least one channel")
    else:
        channels = frozenset(sections) | {EVENTS_CHANNEL}

    interval_ms = tier_intervals[tier]
    if "interval_ms" in values:
        interval_ms = _parse_int("interval_ms", values["interval_ms"])
        if not min_interval_ms <= interval_ms <= max_interval_ms:
            raise ParamError(
                "interval_ms",
                f"must be between {min_interval_ms} and {max_interval_ms}, got {interval_ms}",
            )

    since: int | None = None
    epoch: str | None = None
    if "since" in values or "epoch" in values:
        if "since" not in values:
            raise ParamError("since", "required with epoch")
        if "epoch" not in values:
            raise ParamError("epoch", "required with since")
        since = _parse_int("since", values["since"])
        if since < 0:
            raise ParamError("since", f"must be >= 0, got {since}")
        epoch = values["epoch"]
        if not epoch:
            raise ParamError("epoch", "must not be empty")

    return ConnectParams(tier, fmt, diff, channels, interval_ms, since, epoch)


def parse_channels(names: Sequence[str], sections: Sequence[str]) -> frozenset[str]:
    """Check channel names (sections or ``events``); blanks are ignored.

    Raises :class:`ParamError` (parameter ``channels``) naming an unknown channel.
    """
    known = set(sections) | {EVENTS_CHANNEL}
    out: set[str] = set()
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name not in known:
            raise ParamError(
                "channels",
                f"unknown channel {name!r} (known: {', '.join([*sections, EVENTS_CHANNEL])})",
            )
        out.add(name)
    return frozenset(out)


def _parse_int(name: str, text: str) -> int:
    try:
        if not text.strip().lstrip("-").isdigit():
            raise ValueError(text)
        return int(text)
    except ValueError:
        raise ParamError(name, f"expected an integer, got {text!r}") from None


# --- client messages -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Add channels to the connection's subscription."""

    channels: frozenset[str]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Remove channels from the connection's subscription."""

    channels: frozenset[str]


@dataclass(frozen=True, slots=True)
class Refresh:
    """Ask for a fresh snapshot at the group's next flush."""


@dataclass(frozen=True, slots=True)
class Ping:
    """Ask for a ``pong`` that echoes ``payload``."""

    payload: Any


ClientMessage = Subscribe | Unsubscribe | Refresh | Ping


def parse_client_message(data: str | bytes, sections: Sequence[str]) -> ClientMessage:
    """Decode one client message: JSON in a text frame, MessagePack in a binary frame.

    Raises :class:`MessageError` with code ``bad_message`` (undecodable, not an object, bad
    fields), ``unknown_type`` or ``unknown_channel``.
    """
    try:
        if isinstance(data, str):
            obj = orjson.loads(data)
        else:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        syntax = "JSON" if isinstance(data, str) else "MessagePack"
        raise MessageError("bad_message", f"invalid {syntax}: {exc}") from None
    if not isinstance(obj, dict):
        raise MessageError("bad_message", f"expected an object, got {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise MessageError("bad_message", "missing or non-string 'type'")
    if kind in ("subscribe", "unsubscribe"):
        extra = set(obj) - {"type", "channels"}
        if extra:
            raise MessageError("bad_message", f"{kind}: unexpected field {sorted(extra)[0]!r}")
        names = obj.get("channels")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise MessageError("bad_message", f"{kind}: 'channels' must be a list of strings")
        try:
            channels = parse_channels(names, sections)
        except ParamError as exc:
            raise MessageError("unknown_channel", exc.message) from None
        if not channels:
            raise MessageError("bad_message", f"{kind}: 'channels' is empty")
        return Subscribe(channels) if kind == "subscribe" else Unsubscribe(channels)
    if kind == "refresh":
        return Refresh()
    if kind == "ping":
        return Ping(obj.get("payload"))
    raise MessageError(
        "unknown_type",
        f"unknown message type {kind[:64]!r} (expected subscribe, unsubscribe, refresh or ping)",
    )


class StrikeCounter:
    """Counts bad messages in a sliding window; says when a client has had too many.

    ``strike(now)`` records one at time ``now`` (seconds, any monotonic clock) and returns
    ``True`` when more than ``limit`` happened within the last ``window`` seconds.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()

    def strike(self, now: float) -> bool:
        """Record a bad message; ``True`` means the client is over the limit."""
        self._times.append(now)
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        return len(self._times) > self.limit


# --- messages the server encodes itself -------------------------------------------------------


def rfc3339_ms(timestamp_ms: int) -> str:
    """Unix milliseconds as RFC 3339 UTC with milliseconds: ``2026-11-27T10:30:00.100Z``."""
    seconds, millis = divmod(timestamp_ms, 1000)
    moment = _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


def encode_message(fmt: Format, message: Mapping[str, Any]) -> bytes:
    """Encode a server message as compact JSON (UTF-8) or MessagePack.

    Raises :class:`TypeError`/:class:`ValueError` if ``message`` holds something the format
    cannot carry (e.g. MessagePack ``bin`` in JSON).
    """
    if fmt == "json":
        return orjson.dumps(message)
    packed = msgpack.packb(message, use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed


def event_message(
    fmt: Format, seq: int, timestamp_ms: int, channel: str, data: Mapping[str, Any]
) -> bytes:
    """The bytes of ``{"type":"event","seq":..,"timestamp":..,"channel":..,"data":{..}}``."""
    return encode_message(
        fmt,
        {
            "type": "event",
            "seq": seq,
            "timestamp": rfc3339_ms(timestamp_ms),
            "channel": channel,
            "data": data,
        },
    )


def recent_events_message(
    fmt: Format, timestamp_ms: int, events: Sequence[tuple[str, int, Mapping[str, Any]]]
) -> bytes:
    """The bytes of ``{"type":"events","timestamp":..,"events":[{"channel","timestamp","data"}]}``.

    ``events`` are ``(channel, timestamp_ms, data)``, oldest first: the recent events a joining
    client receives right after its snapshot (no ``seq``).
    """
    return encode_message(
        fmt,
        {
            "type": "events",
            "timestamp": rfc3339_ms(timestamp_ms),
            "events": [
                {"channel": channel, "timestamp": rfc3339_ms(ts), "data": data}
                for channel, ts, data in events
            ],
        },
    )


def status_message(fmt: Format, timestamp_ms: int, body: Mapping[str, Any]) -> bytes:
    """The bytes of ``{"type":"status","timestamp":..,"feed":..,"state":..,"sources":[..],
    "stale":[..]}`` (``body`` holds every field but ``type`` and ``timestamp``)."""
    return encode_message(fmt, {"type": "status", "timestamp": rfc3339_ms(timestamp_ms), **body})


def pong_message(fmt: Format, payload: Any, timestamp_ms: int) -> bytes:
    """The bytes of ``{"type":"pong","payload":..,"timestamp":..}``."""
    return encode_message(
        fmt, {"type": "pong", "payload": payload, "timestamp": rfc3339_ms(timestamp_ms)}
    )


def error_message(fmt: Format, code: str, message: str) -> bytes:
    """The bytes of ``{"type":"error","code":..,"message":..}``."""
    return encode_message(fmt, {"type": "error", "code": code, "message": message})


def empty_update(fmt: Format, diff: Diff, seq: int, version: int, timestamp_ms: int) -> bytes:
    """An ``update`` with no change (a catch-up for a client that is already up to date)."""
    body: dict[str, Any] = {
        "type": "update",
        "seq": seq,
        "version": version,
        "timestamp": rfc3339_ms(timestamp_ms),
    }
    if diff == "changes":
        body["changes"] = {}
    else:
        body["patch"] = []
    return encode_message(fmt, body)
