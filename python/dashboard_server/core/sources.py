"""Declarative sources: which backend feeds which part of the state, as data, and what a message
of each becomes. Pure: no I/O (the transports in :mod:`dashboard_server.ingest` do that).

A source (docs/sources.md) names a transport and where it listens, then one or more outputs::

    - name: positions
      transport: redis-keys        # redis-keys | redis-pubsub | nats | http-poll
      pattern: "position:*"        # redis: PREFIX* glob; nats: subject; http-poll: a URL path
      endpoint: redis              # which server: redis, nats, strategy_engine, account_monitor
      section: positions           # or  events: alerts
      id: key                      # key | token:N | field:a.b | const:NAME | entries
      transforms:
        - decimals: [quantity, entry_price]
        - side_from_sign: {field: quantity}
        - drop: [trades]

:func:`parse_sources` validates such a list and raises :class:`SourceError` naming the source and
the field; :meth:`Output.apply` turns one decoded message into :class:`Op` values. A source that
needs no transform and takes the item whole (``raw``) is applied by the engine from the payload's
bytes (no Python objects are built), as the generic Redis contract is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from dashboard_server.core.pointer import join
from dashboard_server.core.protocol import EVENT_CHANNELS
from dashboard_server.core.timefmt import rfc3339_ms

__all__ = [
    "ENDPOINTS",
    "PRESETS",
    "TRANSPORTS",
    "Op",
    "Output",
    "Source",
    "SourceError",
    "generic_sources",
    "item_id",
    "load_preset",
    "parse_sources",
    "subjects_overlap",
]

Transport = Literal["redis-keys", "redis-pubsub", "nats", "http-poll"]
TRANSPORTS: Final[tuple[Transport, ...]] = ("redis-keys", "redis-pubsub", "nats", "http-poll")
ENDPOINTS: Final = ("redis", "nats", "strategy_engine", "account_monitor")
"""The servers a source may name; each is a setting (``redis_url``, ``nats_url``, ...)."""
_DEFAULT_ENDPOINT: Final = {
    "redis-keys": "redis",
    "redis-pubsub": "redis",
    "nats": "nats",
    "http-poll": None,  # must be named
}
_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PATH: Final = re.compile(r"[^.\s]+(?:\.[^.\s]+)*")
"""A dotted field path: ``order``, ``order.order_id``."""
_SUBJECT_TOKEN: Final = re.compile(r"[^.\s*>]+|\*|>")
_ENDPOINTS_OF: Final = {
    "redis-keys": ("redis",),
    "redis-pubsub": ("redis",),
    "nats": ("nats",),
    "http-poll": ("account_monitor", "strategy_engine"),
}
"""The endpoints each transport can read from."""
_SOURCE_KEYS: Final = frozenset(
    {
        "name",
        "transport",
        "pattern",
        "endpoint",
        "interval_s",
        "resync",
        "bootstrap",
        "outputs",
        "max_item_bytes",
        "max_id_bytes",
    }
)
_OUTPUT_KEYS: Final = frozenset(
    {"section", "events", "select", "id", "transforms", "mode", "dedupe", "raw"}
)


class SourceError(ValueError):
    """A source definition is wrong; the message names the source and the field."""


@dataclass(frozen=True, slots=True)
class Op:
    """One write a message turns into: ``replace``/``merge``/``remove`` at ``path``, or an
    ``event`` on ``channel``."""

    kind: Literal["replace", "merge", "remove", "event"]
    path: str = ""
    value: Any = None
    channel: str = ""


Transform = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Output:
    """Where a message of a source goes: a state section (items keyed by ``id``) or an event
    channel, after ``select`` and the ``transforms``."""

    source: str
    section: str | None
    events: str | None
    select: tuple[str, ...]
    id: str
    transforms: tuple[tuple[str, Transform], ...]
    mode: Literal["replace", "merge"]
    dedupe: str | None
    raw: bool

    def apply(self, key: str, message: Any) -> list[Op]:
        """The ops for one decoded ``message`` that arrived under ``key`` (the key's id part,
        the NATS subject, or the URL). Raises :class:`ValueError` naming what is wrong."""
        value = message
        for name in self.select:
            if not isinstance(value, dict) or name not in value:
                raise ValueError(f"no field {'.'.join(self.select)!r} in the payload")
            value = value[name]
        if self.id == "entries":
            if not isinstance(value, dict):
                raise ValueError("expected an object whose members are the items")
            return [self._one(str(k), v) for k, v in value.items()]
        return [self._one(item_id(self.id, key, value), value)]

    def _one(self, ident: str, value: Any) -> Op:
        if not isinstance(value, dict):
            raise ValueError(f"an item must be an object, not {type(value).__name__}")
        if self.transforms:
            # transforms rewrite the item's members in place: on a copy, so that another output
            # of the same message (or the caller) never sees this one's changes
            value = dict(value)
        for name, transform in self.transforms:
            try:
                value = transform(value)
            except Exception as exc:  # any failure on the data is the data's fault
                raise ValueError(f"transform {name}: {exc}") from None
        if self.events is not None:
            return Op("event", value=value, channel=self.events)
        assert self.section is not None
        return Op(self.mode, join(self.section, ident), value)


def item_id(spec: str, key: str, value: Any) -> str:
    """The id of an item by ``spec``: ``key`` (the key/subject suffix itself), ``token:N`` (the
    N-th ``.``-separated token of a subject, from 0; negative from the end), ``field:a.b`` (a
    field of the payload), ``const:NAME``."""
    if spec == "key":
        ident = key
    elif spec.startswith("token:"):
        tokens = key.split(".")
        n = int(spec[6:])
        if not -len(tokens) <= n < len(tokens):
            raise ValueError(f"subject {key!r} has no token {n}")
        ident = tokens[n]
    elif spec.startswith("field:"):
        ident_value: Any = value
        for part in spec[6:].split("."):
            if not isinstance(ident_value, dict) or part not in ident_value:
                raise ValueError(f"no id field {spec[6:]!r} in the payload")
            ident_value = ident_value[part]
        if isinstance(ident_value, bool) or not isinstance(ident_value, str | int):
            raise ValueError(f"id field {spec[6:]!r} must be a string or an integer")
        ident = str(ident_value)
    else:  # const:NAME
        ident = spec[6:]
    if not ident:
        raise ValueError("empty id")
    return ident


@dataclass(frozen=True, slots=True)
class Source:
    """One validated source (see the module doc)."""

    name: str
    transport: Transport
    pattern: str
    endpoint: str
    outputs: tuple[Output, ...]
    interval_s: float = 5.0
    """http-poll: time between polls; redis-keys: period of the scan when keyspace notifications
    are off."""
    resync: tuple[str, ...] = ()
    """Sources whose bootstrap runs again after this one (re)connects (at-most-once transports)."""
    bootstrap: bool = True
    """redis-pubsub: also SCAN + GET the keys of the same pattern (SET + PUBLISH contracts)."""
    max_item_bytes: int | None = None
    """Largest payload taken from this source (unset: the ``max_item_bytes`` setting)."""
    max_id_bytes: int | None = None
    """Longest key (id part, subject, URL) taken from this source (unset: ``max_id_bytes``)."""
    prefix: str = field(default="", compare=False)
    """redis: the pattern without its trailing ``*``."""

    @property
    def raw(self) -> bool:
        """Whether each payload is an item taken whole (applied from its bytes by the engine)."""
        return len(self.outputs) == 1 and self.outputs[0].raw


# --- transforms ------------------------------------------------------------------------------


def _fields(arg: Any, where: str) -> tuple[str, ...]:
    if isinstance(arg, str):
        arg = [arg]
    if not isinstance(arg, list) or not arg or not all(isinstance(f, str) and f for f in arg):
        raise SourceError(f"{where}: expected a field name or a list of field names")
    return tuple(arg)


_DECIMAL: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
"""A decimal number as the backends write it (``"0.003"``, ``"-0.05"``, ``"1e-8"``): no spaces,
no ``_``, no ``inf`` or ``nan``."""


def _number(text: Any) -> Any:
    """A decimal string as a number (``-0`` as ``0.0``); any other value as it is."""
    if isinstance(text, str):
        if len(text) > 64 or not _DECIMAL.fullmatch(text):
            raise ValueError(f"{text[:40]!r} is not a decimal number")
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(f"{text[:40]!r} is not a finite number")
        return number + 0.0  # never -0.0: a value of its own for the engine
    return text


def _finite(value: Any, what: str) -> float:
    """A decimal string or a JSON number as a finite float; :class:`ValueError` otherwise."""
    kind = type(value)  # exact types first: this runs for every level of every book
    if kind is float:
        if math.isfinite(value):
            return float(value) + 0.0
    elif kind is int:
        return float(value) + 0.0
    elif kind is str:
        if len(value) <= 64 and _DECIMAL.fullmatch(value):
            number = float(value)
            if math.isfinite(number):
                return number + 0.0
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return _finite(float(value), what)
    raise ValueError(f"{what} {str(value)[:40]!r} is not a finite number")


def _decimals(arg: Any, where: str) -> Transform:
    every = arg == "*"
    names = () if every else _fields(arg, where)

    def decimals(item: dict[str, Any]) -> dict[str, Any]:
        if every:  # each member that is a decimal string; other strings (a time) stay
            for key, value in item.items():
                if isinstance(value, str) and len(value) <= 64 and _DECIMAL.fullmatch(value):
                    item[key] = _number(value)
            return item
        for key in names:
            if key in item:
                item[key] = _number(item[key])
        return item

    return decimals


def _book(arg: Any, where: str) -> Transform:
    arg = {} if arg is None else arg
    if not isinstance(arg, dict) or set(arg) - {"bids", "asks", "depth"}:
        raise SourceError(f"{where}: expected {{bids, asks, depth}}")
    bids, asks = str(arg.get("bids", "bids")), str(arg.get("asks", "asks"))
    depth = arg.get("depth", 20)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise SourceError(f"{where}: depth must be a positive integer")

    def levels(side: Any, best_first_descending: bool) -> list[list[float]]:
        if isinstance(side, list):  # already levels
            if not all(isinstance(level, list) and len(level) == 2 for level in side):
                raise ValueError("a level must be [price, size]")
            pairs = [(_finite(p, "price"), _finite(s, "size")) for p, s in side]
        elif isinstance(side, dict):
            pairs = [(_finite(p, "price"), _finite(s, "size")) for p, s in side.items()]
        else:
            raise ValueError("a book side must be an object {price: size} or a list of levels")
        pairs.sort(reverse=best_first_descending)  # by price (a price is in a side once)
        return [[p, s] for p, s in pairs[:depth]]

    def book(item: dict[str, Any]) -> dict[str, Any]:
        if bids in item:
            item[bids] = levels(item[bids], True)
        if asks in item:
            item[asks] = levels(item[asks], False)
        return item

    return book


def _side_from_sign(arg: Any, where: str) -> Transform:
    arg = {"field": arg} if isinstance(arg, str) else arg
    if not isinstance(arg, dict) or "field" not in arg or set(arg) - {"field", "to", "labels"}:
        raise SourceError(f"{where}: expected {{field, to, labels}}")
    source, target = str(arg["field"]), str(arg.get("to", "side"))
    labels = arg.get("labels", ["LONG", "SHORT", "FLAT"])
    if not (
        isinstance(labels, list) and len(labels) == 3 and all(isinstance(x, str) for x in labels)
    ):
        raise SourceError(f"{where}.labels: must be three strings [positive, negative, zero]")
    if not isinstance(arg["field"], str) or not isinstance(arg.get("to", "side"), str):
        raise SourceError(f"{where}: field and to must be field names")

    def side(item: dict[str, Any]) -> dict[str, Any]:
        if source in item:
            q = _finite(item[source], source)
            item[target] = labels[0] if q > 0 else labels[1] if q < 0 else labels[2]
        return item

    return side


_UNITS: Final = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 1_000_000)}
"""Unit -> (multiplier, divisor) to milliseconds."""
_MAX_MS: Final = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the last time RFC 3339 can write."""


