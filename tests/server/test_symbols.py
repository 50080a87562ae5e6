"""Per-symbol subscriptions in the hub: filtered snapshots, updates, events and resumes.

Real engines, fake clock and members (the rig of test_hub.py). The reference is computed
independently: the document filtered by the rule of docs/protocol.md, "Symbols".
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
import orjson
import pytest
from test_hub import ALL, HIGH, FakeMember, Rig, make_rig, params

from dashboard_server.client.connection import Outcome
from dashboard_server.config import DEFAULT_SECTIONS, DEFAULT_SYMBOL_FIELDS
from dashboard_server.core.protocol import (
    EVENTS_CHANNEL,
    ConnectParams,
    MessageError,
    ParamError,
    Subscribe,
    Unsubscribe,
    parse_client_message,
    parse_connect_query,
)
from dashboard_server.fanout.hub import Flush, Phase

FIELDS = dict(DEFAULT_SYMBOL_FIELDS)
SYMBOLS = ["A", "B", "C", "D", "E", "F"]


def fparams(symbols: set[str] | None, **kw: Any) -> ConnectParams:
    p = params(**kw)
    return ConnectParams(
        p.tier,
        p.fmt,
        p.diff,
        p.channels,
        p.interval_ms,
        p.since,
        p.epoch,
        symbols=None if symbols is None else frozenset(symbols),
    )


def expected(doc: Any, channels: frozenset[str], symbols: set[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section, items in doc.get("").items():
        if section not in channels:
            continue
        if symbols is None or section not in FIELDS:
            out[section] = items
        elif FIELDS[section] is None:
            out[section] = {k: v for k, v in items.items() if k in symbols}
        else:
            name = FIELDS[section]
            out[section] = {
                k: v
                for k, v in items.items()
                if not isinstance(v.get(name), str) or v[name] in symbols
            }
    return out


class FilterRig(Rig):
    """Decodes every delivery once per member: members of one group must not share the
    decoded values (a client's state keeps them)."""

    def flush(self, interval_ms: int = 100) -> Flush[FakeMember]:
        result = self.hub.flush(interval_ms)
        self.flushes.append(result)
        for delivery in result.deliveries:
            for member in delivery.members:
                msg = (
                    orjson.loads(delivery.payload)
                    if delivery.text
                    else msgpack.unpackb(delivery.payload, raw=False)
                )
                member.received.append(msg)
                outcome = member.state.apply(msg)
                assert outcome is not Outcome.GAP, (member, msg, member.state.last_problem)
        return result


def rig_with_fields(engine: Any, **kw: Any) -> FilterRig:
    rig = make_rig(engine, symbol_fields=FIELDS, **kw)
    return FilterRig(rig.engine, rig.doc, rig.hub, rig.clock, rig.metrics)


def test_snapshot_and_updates_keep_only_the_filter(engine: Any) -> None:
    rig = rig_with_fields(engine)
    doc = rig.doc
    for s in SYMBOLS:
        doc.merge(f"/market_data/{s}", {"last": 1.0})
    doc.merge("/orders/1", {"symbol": "A", "qty": 1})
    doc.merge("/orders/2", {"symbol": "C", "qty": 1})
    doc.merge("/orders/3", {"qty": 1})  # no symbol: every filter keeps it
    doc.merge("/account/main", {"equity": 1.0})
    a, everyone = FakeMember("a"), FakeMember("all")
    rig.hub.add(a, fparams({"A", "B"}))
    rig.hub.add(everyone, fparams(None))
    assert rig.hub.group_count() == 2
    rig.flush()
    snap = a.received[0]
    assert snap["type"] == "snapshot" and snap["seq"] == 0 and snap["epoch"] == "e1"
    assert set(snap["data"]["market_data"]) == {"A", "B"}
    assert set(snap["data"]["orders"]) == {"1", "3"}
    assert snap["data"]["account"] == {"main": {"equity": 1.0}}
    doc.merge("/market_data/C", {"last": 2.0})  # not for a
    assert rig.flush().deliveries[0].members == (everyone,)
    assert len(a.received) == 1
    doc.merge("/market_data/A", {"last": 2.0})
    doc.merge("/market_data/C", {"last": 3.0})
    rig.flush()
    assert a.received[-1]["seq"] == 1
    assert a.received[-1]["changes"] == {"/market_data/A/last": 2.0}
    # an order moving into the filter arrives whole; one moving out is removed
    doc.merge("/orders/2", {"symbol": "B"})
    doc.merge("/orders/1", {"symbol": "D", "qty": 2})
    rig.flush()
    last = a.received[-1]
    assert last["changes"] == {"/orders/2": {"symbol": "B", "qty": 1}}
    assert last["removed"] == ["/orders/1"]
    assert a.state.data == expected(doc, ALL, {"A", "B"})
    assert everyone.state.data == expected(doc, ALL, None)


def test_events_are_filtered_by_symbol_field(engine: Any) -> None:
    rig = rig_with_fields(engine, events_kept=10)
    early = FakeMember("early")
    rig.hub.add(early, fparams({"A"}))
    rig.flush()
    rig.hub.publish_event("fills", {"symbol": "A", "n": 1})
    rig.hub.publish_event("fills", {"symbol": "B", "n": 2})
    rig.hub.publish_event("alerts", {"message": "account-wide", "n": 3})
    rig.flush()
    got = [(m["type"], m["seq"], m["data"]["n"]) for m in early.received[1:]]
    assert got == [("event", 1, 1), ("event", 2, 3)]
    late = FakeMember("late")
    rig.hub.add(late, fparams({"B"}))
    rig.flush()
    assert [m["type"] for m in late.received] == ["snapshot", "events"]
    assert [e["data"]["n"] for e in late.received[1]["events"]] == [2, 3]


@pytest.mark.parametrize("diff", ["changes", "json-patch"])
@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_random_ops_converge_with_filters_and_resumes(engine: Any, fmt: str, diff: str) -> None:
    rng = random.Random(f"{fmt}{diff}")
    rig = rig_with_fields(engine, tombs=10_000, lag_timeout=1e9)
    doc = rig.doc
    filters: list[set[str] | None] = [{"A"}, {"A", "B"}, {"C", "D", "E"}, None, {"F"}]
    channel_sets = [ALL, frozenset({"orders", EVENTS_CHANNEL}), frozenset({"market_data"})]
    members: list[tuple[FakeMember, frozenset[str], set[str] | None, int]] = []
    for i, symbols in enumerate(filters):
        for j, channels in enumerate(channel_sets):
            interval = (100, 250)[(i + j) % 2]
            m = FakeMember(f"{i}-{j}")
            rig.hub.add(
                m, fparams(symbols, channels=channels, fmt=fmt, diff=diff, interval_ms=interval)
            )
            members.append((m, channels, symbols, interval))
    parked: list[tuple[FakeMember, frozenset[str], set[str] | None, int]] = []

    def random_op() -> None:
        r = rng.random()
        sym = rng.choice(SYMBOLS)
        oid = str(rng.randrange(12))
        if r < 0.3:
            doc.merge(f"/market_data/{sym}", {"last": rng.random()})
        elif r < 0.4:
            doc.remove(f"/market_data/{sym}")
        elif r < 0.6:
            doc.merge(f"/orders/{oid}", {"symbol": sym, "qty": rng.randrange(5)})
        elif r < 0.7:
            doc.merge(f"/orders/{oid}", {"qty": rng.randrange(5), "note": rng.random()})
        elif r < 0.75:
            doc.merge(f"/orders/{oid}", {"symbol": None})  # loses its symbol field
        elif r < 0.8:
            doc.replace(f"/orders/{oid}", {"symbol": sym, "fresh": True})
        elif r < 0.88:
            doc.remove(f"/orders/{oid}")
        elif r < 0.9:
            doc.replace("/orders", {oid: {"symbol": sym, "qty": 9}})
        else:
            rig.hub.publish_event("fills", {"symbol": sym})

    for tick in range(250):
        for _ in range(rng.randrange(0, 5)):
            random_op()
        action = rng.random()
        if action < 0.05 and members:
            m, ch, sy, iv = members.pop(rng.randrange(len(members)))
            rig.hub.remove(m)  # disconnects; comes back later with since/epoch
            parked.append((m, ch, sy, iv))
        elif action < 0.1 and parked:
            m, ch, sy, iv = parked.pop(0)
            version = m.state.version
            m.state.connection_reset()
            again = fparams(
                sy, channels=ch, fmt=fmt, diff=diff, interval_ms=iv, since=version, epoch="e1"
            )
            rig.hub.add(m, again)
            members.append((m, ch, sy, iv))
        elif action < 0.13 and members:
            m = rng.choice(members)[0]
            m.buffer = HIGH + 1 if m.buffer == 0 else 0
        elif action < 0.16 and members:
            idx = rng.randrange(len(members))
            m, ch, sy, iv = members[idx]
            new = rng.choice(filters)
            rig.hub.set_subscription(m, ch, None if new is None else frozenset(new))
            members[idx] = (m, ch, new, iv)
        rig.clock.now += 0.05
        for interval in (100, 250) if tick % 2 else (100,):
            rig.flush(interval)
            for m, ch, sy, iv in members:
                if iv == interval and m.buffer == 0 and rig.hub.phase_of(m) is Phase.ACTIVE:
                    assert m.state.data == expected(doc, ch, sy), (m, tick)
    for m, *_ in members:
        m.buffer = 0
    for _ in range(2):
        rig.flush(100)
        rig.flush(250)
    resumed = rig.metrics.registry.get_sample_value(
        "dashboard_resumes_total", {"outcome": "catch_up"}
    )
    assert resumed and resumed > 0
    for m, ch, sy, _ in members:
        assert m.state.gaps == 0
        assert m.state.data == expected(doc, ch, sy), m


def test_resume_of_a_filtered_client_is_a_filtered_catch_up(engine: Any) -> None:
    rig = rig_with_fields(engine)
    doc = rig.doc
    doc.merge("/orders/1", {"symbol": "A"})
    doc.merge("/orders/2", {"symbol": "B"})
    first = FakeMember("first")
    rig.hub.add(first, fparams({"A"}))
    rig.flush()
    version = first.state.version
    rig.hub.remove(first)
    doc.merge("/orders/2", {"symbol": "A"})  # enters
    doc.merge("/orders/1", {"symbol": "B"})  # leaves
    doc.merge("/orders/3", {"symbol": "B"})  # never seen
    first.state.connection_reset()
    rig.hub.add(first, fparams({"A"}, since=version, epoch="e1"))
    rig.flush()
    (catch_up,) = first.received[1:]
    assert catch_up["type"] == "update"
    assert catch_up["changes"] == {"/orders/2": {"symbol": "A"}}
    assert catch_up["removed"] == ["/orders/1"]
    assert first.state.data == expected(doc, ALL, {"A"})


def test_distinct_filters_are_distinct_groups_same_filter_shares(engine: Any) -> None:
    rig = rig_with_fields(engine)
    rig.doc.merge("/market_data/A", {"last": 1.0})
    ms = [FakeMember(str(i)) for i in range(4)]
    rig.hub.add(ms[0], fparams({"A", "B"}))
    rig.hub.add(ms[1], fparams({"B", "A"}))
    rig.hub.add(ms[2], fparams({"A"}))
    rig.hub.add(ms[3], fparams(None))
    assert rig.hub.group_count() == 3
    assert rig.flush().snapshot_encodes == 3
    rig.doc.merge("/market_data/A", {"last": 2.0})
    flush = rig.flush()
    assert sorted(len(d.members) for d in flush.deliveries) == [1, 1, 2]


def test_subscription_changes_of_symbols(engine: Any) -> None:
    rig = rig_with_fields(engine)
    for s in "ABC":
        rig.doc.merge(f"/market_data/{s}", {"last": 1.0})
    m = FakeMember("m")
    rig.hub.add(m, fparams(None))
    rig.flush()
    rig.hub.set_subscription(m, ALL, frozenset({"B"}))
    rig.flush()
    assert m.received[-1]["type"] == "snapshot"
    assert set(m.received[-1]["data"]["market_data"]) == {"B"}
    assert rig.hub.symbols_of(m) == frozenset({"B"})


def test_query_and_message_parsing() -> None:
    def query(q: str, **kw: Any) -> ConnectParams:
        return parse_connect_query(
            q,
            sections=DEFAULT_SECTIONS,
            tier_intervals={"tui": 100, "web": 250},
            min_interval_ms=20,
            max_interval_ms=10_000,
            **kw,
        )

    assert query("symbols=BTCUSDT,ETHUSDT").symbols == {"BTCUSDT", "ETHUSDT"}
    assert query("").symbols is None
    for bad in ("symbols=", "symbols=,", "symbols=A%20B", "symbols=" + "X" * 65):
        with pytest.raises(ParamError) as info:
            query(bad)
        assert info.value.parameter == "symbols"
    with pytest.raises(ParamError, match="at most 2"):
        query("symbols=A,B,C", max_symbols=2)
    msg = parse_client_message('{"type":"subscribe","symbols":["A"]}', DEFAULT_SECTIONS)
    assert msg == Subscribe(frozenset(), frozenset({"A"}))
    msg = parse_client_message(
        '{"type":"unsubscribe","channels":["orders"],"symbols":["A"]}', DEFAULT_SECTIONS
    )
    assert msg == Unsubscribe(frozenset({"orders"}), frozenset({"A"}))
    for bad in ('{"type":"subscribe","symbols":"A"}', '{"type":"subscribe","symbols":[1]}'):
        with pytest.raises(MessageError) as err:
            parse_client_message(bad, DEFAULT_SECTIONS)
        assert err.value.code == "bad_symbols"
    with pytest.raises(MessageError) as err:
        parse_client_message('{"type":"subscribe"}', DEFAULT_SECTIONS)
    assert err.value.code == "bad_message"
    with pytest.raises(MessageError) as err:
        parse_client_message(
            '{"type":"subscribe","symbols":["A","B"]}', DEFAULT_SECTIONS, max_symbols=1
        )
    assert err.value.code == "bad_symbols"
