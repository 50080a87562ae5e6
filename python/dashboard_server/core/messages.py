"""Every message the server sends, encoded: the one interface the hub and the sessions call.

``snapshot`` and ``update`` are encoded by the engine (envelope included: Python only moves the
bytes); the small messages (``event``, ``events``, ``status``, ``pong``, ``error``, and the empty
catch-up ``update``) are encoded here, with the same field order and timestamp format. Each
encode can be observed (time and size, for the metrics) through one callback, so callers hold no
timing code.
docs/protocol.md describes each message.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgpack
import orjson

from dashboard_server.core.engine import ChangeSetEngine, StateDocEngine
from dashboard_server.core.pointer import join
from dashboard_server.core.protocol import Diff, Format
from dashboard_server.core.symbols import Entry, SymbolIndex
from dashboard_server.core.timefmt import rfc3339_ms

__all__ = ["Messages", "Observer", "encode_message", "error_message", "pong_message"]

Observer = Callable[[Format, str, float, int], None]
"""Called after each encode with (format, message type, seconds taken, bytes)."""


def encode_message(fmt: Format, message: Mapping[str, Any]) -> bytes:
    """A server message as compact JSON (UTF-8) or MessagePack.

    Raises :class:`TypeError`/:class:`ValueError` if ``message`` holds something the format
    cannot carry.
    """
    if fmt == "json":
        return orjson.dumps(message)
    packed = msgpack.packb(message, use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed


def pong_message(fmt: Format, payload: Any, timestamp_ms: int) -> bytes:
    """``{"type":"pong","payload":..,"timestamp":..}``."""
    return encode_message(
        fmt, {"type": "pong", "payload": payload, "timestamp": rfc3339_ms(timestamp_ms)}
    )


def error_message(fmt: Format, code: str, message: str) -> bytes:
    """``{"type":"error","code":..,"message":..}``."""
    return encode_message(fmt, {"type": "error", "code": code, "message": message})


class Messages:
    """The encoder of one server: its state document, its epoch, and the metrics observer."""

    def __init__(self, doc: StateDocEngine, *, epoch: str, observe: Observer | None = None) -> None:
        self.doc = doc
        self.epoch = epoch
        self._observe = observe

    def _observed(self, fmt: Format, kind: str, started: float, payload: bytes) -> bytes:
        if self._observe is not None:
            self._observe(fmt, kind, time.perf_counter() - started, len(payload))
        return payload

    def snapshot(
        self, fmt: Format, channels: Sequence[str] | None, seq: int, timestamp_ms: int
    ) -> bytes:
        """A ``snapshot`` of ``channels`` (``None``: every section) at the current version."""
        started = time.perf_counter()
        payload = self.doc.encode_snapshot(fmt, channels, seq, self.epoch, timestamp_ms)
        return self._observed(fmt, "snapshot", started, payload)

    def update(
        self,
        changes: ChangeSetEngine,
        fmt: Format,
        diff: Diff,
        channels: Sequence[str] | None,
        seq: int,
        timestamp_ms: int,
    ) -> bytes | None:
        """An ``update`` carrying ``changes`` for ``channels``; ``None`` if none is there."""
        started = time.perf_counter()
        payload = changes.encode(fmt, diff, channels, seq, timestamp_ms)
        return None if payload is None else self._observed(fmt, "update", started, payload)

    def catch_up(
        self,
        changes: ChangeSetEngine | None,
        fmt: Format,
        diff: Diff,
        channels: Sequence[str] | None,
        seq: int,
        timestamp_ms: int,
    ) -> bytes:
        """The one ``update`` of a resuming client: ``changes`` (``None``: it is up to date), or
        an update with no change, which still tells it its seq and the current version."""
        started = time.perf_counter()
        payload = None
        if changes is not None:
            payload = changes.encode(fmt, diff, channels, seq, timestamp_ms)
        if payload is None:
            body: dict[str, Any] = {
                "type": "update",
                "seq": seq,
                "version": self.doc.version,
                "timestamp": rfc3339_ms(timestamp_ms),
            }
            body["changes" if diff == "changes" else "patch"] = {} if diff == "changes" else []
            payload = encode_message(fmt, body)
        return self._observed(fmt, "update", started, payload)

    def filtered_snapshot(
        self,
        fmt: Format,
        channels: Sequence[str] | None,
        symbols: frozenset[str],
        fields: Mapping[str, str | None],
        index: SymbolIndex | None,
        seq: int,
        timestamp_ms: int,
    ) -> bytes:
        """A ``snapshot`` of ``channels`` keeping only the items of ``symbols`` (``fields``: where
        each section's symbol is, see :mod:`dashboard_server.core.symbols`; ``index``: the
        current symbols of the field-filtered sections)."""
        started = time.perf_counter()
        data: dict[str, Any] = {}
        wanted = None if channels is None else set(channels)
        for section in self.doc.keys(""):
            if wanted is not None and section not in wanted:
                continue
            path = join(section)
            if section not in fields:
                data[section] = self.doc.get(path)
                continue
            name = fields[section]
            if name is None:
                items: dict[str, Any] = {}
                for symbol in sorted(symbols):
                    with contextlib.suppress(KeyError):
                        items[symbol] = self.doc.get(join(section, symbol))
            else:
                assert index is not None
                items = {
                    item: self.doc.get(join(section, item))
                    for item in index.items_of(section, symbols)
                }
            data[section] = items
        payload = encode_message(
            fmt,
            {
                "type": "snapshot",
                "seq": seq,
                "version": self.doc.version,
                "epoch": self.epoch,
                "timestamp": rfc3339_ms(timestamp_ms),
                "data": data,
            },
        )
        return self._observed(fmt, "snapshot", started, payload)

    def filtered_update(
        self,
        entries: Sequence[Entry],
        fmt: Format,
        diff: Diff,
        version: int,
        seq: int,
        timestamp_ms: int,
        *,
        catch_up: bool = False,
    ) -> bytes | None:
        """An ``update`` made of already filtered ``entries`` (``None`` if there are none,
        unless ``catch_up``: a resuming client gets an update with no change)."""
        if not entries and not catch_up:
            return None
        started = time.perf_counter()
        body: dict[str, Any] = {
            "type": "update",
            "seq": seq,
            "version": version,
            "timestamp": rfc3339_ms(timestamp_ms),
        }
        if diff == "changes":
            changes: dict[str, Any] = {}
            removed: list[str] = []
            for entry in entries:
                if entry.op == "remove":
                    removed.append(entry.path)
                else:
                    changes[entry.path] = entry.value
            body["changes"] = changes
            if removed:
                body["removed"] = removed
        else:
            body["patch"] = [
                {"op": "remove", "path": e.path}
                if e.op == "remove"
                else {"op": e.op, "path": e.path, "value": e.value}
                for e in entries
            ]
        return self._observed(fmt, "update", started, encode_message(fmt, body))

    def event(
        self, fmt: Format, seq: int, timestamp_ms: int, channel: str, data: Mapping[str, Any]
    ) -> bytes:
        """``{"type":"event","seq":..,"timestamp":..,"channel":..,"data":{..}}``."""
        started = time.perf_counter()
        payload = encode_message(
            fmt,
            {
                "type": "event",
                "seq": seq,
                "timestamp": rfc3339_ms(timestamp_ms),
                "channel": channel,
                "data": data,
            },
        )
        return self._observed(fmt, "event", started, payload)

    def status(self, fmt: Format, timestamp_ms: int, body: Mapping[str, Any]) -> bytes:
        """``{"type":"status","timestamp":..,"feed":..,"state":..,"sources":[..],"stale":[..]}``
        (``body`` holds every field but ``type`` and ``timestamp``)."""
        started = time.perf_counter()
        payload = encode_message(
            fmt, {"type": "status", "timestamp": rfc3339_ms(timestamp_ms), **body}
        )
        return self._observed(fmt, "status", started, payload)

    def recent_events(
        self,
        fmt: Format,
        timestamp_ms: int,
        events: Sequence[tuple[str, int, Mapping[str, Any]]],
    ) -> bytes:
        """``{"type":"events","timestamp":..,"events":[{"channel","timestamp","data"}]}``: the
        ``(channel, timestamp_ms, data)`` a joiner gets after its snapshot, oldest first."""
        started = time.perf_counter()
        payload = encode_message(
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
        return self._observed(fmt, "events", started, payload)