def _unix_time(arg: Any, where: str) -> Transform:
    if not isinstance(arg, dict) or "fields" not in arg or set(arg) - {"fields", "unit"}:
        raise SourceError(f"{where}: expected {{fields, unit}}")
    names = _fields(arg["fields"], f"{where}.fields")
    unit = arg.get("unit", "s")
    if unit not in _UNITS:
        raise SourceError(f"{where}.unit: expected one of {', '.join(_UNITS)}, got {unit!r}")
    multiplier, divisor = _UNITS[unit]

    def unix_time(item: dict[str, Any]) -> dict[str, Any]:
        for name in names:
            value = item.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue  # absent, or already a text time
            if isinstance(value, float):
                if not math.isfinite(value):
                    raise ValueError(f"{name} {value!r} is not a time")
                ms = math.floor(value * multiplier / divisor)
            else:  # exact, whatever the magnitude
                ms = value * multiplier // divisor
            if not 0 <= ms <= _MAX_MS:
                raise ValueError(f"{name} {value!r} ({unit}) is not a time between 1970 and 9999")
            item[name] = rfc3339_ms(ms)
        return item

    return unix_time


def _drop(arg: Any, where: str) -> Transform:
    names = _fields(arg, where)

    def drop(item: dict[str, Any]) -> dict[str, Any]:
        for name in names:
            item.pop(name, None)
        return item

    return drop


