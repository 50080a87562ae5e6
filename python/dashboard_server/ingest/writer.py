"""The write side: the one facade every feed writes into.

:class:`StateWriter` takes what a feed produces and nothing else reaches the state:

- state ops at a JSON Pointer path (``merge``, ``replace``, ``remove``, and ``replace_bytes``,
  decoded by the engine so a Redis payload never becomes Python objects), and their batches:
  ``replace_many`` (a read's conflated raw items, one engine call) and :meth:`StateWriter.batch`
  (the ops of a block of code queued and applied with a few ``merge_many``/``replace_many``
  calls: the demo feed's many small merges);
- never-conflated events (``publish_event``), handed to whatever sends them (the hub);
- liveness: :meth:`StateWriter.note_section_update` says a section got a live update even if it
  changed nothing, and :meth:`StateWriter.section_ages` is how stale each section is;
- ingest metrics: :meth:`StateWriter.received` counts messages, :meth:`StateWriter.malformed`
  counts and logs (rate-limited) one that could not be used (a feed calls it once for a bad
  payload, so one bad payload is one count), :meth:`StateWriter.conflated` counts messages
  superseded within a read, :meth:`StateWriter.lag` says how far behind its source a feed is.

Every op is atomic (the engine applies it whole or raises ``ValueError`` and changes nothing).
:class:`StateSink` is the narrow part a producer of state needs (the demo feed writes through it,
into a :class:`StateWriter` or, for ``publish-demo``, into Redis).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import msgpack

from dashboard_server.core.engine import EnginePanic, StateDocEngine, engine_panics
from dashboard_server.core.protocol import EVENT_CHANNELS, Format
from dashboard_server.core.ratelimit import LogLimiter
from dashboard_server.telemetry.metrics import IngestMetrics

__all__ = ["EventSink", "StateSink", "StateWriter", "WriteSide"]

log = logging.getLogger(__name__)

LOG_BURST = 10
"""Malformed-payload warnings logged per second at most; the others are counted and summed up."""


class StateSink(Protocol):
    """Where a producer's state changes and events go."""

    def merge(self, path: str, patch: Any) -> Any:
        """RFC 7386 JSON Merge Patch of the value at the JSON Pointer ``path`` with ``patch``."""
        ...

    def replace(self, path: str, value: Any) -> Any:
        """Make the value at ``path`` equal to ``value`` (absent members are removed)."""
        ...

    def remove(self, path: str) -> Any:
        """Remove the value at ``path`` (absent: nothing happens)."""
        ...

    def publish_event(self, channel: str, data: dict[str, Any]) -> None:
        """Queue a never-conflated event on ``channel`` (``fills``, ``alerts`` or ``trades``)."""
        ...


class EventSink(Protocol):
    """Whoever sends events on (the hub)."""

    def publish_event(self, channel: str, data: Mapping[str, Any]) -> None:
        """Queue an event for every subscriber's next flush."""
        ...


class WriteSide(StateSink, Protocol):
    """What a transport needs of the write side (:class:`StateWriter` is it)."""

    def replace_bytes(self, path: str, payload: bytes, fmt: Format) -> bool: ...
    def replace_many(self, items: Sequence[tuple[str, bytes]], fmt: Format) -> list[bool | str]: ...
    def section_ids(self, section: str) -> list[str]: ...
    def note_section_update(self, section: str) -> None: ...
    def received(self, section: str, count: int = 1) -> None: ...
    def conflated(self, section: str, count: int) -> None: ...
    def batch_applied(self, feed: str) -> None: ...
    def lag(self, feed: str, seconds: float | None, backlog_bytes: int | None = None) -> None: ...
    def malformed(self, section: str, name: str, reason: str) -> None: ...
    def pending(self, flush: Callable[[], None]) -> contextlib.AbstractContextManager[None]: ...


