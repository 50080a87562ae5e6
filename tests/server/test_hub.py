"""The hub without sockets or sleeps: fake clock, fake members, real engines."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import orjson
import pytest
from server_helpers import ENGINES  # noqa: F401  (imports the source tree if needed)

from dashboard_server.client.connection import ClientState, Outcome
from dashboard_server.config import DEFAULT_SECTIONS
from dashboard_server.core.messages import Messages
from dashboard_server.core.protocol import EVENTS_CHANNEL, ConnectParams
from dashboard_server.fanout.hub import Flush, Hub, Phase
from dashboard_server.ingest.demo import DemoFeed
from dashboard_server.telemetry.metrics import ServerMetrics

ALL = frozenset(DEFAULT_SECTIONS) | {EVENTS_CHANNEL}
HIGH, LOW = 1000, 100


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall_ms(self) -> int:
        return int(self.now * 1000)


class FakeMember:
    """A member whose write buffer size the test sets; it records what it is sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.buffer = 0
        self.received: list[dict[str, Any]] = []
        self.state = ClientState()

    def buffered(self) -> int:
        return self.buffer

    def __repr__(self) -> str:
        return f"FakeMember({self.name})"


@dataclass
class Rig:
    """A hub on a fresh document, with helpers to flush and deliver."""

    engine: Any
    doc: Any
    hub: Hub[FakeMember]
    clock: FakeClock
    metrics: ServerMetrics
    flushes: list[Flush[FakeMember]] = field(default_factory=list)

    def flush(self, interval_ms: int = 100) -> Flush[FakeMember]:
        result = self.hub.flush(interval_ms)
        self.flushes.append(result)
        for delivery in result.deliveries:
            msg = (
                orjson.loads(delivery.payload)
                if delivery.text
                else msgpack.unpackb(delivery.payload, raw=False)
            )
            for member in delivery.members:
                member.received.append(msg)
                outcome = member.state.apply(msg)
                assert outcome is not Outcome.GAP, (member, msg, member.state.last_problem)
        return result

    def expected(self, channels: Iterable[str]) -> dict[str, Any]:
        full = self.doc.get("")
        return {k: v for k, v in full.items() if k in set(channels)}


def make_rig(engine: Any, **hub_args: Any) -> Rig:
    doc = engine.StateDoc(sections=DEFAULT_SECTIONS, max_tombstones=hub_args.pop("tombs", 1000))
    clock = FakeClock()
    metrics = ServerMetrics()
    settings: dict[str, Any] = {
        "messages": Messages(doc, epoch="e1"),
        "sections": DEFAULT_SECTIONS,
        "clock": clock,
        "high_water": HIGH,
        "low_water": LOW,
        "lag_timeout": 5.0,
        "metrics": metrics,
    }
    settings.update(hub_args)
    return Rig(engine, doc, Hub(doc, **settings), clock, metrics)


def params(
    channels: Iterable[str] = ALL,
    fmt: str = "json",
    diff: str = "changes",
    interval_ms: int = 100,
    since: int | None = None,
    epoch: str | None = None,
) -> ConnectParams:
    return ConnectParams("tui", fmt, diff, frozenset(channels), interval_ms, since, epoch)  # type: ignore[arg-type]


def test_joiner_snapshot_then_updates_seq_plus_one(engine: Any) -> None:
    rig = make_rig(engine)
    rig.doc.merge("/market_data/BTC", {"last": 1.0})
    a = FakeMember("a")
    rig.hub.add(a, params())
    assert a.received == []  # nothing until the flush
    rig.flush()
    assert [m["type"] for m in a.received] == ["snapshot"]
    assert a.received[0]["seq"] == 0 and a.received[0]["version"] == rig.doc.version
    assert a.received[0]["epoch"] == "e1"
    rig.doc.merge("/market_data/BTC", {"last": 2.0})
    rig.flush()
    assert a.received[-1]["type"] == "update" and a.received[-1]["seq"] == 1
    assert a.received[-1]["changes"] == {"/market_data/BTC/last": 2.0}
    before = len(a.received)
    assert rig.flush().deliveries == []  # nothing changed: nothing sent
    rig.doc.merge("/market_data/BTC", {"last": 2.0})  # same value: no change either
    assert rig.flush().deliveries == []
    assert len(a.received) == before
    rig.doc.remove("/market_data/BTC")
    rig.flush()
    assert a.received[-1]["seq"] == 2 and a.received[-1]["removed"] == ["/market_data/BTC"]
    assert a.state.data == rig.expected(ALL)