def _rename(arg: Any, where: str) -> Transform:
    if (
        not isinstance(arg, dict)
        or not arg
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in arg.items())
    ):
        raise SourceError(f"{where}: expected {{old: new, ...}}")
    pairs = tuple(arg.items())

    def rename(item: dict[str, Any]) -> dict[str, Any]:
        for old, new in pairs:
            if old in item:
                item[new] = item.pop(old)
        return item

    return rename


def _upper(arg: Any, where: str) -> Transform:
    names = _fields(arg, where)

    def upper(item: dict[str, Any]) -> dict[str, Any]:
        for name in names:
            if isinstance(item.get(name), str):
                item[name] = item[name].upper()
        return item

    return upper


TRANSFORMS: Final[dict[str, Callable[[Any, str], Transform]]] = {
    "decimals": _decimals,
    "book": _book,
    "side_from_sign": _side_from_sign,
    "unix_time": _unix_time,
    "drop": _drop,
    "rename": _rename,
    "upper": _upper,
}
"""The named transforms (docs/sources.md): each takes its argument and says what is wrong with it
at load time, then rewrites an item (a dict) in place."""


# --- parsing ---------------------------------------------------------------------------------


def _output(
    source: str, raw: Mapping[str, Any], where: str, sections: Sequence[str], transport: str
) -> Output:
    unknown = set(raw) - _OUTPUT_KEYS
    if unknown:
        raise SourceError(f"{where}: unknown field {sorted(map(str, unknown))[0]!r}")
    section, events = raw.get("section"), raw.get("events")
    if (section is None) == (events is None):
        raise SourceError(f"{where}: give exactly one of section or events")
    if section is not None and section not in sections:
        raise SourceError(
            f"{where}.section: {section!r} is not one of the sections ({', '.join(sections)})"
        )
    if events is not None and events not in EVENT_CHANNELS:
        raise SourceError(
            f"{where}.events: {events!r} is not an event channel ({', '.join(EVENT_CHANNELS)})"
        )
    select = raw.get("select", "")
    if not isinstance(select, str) or (select and not _PATH.fullmatch(select)):
        raise SourceError(f"{where}.select: expected a dotted field path, got {select!r}")
    default_id = "key" if transport.startswith("redis") else "const:" + source
    ident = raw.get("id", default_id)
    if not isinstance(ident, str) or not (
        ident in ("key", "entries")
        or re.fullmatch(r"token:-?\d+", ident)
        or (ident.startswith("field:") and _PATH.fullmatch(ident[6:]))
        or re.fullmatch(r"const:\S+", ident)
    ):
        raise SourceError(
            f"{where}.id: expected key, entries, token:N, field:a.b or const:NAME, got {ident!r}"
        )
    transforms: list[tuple[str, Transform]] = []
    specs = raw.get("transforms", [])
    if not isinstance(specs, list):
        raise SourceError(f"{where}.transforms: expected a list")
    for i, spec in enumerate(specs):
        at = f"{where}.transforms[{i}]"
        if isinstance(spec, str):
            spec = {spec: None}
        if not isinstance(spec, dict) or len(spec) != 1:
            raise SourceError(f"{at}: expected one {{name: argument}}")
        ((name, arg),) = spec.items()
        if name not in TRANSFORMS:
            raise SourceError(
                f"{at}: unknown transform {name!r} (known: {', '.join(sorted(TRANSFORMS))})"
            )
        transforms.append((name, TRANSFORMS[name](arg, f"{at}.{name}")))
    mode = raw.get("mode", "replace")
    if mode not in ("replace", "merge"):
        raise SourceError(f"{where}.mode: expected replace or merge, got {mode!r}")
    if mode == "merge" and events is not None:
        raise SourceError(f"{where}.mode: an events output has no mode")
    dedupe = raw.get("dedupe")
    if dedupe is not None and (not isinstance(dedupe, str) or not dedupe or events is None):
        raise SourceError(f"{where}.dedupe: a field name, for an events output only")
    takes_whole = not transforms and not select and ident == "key" and mode == "replace"
    is_raw = raw.get("raw", takes_whole)
    if not isinstance(is_raw, bool):
        raise SourceError(f"{where}.raw: expected true or false")
    if is_raw and not takes_whole:
        raise SourceError(
            f"{where}.raw: a raw output takes the item whole: no select, transforms or merge, "
            "and id: key"
        )
    return Output(
        source=source,
        section=section,
        events=events,
        select=tuple(select.split(".")) if select else (),
        id=ident,
        transforms=tuple(transforms),
        mode=mode,
        dedupe=dedupe,
        raw=is_raw and events is None,
    )


