"""Per-symbol subscriptions, without I/O: which parts of the state and which events a symbol
filter keeps (docs/protocol.md, "Symbols").

A filter is a set of symbols. ``symbol_fields`` (a setting) says, per section or event channel,
where an item's symbol is: ``None`` for a section keyed by symbol (``market_data``: the item id is
the symbol), a field name for the others (``orders``: the item's ``symbol`` field; events
``fills``, ``trades``, ``alerts``: the event's ``symbol`` field). A section or channel not in the
mapping is not filtered (``account``, ``strategies``). An item or event without a string symbol
field belongs to no symbol and is kept (an account-wide alert reaches every desk).

Sections keyed by symbol are filtered by key: membership never changes. Sections filtered by a
field are harder: an order whose ``symbol`` changes moves into or out of a filter, and a client
must then get the whole order, or its removal. :class:`SymbolIndex` keeps, for those sections,
each item's current symbol and the transitions since it started, so the hub knows which items a
client had at the version it was last sent (or resumes from).

:func:`bucket_entries` splits a decoded update once per flush by section and item;
:func:`filter_entries` picks, per group, the entries of its filter (cost: the filter's symbols
plus the items touched in field-filtered sections, not the size of the update).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from dashboard_server.core.engine import ChangeSetEngine, StateDocEngine
from dashboard_server.core.pointer import join, parse_pointer
from dashboard_server.core.protocol import Diff

__all__ = [
    "ABSENT",
    "Bucketed",
    "Entry",
    "SymbolIndex",
    "bucket_entries",
    "decode_entries",
    "event_matches",
    "filter_entries",
    "filter_section_value",
]


class _Absent:
    """The symbol of an item that does not exist."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()
Symbol = str | None | _Absent
"""An item's symbol: a string, ``None`` (no symbol field: kept by every filter), or
:data:`ABSENT` (no such item)."""


def symbol_of(item: Any, name: str) -> str | None:
    """The symbol of an item (a field value): a string, or ``None`` when it has none."""
    if not isinstance(item, dict):
        return None
    value = item.get(name)
    return value if isinstance(value, str) else None


def is_member(symbol: Symbol, symbols: frozenset[str]) -> bool:
    """Whether an item with ``symbol`` is kept by the filter ``symbols``."""
    if symbol is ABSENT:
        return False
    return symbol is None or symbol in symbols


def event_matches(
    fields: Mapping[str, str | None], channel: str, data: Mapping[str, Any], symbols: frozenset[str]
) -> bool:
    """Whether an event on ``channel`` passes the filter ``symbols``."""
    name = fields.get(channel)
    if name is None:
        return True
    value = data.get(name)
    return not isinstance(value, str) or value in symbols


def filter_section_value(value: Any, section_field: str | None, symbols: frozenset[str]) -> Any:
    """A whole section's value, filtered (``section_field`` ``None``: keyed by symbol)."""
    if not isinstance(value, dict):
        return value
    if section_field is None:
        return {k: v for k, v in value.items() if k in symbols}
    return {k: v for k, v in value.items() if is_member(symbol_of(v, section_field), symbols)}


# --- the index of field-filtered sections ------------------------------------------------------


@dataclass(slots=True)
class _Transition:
    version: int
    key: tuple[str, str]