def test_group_gets_identical_bytes_encoded_once(engine: Any) -> None:
    rig = make_rig(engine)
    rig.doc.merge("/orders/1", {"qty": 1})
    members = [FakeMember(str(i)) for i in range(5)]
    for m in members:
        rig.hub.add(m, params())
    other = FakeMember("msgpack")
    rig.hub.add(other, params(fmt="msgpack"))
    assert rig.hub.group_count() == 2
    first = rig.flush()
    assert first.snapshot_encodes == 2  # one per group, however many joiners
    by_group = {d.payload: d.members for d in first.deliveries}
    assert sorted(len(v) for v in by_group.values()) == [1, 5]
    rig.doc.merge("/orders/1", {"qty": 2})
    second = rig.flush()
    assert second.snapshot_encodes == 0
    assert len(second.deliveries) == 2
    assert {len(d.members) for d in second.deliveries} == {1, 5}
    for m in members:
        assert m.received[-1] == members[0].received[-1]
    counters = rig.metrics.registry.get_sample_value("dashboard_snapshot_encodes_total")
    assert counters == 2


def test_late_joiner_gets_group_seq(engine: Any) -> None:
    rig = make_rig(engine)
    a, b = FakeMember("a"), FakeMember("b")
    rig.hub.add(a, params())
    rig.flush()
    for i in range(3):
        rig.doc.merge("/account/main", {"equity": float(i)})
        rig.flush()
    assert a.received[-1]["seq"] == 3
    rig.hub.add(b, params())
    rig.doc.merge("/account/main", {"equity": 9.5})
    rig.flush()
    assert a.received[-1]["seq"] == 4 and a.received[-1]["type"] == "update"
    assert b.received == [b.received[0]] and b.received[0]["type"] == "snapshot"
    assert b.received[0]["seq"] == 4
    rig.doc.merge("/account/main", {"equity": 10.5})
    rig.flush()
    assert a.received[-1] == b.received[-1] and b.received[-1]["seq"] == 5
    assert a.state.data == b.state.data == rig.expected(ALL)


def test_events_in_order_before_the_update_each_with_a_seq(engine: Any) -> None:
    rig = make_rig(engine)
    ev, no_ev = FakeMember("events"), FakeMember("state only")
    rig.hub.add(ev, params())
    rig.hub.add(no_ev, params(DEFAULT_SECTIONS))
    rig.flush()
    rig.hub.publish_event("fills", {"n": 1})
    rig.doc.merge("/positions/BTC", {"qty": 1})
    rig.hub.publish_event("alerts", {"n": 2})
    rig.flush()
    got = [(m["type"], m["seq"], m.get("data")) for m in ev.received[1:]]
    assert got == [("event", 1, {"n": 1}), ("event", 2, {"n": 2}), ("update", 3, None)]
    assert ev.received[1]["channel"] == "fills" and ev.received[2]["channel"] == "alerts"
    assert [(m["type"], m["seq"]) for m in no_ev.received[1:]] == [("update", 1)]
    rig.hub.publish_event("trades", {"n": 3})  # events alone are sent too
    rig.flush()
    assert ev.received[-1]["seq"] == 4 and ev.received[-1]["type"] == "event"
    assert len(no_ev.received) == 2


def test_channels_filter_and_empty_flushes(engine: Any) -> None:
    rig = make_rig(engine)
    orders = FakeMember("orders")
    rig.hub.add(orders, params(["orders"]))
    rig.doc.merge("/orders/7", {"px": 1.5})
    rig.doc.merge("/market_data/X", {"px": 1.5})
    rig.flush()
    assert orders.received[0]["data"] == {"orders": {"7": {"px": 1.5}}}
    rig.doc.merge("/market_data/X", {"px": 2.5})
    rig.hub.publish_event("fills", {})
    assert rig.flush().deliveries == []  # nothing for this group
    rig.doc.merge("/orders/7", {"px": 2.5})
    rig.flush()
    assert orders.received[-1]["seq"] == 1
    assert orders.received[-1]["changes"] == {"/orders/7/px": 2.5}