def _source(raw: Any, i: int, sections: Sequence[str]) -> Source:
    if not isinstance(raw, dict):
        raise SourceError(f"sources[{i}]: expected a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SourceError(f"sources[{i}].name: expected 1-64 letters, digits, '_', '.', '-'")
    where = f"source {name!r}"
    unknown = set(raw) - _SOURCE_KEYS - _OUTPUT_KEYS
    if unknown:
        raise SourceError(f"{where}: unknown field {sorted(map(str, unknown))[0]!r}")
    transport = raw.get("transport")
    if transport not in TRANSPORTS:
        raise SourceError(
            f"{where}.transport: expected one of {', '.join(TRANSPORTS)}, got {transport!r}"
        )
    pattern = raw.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise SourceError(f"{where}.pattern: required")
    prefix = ""
    if transport.startswith("redis"):
        if not pattern.endswith("*") or any(c in pattern[:-1] for c in "*?[]\\"):
            raise SourceError(f"{where}.pattern: a Redis pattern is PREFIX* ({pattern!r})")
        prefix = pattern[:-1]
    elif transport == "nats":
        tokens = pattern.split(".")
        if not all(_SUBJECT_TOKEN.fullmatch(t) for t in tokens) or ">" in tokens[:-1]:
            raise SourceError(
                f"{where}.pattern: a NATS subject: tokens separated by '.', '*' a whole token, "
                f"'>' the last one ({pattern!r})"
            )
    elif transport == "http-poll" and (
        not pattern.startswith("/") or any(c.isspace() or c == "#" for c in pattern)
    ):
        raise SourceError(f"{where}.pattern: an HTTP path starting with '/' ({pattern!r})")
    endpoint = raw.get("endpoint", _DEFAULT_ENDPOINT[transport])
    if endpoint is None:
        raise SourceError(
            f"{where}.endpoint: required for {transport} ({' or '.join(_ENDPOINTS_OF[transport])})"
        )
    if endpoint not in ENDPOINTS:
        raise SourceError(
            f"{where}.endpoint: expected one of {', '.join(ENDPOINTS)}, got {endpoint!r}"
        )
    if endpoint not in _ENDPOINTS_OF[transport]:
        raise SourceError(
            f"{where}.endpoint: {transport} reads from {' or '.join(_ENDPOINTS_OF[transport])}, "
            f"not {endpoint}"
        )
    interval = raw.get("interval_s", 5.0)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
        raise SourceError(f"{where}.interval_s: must be a number > 0")
    resync = raw.get("resync", [])
    if not isinstance(resync, list) or not all(isinstance(r, str) for r in resync):
        raise SourceError(f"{where}.resync: expected a list of source names")
    if name in resync:
        raise SourceError(f"{where}.resync: a source cannot resync itself")
    bootstrap = raw.get("bootstrap", transport == "redis-pubsub")
    if not isinstance(bootstrap, bool):
        raise SourceError(f"{where}.bootstrap: expected true or false")
    limits: dict[str, int] = {}
    for limit in ("max_item_bytes", "max_id_bytes"):
        value = raw.get(limit)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SourceError(f"{where}.{limit}: must be an integer > 0")
            limits[limit] = value
    if "outputs" in raw:
        if set(raw) & _OUTPUT_KEYS:
            raise SourceError(f"{where}: give the output fields inside outputs, or no outputs")
        outs = raw["outputs"]
        if not isinstance(outs, list) or not outs:
            raise SourceError(f"{where}.outputs: expected a non-empty list")
    else:
        outs = [{k: v for k, v in raw.items() if k in _OUTPUT_KEYS}]
    for j, out in enumerate(outs):
        if not isinstance(out, dict):
            raise SourceError(f"{where}.outputs[{j}]: expected a mapping")
    outputs = tuple(
        _output(
            name,
            out,
            f"{where}.outputs[{j}]" if "outputs" in raw else where,
            sections,
            transport,
        )
        for j, out in enumerate(outs)
    )
    return Source(
        name=name,
        transport=transport,
        pattern=pattern,
        endpoint=endpoint,
        outputs=outputs,
        interval_s=float(interval),
        resync=tuple(resync),
        bootstrap=bootstrap,
        **limits,
        prefix=prefix,
    )


def parse_sources(raw: Iterable[Any], sections: Sequence[str]) -> tuple[Source, ...]:
    """Validate a list of source definitions against the configured ``sections``."""
    sources = tuple(_source(item, i, sections) for i, item in enumerate(raw))
    by_name: dict[str, Source] = {}
    for source in sources:
        if source.name in by_name:
            raise SourceError(f"source {source.name!r}: name given more than once")
        by_name[source.name] = source
    for source in sources:
        for target in source.resync:
            found = by_name.get(target)
            if found is None:
                raise SourceError(f"source {source.name!r}.resync: no source {target!r}")
            if not (_reads_keys(found) or found.transport == "http-poll"):
                raise SourceError(
                    f"source {source.name!r}.resync: source {target!r} has nothing to reload "
                    "from (only Redis keys and HTTP polls do)"
                )
    for i, source in enumerate(sources):
        for other in sources[i + 1 :]:
            if _overlap(source, other):
                raise SourceError(
                    f"source {other.name!r}.pattern: {other.pattern!r} overlaps the pattern "
                    f"{source.pattern!r} of source {source.name!r}"
                )
    return sources


def _reads_keys(source: Source) -> bool:
    return source.transport == "redis-keys" or (
        source.transport == "redis-pubsub" and source.bootstrap
    )


def _overlap(a: Source, b: Source) -> bool:
    """Whether one message (a Redis channel or key, a NATS subject) could belong to both."""
    if a.transport.startswith("redis") and b.transport.startswith("redis"):
        same_kind = (a.transport == b.transport == "redis-pubsub") or (
            _reads_keys(a) and _reads_keys(b)
        )
        return same_kind and (a.prefix.startswith(b.prefix) or b.prefix.startswith(a.prefix))
    if a.transport == b.transport == "nats":
        return subjects_overlap(a.pattern, b.pattern)
    return False


def subjects_overlap(a: str, b: str) -> bool:
    """Whether some NATS subject matches both subject patterns (``*``: one token, ``>``: one or
    more at the end)."""
    ta, tb = a.split("."), b.split(".")
    for x, y in zip(ta, tb, strict=False):
        if x == ">" or y == ">":
            return True
        if x != y and "*" not in (x, y):
            return False
    return len(ta) == len(tb)


# --- presets ---------------------------------------------------------------------------------

PRESETS: Final = ("generic", "b25")


def generic_sources(sections: Sequence[str]) -> list[dict[str, Any]]:
    """The ``generic`` preset (docs/redis.md): each item SET under ``{section}:{id}`` and
    PUBLISHed on the channel of that name, taken whole; events PUBLISHed on
    ``{fills,alerts,trades}:*``."""
    return [
        {"name": s, "transport": "redis-pubsub", "pattern": f"{s}:*", "section": s}
        for s in sections
    ] + [
        {
            "name": f"events.{c}",
            "transport": "redis-pubsub",
            "pattern": f"{c}:*",
            "bootstrap": False,
            "events": c,
        }
        for c in EVENT_CHANNELS
    ]


def load_preset(name: str) -> tuple[tuple[str, ...] | None, list[Any]]:
    """A preset's sections (``None``: the configured ones) and its source definitions."""
    if name == "generic":
        return None, []  # built from the configured sections by generic_sources
    if name not in PRESETS:
        raise SourceError(f"sources: unknown preset {name!r} (known: {', '.join(PRESETS)})")
    text = (Path(__file__).with_name("presets") / f"{name}.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    return tuple(data["sections"]), list(data["sources"])