class SymbolIndex:
    """The symbol of every item of the field-filtered sections, and its recent transitions.

    ``advance()`` brings it to the document's current version (the hub calls it at every flush,
    so every version a client was sent is one it knows). ``symbol_at(section, item, version)``
    answers for any version from ``floor`` on; older ones raise :class:`LookupError` (the
    client then gets a snapshot). At most ``max_transitions`` transitions are remembered.
    """

    def __init__(
        self, doc: StateDocEngine, fields: Mapping[str, str], *, max_transitions: int = 100_000
    ) -> None:
        self.doc = doc
        self.fields = dict(fields)
        self.max_transitions = max_transitions
        self.version = doc.version
        self.floor = doc.version
        self._current: dict[str, dict[str, str | None]] = {}
        self._history: dict[tuple[str, str], list[tuple[int, Symbol]]] = {}
        self._log: deque[_Transition] = deque()
        self._rebuild()

    def _rebuild(self) -> None:
        self._current = {}
        for section, name in self.fields.items():
            try:
                items = self.doc.get(join(section))
            except KeyError:
                items = {}
            self._current[section] = (
                {k: symbol_of(v, name) for k, v in items.items()} if isinstance(items, dict) else {}
            )
        self._history.clear()
        self._log.clear()
        self.version = self.floor = self.doc.version

    def advance(self) -> None:
        """Read the changes since the last call; record the items whose symbol changed."""
        version = self.doc.version
        if version == self.version:
            return
        changes = self.doc.changes_since(self.version)
        if changes is None:
            self._rebuild()  # past the horizon: start over (older versions: snapshots)
            return
        new: dict[tuple[str, str], Symbol] = {}
        payload = changes.encode("json", "changes", tuple(self.fields), 0, 0)
        if payload is not None:
            body = orjson.loads(payload)
            for pointer in body.get("removed", ()):
                self._note(pointer, None, True, new)
            for pointer, value in body["changes"].items():
                self._note(pointer, value, False, new)
        for key, symbol in new.items():
            section, item = key
            items = self._current.setdefault(section, {})
            old: Symbol = items.get(item, ABSENT)
            if old == symbol and (old is ABSENT) == (symbol is ABSENT):
                continue
            if symbol is ABSENT:
                items.pop(item, None)
            else:
                assert not isinstance(symbol, _Absent)
                items[item] = symbol
            self._history.setdefault(key, []).append((version, old))
            self._log.append(_Transition(version, key))
        while len(self._log) > self.max_transitions:
            dropped = self._log.popleft()
            history = self._history[dropped.key]
            del history[0]
            if not history:
                del self._history[dropped.key]
            self.floor = dropped.version
        self.version = version

    def _note(
        self, pointer: str, value: Any, removed: bool, new: dict[tuple[str, str], Symbol]
    ) -> None:
        tokens = parse_pointer(pointer)
        section = tokens[0]
        name = self.fields.get(section)
        if name is None:
            return
        if len(tokens) == 1:  # the whole section
            items = self._current.get(section, {})
            for item in items:
                new[(section, item)] = ABSENT
            if not removed and isinstance(value, dict):
                for item, v in value.items():
                    new[(section, item)] = symbol_of(v, name)
            return
        key = (section, tokens[1])
        if len(tokens) == 2:
            new[key] = ABSENT if removed else symbol_of(value, name)
        elif tokens[2] == name:
            if removed:
                new[key] = None
            elif len(tokens) == 3:
                new[key] = value if isinstance(value, str) else None
            else:
                new[key] = None  # the field is an object now: not a symbol

    def current(self, section: str, item: str) -> Symbol:
        """The item's symbol now (at ``version``)."""
        return self._current.get(section, {}).get(item, ABSENT)

    def symbol_at(self, section: str, item: str, version: int) -> Symbol:
        """The item's symbol at ``version`` (a version a client was sent)."""
        if version < self.floor:
            raise LookupError(f"version {version} is older than the index ({self.floor})")
        history = self._history.get((section, item))
        if history:
            at = bisect.bisect_right(history, version, key=lambda h: h[0])
            if at < len(history):
                return history[at][1]
        return self.current(section, item)

    def items_of(self, section: str, symbols: frozenset[str]) -> list[str]:
        """The items of ``section`` the filter keeps now, in the order they were first seen."""
        return [k for k, s in self._current.get(section, {}).items() if is_member(s, symbols)]


# --- updates ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of an update: ``op`` is ``remove``, ``set`` (the changes form), or the RFC 6902
    op of a json-patch update (``add``, ``replace``)."""

    op: str
    path: str
    value: Any = None


@dataclass(slots=True)
class _SectionEntries:
    whole: list[Entry] = field(default_factory=list)
    items: dict[str, list[Entry]] = field(default_factory=dict)
    by_symbol: dict[str | None, list[str]] | None = None
    """Field-filtered sections: the touched items by their symbol then and now (computed
    once per flush, on first use), so a group looks only at its own symbols' items."""
    symbols: dict[str, tuple[Symbol, Symbol]] = field(default_factory=dict)
    """Field-filtered sections: each touched item's symbol then and now."""


@dataclass(slots=True)
class Bucketed:
    """A decoded change set, split by section and item; ``from_version``/``to_version`` are
    the change set's."""

    diff: Diff
    from_version: int
    to_version: int
    sections: dict[str, _SectionEntries] = field(default_factory=dict)