def test_json_patch_groups(engine: Any) -> None:
    rig = make_rig(engine)
    m = FakeMember("patch")
    rig.hub.add(m, params(diff="json-patch", fmt="msgpack"))
    rig.doc.merge("/orders/1", {"a": 1})
    rig.flush()
    rig.doc.merge("/orders/2", {"a": 2})
    rig.doc.remove("/orders/1")
    rig.flush()
    ops = {(op["op"], op["path"]) for op in m.received[-1]["patch"]}
    assert ops == {("remove", "/orders/1"), ("add", "/orders/2")}
    assert m.state.data == rig.expected(ALL)


def test_lagging_member_skipped_rejoins_then_closed(engine: Any) -> None:
    rig = make_rig(engine, lag_timeout=5.0)
    slow, fast = FakeMember("slow"), FakeMember("fast")
    rig.hub.add(slow, params())
    rig.hub.add(fast, params())
    rig.flush()
    slow.buffer = HIGH + 1
    rig.doc.merge("/orders/1", {"a": 1})
    rig.flush()
    assert rig.hub.phase_of(slow) is Phase.LAGGING
    assert len(slow.received) == 1 and fast.received[-1]["seq"] == 1
    assert rig.hub.lagging_count() == 1
    slow.buffer = LOW + 1  # drained a bit, not enough
    rig.clock.now += 1
    rig.doc.merge("/orders/1", {"a": 2})
    rig.flush()
    assert len(slow.received) == 1 and rig.hub.phase_of(slow) is Phase.LAGGING
    slow.buffer = LOW  # drained: rejoins with a snapshot at the group's seq
    rig.doc.merge("/orders/1", {"a": 3})
    rig.flush()
    assert slow.received[-1]["type"] == "snapshot"
    assert slow.received[-1]["seq"] == fast.received[-1]["seq"] == 3
    assert slow.state.data == fast.state.data == rig.expected(ALL)
    assert rig.metrics.registry.get_sample_value("dashboard_resyncs_total", {"reason": "lag"}) == 1
    # stuck for good: closed after lag_timeout, gone from the hub
    slow.buffer = HIGH * 10
    rig.doc.merge("/orders/1", {"a": 4})
    rig.flush()
    rig.clock.now += 4.9
    assert rig.flush().lagged_out == []
    rig.clock.now += 0.1
    result = rig.flush()
    assert result.lagged_out == [slow]
    assert rig.hub.member_count() == 1 and rig.hub.lagging_count() == 0
    assert rig.metrics.registry.get_sample_value("dashboard_lag_closes_total") == 1
    assert rig.metrics.registry.get_sample_value("dashboard_lagging_clients") == 0


def test_resume_catch_up_within_horizon(engine: Any) -> None:
    rig = make_rig(engine)
    first = FakeMember("first")
    rig.hub.add(first, params())
    rig.doc.merge("/orders/1", {"a": 1})
    rig.doc.merge("/orders/2", {"a": 1})
    rig.flush()
    state, version = first.state, first.state.version
    rig.hub.remove(first)  # disconnected
    keeper = FakeMember("keeper")  # keeps the group's seq going
    rig.hub.add(keeper, params())
    rig.flush()
    for i in range(3):
        rig.doc.merge("/orders/1", {"a": 10 + i})
        rig.flush()
    rig.doc.remove("/orders/2")
    rig.doc.merge("/orders/3", {"a": 3})
    again = FakeMember("again")
    again.state = state
    state.connection_reset()
    rig.hub.add(again, params(since=version, epoch="e1"))
    rig.flush()
    assert [m["type"] for m in again.received] == ["update"]
    catch_up = again.received[0]
    assert catch_up["seq"] == keeper.received[-1]["seq"]
    assert catch_up["version"] == rig.doc.version
    assert catch_up["removed"] == ["/orders/2"]
    assert again.state.data == rig.expected(ALL)
    rig.doc.merge("/orders/3", {"a": 4})
    rig.flush()
    assert again.received[-1]["seq"] == catch_up["seq"] + 1
    assert again.state.data == keeper.state.data == rig.expected(ALL)
    assert (
        rig.metrics.registry.get_sample_value("dashboard_resumes_total", {"outcome": "catch_up"})
        == 1
    )