class StateWriter:
    """The write side of one server (see the module doc)."""

    def __init__(
        self,
        doc: StateDocEngine,
        events: EventSink,
        metrics: IngestMetrics,
        *,
        sections: Sequence[str],
        on_panic: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.doc = doc
        self.on_panic = on_panic
        """Told of an engine panic during a state op (the server logs, counts, degrades)."""
        self.events = events
        self.metrics = metrics
        self.sections = tuple(sections)
        self._updated: dict[str, float] = {}
        self._received: dict[str, Any] = {}
        self._malformed: dict[str, Any] = {}
        self._log_limiter = LogLimiter(LOG_BURST)
        self._conflated: dict[str, Any] = {}
        self._batches: dict[str, Any] = {}
        self._queued: list[tuple[str, str, bytes]] | None = None
        """While a :meth:`batch` is open: the ops queued, as (kind, path, MessagePack value)."""
        self._pending: list[Callable[[], None]] = []

    # --- pending batches -------------------------------------------------------------------

    @contextlib.contextmanager
    def pending(self, flush: Callable[[], None]) -> Iterator[None]:
        """While inside: ``flush`` applies a transport's pending batch (messages read, not yet
        applied), and :meth:`apply_pending` calls it. A transport holds its batch up to its own
        ``max_delay`` to conflate more; whoever reads the document for clients calls
        :meth:`apply_pending` first, so holding a batch never delays a client."""
        self._pending.append(flush)
        try:
            yield
        finally:
            self._pending.remove(flush)

    def apply_pending(self) -> None:
        """Apply every transport's pending batch now (before the document is read). A failing
        flush is logged; the others still run."""
        for flush in tuple(self._pending):
            try:
                flush()
            except Exception:
                log.exception("applying a pending batch failed")

    # --- state ops -------------------------------------------------------------------------

    def merge(self, path: str, patch: Any) -> bool:
        """RFC 7386 merge at ``path``; True if something changed (inside :meth:`batch`: queued,
        and True)."""
        if self._queued is not None:
            return self._queue("merge", path, patch)
        return self._changed(path, self._engine(self.doc.merge, path, patch))

    def replace(self, path: str, value: Any) -> bool:
        """Make the value at ``path`` equal to ``value``; True if something changed (inside
        :meth:`batch`: queued, and True)."""
        if self._queued is not None:
            return self._queue("replace", path, value)
        return self._changed(path, self._engine(self.doc.replace, path, value))

    def remove(self, path: str) -> bool:
        """Remove the value at ``path``; True if there was one (inside :meth:`batch`: queued,
        and True)."""
        if self._queued is not None and path:
            return self._queue("merge", path, None)  # merge(path, None) is remove(path)
        return self._changed(path, self._engine(self.doc.remove, path))

    def replace_many(self, items: Sequence[tuple[str, bytes]], fmt: Format) -> list[bool | str]:
        """``replace_bytes`` of each ``(path, payload)`` in one engine call; per item whether it
        changed something, or why it was refused (that item changed nothing)."""
        results = self._engine_many(self.doc.replace_many, items, fmt)
        now = time.monotonic()
        for (path, _), changed in zip(items, results, strict=True):
            if changed is True:
                self._updated[path[1:].split("/", 1)[0]] = now
        return results

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Queue the ``merge``/``replace``/``remove`` calls made inside the block and apply them
        at its end, in order, with one ``merge_many`` or ``replace_many`` call per run of ops of
        one kind (a removal is a merge of ``null``). The ops return True while queued; an op the
        engine refuses changes nothing, the others still apply, and the first refusal is raised
        as :class:`ValueError` when the block ends. Blocks nest (the outermost one applies)."""
        if self._queued is not None:
            yield
            return
        self._queued = []
        try:
            yield
        finally:
            queued, self._queued = self._queued, None
            self._apply_queued(queued)

    def _queue(self, kind: str, path: str, value: Any) -> bool:
        assert self._queued is not None
        try:
            payload = msgpack.packb(value, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:  # not representable: refused
            raise ValueError(f"{path}: {exc}") from None
        self._queued.append((kind, path, payload))
        return True

    def _apply_queued(self, queued: list[tuple[str, str, bytes]]) -> None:
        first_error: str | None = None
        start = 0
        while start < len(queued):
            kind = queued[start][0]
            end = start
            while end < len(queued) and queued[end][0] == kind:
                end += 1
            items = [(path, payload) for _, path, payload in queued[start:end]]
            apply = self.doc.merge_many if kind == "merge" else self.doc.replace_many
            results = self._engine_many(apply, items, "msgpack")
            now = time.monotonic()
            for (path, _), changed in zip(items, results, strict=True):
                if changed is True:
                    self._updated[path[1:].split("/", 1)[0]] = now
                elif changed is not False and first_error is None:
                    first_error = changed
            start = end
        if first_error is not None:
            raise ValueError(first_error)

    def replace_bytes(self, path: str, payload: bytes, fmt: Format) -> bool:
        """Make the value at ``path`` equal to a JSON or MessagePack ``payload``, decoded by the
        engine (no Python objects are built); True if something changed."""
        return self._changed(path, self._engine(self.doc.replace_bytes, path, payload, fmt))

    def section_ids(self, section: str) -> list[str]:
        """The ids of the items in ``section`` (names only: no item is copied)."""
        try:
            return self.doc.keys(f"/{section}")
        except (KeyError, ValueError):
            return []

    def _engine(self, op: Callable[..., bool], path: str, *args: Any) -> bool:
        """``op(path, *args)``; an engine panic (a ``BaseException``, which would stop a feed
        silently) is reported to :attr:`on_panic` and raised on as :class:`EnginePanic`."""
        try:
            return op(path, *args)
        except engine_panics() as exc:
            if self.on_panic is not None:
                self.on_panic("ingest", exc)
            raise EnginePanic(f"engine panic at {path[:200]}: {exc}") from None

    def _engine_many(
        self,
        op: Callable[[Sequence[tuple[str, bytes]], Format], list[bool | str]],
        items: Sequence[tuple[str, bytes]],
        fmt: Format,
    ) -> list[bool | str]:
        """A batch op, with an engine panic handled as :meth:`_engine` does."""
        try:
            return op(items, fmt)
        except engine_panics() as exc:
            if self.on_panic is not None:
                self.on_panic("ingest", exc)
            first = items[0][0][:200] if items else ""
            raise EnginePanic(
                f"engine panic in a batch of {len(items)} at {first}: {exc}"
            ) from None

    def _changed(self, path: str, changed: bool) -> bool:
        if changed:  # a section's name has no "/" or "~": no unescaping needed
            self._updated[path[1:].split("/", 1)[0]] = time.monotonic()
        return changed

    # --- events ----------------------------------------------------------------------------

    def publish_event(self, channel: str, data: dict[str, Any]) -> None:
        """Queue an event for the ``events`` subscribers (sent at their next flush)."""
        if channel not in EVENT_CHANNELS:
            raise ValueError(f"unknown event channel {channel!r}")
        self.events.publish_event(channel, data)

    # --- liveness --------------------------------------------------------------------------

    def note_section_update(self, section: str) -> None:
        """A live update for ``section`` arrived, changed something or not."""
        self._updated[section] = time.monotonic()

    def section_ages(self) -> dict[str, float | None]:
        """Seconds since each section last changed or got a live update (``None``: never)."""
        now = time.monotonic()
        return {
            s: round(now - self._updated[s], 3) if s in self._updated else None
            for s in self.sections
        }

    # --- ingest metrics --------------------------------------------------------------------

    def received(self, section: str, count: int = 1) -> None:
        """Count ``count`` messages from a backend for ``section`` (or an event channel)."""
        counter = self._received.get(section)
        if counter is None:
            counter = self._received[section] = self.metrics.messages.labels(section)
        counter.inc(count)

    def conflated(self, section: str, count: int) -> None:
        """Count ``count`` messages of ``section`` superseded within a read (never applied)."""
        if count <= 0:
            return
        counter = self._conflated.get(section)
        if counter is None:
            counter = self._conflated[section] = self.metrics.conflated.labels(section)
        counter.inc(count)

    def batch_applied(self, feed: str) -> None:
        """Count one batch applied by ``feed`` (a read's items in a few engine calls)."""
        counter = self._batches.get(feed)
        if counter is None:
            counter = self._batches[feed] = self.metrics.batches.labels(feed)
        counter.inc()

    def lag(self, feed: str, seconds: float | None, backlog_bytes: int | None = None) -> None:
        """How far behind its source ``feed`` is (``None``: not known, e.g. disconnected)."""
        self.metrics.lag.labels(feed).set(float("nan") if seconds is None else seconds)
        if backlog_bytes is not None:
            self.metrics.backlog.labels(feed).set(backlog_bytes)

    def malformed(self, section: str, name: str, reason: str) -> None:
        """Count and log (rate-limited) a message that could not be used; ``name`` says where
        it came from (channel or key), ``reason`` what was wrong."""
        counter = self._malformed.get(section)
        if counter is None:
            counter = self._malformed[section] = self.metrics.malformed.labels(section)
        counter.inc()
        allowed, held = self._log_limiter.allow()
        if allowed:
            log.warning(
                "malformed payload skipped",
                extra={"channel": name, "reason": reason, "suppressed": held},
            )
