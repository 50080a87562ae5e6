"""Snapshot and update messages, the stateless diff, and engine selection."""

from __future__ import annotations

from typing import Any

import jsonpatch
import pytest

from dashboard_server.core.engine import Engine, EngineUnavailable, load_engine
from support import apply_update, canon, decode

FORMATS = ("msgpack", "json")


def demo_doc(engine: Engine) -> Any:
    doc = engine.StateDoc(sections=("market_data", "orders", "account"))
    doc.merge("/market_data/BTCUSDT", {"last": 50_000.5, "bid": 50_000.0, "vol": 12})
    doc.merge("/orders/42", {"side": "buy", "qty": 1.0, "status": "open"})
    doc.merge("/orders/43", {"side": "sell", "qty": 2.0, "status": "open"})
    doc.merge("/account/main", {"equity": 1e6, "assets": ["BTC", "USDT"]})
    return doc


@pytest.mark.parametrize("fmt", FORMATS)
def test_snapshot_envelope(engine: Engine, fmt: str) -> None:
    doc = demo_doc(engine)
    raw = doc.encode_snapshot(fmt, None, 12345, "ep-1", 1_795_775_400_100)
    assert isinstance(raw, bytes)
    message = decode(fmt, raw)
    assert list(message) == ["type", "seq", "version", "epoch", "timestamp", "data"]
    assert message["type"] == "snapshot"
    assert message["seq"] == 12345
    assert message["version"] == doc.version
    assert message["epoch"] == "ep-1"
    assert message["timestamp"] == "2026-11-27T10:30:00.100Z"
    assert canon(message["data"]) == canon(doc.get(""))


@pytest.mark.parametrize("fmt", FORMATS)
def test_snapshot_channel_filter(engine: Engine, fmt: str) -> None:
    doc = demo_doc(engine)
    message = decode(fmt, doc.encode_snapshot(fmt, ["orders", "account", "nope"], 1, "e", 0))
    assert list(message["data"]) == ["orders", "account"]  # document order
    assert message["timestamp"] == "1970-01-01T00:00:00.000Z"
    assert decode(fmt, doc.encode_snapshot(fmt, [], 1, "e", 0))["data"] == {}


