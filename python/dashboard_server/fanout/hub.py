"""Groups, sequence numbers and flushes: who gets which bytes, decided without I/O.

The hub is the sans-I/O core of the fan-out. It knows the state document, the members (one per
WebSocket connection, seen only through :class:`Member`), the groups they form and the pending
events. :meth:`Hub.flush` is called by the scheduler shell for one interval at a time and returns
a :class:`Flush`: byte strings and the members each goes to, and the members to close. It never
awaits and never writes; tests drive it with a fake clock and fake members.

The rules (docs/protocol.md, "Sequence rule"):

* Members with the same :class:`GroupKey` (interval, format, state channels, events or not, diff
  form) form a group; a group's messages are encoded once per flush and are byte-identical for
  every member. A group's ``seq`` grows by exactly 1 per message it sends; a flush with nothing
  for the group sends nothing.
* A member that joins (connect, refresh, subscription change, recovery after lagging, horizon
  loss) gets a snapshot at its group's next flush, carrying the group's seq after that flush's
  messages; one snapshot encode per group per flush serves every joiner.
* A joiner subscribed to ``events`` also gets, right after its snapshot, one seq-less ``events``
  message with the last ``events_kept`` events (oldest first), encoded once per group per flush.
* A resuming member (``since``/``epoch``) gets instead one catch-up ``update`` with the changes
  since its version, when the epoch matches and the version is within the horizon.
* With a ``status`` source, every joiner and resumer gets a seq-less ``status`` message after its
  snapshot (and events) or catch-up, and a group's active members get one at the first flush
  after the status changed (before that flush's events and update). The source returns the same
  object while nothing changes; each change is encoded once per format.
* Before anything is written to a member, its write buffer is checked: above ``high_water`` it is
  skipped and marked lagging; once at or below ``low_water`` it rejoins with a snapshot; lagging
  for ``lag_timeout`` seconds or more, it is handed back to be closed.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import orjson

from dashboard_server.core.engine import ChangeSetEngine, StateDocEngine
from dashboard_server.core.messages import Messages
from dashboard_server.core.protocol import EVENTS_CHANNEL, ConnectParams, Diff, Format, Tier
from dashboard_server.core.symbols import (
    Bucketed,
    SymbolIndex,
    bucket_entries,
    event_matches,
    filter_entries,
)
from dashboard_server.core.timefmt import now_ms
from dashboard_server.core.values import check_value
from dashboard_server.telemetry.metrics import ServerMetrics

__all__ = ["Clock", "Delivery", "Flush", "GroupKey", "Hub", "Member", "Phase", "SystemClock"]


class Clock(Protocol):
    """Time as the hub sees it: a monotonic clock for lag limits, wall time for timestamps."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    def wall_ms(self) -> int:
        """Unix time in milliseconds (message timestamps)."""
        ...


class SystemClock:
    """The real clocks (``time.monotonic``, the wall clock)."""

    def monotonic(self) -> float:
        """Seconds on the monotonic clock."""
        return time.monotonic()

    def wall_ms(self) -> int:
        """Unix time in milliseconds."""
        return now_ms()


class Member(Hashable, Protocol):
    """What the hub needs from a connection: how many bytes wait in its write buffer."""

    def buffered(self) -> int:
        """Bytes written but not yet taken by the network."""
        ...


M = TypeVar("M", bound=Member)


class Phase(enum.Enum):
    """Where a member stands in its group."""

    JOINING = "joining"
    """Waits for a snapshot (or catch-up) at the group's next flush."""
    ACTIVE = "active"
    """Receives every group message."""
    LAGGING = "lagging"
    """Skipped: its write buffer is above the high-water mark."""


@dataclass(frozen=True, slots=True)
class GroupKey:
    """What makes members share messages. ``channels`` is ``None`` for every section;
    ``symbols`` is ``None`` for every symbol, else the filter's symbols, sorted."""

    interval_ms: int
    fmt: Format
    diff: Diff
    channels: tuple[str, ...] | None
    events: bool
    symbols: tuple[str, ...] | None = None


@dataclass(slots=True)
class _MemberState:
    tier: Tier
    subscribed: frozenset[str]
    key: GroupKey
    symbols: frozenset[str] | None = None
    phase: Phase = Phase.JOINING
    reason: str | None = None
    since: int | None = None
    epoch: str | None = None
    lag_started: float = 0.0


