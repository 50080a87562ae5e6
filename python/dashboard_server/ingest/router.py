"""From a source's message to the write side, whatever the transport.

:class:`SourceRouter` is what every transport (Redis, NATS, HTTP polling) hands a message to:
the source it came from, the key it came under (the Redis key's id part, the NATS subject, the
URL) and its bytes or decoded value. A raw source (an item taken whole) goes to the engine from
its bytes; any other is decoded, mapped by the source's outputs (:mod:`dashboard_server.core.
sources`) and written op by op. A message that cannot be used is counted and logged once by the
write side and changes nothing: the ops of one message are all computed before any is applied.

:class:`Resyncs` lets an at-most-once transport (NATS) ask, after it reconnects, for the
bootstrap of the sources named in its ``resync`` list, whoever runs them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, Literal

from dashboard_server.core.engine import EnginePanic
from dashboard_server.core.pointer import join
from dashboard_server.core.sources import Op, Output, Source
from dashboard_server.core.values import decode_payload as check_and_decode
from dashboard_server.ingest.writer import WriteSide

__all__ = ["DEDUPE_WINDOW_S", "Resyncs", "SourceRouter", "decode_payload", "is_removal"]

log = logging.getLogger(__name__)

PayloadFormat = Literal["json", "msgpack"]

DEDUPE_WINDOW_S: Final = 60.0
"""An event equal in its ``dedupe`` field (and level) to one seen this recently is dropped; an
event without the field is never dropped (an emergency stop has no ``policy_id``)."""
_DEDUPE_KEPT: Final = 10_000


def payload_format(payload: bytes) -> PayloadFormat:
    """JSON if the first byte is ASCII (below 0x80), else MessagePack (docs/redis.md)."""
    return "msgpack" if payload and payload[0] >= 0x80 else "json"


def is_removal(payload: bytes) -> bool:
    """An empty payload, JSON ``null`` (whitespace allowed) or MessagePack nil: remove the item."""
    return not payload or payload == b"\xc0" or (len(payload) <= 32 and payload.strip() == b"null")


def decode_payload(payload: bytes) -> Any:
    """A JSON or MessagePack payload as Python values, held to the state's value rules (no
    integer beyond 64 bits, no NaN or infinity, ...: :mod:`dashboard_server.core.values`, so
    an event cannot carry what the state would refuse); :class:`ValueError` naming the path
    otherwise."""
    try:
        return check_and_decode(payload, payload_format(payload))
    except ValueError as exc:
        raise ValueError(f"undecodable payload: {exc}") from None


class SourceRouter:
    """Applies messages of any source to the write side (see the module doc)."""

    def __init__(
        self, writer: WriteSide, *, max_item_bytes: int = 65_536, max_id_bytes: int = 256
    ) -> None:
        self.max_item_bytes = max_item_bytes
        """Larger payloads are malformed, unless the source sets its own ``max_item_bytes``."""
        self.max_id_bytes = max_id_bytes
        """Longer keys (UTF-8) are malformed, unless the source sets its own ``max_id_bytes``."""
        self.writer = writer
        self._seen: OrderedDict[tuple[str, Any, Any], float] = OrderedDict()

    @staticmethod
    def label(source: Source) -> str:
        """The metrics label of a source: its (first) section or event channel."""
        out = source.outputs[0]
        return out.section or out.events or source.name

    def apply_bytes(
        self, source: Source, key: str, payload: bytes, *, where: str = "", live: bool = True
    ) -> bool:
        """Apply one payload; False if it was malformed (counted and logged). ``live``: a
        message as it happened (counted, and the sections are fresh), not a bootstrap read."""
        label = self.label(source)
        if live:
            self.writer.received(label)
        out = source.outputs[0]
        try:
            self._check_sizes(source, key, payload)
            if is_removal(payload):
                if out.section is None or out.id != "key":
                    raise ValueError("an empty payload removes an item: only for id 'key'")
                self.writer.remove(join(out.section, key))
            elif source.raw:
                assert out.section is not None
                self.writer.replace_bytes(join(out.section, key), payload, payload_format(payload))
            else:
                self._apply_ops(source, self._ops(source, key, decode_payload(payload)))
        except EnginePanic:  # logged and counted by the write side; the next messages go on
            return False
        except Exception as exc:  # whatever the payload does, it is counted and the feed goes on
            self.writer.malformed(label, (where or key)[:256], _reason(exc))
            return False
        if live:
            self._live(source)
        return True

    def item_path(self, source: Source, key: str) -> str:
        """The state path of a raw source's item ``key``; :class:`ValueError` if the key is over
        the source's ``max_id_bytes``."""
        section = source.outputs[0].section
        assert section is not None
        self._check_sizes(source, key, b"")
        return join(section, key)

    def apply_conflated(
        self, source: Source, items: Iterable[tuple[str, bytes, str]], received: int
    ) -> None:
        """Apply the latest payload per key of a raw source, as a transport conflated them
        within one read: ``items`` are ``(path, payload, where)`` with distinct paths (from
        :meth:`item_path`), ``received`` how many messages they stand for (the others were
        superseded: counted as conflated, never decoded). The replacements go to the engine in
        one ``replace_many`` call per payload format; a bad payload is counted and logged as
        malformed and changes nothing, the others still apply."""
        label = self.label(source)
        writer = self.writer
        writer.received(label, received)
        batches: dict[PayloadFormat, tuple[list[tuple[str, bytes]], list[str]]] = {}
        applied = 0
        max_item = source.max_item_bytes or self.max_item_bytes
        for path, payload, where in items:
            applied += 1
            if len(payload) > max_item:
                writer.malformed(label, where[:256], _too_large(len(payload), max_item))
                continue
            if is_removal(payload):
                try:
                    writer.remove(path)
                except EnginePanic:  # logged and counted by the write side
                    pass
                except Exception as exc:  # e.g. the path goes through a leaf: counted, go on
                    writer.malformed(label, where[:256], _reason(exc))
                continue
            fmt: PayloadFormat = "msgpack" if payload[0] >= 0x80 else "json"
            batch = batches.get(fmt)
            if batch is None:
                batch = batches[fmt] = ([], [])
            batch[0].append((path, payload))
            batch[1].append(where)
        for fmt, (pairs, wheres) in batches.items():
            try:
                results = writer.replace_many(pairs, fmt)
            except EnginePanic:  # logged and counted by the write side; the next batch goes on
                continue
            for result, where in zip(results, wheres, strict=True):
                if type(result) is str:
                    writer.malformed(label, where[:256], result)
        writer.conflated(label, received - applied)
        self._live(source)

    def _check_sizes(self, source: Source, key: str, payload: bytes) -> None:
        """:class:`ValueError` if ``payload`` or ``key`` is over the source's size limits."""
        max_id = source.max_id_bytes or self.max_id_bytes
        id_bytes = len(key) if key.isascii() else len(key.encode("utf-8", "replace"))
        if id_bytes > max_id:
            raise ValueError(f"key of {id_bytes} bytes over max_id_bytes ({max_id})")
        max_item = source.max_item_bytes or self.max_item_bytes
        if len(payload) > max_item:
            raise ValueError(_too_large(len(payload), max_item))

    def largest_item(self, sources: Iterable[Source]) -> int:
        """The largest payload any of ``sources`` takes: a transport's scanner skips bigger ones
        unread (and the router still checks each source's own limit)."""
        limits = [s.max_item_bytes or self.max_item_bytes for s in sources]
        return max(limits, default=self.max_item_bytes)

    def skipped_oversized(self, label: str, where: str, size: int, limit: int) -> None:
        """Count a message a transport skipped unread, its payload of ``size`` bytes over
        ``limit`` (:meth:`largest_item`), as received and malformed."""
        self.writer.received(label)
        self.writer.malformed(label, where[:256], _too_large(size, limit))

    def apply_value(self, source: Source, key: str, value: Any, *, where: str = "") -> bool:
        """Apply one decoded message (an HTTP response); False if it was malformed."""
        label = self.label(source)
        self.writer.received(label)
        try:
            self._apply_ops(source, self._ops(source, key, value))
        except EnginePanic:
            return False
        except Exception as exc:
            self.writer.malformed(label, where or key, _reason(exc))
            return False
        self._live(source)
        return True

    def remove(self, source: Source, key: str) -> None:
        """Remove the item ``key`` of a keyed source (its key expired or was deleted)."""
        for out in source.outputs:
            if out.section is not None and out.id == "key":
                self.writer.remove(join(out.section, key))

    def _ops(self, source: Source, key: str, value: Any) -> list[tuple[Output, Op]]:
        # every output's ops first: a message that fails anywhere changes nothing
        ops = [(out, op) for out in source.outputs for op in out.apply(key, value)]
        if len(ops) > 1:  # the engine must not refuse the second op after taking the first
            for _, op in ops:
                check_value(op.value, op.path or op.channel)
        return ops

    def _apply_ops(self, source: Source, ops: list[tuple[Output, Op]]) -> None:
        for out, op in ops:
            if op.kind == "event":
                if out.dedupe is None or self._first(out, op.value):
                    self.writer.publish_event(op.channel, op.value)
            elif op.kind == "merge":
                self.writer.merge(op.path, op.value)
            else:
                self.writer.replace(op.path, op.value)

    def _first(self, out: Output, data: dict[str, Any]) -> bool:
        """Whether an event is new: not equal in ``dedupe`` and ``level`` to a recent one."""
        assert out.dedupe is not None
        ident = data.get(out.dedupe)
        if ident is None or not isinstance(ident, str | int | float | bool):
            return True  # nothing to tell it apart by: never dropped
        level = data.get("level")
        key = (out.source, ident, level if isinstance(level, str | int) else None)
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen < DEDUPE_WINDOW_S:
            return False
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > _DEDUPE_KEPT:
            self._seen.popitem(last=False)
        return True

    def _live(self, source: Source) -> None:
        for out in source.outputs:
            if out.section is not None:
                self.writer.note_section_update(out.section)


