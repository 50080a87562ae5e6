"""The wire protocol, without I/O: what a client may send and what it means.

Everything here is pure: names and close codes, the ``/ws`` query string, client messages.
What the server sends is encoded in :mod:`dashboard_server.core.messages`. docs/protocol.md is
the reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
    "DEFAULT_MAX_SYMBOLS",
    "DIFFS",
    "EVENTS_CHANNEL",
    "EVENT_CHANNELS",
    "FORMATS",
    "MAX_SYMBOL_LENGTH",
    "TIERS",
    "ClientMessage",
    "ConnectParams",
    "ControlLimits",
    "MessageError",
    "ParamError",
    "Ping",
    "Query",
    "Refresh",
    "Subscribe",
    "Unsubscribe",
    "parse_channels",
    "parse_client_message",
    "parse_connect_query",
    "parse_symbols",
    "quantise_interval",
    "split_query",
]

Format = Literal["msgpack", "json"]
Diff = Literal["changes", "json-patch"]
Tier = Literal["tui", "web"]

TIERS: Final[tuple[Tier, ...]] = ("tui", "web")
FORMATS: Final[tuple[Format, ...]] = ("msgpack", "json")
DIFFS: Final[tuple[Diff, ...]] = ("changes", "json-patch")
DEFAULT_MAX_SYMBOLS: Final = 100
"""The default of the ``max_symbols`` setting: symbols a client's filter may hold."""
MAX_SYMBOL_LENGTH: Final = 64
"""The longest symbol a client may name."""

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
    "symbols",
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
    channels_named: bool = False
    """Whether the client named its channels (``False``: it got the default, every channel)."""
    symbols: frozenset[str] | None = None
    """The symbol filter (``None``: every symbol); docs/protocol.md, "Symbols"."""


Query = tuple[tuple[str, str], ...]
"""A request's query string, split once into ``(name, value)`` pairs, in order."""


def split_query(query: str) -> Query:
    """Split a query string (without the ``?``) into percent-decoded pairs, blanks kept."""
    return tuple(parse_qsl(query, keep_blank_values=True, strict_parsing=False))


def parse_connect_query(
    query: str | Query,
    *,
    sections: Sequence[str],
    tier_intervals: Mapping[str, int],
    min_interval_ms: int,
    max_interval_ms: int,
    interval_steps: Sequence[int] = (),
    max_symbols: int = DEFAULT_MAX_SYMBOLS,
) -> ConnectParams:
    """Validate the query of a ``/ws`` request (a string without the ``?``, or already split).

    A valid ``interval_ms`` is rounded to the nearest of ``interval_steps`` (the slower one on a
    tie; none given: kept as it is), so that clients cannot make one flush task each.
    Raises :class:`ParamError` naming the first bad parameter.
    """
    values: dict[str, str] = {}
    for name, value in split_query(query) if isinstance(query, str) else query:
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
        interval_ms = quantise_interval(interval_ms, interval_steps)

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

    symbols: frozenset[str] | None = None
    if "symbols" in values:
        try:
            symbols = parse_symbols(values["symbols"].split(","), max_symbols)
        except ValueError as exc:
            raise ParamError("symbols", str(exc)) from None

    return ConnectParams(
        tier,
        fmt,
        diff,
        channels,
        interval_ms,
        since,
        epoch,
        channels_named="channels" in values,
        symbols=symbols,
    )


def quantise_interval(interval_ms: int, steps: Sequence[int]) -> int:
    """The step nearest to ``interval_ms`` (the larger on a tie); ``interval_ms`` if no steps."""
    if not steps:
        return interval_ms
    return min(steps, key=lambda step: (abs(step - interval_ms), -step))


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


def parse_symbols(names: Iterable[Any], max_symbols: int) -> frozenset[str]:
    """Check a list of symbols (blank entries ignored); :class:`ValueError` says what is wrong.

    A symbol is a string of 1..:data:`MAX_SYMBOL_LENGTH` characters without commas, whitespace
    or control characters; at most ``max_symbols`` distinct ones, at least one.
    """
    out: set[str] = set()
    for raw in names:
        if not isinstance(raw, str):
            raise ValueError(f"a symbol must be a string, got {type(raw).__name__}")
        name = raw.strip()
        if not name:
            continue
        if len(name) > MAX_SYMBOL_LENGTH:
            raise ValueError(f"symbol {name[:16]!r}...: longer than {MAX_SYMBOL_LENGTH} characters")
        if any(c == "," or c.isspace() or not c.isprintable() for c in name):
            raise ValueError(f"symbol {name!r}: no commas, spaces or control characters")
        out.add(name)
        if len(out) > max_symbols:
            raise ValueError(f"at most {max_symbols} symbols")
    if not out:
        raise ValueError("must name at least one symbol")
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
    """Add channels and/or symbols to the connection's subscription."""

    channels: frozenset[str]
    symbols: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Remove channels and/or symbols from the connection's subscription."""

    channels: frozenset[str]
    symbols: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Refresh:
    """Ask for a fresh snapshot at the group's next flush."""