@dataclass(slots=True)
class _Group(Generic[M]):
    key: GroupKey
    seq: int = 0
    members: dict[M, _MemberState] = field(default_factory=dict)
    symbols: frozenset[str] | None = None
    tiers: dict[str, int] = field(default_factory=dict)
    """How many members of each tier (kept up to date on enter and leave: the per-tier
    message counts then cost nothing per member)."""
    status: object = None
    """The status body its active members were last sent."""


@dataclass(slots=True)
class _Interval:
    cursor: int
    event_cursor: int
    groups: int = 0


Tiers = tuple[tuple[str, int], ...]
"""How many of a delivery's members belong to each tier."""


@dataclass(frozen=True, slots=True)
class Delivery(Generic[M]):
    """One encoded message and the members it goes to (all of them get the same bytes)."""

    kind: str
    payload: bytes
    text: bool
    members: tuple[M, ...]
    tiers: Tiers = ()
    """Members per tier (for ``dashboard_messages_sent_total{client_type}``)."""


class _Batch(Generic[M]):
    """Members that get the same messages, and how many of them are of each tier."""

    __slots__ = ("_frozen", "_tiers", "members")

    def __init__(self, members: list[M] | None = None, tiers: Tiers | None = None) -> None:
        self.members: list[M] = members if members is not None else []
        self._tiers: dict[str, int] = {}
        self._frozen: tuple[tuple[M, ...], Tiers] | None = None
        if tiers is not None:
            self._frozen = (tuple(self.members), tiers)

    def add(self, member: M, tier: str) -> None:
        self.members.append(member)
        self._tiers[tier] = self._tiers.get(tier, 0) + 1

    def __len__(self) -> int:
        return len(self.members)

    def delivery(self, kind: str, payload: bytes, text: bool) -> Delivery[M]:
        """The delivery of one message to these members (the member tuple built once)."""
        if self._frozen is None:
            self._frozen = (tuple(self.members), tuple(self._tiers.items()))
        members, tiers = self._frozen
        return Delivery(kind, payload, text, members, tiers)


@dataclass(slots=True)
class Flush(Generic[M]):
    """The outcome of one interval's flush: writes, in order, and members to close."""

    interval_ms: int
    version: int
    deliveries: list[Delivery[M]] = field(default_factory=list)
    lagged_out: list[M] = field(default_factory=list)
    snapshot_encodes: int = 0
    tiers: frozenset[str] = frozenset()
    """The tiers of the interval's members (``dashboard_broadcast_latency_seconds``)."""


@dataclass(frozen=True, slots=True)
class _Event:
    number: int
    channel: str
    data: Mapping[str, Any]
    timestamp_ms: int