def test_resume_up_to_date_gets_empty_update(engine: Any) -> None:
    rig = make_rig(engine)
    rig.doc.merge("/orders/1", {"a": 1})
    m = FakeMember("m")
    rig.hub.add(m, params(since=rig.doc.version, epoch="e1", diff="json-patch"))
    rig.flush()
    assert m.received == [
        {
            "type": "update",
            "seq": 0,
            "version": rig.doc.version,
            "timestamp": m.received[0]["timestamp"],
            "patch": [],
        }
    ]


@pytest.mark.parametrize("case", ["epoch", "horizon", "future"])
def test_resume_gets_snapshot_otherwise(engine: Any, case: str) -> None:
    rig = make_rig(engine, tombs=2)
    for i in range(5):
        rig.doc.merge(f"/orders/{i}", {"a": i})
    since = 1
    for i in range(4):
        rig.doc.remove(f"/orders/{i}")
    assert rig.doc.floor > since
    if case == "epoch":
        since, epoch = rig.doc.version, "other"
    elif case == "horizon":
        epoch = "e1"
    else:
        since, epoch = rig.doc.version + 5, "e1"
    m = FakeMember("m")
    rig.hub.add(m, params(since=since, epoch=epoch))
    rig.flush()
    assert [x["type"] for x in m.received] == ["snapshot"]
    assert m.state.data == rig.expected(ALL)
    assert (
        rig.metrics.registry.get_sample_value("dashboard_resumes_total", {"outcome": "snapshot"})
        == 1
    )


def test_horizon_lost_between_flushes_resyncs_active_members(engine: Any) -> None:
    rig = make_rig(engine, tombs=1)
    m = FakeMember("m")
    for i in range(3):
        rig.doc.merge(f"/orders/{i}", {"a": i})
    rig.hub.add(m, params())
    rig.flush()
    for i in range(3):
        rig.doc.remove(f"/orders/{i}")
    rig.flush()
    assert m.received[-1]["type"] == "snapshot" and m.received[-1]["seq"] == 0
    assert m.state.data == rig.expected(ALL)


def test_refresh_and_subscription_changes(engine: Any) -> None:
    rig = make_rig(engine)
    m, peer = FakeMember("m"), FakeMember("peer")
    rig.hub.add(m, params(["orders"]))
    rig.hub.add(peer, params(["orders"]))
    rig.doc.merge("/orders/1", {"a": 1})
    rig.doc.merge("/positions/X", {"q": 1})
    rig.flush()
    rig.doc.merge("/orders/1", {"a": 2})
    rig.flush()
    rig.hub.refresh(m)
    rig.doc.merge("/orders/1", {"a": 3})
    rig.flush()
    assert m.received[-1]["type"] == "snapshot" and m.received[-1]["seq"] == 2
    assert peer.received[-1]["type"] == "update" and peer.received[-1]["seq"] == 2
    rig.hub.set_channels(m, frozenset({"orders", "positions"}))
    assert rig.hub.group_count() == 2
    rig.flush()  # nothing changed, but the joiner still gets its snapshot
    assert m.received[-1]["type"] == "snapshot"
    assert set(m.received[-1]["data"]) == {"orders", "positions"}
    rig.hub.set_channels(m, frozenset())
    rig.flush()
    assert m.received[-1]["data"] == {}
    rig.doc.merge("/orders/1", {"a": 4})
    count = len(m.received)
    rig.flush()
    assert len(m.received) == count  # subscribed to nothing: nothing more
    assert (
        rig.metrics.registry.get_sample_value(
            "dashboard_client_subscriptions", {"channel": "positions"}
        )
        == 0
    )
    assert (
        rig.metrics.registry.get_sample_value(
            "dashboard_client_subscriptions", {"channel": "orders"}
        )
        == 1
    )


def test_intervals_flush_independently(engine: Any) -> None:
    rig = make_rig(engine)
    tui, web = FakeMember("tui"), FakeMember("web")
    rig.hub.add(tui, params(interval_ms=100))
    rig.hub.add(web, params(interval_ms=250))
    assert rig.hub.intervals() == {100, 250}
    rig.flush(100)
    assert web.received == [] and len(tui.received) == 1
    rig.doc.merge("/orders/1", {"a": 1})
    rig.flush(100)
    rig.doc.merge("/orders/1", {"a": 2})
    rig.flush(100)
    rig.flush(250)
    assert tui.received[-1]["seq"] == 2 and web.received[-1]["type"] == "snapshot"
    rig.doc.merge("/orders/2", {"a": 1})
    rig.flush(250)
    assert web.received[-1]["changes"] == {"/orders/2": {"a": 1}}
    rig.hub.remove(web)
    assert rig.hub.intervals() == {100}
    assert rig.flush(250).deliveries == []