@dataclass(frozen=True, slots=True)
class Ping:
    """Ask for a ``pong`` that echoes ``payload``."""

    payload: Any


ClientMessage = Subscribe | Unsubscribe | Refresh | Ping


@dataclass(frozen=True, slots=True)
class ControlLimits:
    """The limits of one client (control) message, checked before and right after decoding.

    ``size``: bytes of the message (UTF-8 for a text frame), checked before decoding;
    ``elements``: values in the decoded message, containers and scalars, the message itself
    included; ``depth``: nesting of containers (the message object is depth 1). A ``ping``
    payload is echoed in the ``pong``, so these bound the pong too.
    """

    size: int = 4096
    elements: int = 256
    depth: int = 16


DEFAULT_CONTROL_LIMITS: Final = ControlLimits()


def _check_shape(obj: Any, limits: ControlLimits) -> None:
    """Raise ``message_too_complex`` if ``obj`` has too many values or nests too deep."""
    count = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if isinstance(value, dict):
            count += len(value)  # the keys
            children: Any = value.values()
        elif isinstance(value, list | tuple):
            children = value
        else:
            children = None
        if count > limits.elements:
            raise MessageError(
                "message_too_complex", f"more than {limits.elements} values in one message"
            )
        if children is not None:
            if depth > limits.depth:
                raise MessageError(
                    "message_too_complex", f"containers nested deeper than {limits.depth}"
                )
            stack.extend((child, depth + 1) for child in children)


def parse_client_message(
    data: str | bytes,
    sections: Sequence[str],
    limits: ControlLimits = DEFAULT_CONTROL_LIMITS,
    *,
    max_symbols: int = DEFAULT_MAX_SYMBOLS,
) -> ClientMessage:
    """Decode one client message: JSON in a text frame, MessagePack in a binary frame.

    Raises :class:`MessageError` with code ``message_too_large`` (over ``limits.size`` bytes,
    not decoded at all), ``message_too_complex`` (over ``limits.elements`` values or
    ``limits.depth`` levels), ``bad_message`` (undecodable, not an object, bad fields),
    ``unknown_type``, ``unknown_channel`` or ``bad_symbols``.
    """
    size = len(data)
    if size <= limits.size and isinstance(data, str):
        size = len(data.encode("utf-8", "surrogatepass"))
    if size > limits.size:
        raise MessageError(
            "message_too_large", f"a client message may have at most {limits.size} bytes"
        )
    try:
        if isinstance(data, str):
            obj = orjson.loads(data)
        else:
            obj = msgpack.unpackb(
                data,
                raw=False,
                strict_map_key=True,
                max_array_len=limits.elements,
                max_map_len=limits.elements,
                max_str_len=limits.size,
                max_bin_len=limits.size,
                max_ext_len=limits.size,
            )
    except Exception as exc:  # msgpack raises several unrelated types
        if "exceeds max_" in str(exc):  # a declared length over a limit: not even allocated
            raise MessageError("message_too_complex", str(exc)) from None
        syntax = "JSON" if isinstance(data, str) else "MessagePack"
        raise MessageError("bad_message", f"invalid {syntax}: {exc}") from None
    _check_shape(obj, limits)
    if not isinstance(obj, dict):
        raise MessageError("bad_message", f"expected an object, got {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise MessageError("bad_message", "missing or non-string 'type'")
    if kind in ("subscribe", "unsubscribe"):
        extra = set(obj) - {"type", "channels", "symbols"}
        if extra:
            raise MessageError("bad_message", f"{kind}: unexpected field {sorted(extra)[0]!r}")
        if "channels" not in obj and "symbols" not in obj:
            raise MessageError("bad_message", f"{kind}: 'channels' or 'symbols' required")
        channels: frozenset[str] = frozenset()
        if "channels" in obj:
            names = obj["channels"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise MessageError("bad_message", f"{kind}: 'channels' must be a list of strings")
            try:
                channels = parse_channels(names, sections)
            except ParamError as exc:
                raise MessageError("unknown_channel", exc.message) from None
            if not channels:
                raise MessageError("bad_message", f"{kind}: 'channels' is empty")
        symbols: frozenset[str] | None = None
        if "symbols" in obj:
            listed = obj["symbols"]
            if not isinstance(listed, list):
                raise MessageError("bad_symbols", f"{kind}: 'symbols' must be a list of strings")
            try:
                symbols = parse_symbols(listed, max_symbols)
            except ValueError as exc:
                raise MessageError("bad_symbols", f"{kind}: symbols: {exc}") from None
        if kind == "subscribe":
            return Subscribe(channels, symbols)
        return Unsubscribe(channels, symbols)
    if kind == "refresh":
        return Refresh()
    if kind == "ping":
        return Ping(obj.get("payload"))
    raise MessageError(
        "unknown_type",
        f"unknown message type {kind[:64]!r} (expected subscribe, unsubscribe, refresh or ping)",
    )
