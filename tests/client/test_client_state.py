"""ClientState on hand-built message sequences: snapshots, both diff forms, seq and gaps, events."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
import pytest

from dashboard_server.client.connection import (
    ClientState,
    Outcome,
    PatchError,
    decode_message,
    parse_pointer,
)


def snapshot(seq: int, version: int, data: dict[str, Any], epoch: str = "e1") -> dict[str, Any]:
    return {
        "type": "snapshot",
        "seq": seq,
        "version": version,
        "epoch": epoch,
        "timestamp": "2026-11-27T10:30:00.100Z",
        "data": data,
    }


def update(
    seq: int, version: int, changes: dict[str, Any] | None = None, removed: list[str] | None = None
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "update",
        "seq": seq,
        "version": version,
        "timestamp": "2026-11-27T10:30:00.200Z",
        "changes": changes or {},
    }
    if removed:
        msg["removed"] = removed
    return msg


def patch_update(seq: int, version: int, ops: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "update",
        "seq": seq,
        "version": version,
        "timestamp": "2026-11-27T10:30:00.200Z",
        "patch": ops,
    }


def event(seq: int, channel: str = "fills", **data: Any) -> dict[str, Any]:
    return {
        "type": "event",
        "seq": seq,
        "timestamp": "2026-11-27T10:30:00.300Z",
        "channel": channel,
        "data": data,
    }


BASE = {
    "market_data": {"BTCUSDT": {"last_price": 50000.0, "bid": 49999.5}},
    "orders": {"42": {"id": "42", "status": "new"}},
}


def synced_state() -> ClientState:
    st = ClientState()
    assert st.apply(snapshot(10, 100, {k: dict(v) for k, v in BASE.items()})) is Outcome.APPLIED
    return st


def test_snapshot_sets_state_seq_version_epoch() -> None:
    st = ClientState()
    assert not st.synced
    assert st.apply(snapshot(7, 99, {"orders": {}}, epoch="abc")) is Outcome.APPLIED
    assert (st.seq, st.version, st.epoch, st.synced) == (7, 99, "abc", True)
    assert st.data == {"orders": {}}


def test_changes_form_sets_subtrees_and_creates_parents() -> None:
    st = synced_state()
    out = st.apply(
        update(
            11,
            105,
            {
                "/market_data/BTCUSDT/last_price": 50100.0,
                "/market_data/ETHUSDT": {"last_price": 3000.0},
                "/positions/BTCUSDT/quantity": 1.5,
            },
            removed=["/orders/42", "/orders/absent", "/nosection/x"],
        )
    )
    assert out is Outcome.APPLIED
    assert st.data == {
        "market_data": {
            "BTCUSDT": {"last_price": 50100.0, "bid": 49999.5},
            "ETHUSDT": {"last_price": 3000.0},
        },
        "orders": {},
        "positions": {"BTCUSDT": {"quantity": 1.5}},
    }
    assert (st.seq, st.version, st.updates) == (11, 105, 1)


def test_removals_apply_before_changes() -> None:
    st = synced_state()
    st.apply(
        update(11, 101, {"/orders/42": {"id": "42", "status": "filled"}}, removed=["/orders/42"])
    )
    assert st.data["orders"] == {"42": {"id": "42", "status": "filled"}}


def test_escaped_pointer_tokens() -> None:
    st = synced_state()
    st.apply(update(11, 101, {"/market_data/a~1b~0c": 1}))
    assert st.data["market_data"]["a/b~c"] == 1
    assert parse_pointer("/a~01/b~10") == ["a~1", "b/0"]
    with pytest.raises(PatchError):
        parse_pointer("/a~2")
    with pytest.raises(PatchError):
        parse_pointer("a")


def test_json_patch_form() -> None:
    st = synced_state()
    out = st.apply(
        patch_update(
            11,
            103,
            [
                {"op": "remove", "path": "/orders/42"},
                {"op": "replace", "path": "/market_data/BTCUSDT/last_price", "value": 50200.0},
                {"op": "add", "path": "/market_data/ETHUSDT", "value": {"last_price": 3000.0}},
            ],
        )
    )
    assert out is Outcome.APPLIED
    assert st.data["orders"] == {}
    assert st.data["market_data"]["BTCUSDT"]["last_price"] == 50200.0
    assert st.data["market_data"]["ETHUSDT"] == {"last_price": 3000.0}
    assert st.version == 103


def test_patch_that_does_not_fit_is_a_gap() -> None:
    st = synced_state()
    out = st.apply(patch_update(11, 103, [{"op": "replace", "path": "/orders/7", "value": 1}]))
    assert out is Outcome.GAP
    assert st.gaps == 1 and not st.synced
    assert "does not apply" in (st.last_problem or "")


def test_change_through_a_scalar_is_a_gap() -> None:
    st = synced_state()
    assert st.apply(update(11, 101, {"/orders/42/status/x": 1})) is Outcome.GAP


def test_seq_gap_ignores_updates_until_snapshot() -> None:
    st = synced_state()
    assert st.apply(update(11, 101, {"/orders/42/status": "partially_filled"})) is Outcome.APPLIED
    assert st.apply(update(13, 103, {"/orders/42/status": "filled"})) is Outcome.GAP
    assert st.gaps == 1 and st.awaiting_snapshot
    assert st.data["orders"]["42"]["status"] == "partially_filled"
    assert st.apply(update(14, 104, {"/orders/42/status": "x"})) is Outcome.IGNORED
    assert st.ignored == 1
    assert st.data["orders"]["42"]["status"] == "partially_filled"
    # A snapshot always replaces state and seq (whatever its seq), and resyncs.
    assert st.apply(snapshot(3, 110, {"orders": {}})) is Outcome.APPLIED
    assert st.synced and st.seq == 3 and st.data == {"orders": {}}
    assert st.apply(update(4, 111, {"/orders/1": {"id": "1"}})) is Outcome.APPLIED
    assert st.gaps == 1


def test_repeated_seq_is_a_gap() -> None:
    st = synced_state()
    assert st.apply(update(10, 101, {})) is Outcome.GAP


def test_updates_before_the_first_snapshot_are_ignored() -> None:
    st = ClientState()
    assert st.apply(update(5, 5, {"/orders/1": {}})) is Outcome.IGNORED
    assert st.data == {}


def test_events_take_part_in_seq_and_are_bounded() -> None:
    st = ClientState(max_events=3)
    st.apply(snapshot(1, 1, {}))
    for seq in range(2, 7):
        assert st.apply(event(seq, qty=seq)) is Outcome.EVENT
    assert [e["data"]["qty"] for e in st.events] == [4, 5, 6]
    assert st.events_received == 5
    assert st.apply(update(7, 2, {"/orders/1": 1})) is Outcome.APPLIED
    assert st.apply(event(9, channel="alerts")) is Outcome.GAP
    assert st.events[-1]["channel"] == "alerts"  # the event itself is still recorded


def test_control_messages_carry_no_seq() -> None:
    st = synced_state()
    assert st.apply({"type": "pong", "payload": 1, "timestamp": "t"}) is Outcome.CONTROL
    assert st.apply({"type": "error", "code": "bad_message", "message": "?"}) is Outcome.CONTROL
    assert st.apply(update(11, 101, {})) is Outcome.APPLIED
    assert st.gaps == 0


def test_first_group_message_after_reconnect_sets_seq() -> None:
    st = synced_state()
    st.connection_reset()
    # Resume: one catch-up update carrying the new group's current seq.
    assert st.apply(update(500, 130, {"/orders/42/status": "filled"})) is Outcome.APPLIED
    assert (st.seq, st.version) == (500, 130)
    assert st.apply(update(501, 131, {})) is Outcome.APPLIED
    assert st.apply(update(503, 132, {})) is Outcome.GAP


def test_first_message_after_reconnect_may_be_an_event() -> None:
    st = synced_state()
    st.connection_reset()
    assert st.apply(event(77)) is Outcome.EVENT
    assert st.apply(update(78, 101, {})) is Outcome.APPLIED


def test_message_without_seq_is_a_gap() -> None:
    st = synced_state()
    assert st.apply({"type": "update", "version": 1, "changes": {}}) is Outcome.GAP


def test_snapshot_replaces_everything() -> None:
    st = synced_state()
    st.apply(snapshot(50, 200, {"account": {"main": {"equity": 1.0}}}, epoch="e2"))
    assert st.data == {"account": {"main": {"equity": 1.0}}}
    assert (st.seq, st.version, st.epoch) == (50, 200, "e2")


def test_decode_message_both_formats() -> None:
    msg = update(1, 2, {"/a/b": 1.0})
    assert decode_message(msgpack.packb(msg)) == msg
    assert decode_message(orjson.dumps(msg).decode()) == msg
    with pytest.raises(ValueError, match="not an object"):
        decode_message("[1, 2]")