def combos() -> list[tuple[str, str, frozenset[str]]]:
    channel_sets = [
        ALL,
        frozenset(DEFAULT_SECTIONS),
        frozenset({"orders", EVENTS_CHANNEL}),
        frozenset({"market_data", "orderbook"}),
    ]
    return [
        (f, d, c)
        for f in ("json", "msgpack")
        for d in ("changes", "json-patch")
        for c in channel_sets
    ]


def test_demo_feed_convergence_with_churn(engine: Any) -> None:
    """Random joins, refreshes, lags and subscription changes: everyone converges, no gap."""
    rng = random.Random(7)
    rig = make_rig(engine, tombs=50, lag_timeout=1e9)

    class Sink:
        def merge(self, path: str, patch: Any) -> None:
            rig.doc.merge(path, patch)

        def replace(self, path: str, value: Any) -> None:
            rig.doc.replace(path, value)

        def remove(self, path: str) -> None:
            rig.doc.remove(path)

        def publish_event(self, channel: str, data: dict[str, Any]) -> None:
            rig.hub.publish_event(channel, data)

    feed = DemoFeed(Sink(), symbols=5, updates_per_second=100, seed=3, start_time=0)
    members: list[tuple[FakeMember, frozenset[str], int]] = []
    for i, (fmt, diff, channels) in enumerate(combos()):
        interval = (100, 250)[i % 2]
        m = FakeMember(f"{fmt}-{diff}-{i}")
        rig.hub.add(m, params(channels, fmt=fmt, diff=diff, interval_ms=interval))
        members.append((m, channels, interval))
    for tick in range(300):
        for _ in range(rng.randrange(0, 6)):
            feed.step()
        m, channels, _ = rng.choice(members)
        action = rng.random()
        if action < 0.05:
            rig.hub.refresh(m)
        elif action < 0.1:
            m.buffer = HIGH + 1 if m.buffer == 0 else 0
        rig.clock.now += 0.05
        rig.flush(100)
        if tick % 2:
            rig.flush(250)
    for m, _, _ in members:
        m.buffer = 0
    for _ in range(2):
        rig.flush(100)
        rig.flush(250)
    for m, channels, _ in members:
        assert m.state.gaps == 0
        assert m.state.data == rig.expected(channels), m
        if EVENTS_CHANNEL in channels:
            assert m.state.events_received > 0


def test_resume_storm_costs_one_encode_per_version(engine: Any) -> None:
    rig = make_rig(engine)
    rig.doc.merge("/orders/1", {"a": 1})
    since = rig.doc.version
    rig.doc.merge("/orders/2", {"a": 2})
    storm = [FakeMember(str(i)) for i in range(50)]
    for m in storm:
        rig.hub.add(m, params(since=since, epoch="e1"))
    fresh = [FakeMember(f"new{i}") for i in range(50)]
    for m in fresh:
        rig.hub.add(m, params())
    result = rig.flush()
    assert result.snapshot_encodes == 1
    assert sorted((d.kind, len(d.members)) for d in result.deliveries) == [
        ("snapshot", 50),
        ("update", 50),
    ]
    assert storm[0].received == [
        {
            "type": "update",
            "seq": 0,
            "version": rig.doc.version,
            "timestamp": storm[0].received[0]["timestamp"],
            "changes": {"/orders/2": {"a": 2}},
        }
    ]


def test_events_are_copied_and_checked_at_publish(engine: Any) -> None:
    rig = make_rig(engine)
    m = FakeMember("m")
    rig.hub.add(m, params())
    rig.flush()
    data: dict[str, Any] = {"qty": 1}
    rig.hub.publish_event("fills", data)
    data["qty"] = 2  # the caller reuses its dict: the event keeps what was published
    with pytest.raises(ValueError, match="event on 'fills': /when: unsupported type: object"):
        rig.hub.publish_event("fills", {"when": object()})
    with pytest.raises(ValueError, match="/px/0: non-finite float"):  # would have become null
        rig.hub.publish_event("fills", {"px": [float("nan")]})
    with pytest.raises(ValueError, match="/n: out of range"):
        rig.hub.publish_event("fills", {"n": 2**64})
    rig.flush()
    assert [(x["type"], x.get("data")) for x in m.received[1:]] == [("event", {"qty": 1})]