def decode_entries(
    changes: ChangeSetEngine, diff: Diff, sections: Sequence[str] | None
) -> list[Entry]:
    """The entries of ``changes`` for ``sections``, in the order the engine applies them."""
    payload = changes.encode("json", diff, sections, 0, 0)
    if payload is None:
        return []
    body = orjson.loads(payload)
    if diff == "json-patch":
        return [Entry(op["op"], op["path"], op.get("value")) for op in body["patch"]]
    out = [Entry("remove", p) for p in body.get("removed", ())]
    out.extend(Entry("set", p, v) for p, v in body["changes"].items())
    return out


def bucket_entries(
    changes: ChangeSetEngine, diff: Diff, sections: Sequence[str] | None
) -> Bucketed:
    """Decode ``changes`` once and split it by section and item (see :func:`filter_entries`)."""
    out = Bucketed(diff, changes.from_version, changes.to_version)
    for entry in decode_entries(changes, diff, sections):
        tokens = parse_pointer(entry.path)
        bucket = out.sections.get(tokens[0])
        if bucket is None:
            bucket = out.sections[tokens[0]] = _SectionEntries()
        if len(tokens) == 1:
            bucket.whole.append(entry)
        else:
            bucket.items.setdefault(tokens[1], []).append(entry)
    return out


def filter_entries(
    bucketed: Bucketed,
    sections: Sequence[str],
    fields: Mapping[str, str | None],
    symbols: frozenset[str],
    index: SymbolIndex | None,
    doc: StateDocEngine,
) -> list[Entry]:
    """The entries of ``bucketed`` a client with filter ``symbols`` needs, for ``sections``.

    A field-filtered item whose membership changed since ``bucketed.from_version`` becomes one
    entry: the whole item (it entered the filter) or its removal (it left). Raises
    :class:`LookupError` when ``index`` cannot tell the memberships at that version.
    """
    add = "set" if bucketed.diff == "changes" else "add"
    out: list[Entry] = []
    for section in sections:
        bucket = bucketed.sections.get(section)
        if bucket is None:
            continue
        if section not in fields:  # not filtered
            out.extend(bucket.whole)
            for entries in bucket.items.values():
                out.extend(entries)
            continue
        name = fields[section]
        for entry in bucket.whole:
            if entry.op == "remove":
                out.append(entry)
            else:
                value = filter_section_value(entry.value, name, symbols)
                out.append(Entry(entry.op, entry.path, value))
        if name is None:
            if len(symbols) < len(bucket.items):
                for symbol in sorted(symbols):
                    out.extend(bucket.items.get(symbol, ()))
            else:
                for item, entries in bucket.items.items():
                    if item in symbols:
                        out.extend(entries)
            continue
        assert index is not None
        by_symbol = _by_symbol(bucket, section, index, bucketed.from_version)
        candidates: set[str] = set(by_symbol.get(None, ()))
        for symbol in symbols:
            candidates.update(by_symbol.get(symbol, ()))
        for item in [i for i in bucket.items if i in candidates]:
            entries = bucket.items[item]
            then, now_symbol = bucket.symbols[item]
            was = is_member(then, symbols)
            now = is_member(now_symbol, symbols)
            if was and now:
                out.extend(entries)
            elif now:
                value = _current_value(entries, section, item, doc)
                out.append(Entry(add, join(section, item), value))
            elif was:
                out.append(Entry("remove", join(section, item)))
    return out


def _by_symbol(
    bucket: _SectionEntries, section: str, index: SymbolIndex, from_version: int
) -> dict[str | None, list[str]]:
    if bucket.by_symbol is None:
        by_symbol: dict[str | None, list[str]] = {}
        for item in bucket.items:
            then = index.symbol_at(section, item, from_version)
            now = index.current(section, item)
            bucket.symbols[item] = (then, now)
            for symbol in {then, now}:
                if not isinstance(symbol, _Absent):
                    by_symbol.setdefault(symbol, []).append(item)
        bucket.by_symbol = by_symbol
    return bucket.by_symbol


def _current_value(entries: list[Entry], section: str, item: str, doc: StateDocEngine) -> Any:
    path = join(section, item)
    for entry in reversed(entries):
        if entry.path == path and entry.op != "remove":
            return entry.value
    return doc.get(path)
