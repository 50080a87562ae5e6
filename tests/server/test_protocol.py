"""Connect parameters, client messages and the messages the server encodes itself."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from server_helpers import ENGINES  # noqa: F401  (imports the source tree if needed)

from dashboard_server.config import DEFAULT_SECTIONS
from dashboard_server.core.engine import load_engine
from dashboard_server.core.messages import Messages, encode_message, error_message, pong_message
from dashboard_server.core.protocol import (
    EVENTS_CHANNEL,
    MessageError,
    ParamError,
    Ping,
    Refresh,
    Subscribe,
    Unsubscribe,
    parse_client_message,
    parse_connect_query,
)
from dashboard_server.core.ratelimit import StrikeCounter
from dashboard_server.core.timefmt import rfc3339_ms


def connect(query: str) -> Any:
    return parse_connect_query(
        query,
        sections=DEFAULT_SECTIONS,
        tier_intervals={"tui": 100, "web": 250},
        min_interval_ms=20,
        max_interval_ms=5000,
    )


def test_defaults() -> None:
    p = connect("")
    assert (p.tier, p.fmt, p.diff, p.interval_ms) == ("web", "msgpack", "changes", 250)
    assert p.channels == frozenset(DEFAULT_SECTIONS) | {EVENTS_CHANNEL}
    assert p.since is None and p.epoch is None


def test_all_parameters() -> None:
    p = connect(
        "type=tui&format=json&channels=orders,%20events,&diff=json-patch"
        "&interval_ms=40&since=12&epoch=abc"
    )
    assert (p.tier, p.fmt, p.diff, p.interval_ms, p.since, p.epoch) == (
        "tui",
        "json",
        "json-patch",
        40,
        12,
        "abc",
    )
    assert p.channels == {"orders", "events"}
    assert connect("type=tui").interval_ms == 100


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("type=desktop", "type"),
        ("format=xml", "format"),
        ("diff=merge", "diff"),
        ("channels=orders,bogus", "channels"),
        ("channels=", "channels"),
        ("interval_ms=5", "interval_ms"),
        ("interval_ms=99999", "interval_ms"),
        ("interval_ms=fast", "interval_ms"),
        ("since=5", "epoch"),
        ("epoch=x", "since"),
        ("since=-1&epoch=x", "since"),
        ("since=1.5&epoch=x", "since"),
        ("since=1&epoch=", "epoch"),
        ("format=json&format=msgpack", "format"),
        ("colour=blue", "colour"),
    ],
)
def test_bad_parameters_are_named(query: str, parameter: str) -> None:
    with pytest.raises(ParamError) as info:
        connect(query)
    assert info.value.parameter == parameter
    assert str(info.value).startswith(f"{parameter}: ")


@pytest.mark.parametrize("wire", ["json", "msgpack"])
def test_client_messages(wire: str) -> None:
    def parse(obj: Any) -> Any:
        data = orjson.dumps(obj).decode() if wire == "json" else msgpack.packb(obj)
        return parse_client_message(data, DEFAULT_SECTIONS)

    assert parse({"type": "subscribe", "channels": ["orders", "events"]}) == Subscribe(
        frozenset({"orders", "events"})
    )
    assert parse({"type": "unsubscribe", "channels": ["orders"]}) == Unsubscribe(
        frozenset({"orders"})
    )
    assert parse({"type": "refresh"}) == Refresh()
    assert parse({"type": "ping", "payload": {"t": 1.5}}) == Ping({"t": 1.5})
    assert parse({"type": "ping"}) == Ping(None)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("not json", "bad_message"),
        (b"\xc1", "bad_message"),
        (b"\x92\x01", "bad_message"),  # truncated msgpack array
        ("[1,2]", "bad_message"),
        ('"text"', "bad_message"),
        ("{}", "bad_message"),
        ('{"type": 5}', "bad_message"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "subscribe"}', "bad_message"),
        ('{"type": "subscribe", "channels": "orders"}', "bad_message"),
        ('{"type": "subscribe", "channels": [1]}', "bad_message"),
        ('{"type": "subscribe", "channels": []}', "bad_message"),
        ('{"type": "subscribe", "channels": ["nope"]}', "unknown_channel"),
        ('{"type": "unsubscribe", "channels": ["orders"], "x": 1}', "bad_message"),
        ("[" * 5000 + "]" * 5000, "message_too_large"),
        ('{"type": "ping", "payload": "' + "x" * 5000 + '"}', "message_too_large"),
        ("é" * 2049, "message_too_large"),  # 4098 bytes in UTF-8
        ("[" * 17 + "]" * 17, "message_too_complex"),
        ('{"type": "ping", "payload": [' + ",".join(["0"] * 255) + "]}", "message_too_complex"),
        (msgpack.packb({"type": "ping", "payload": [[]] * 300}), "message_too_complex"),
        (
            msgpack.packb({"type": "ping", "payload": {str(i): 0 for i in range(200)}}),
            "message_too_complex",
        ),
        (msgpack.packb({1: 2}), "bad_message"),
        (b"", "bad_message"),
        ("", "bad_message"),
    ],
)
def test_malformed_messages(data: str | bytes, code: str) -> None:
    with pytest.raises(MessageError) as info:
        parse_client_message(data, DEFAULT_SECTIONS)
    assert info.value.code == code
    assert info.value.message


def test_strike_counter_window() -> None:
    strikes = StrikeCounter(limit=3, window=10.0)
    assert not any(strikes.strike(t) for t in (0.0, 1.0, 2.0))
    assert strikes.strike(3.0)  # the fourth within 10 s
    fresh = StrikeCounter(limit=3, window=10.0)
    assert not any(fresh.strike(t * 6.0) for t in range(20))  # spread out: never


def test_rfc3339() -> None:
    assert rfc3339_ms(1_795_775_400_100) == "2026-11-27T10:30:00.100Z"
    assert rfc3339_ms(0) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_encoded_messages(fmt: str) -> None:
    def decode(data: bytes) -> Any:
        return orjson.loads(data) if fmt == "json" else msgpack.unpackb(data)

    ts = 1_795_775_400_100
    stamp = "2026-11-27T10:30:00.100Z"
    doc = load_engine("pure").StateDoc(sections=["s"])
    for i in range(9):
        doc.merge("/s/x", i)
    messages = Messages(doc, epoch="e")
    assert decode(messages.event(fmt, 7, ts, "fills", {"q": 1.0})) == {  # type: ignore[arg-type]
        "type": "event",
        "seq": 7,
        "timestamp": stamp,
        "channel": "fills",
        "data": {"q": 1.0},
    }
    assert decode(pong_message(fmt, [1, "x"], ts)) == {  # type: ignore[arg-type]
        "type": "pong",
        "payload": [1, "x"],
        "timestamp": stamp,
    }
    assert decode(error_message(fmt, "bad_message", "why")) == {  # type: ignore[arg-type]
        "type": "error",
        "code": "bad_message",
        "message": "why",
    }
    assert decode(messages.catch_up(None, fmt, "changes", None, 3, ts)) == {  # type: ignore[arg-type]
        "type": "update",
        "seq": 3,
        "version": 9,
        "timestamp": stamp,
        "changes": {},
    }
    if fmt == "json":
        assert encode_message("json", {"a": 1.0}) == b'{"a":1.0}'


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
messages = st.dictionaries(
    st.sampled_from(["type", "channels", "payload", "x"]),
    st.sampled_from(["subscribe", "unsubscribe", "refresh", "ping", "orders", "events"])
    | json_values
    | st.lists(st.sampled_from(["orders", "events", "nope", ""]), max_size=3),
    max_size=4,
)


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_arbitrary_frames_parse_or_raise_message_error(data: str | bytes) -> None:
    try:
        parse_client_message(data, DEFAULT_SECTIONS)
    except MessageError as exc:
        assert exc.code in (
            "bad_message",
            "unknown_type",
            "unknown_channel",
            "message_too_large",
            "message_too_complex",
        )


@given(messages, st.booleans())
def test_arbitrary_objects_parse_or_raise_message_error(obj: dict[str, Any], packed: bool) -> None:
    data = msgpack.packb(obj) if packed else orjson.dumps(obj).decode()
    try:
        parsed = parse_client_message(data, DEFAULT_SECTIONS)
    except MessageError as exc:
        assert exc.code in (
            "bad_message",
            "unknown_type",
            "unknown_channel",
            "message_too_large",
            "message_too_complex",
        )
    else:
        assert parsed.__class__.__name__.lower() == obj["type"]