_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1


def check_value(value: Any, where: str) -> None:
    """Raise :class:`ValueError` if the engine would refuse ``value`` (what a MessagePack payload
    can hold and JSON cannot: NaN, bytes, non-string keys, integers beyond 64 bits)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for name, member in item.items():
                if not isinstance(name, str):
                    raise ValueError(f"{where}: non-string key {name!r}")
                stack.append(member)
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{where}: non-finite number {item!r}")
        elif isinstance(item, int) and not isinstance(item, bool):
            if not _INT_MIN <= item <= _INT_MAX:
                raise ValueError(f"{where}: integer {item} out of range")
        elif item is not None and not isinstance(item, str | bool):
            raise ValueError(f"{where}: unsupported value of type {type(item).__name__}")


def _too_large(size: int, limit: int) -> str:
    return f"payload of {size} bytes over max_item_bytes ({limit})"


def _reason(exc: Exception) -> str:
    """A bad payload's reason: a ValueError says it all, anything else says what it was too."""
    return str(exc) if type(exc) is ValueError else f"{type(exc).__name__}: {exc}"


Bootstrap = Callable[[], Awaitable[None]]


class Resyncs:
    """Who can bootstrap which source, and a way to ask for it (see the module doc)."""

    def __init__(self) -> None:
        self._bootstraps: dict[str, Bootstrap] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def register(self, source: str, bootstrap: Bootstrap) -> None:
        """``bootstrap`` reloads ``source`` from where it keeps its whole state."""
        self._bootstraps[source] = bootstrap

    def request(self, sources: Iterable[str], why: str) -> None:
        """Run the bootstrap of each of ``sources`` that someone registered (in the background)."""
        for name in sources:
            bootstrap = self._bootstraps.get(name)
            if bootstrap is None:
                continue  # off (no endpoint), or nothing to reload from
            log.info("resync", extra={"source": name, "reason": why})
            task = asyncio.get_running_loop().create_task(self._run(name, bootstrap))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, name: str, bootstrap: Bootstrap) -> None:
        try:
            await bootstrap()
        except Exception as exc:  # the source's own supervision reports it; this is a bonus
            log.warning("resync failed", extra={"source": name, "error": str(exc)})