def test_deliveries_count_members_per_tier_without_splitting_groups(engine: Any) -> None:
    import dataclasses

    rig = make_rig(engine)
    tui, web, slow = FakeMember("tui"), FakeMember("web"), FakeMember("slow")
    rig.hub.add(tui, params())
    rig.hub.add(web, dataclasses.replace(params(), tier="web"))
    rig.hub.add(slow, dataclasses.replace(params(), tier="web"))
    assert rig.hub.group_count() == 1  # the tier is not part of the group key
    first = rig.flush()
    assert [dict(d.tiers) for d in first.deliveries] == [{"tui": 1, "web": 2}]
    assert first.tiers == {"tui", "web"}
    slow.buffer = HIGH + 1  # skipped from now on
    rig.doc.merge("/orders/1", {"a": 1})
    update = rig.flush().deliveries
    assert [(d.kind, dict(d.tiers)) for d in update] == [("update", {"tui": 1, "web": 1})]
    slow.buffer = 0  # drains: rejoins with a snapshot, counted apart from the update
    rig.doc.merge("/orders/1", {"a": 2})
    kinds = {d.kind: dict(d.tiers) for d in rig.flush().deliveries}
    assert kinds == {"update": {"tui": 1, "web": 1}, "snapshot": {"web": 1}}
    rig.hub.remove(web)
    rig.hub.remove(slow)
    rig.doc.merge("/orders/1", {"a": 3})
    last = rig.flush()
    assert [dict(d.tiers) for d in last.deliveries] == [{"tui": 1}] and last.tiers == {"tui"}


def test_status_after_every_snapshot_and_on_every_change(engine: Any) -> None:
    body: dict[str, Any] = {"feed": "redis", "state": "ok", "sources": [], "stale": []}
    current = [body]
    rig = make_rig(engine, status=lambda: current[0])
    a, b = FakeMember("a"), FakeMember("b")
    rig.hub.add(a, params())
    rig.hub.add(b, params(fmt="msgpack", channels=["orders"]))
    rig.flush()
    assert [m["type"] for m in a.received] == ["snapshot", "status"]
    assert [m["type"] for m in b.received] == ["snapshot", "status"]
    assert a.received[1] == {"type": "status", "timestamp": a.received[1]["timestamp"], **body}
    rig.doc.merge("/orders/1", {"a": 1})
    rig.flush()
    assert [m["type"] for m in a.received[2:]] == ["update"]  # unchanged: not sent again
    assert rig.flush().deliveries == []
    current[0] = {**body, "state": "down"}  # a new object: a change
    rig.doc.merge("/orders/1", {"a": 2})
    flush = rig.flush()
    assert [m["type"] for m in a.received[3:]] == ["status", "update"]  # the status first
    assert a.received[3]["state"] == "down" and b.received[-2]["state"] == "down"
    assert "seq" not in a.received[3] and a.received[4]["seq"] == a.received[2]["seq"] + 1
    assert [d.kind for d in flush.deliveries].count("status") == 2  # one per group
    c = FakeMember("c")  # a second json group member: the status bytes are shared
    rig.hub.add(c, params(channels=["positions"]))
    current[0] = {**body, "state": "degraded"}
    rig.doc.merge("/orders/1", {"a": 3})
    payloads = [d.payload for d in rig.flush().deliveries if d.kind == "status"]
    assert len(payloads) == 3 and payloads[0] is payloads[2]  # a (json) and c (json) share
    assert [m["type"] for m in c.received] == ["snapshot", "status"]


def test_status_after_a_catch_up(engine: Any) -> None:
    rig = make_rig(engine, status=lambda: {"feed": "demo", "state": "ok", "sources": []})
    rig.doc.merge("/orders/1", {"a": 1})
    since = rig.doc.version
    rig.doc.merge("/orders/1", {"a": 2})
    m = FakeMember("m")
    m.state.connection_reset()
    rig.hub.add(m, params(since=since, epoch="e1"))
    rig.flush()
    assert [msg["type"] for msg in m.received] == ["update", "status"]