class Hub(Generic[M]):
    """Membership, groups and flush decisions for one state document (see the module doc)."""

    def __init__(
        self,
        doc: StateDocEngine,
        *,
        messages: Messages,
        sections: Sequence[str],
        clock: Clock,
        high_water: int,
        low_water: int,
        lag_timeout: float,
        max_pending_events: int = 10_000,
        events_kept: int = 0,
        metrics: ServerMetrics | None = None,
        on_new_interval: Callable[[int], None] | None = None,
        symbol_fields: Mapping[str, str | None] | None = None,
        max_symbol_transitions: int = 100_000,
        status: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.doc = doc
        self.messages = messages
        self.epoch = messages.epoch
        self.sections = tuple(sections)
        self.clock = clock
        self.high_water = high_water
        self.low_water = low_water
        self.lag_timeout = lag_timeout
        self.max_pending_events = max_pending_events
        self.metrics = metrics
        self.on_new_interval = on_new_interval
        """Called with an interval (ms) when its first group appears: the shell starts its
        flush task there, so no caller has to remember to."""
        self._members: dict[M, _MemberState] = {}
        self._groups: dict[GroupKey, _Group[M]] = {}
        self._intervals: dict[int, _Interval] = {}
        self._events: deque[_Event] = deque()
        self._recent: deque[_Event] = deque(maxlen=events_kept)
        self._event_number = 0
        self.symbol_fields: dict[str, str | None] = dict(symbol_fields or {})
        """Where each section's (or event channel's) symbol is (see core.symbols)."""
        self._field_sections = {
            s: f for s, f in self.symbol_fields.items() if f is not None and s in self.sections
        }
        self._max_transitions = max_symbol_transitions
        self._index: SymbolIndex | None = None
        """Started with the first filtered group, then kept up to date at every flush."""
        self._status = status
        self._status_body: Mapping[str, Any] | None = None
        self._status_payloads: dict[str, bytes] = {}
        self._status_ts = 0

    # --- membership ------------------------------------------------------------------------

    def add(self, member: M, params: ConnectParams) -> None:
        """Register a new connection; it gets a snapshot (or catch-up) at its next flush."""
        if member in self._members:
            raise ValueError("member already in the hub")
        key = self._key(
            params.interval_ms, params.fmt, params.diff, params.channels, params.symbols
        )
        state = _MemberState(
            tier=params.tier,
            subscribed=params.channels,
            key=key,
            symbols=params.symbols,
            since=params.since,
            epoch=params.epoch,
        )
        self._members[member] = state
        self._enter(member, state)
        if self.metrics is not None:
            self.metrics.connected_clients.labels(params.tier).inc()
            for channel in params.channels:
                self.metrics.subscriptions.labels(channel).inc()

    def remove(self, member: M) -> None:
        """Forget a connection (idempotent)."""
        state = self._members.pop(member, None)
        if state is None:
            return
        if state.phase is Phase.LAGGING:
            self._lagging_gauge(-1)
        self._leave(member, state)
        if self.metrics is not None:
            self.metrics.connected_clients.labels(state.tier).dec()
            for channel in state.subscribed:
                self.metrics.subscriptions.labels(channel).dec()

    def refresh(self, member: M) -> None:
        """Send the member a snapshot at its group's next flush."""
        state = self._members[member]
        if state.phase is Phase.LAGGING:
            return  # it gets a snapshot when it drains anyway
        state.phase = Phase.JOINING
        state.reason = "refresh"
        state.since = None

    def set_channels(self, member: M, channels: frozenset[str]) -> None:
        """Change the member's subscription: it moves to the matching group and rejoins."""
        self.set_subscription(member, channels, self._members[member].symbols)

    def set_subscription(
        self, member: M, channels: frozenset[str], symbols: frozenset[str] | None
    ) -> None:
        """Change the member's channels and symbol filter (``None``: every symbol); it moves
        to the matching group and rejoins (a snapshot at its next flush)."""
        state = self._members[member]
        if channels == state.subscribed and symbols == state.symbols:
            return
        if self.metrics is not None:
            for channel in state.subscribed - channels:
                self.metrics.subscriptions.labels(channel).dec()
            for channel in channels - state.subscribed:
                self.metrics.subscriptions.labels(channel).inc()
        self._leave(member, state)
        state.subscribed = channels
        state.symbols = symbols
        state.key = self._key(
            state.key.interval_ms, state.key.fmt, state.key.diff, channels, symbols
        )
        if state.phase is not Phase.LAGGING:
            state.phase = Phase.JOINING
            state.reason = "subscription"
        state.since = None
        self._enter(member, state)

    def __contains__(self, member: object) -> bool:
        """Whether ``member`` is in the hub (not yet removed or lagged out)."""
        return member in self._members

    def channels_of(self, member: M) -> frozenset[str]:
        """The member's current subscription (sections and possibly ``events``)."""
        return self._members[member].subscribed

    def symbols_of(self, member: M) -> frozenset[str] | None:
        """The member's symbol filter (``None``: every symbol)."""
        return self._members[member].symbols

    def phase_of(self, member: M) -> Phase:
        """Where the member stands (joining, active, lagging)."""
        return self._members[member].phase

    def group_seq(self, member: M) -> int:
        """The current seq of the member's group."""
        return self._groups[self._members[member].key].seq

    def intervals(self) -> set[int]:
        """Intervals (ms) that have at least one group, i.e. need a scheduler."""
        return set(self._intervals)

    def group_count(self) -> int:
        """Number of groups with at least one member."""
        return len(self._groups)

    def member_count(self) -> int:
        """Number of members."""
        return len(self._members)

    def lagging_count(self) -> int:
        """Members currently skipped for lagging."""
        return sum(1 for s in self._members.values() if s.phase is Phase.LAGGING)

    def _key(
        self,
        interval_ms: int,
        fmt: Format,
        diff: Diff,
        channels: frozenset[str],
        symbols: frozenset[str] | None = None,
    ) -> GroupKey:
        wanted = tuple(s for s in self.sections if s in channels)
        state_channels = None if wanted == self.sections else wanted
        return GroupKey(
            interval_ms,
            fmt,
            diff,
            state_channels,
            EVENTS_CHANNEL in channels,
            None if symbols is None else tuple(sorted(symbols)),
        )

    def _needs_index(self, key: GroupKey) -> bool:
        """Whether the group's filter needs the index (it reads a field-filtered section)."""
        if key.symbols is None or not self._field_sections:
            return False
        return key.channels is None or any(s in self._field_sections for s in key.channels)

    def _index_knows(self, key: GroupKey, version: int) -> bool:
        """Whether the group's filter can be applied to changes since ``version``."""
        if not self._needs_index(key):
            return True
        return self._index is not None and self._index.floor <= version

    def _enter(self, member: M, state: _MemberState) -> None:
        group = self._groups.get(state.key)
        if group is None:
            group = self._groups[state.key] = _Group(state.key)
            if state.key.symbols is not None:
                group.symbols = frozenset(state.key.symbols)
                if self._index is None and self._needs_index(state.key):
                    self._index = SymbolIndex(
                        self.doc, self._field_sections, max_transitions=self._max_transitions
                    )
            interval = self._intervals.get(state.key.interval_ms)
            if interval is None:
                interval = self._intervals[state.key.interval_ms] = _Interval(
                    cursor=self.doc.version, event_cursor=self._event_number
                )
                if self.on_new_interval is not None:
                    self.on_new_interval(state.key.interval_ms)
            interval.groups += 1
            self._set_group_gauge()
        group.members[member] = state
        group.tiers[state.tier] = group.tiers.get(state.tier, 0) + 1

    def _leave(self, member: M, state: _MemberState) -> None:
        group = self._groups[state.key]
        del group.members[member]
        group.tiers[state.tier] -= 1
        if group.members:
            return
        del self._groups[state.key]
        interval = self._intervals[state.key.interval_ms]
        interval.groups -= 1
        if interval.groups == 0:
            del self._intervals[state.key.interval_ms]
            self._trim_events()
        self._set_group_gauge()

    # --- events ----------------------------------------------------------------------------

    def publish_event(self, channel: str, data: Mapping[str, Any]) -> None:
        """Queue an event for every group subscribed to ``events`` (sent at their next flush).

        ``data`` is copied through JSON (so later changes by the caller do not show, and
        anything that is not JSON data is rejected here with :class:`ValueError`, not at a
        flush); it must follow the state document's value rules
        (:func:`~dashboard_server.core.values.check_value`: the error names the path). The last
        ``events_kept`` are kept for joiners; nothing is queued when no interval
        is scheduled. The log is capped at ``max_pending_events``; the oldest are dropped (and
        counted) beyond it.
        """
        if not self._intervals and not self._recent.maxlen:
            return
        try:
            check_value(data)  # the state's value rules: no 65-bit int, no NaN, no bytes
        except ValueError as exc:
            raise ValueError(f"event on {channel!r}: {exc}") from None
        try:
            copy = orjson.loads(orjson.dumps(data))
        except TypeError as exc:
            raise ValueError(f"event on {channel!r}: data is not JSON data: {exc}") from None
        if not isinstance(copy, dict):
            raise ValueError(f"event on {channel!r}: data must be an object")
        self._event_number += 1
        event = _Event(self._event_number, channel, copy, self.clock.wall_ms())
        if self._recent.maxlen:
            self._recent.append(event)
        if not self._intervals:
            return
        self._events.append(event)
        while len(self._events) > self.max_pending_events:
            self._events.popleft()
            if self.metrics is not None:
                self.metrics.events_dropped.inc()

    def _trim_events(self) -> None:
        if not self._intervals:
            self._events.clear()
            return
        oldest = min(i.event_cursor for i in self._intervals.values())
        while self._events and self._events[0].number <= oldest:
            self._events.popleft()

    # --- flush -----------------------------------------------------------------------------

    def flush(self, interval_ms: int) -> Flush[M]:
        """Decide every write of one flush of ``interval_ms`` (see the module doc)."""
        interval = self._intervals.get(interval_ms)
        version = self.doc.version
        result: Flush[M] = Flush(interval_ms, version)
        if interval is None:
            return result
        now = self.clock.monotonic()
        ts = self.clock.wall_ms()
        if self._index is not None:
            self._index.advance()
        buckets: dict[tuple[int, Diff], Bucketed] = {}
        changes: ChangeSetEngine | None = None
        horizon_lost = False
        catch_ups: dict[int, ChangeSetEngine | None] = {}
        interval_cursor = interval.cursor
        if version != interval.cursor:
            changes = self.doc.changes_since(interval.cursor)
            horizon_lost = changes is None
            catch_ups[interval.cursor] = changes
        interval.cursor = version
        events = [e for e in self._events if e.number > interval.event_cursor]
        interval.event_cursor = self._event_number
        self._trim_events()

        status = self._current_status(ts)
        tiers: set[str] = set()
        for group in [g for g in self._groups.values() if g.key.interval_ms == interval_ms]:
            tiers.update(t for t, n in group.tiers.items() if n)
            active, joiners, resumers = self._sort_members(group, now, horizon_lost, result)
            if (
                active.members
                and changes is not None
                and not self._index_knows(group.key, interval_cursor)
            ):
                for member in active.members:  # the filter's index started over: a snapshot
                    joiners.add(member, group.members[member].tier)
                active = _Batch()
            if active.members:
                if status is not None and group.status is not status:
                    self._send_status(group, active, result)
                self._send_group_messages(group, events, changes, ts, active, result, buckets)
            if joiners.members:
                self._send_snapshot(group, ts, joiners, result)
                if status is not None:
                    self._send_status(group, joiners, result)
            for since, members in resumers.items():
                self._send_catch_up(group, since, members, ts, catch_ups, result, buckets)
                if status is not None:
                    self._send_status(group, members, result)
            group.status = status
        result.tiers = frozenset(tiers)
        if self.metrics is not None:
            self.metrics.flushes.labels(str(interval_ms)).inc()
            self.metrics.snapshot_encodes_per_flush.observe(result.snapshot_encodes)
            self.metrics.state_version.set(version)
        return result

    def _sort_members(
        self, group: _Group[M], now: float, horizon_lost: bool, result: Flush[M]
    ) -> tuple[_Batch[M], _Batch[M], dict[int, _Batch[M]]]:
        active: list[M] = []
        joiners: _Batch[M] = _Batch()
        resumers: dict[int, _Batch[M]] = {}
        excluded: dict[str, int] = {}  # tiers of the members that stay but are not active
        for member, state in list(group.members.items()):
            buffered = member.buffered()
            if state.phase is Phase.LAGGING:
                if buffered > self.low_water:
                    if now - state.lag_started >= self.lag_timeout:
                        result.lagged_out.append(member)
                        self.remove(member)
                        if self.metrics is not None:
                            self.metrics.lag_closes.inc()
                    else:
                        excluded[state.tier] = excluded.get(state.tier, 0) + 1
                    continue
                state.phase = Phase.JOINING
                state.reason = "lag"
                self._lagging_gauge(-1)
            elif buffered > self.high_water:
                state.phase = Phase.LAGGING
                state.lag_started = now
                state.since = None
                self._lagging_gauge(+1)
                excluded[state.tier] = excluded.get(state.tier, 0) + 1
                continue
            if state.phase is Phase.ACTIVE and horizon_lost:
                state.phase = Phase.JOINING
                state.reason = "horizon"
            if state.phase is Phase.ACTIVE:
                active.append(member)
                continue
            excluded[state.tier] = excluded.get(state.tier, 0) + 1
            since, epoch = state.since, state.epoch
            state.since = state.epoch = None
            state.phase = Phase.ACTIVE
            if (
                since is not None
                and epoch == self.epoch
                and self.doc.floor <= since <= self.doc.version
                and self._index_knows(group.key, since)
            ):
                resumers.setdefault(since, _Batch()).add(member, state.tier)
                continue
            joiners.add(member, state.tier)
            if self.metrics is not None:
                if since is not None:
                    self.metrics.resumes.labels("snapshot").inc()
                elif state.reason is not None:
                    self.metrics.resyncs.labels(state.reason).inc()
            state.reason = None
        tiers = tuple(
            (tier, n - excluded.get(tier, 0))
            for tier, n in group.tiers.items()
            if n > excluded.get(tier, 0)
        )
        return _Batch(active, tiers), joiners, resumers

    def _send_group_messages(
        self,
        group: _Group[M],
        events: list[_Event],
        changes: ChangeSetEngine | None,
        ts: int,
        members: _Batch[M],
        result: Flush[M],
        buckets: dict[tuple[int, Diff], Bucketed],
    ) -> None:
        key = group.key
        text = key.fmt == "json"
        if key.events:
            for event in events:
                if group.symbols is not None and not event_matches(
                    self.symbol_fields, event.channel, event.data, group.symbols
                ):
                    continue
                payload = self.messages.event(
                    key.fmt, group.seq + 1, event.timestamp_ms, event.channel, event.data
                )
                group.seq += 1
                result.deliveries.append(members.delivery("event", payload, text))
        if changes is not None:
            if group.symbols is None:
                update = self.messages.update(
                    changes, key.fmt, key.diff, key.channels, group.seq + 1, ts
                )
            else:
                update = self._filtered_update(group, changes, group.seq + 1, ts, buckets)
            if update is not None:
                group.seq += 1
                result.deliveries.append(members.delivery("update", update, text))

    def _current_status(self, ts: int) -> Mapping[str, Any] | None:
        """The status body now (``None``: no status source); a new one drops the encodings."""
        if self._status is None:
            return None
        body = self._status()
        if body is not self._status_body:
            self._status_body = body
            self._status_payloads = {}
            self._status_ts = ts
        return body

    def _send_status(self, group: _Group[M], members: _Batch[M], result: Flush[M]) -> None:
        fmt = group.key.fmt
        payload = self._status_payloads.get(fmt)
        if payload is None:
            assert self._status_body is not None
            payload = self.messages.status(fmt, self._status_ts, self._status_body)
            self._status_payloads[fmt] = payload
        result.deliveries.append(members.delivery("status", payload, fmt == "json"))

    def _send_snapshot(
        self, group: _Group[M], ts: int, members: _Batch[M], result: Flush[M]
    ) -> None:
        key = group.key
        if group.symbols is None:
            snapshot = self.messages.snapshot(key.fmt, key.channels, group.seq, ts)
        else:
            snapshot = self.messages.filtered_snapshot(
                key.fmt,
                key.channels,
                group.symbols,
                self.symbol_fields,
                self._index,
                group.seq,
                ts,
            )
        result.snapshot_encodes += 1
        if self.metrics is not None:
            self.metrics.snapshot_encodes.inc()
        result.deliveries.append(members.delivery("snapshot", snapshot, key.fmt == "json"))
        recent_events = [
            (e.channel, e.timestamp_ms, e.data)
            for e in self._recent
            if group.symbols is None
            or event_matches(self.symbol_fields, e.channel, e.data, group.symbols)
        ]
        if key.events and recent_events:
            recent = self.messages.recent_events(key.fmt, ts, recent_events)
            result.deliveries.append(members.delivery("events", recent, key.fmt == "json"))

    def _send_catch_up(
        self,
        group: _Group[M],
        since: int,
        members: _Batch[M],
        ts: int,
        catch_ups: dict[int, ChangeSetEngine | None],
        result: Flush[M],
        buckets: dict[tuple[int, Diff], Bucketed],
    ) -> None:
        """One catch-up update for the group's members resuming from ``since``."""
        key = group.key
        if since not in catch_ups:
            catch_ups[since] = self.doc.changes_since(since) if since != self.doc.version else None
        changes = catch_ups[since]
        payload: bytes | None = None
        if group.symbols is not None and changes is not None:
            payload = self._filtered_update(group, changes, group.seq, ts, buckets, catch_up=True)
        if payload is None:
            payload = self.messages.catch_up(
                changes if group.symbols is None else None,
                key.fmt,
                key.diff,
                key.channels,
                group.seq,
                ts,
            )
        result.deliveries.append(members.delivery("update", payload, key.fmt == "json"))
        if self.metrics is not None:
            self.metrics.resumes.labels("catch_up").inc(len(members))

    def _filtered_update(
        self,
        group: _Group[M],
        changes: ChangeSetEngine,
        seq: int,
        ts: int,
        buckets: dict[tuple[int, Diff], Bucketed],
        *,
        catch_up: bool = False,
    ) -> bytes | None:
        """The update of a filtered group: the change set decoded once per flush (per diff
        form and start version), then filtered (core.symbols.filter_entries)."""
        key = group.key
        assert group.symbols is not None
        cache_key = (changes.from_version, key.diff)
        bucketed = buckets.get(cache_key)
        if bucketed is None:
            bucketed = buckets[cache_key] = bucket_entries(changes, key.diff, None)
        entries = filter_entries(
            bucketed,
            self.sections if key.channels is None else key.channels,
            self.symbol_fields,
            group.symbols,
            self._index,
            self.doc,
        )
        return self.messages.filtered_update(
            entries, key.fmt, key.diff, changes.to_version, seq, ts, catch_up=catch_up
        )

    def _lagging_gauge(self, delta: int) -> None:
        if self.metrics is not None:
            self.metrics.lagging_clients.inc(delta)

    def _set_group_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.groups.set(len(self._groups))