@pytest.mark.parametrize("fmt", FORMATS)
def test_update_changes_form(engine: Engine, fmt: str) -> None:
    doc = demo_doc(engine)
    v = doc.version
    doc.merge("/market_data/BTCUSDT", {"last": 50_100.0})
    doc.merge("/orders/42", None)
    doc.merge("/orders/44", {"side": "buy", "qty": 3})
    cs = doc.changes_since(v)
    assert (cs.from_version, cs.to_version) == (v, doc.version)
    message = decode(fmt, cs.encode(fmt, "changes", None, 7, 1_795_775_400_999))
    assert list(message) == ["type", "seq", "version", "timestamp", "changes", "removed"]
    assert message["type"] == "update"
    assert (message["seq"], message["version"]) == (7, doc.version)
    assert message["timestamp"] == "2026-11-27T10:30:00.999Z"
    assert canon(message["changes"]) == canon(
        {"/market_data/BTCUSDT/last": 50_100.0, "/orders/44": {"side": "buy", "qty": 3}}
    )
    assert message["removed"] == ["/orders/42"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_update_without_removals_has_no_removed_key(engine: Engine, fmt: str) -> None:
    doc = demo_doc(engine)
    v = doc.version
    doc.merge("/orders/43", {"status": "filled"})
    message = decode(fmt, doc.changes_since(v).encode(fmt, "changes", None, 1, 0))
    assert "removed" not in message
    assert message["changes"] == {"/orders/43/status": "filled"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_update_json_patch_form_applies_strictly(engine: Engine, fmt: str) -> None:
    doc = demo_doc(engine)
    before = doc.get("")
    v = doc.version
    doc.merge("/market_data/BTCUSDT", {"last": 1.0, "new_field": True})
    doc.remove("/orders/42")
    doc.replace("/account/main", {"equity": 2e6})
    message = decode(fmt, doc.changes_since(v).encode(fmt, "json-patch", None, 2, 0))
    assert list(message) == ["type", "seq", "version", "timestamp", "patch"]
    ops = {(op["op"], op["path"]) for op in message["patch"]}
    assert ops == {
        ("replace", "/market_data/BTCUSDT/last"),
        ("add", "/market_data/BTCUSDT/new_field"),
        ("remove", "/orders/42"),
        ("remove", "/account/main/assets"),
        ("replace", "/account/main/equity"),
    }
    for op in message["patch"]:
        assert list(op) == (["op", "path"] if op["op"] == "remove" else ["op", "path", "value"])
    after = jsonpatch.apply_patch(before, message["patch"])
    assert canon(after) == canon(doc.get(""))


def test_update_channel_filter_and_empty(engine: Engine) -> None:
    doc = demo_doc(engine)
    v = doc.version
    doc.merge("/orders/43", {"status": "filled"})
    cs = doc.changes_since(v)
    assert cs.is_empty(["market_data"]) and not cs.is_empty(["orders"]) and not cs.is_empty()
    assert cs.encode("json", "changes", ["market_data", "account"], 1, 0) is None
    assert cs.encode("msgpack", "json-patch", ["market_data"], 1, 0) is None
    assert cs.encode("json", "changes", ["orders"], 1, 0) is not None


def test_encode_is_deterministic(engine: Engine) -> None:
    doc = demo_doc(engine)
    cs = doc.changes_since(0)
    for fmt in FORMATS:
        for form in ("changes", "json-patch"):
            assert cs.encode(fmt, form, None, 5, 9) == cs.encode(fmt, form, None, 5, 9)
        assert doc.encode_snapshot(fmt, None, 1, "e", 2) == doc.encode_snapshot(
            fmt, None, 1, "e", 2
        )


def test_encode_rejects_unknown_format_and_form(engine: Engine) -> None:
    doc = demo_doc(engine)
    cs = doc.changes_since(0)
    with pytest.raises(ValueError, match="format"):
        doc.encode_snapshot("xml", None, 1, "e", 0)
    with pytest.raises(ValueError, match="format"):
        cs.encode("xml", "changes", None, 1, 0)
    with pytest.raises(ValueError, match="diff"):
        cs.encode("json", "merge", None, 1, 0)


def test_float_encoding_keeps_floats(engine: Engine) -> None:
    doc = engine.StateDoc(sections=("s",))
    values = {
        "one": 1.0,
        "neg_zero": -0.0,
        "big": 1e16,
        "tiny": 5e-324,
        "max": 1.7976931348623157e308,
        "third": 1 / 3,
        "int": 1,
        "u64": 2**64 - 1,
        "i64": -(2**63),
    }
    doc.merge("/s/x", values)
    for fmt in FORMATS:
        data = decode(fmt, doc.encode_snapshot(fmt, None, 1, "e", 0))["data"]["s"]["x"]
        assert canon(data) == canon(values), fmt


def test_strings_escaped_in_json(engine: Engine) -> None:
    doc = engine.StateDoc(sections=("s",))
    text = 'quote" backslash\\ nl\n tab\t ctl\x01\x1f del\x7f é ✓ 𝄞'
    doc.merge("/s/x", {text: text})
    message = decode("json", doc.encode_snapshot("json", None, 1, text, 0))
    assert message["data"]["s"]["x"] == {text: text}
    assert message["epoch"] == text


def test_update_reconstructs_with_changes(engine: Engine) -> None:
    doc = demo_doc(engine)
    state = decode("json", doc.encode_snapshot("json", None, 1, "e", 0))["data"]
    v = doc.version
    doc.merge("/orders/43", {"status": "partially_filled", "filled": 0.5})
    doc.remove("/orders/42")
    doc.merge("/market_data/ETHUSDT", {"last": 3000.25})
    apply_update(
        state, decode("msgpack", doc.changes_since(v).encode("msgpack", "changes", None, 2, 0))
    )
    assert canon(state) == canon(doc.get(""))


# -- diff ------------------------------------------------------------------------------------

DIFF_CASES = [
    ({"a": 1}, {"a": 1}, []),
    ({"a": 1}, {"a": 1.0}, [{"op": "replace", "path": "/a", "value": 1.0}]),
    (
        {"a": 1, "b": 2},
        {"b": 2, "c": 3},
        [{"op": "remove", "path": "/a"}, {"op": "add", "path": "/c", "value": 3}],
    ),
    (
        {"a": {"x": [1, 2]}},
        {"a": {"x": [1, 3]}},
        [{"op": "replace", "path": "/a/x", "value": [1, 3]}],
    ),
    (
        {"a/b": {"m~n": 1}},
        {"a/b": {"m~n": 2}},
        [{"op": "replace", "path": "/a~1b/m~0n", "value": 2}],
    ),
    ([1], {"a": 1}, [{"op": "replace", "path": "", "value": {"a": 1}}]),
    (1, 1, []),
    (True, 1, [{"op": "replace", "path": "", "value": 1}]),
]


@pytest.mark.parametrize(("old", "new", "expected"), DIFF_CASES)
def test_diff(engine: Engine, old: Any, new: Any, expected: list[dict[str, Any]]) -> None:
    ops = engine.diff(old, new)
    assert canon(ops) == canon(expected)
    if isinstance(old, dict) and isinstance(new, dict):
        assert canon(jsonpatch.apply_patch(old, ops)) == canon(new)


def test_diff_rejects_bad_values(engine: Engine) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        engine.diff({"a": 1}, {"a": float("nan")})


# -- selection -------------------------------------------------------------------------------


def test_load_engine_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    pure = load_engine("pure")
    assert pure.name == "pure"
    assert pure.StateDoc.__module__ == "dashboard_server._purediff"
    # the environment is the configuration's to read (tests/server/test_config.py), not the
    # loader's: DASHBOARD_ENGINE has no effect here, so it is read in one place only
    monkeypatch.setenv("DASHBOARD_ENGINE", "turbo")
    assert load_engine().name in ("native", "pure")
    with pytest.raises(ValueError, match="engine 'turbo'"):
        load_engine("turbo")


def test_explicit_native_without_build_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "dashboard_server._fastdiff", None)  # makes import fail
    with pytest.raises(EngineUnavailable, match="native"):
        load_engine("native")
    monkeypatch.delenv("DASHBOARD_ENGINE", raising=False)
    with pytest.warns(RuntimeWarning, match="pure-Python"):
        assert load_engine().name == "pure"
