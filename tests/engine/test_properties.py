"""Property tests: random documents and op sequences, both engines, every message form."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard_server.core.engine import Engine
from support import apply_update, canon, canon_unordered, decode

SECTIONS = ("s1", "s2", "s3")
CHANNEL_SETS: list[list[str] | None] = [None, ["s1"], ["s2", "s3"], []]
FORMATS = ("msgpack", "json")
FORMS = ("changes", "json-patch")

keys = st.sampled_from(["a", "b", "c", "d", "x/y", "m~n", "", "é"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.sampled_from([0, 1, -1, 0.0, -0.0, 1.0, 2**63, 2**64 - 1, -(2**63)])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet='ab"\\\n~/é✓𝄞\x00', max_size=4)
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=4),
    max_leaves=10,
)
objects = st.dictionaries(keys, values, max_size=4)


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


paths = st.builds(
    lambda section, rest: "/" + "/".join(escape(t) for t in [section, *rest]),
    st.sampled_from(SECTIONS),
    st.lists(keys, max_size=2),
)
ops = st.one_of(
    st.tuples(st.just("merge"), paths, values | objects),
    st.tuples(st.just("replace"), paths, values | objects),
    st.tuples(st.just("remove"), paths, st.none()),
    st.tuples(st.just("merge_json"), paths, values | objects),
    st.tuples(st.just("merge_msgpack"), paths, values | objects),
    st.tuples(st.just("replace_msgpack"), paths, objects),
    st.tuples(st.just("merge_many"), paths, values | objects),
    st.tuples(st.just("replace_many"), paths, values | objects),
    st.tuples(st.just("bad"), paths, st.sampled_from([float("nan"), {"k": {1: 2}}, 2**64])),
)
histories = st.tuples(st.lists(ops, min_size=1, max_size=25), st.sampled_from([3, 10, 100_000]))


def apply_op(doc: Any, op: tuple[str, str, Any]) -> Any:
    """Run one op; return its result, or the exception type it raised."""
    kind, path, value = op
    try:
        if kind == "merge":
            return doc.merge(path, value)
        if kind == "replace":
            return doc.replace(path, value)
        if kind == "remove":
            return doc.remove(path)
        if kind == "merge_json":
            return doc.merge_bytes(path, orjson.dumps(value))
        if kind == "merge_msgpack":
            return doc.merge_bytes(path, msgpack.packb(value), "msgpack")
        if kind == "replace_msgpack":
            return doc.replace_bytes(path, msgpack.packb(value), "msgpack")
        if kind == "merge_many":
            # A good item, a bad one (skipped), then the same again: a rejected item is a
            # ValueError (engines word their messages differently).
            items = [(path, orjson.dumps(value)), (path, b"[1,"), (path, b'{"n": 1}')]
            return [r if type(r) is bool else ValueError for r in doc.merge_many(items)]
        if kind == "replace_many":
            items = [(path, orjson.dumps(value)), (path, b"[1,"), (path, b'{"n": 1}')]
            return [r if type(r) is bool else ValueError for r in doc.replace_many(items)]
        return doc.merge(path, {"ok": 1, "bad": value})
    except ValueError:
        return ValueError


def run_history(
    engine: Engine, history: list[tuple[str, str, Any]], horizon: int
) -> tuple[Any, list[tuple[int, Any]]]:
    doc = engine.StateDoc(sections=SECTIONS, max_tombstones=horizon)
    states = [(0, doc.get(""))]
    for op in history:
        before = doc.get("")
        version = doc.version
        if apply_op(doc, op) is ValueError:
            assert canon(doc.get("")) == canon(before), f"{op} was rejected but changed the doc"
            assert doc.version == version
        states.append((doc.version, doc.get("")))
    return doc, states


def restricted(state: dict[str, Any], channels: list[str] | None) -> dict[str, Any]:
    return {k: v for k, v in state.items() if channels is None or k in channels}


@given(histories)
def test_changes_since_reaches_current_state(engine: Engine, case: Any) -> None:
    history, horizon = case
    doc, states = run_history(engine, history, horizon)
    current = doc.get("")
    for version, old in states:
        cs = doc.changes_since(version)
        if version < doc.floor:
            assert cs is None
            continue
        assert cs is not None
        for fmt in FORMATS:
            for channels in CHANNEL_SETS:
                raw = cs.encode(fmt, "changes", channels, 1, 0)
                state = restricted(copy.deepcopy(old), channels)
                if raw is not None:
                    apply_update(state, decode(fmt, raw))
                assert canon_unordered(state) == canon_unordered(restricted(current, channels))
                raw = cs.encode(fmt, "json-patch", channels, 1, 0)
                state = restricted(copy.deepcopy(old), channels)
                if raw is not None:
                    state = jsonpatch.apply_patch(state, decode(fmt, raw)["patch"])
                assert canon_unordered(state) == canon_unordered(restricted(current, channels))


@given(
    histories,
    st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=8),
    st.sampled_from(CHANNEL_SETS),
    st.sampled_from(FORMATS),
    st.sampled_from(FORMS),
)
def test_client_reconstructs_from_snapshot_and_updates(
    engine: Engine,
    case: Any,
    flush_every: list[int],
    channels: list[str] | None,
    fmt: str,
    form: str,
) -> None:
    """A client starting from a snapshot and applying every flushed update holds the document."""
    history, _ = case
    doc = engine.StateDoc(sections=SECTIONS)
    client = decode(fmt, doc.encode_snapshot(fmt, channels, 0, "e", 0))["data"]
    cursor, seq, position = 0, 0, 0
    for step in flush_every * 4:
        for op in history[position : position + step]:
            apply_op(doc, op)
        position += step
        cs = doc.changes_since(cursor)
        raw = cs.encode(fmt, form, channels, seq + 1, 0)
        cursor = cs.to_version
        if raw is None:
            continue
        message = decode(fmt, raw)
        seq += 1
        assert message["seq"] == seq and message["version"] == doc.version
        if form == "changes":
            apply_update(client, message)
        else:
            client = jsonpatch.apply_patch(client, message["patch"])
    assert canon_unordered(client) == canon_unordered(restricted(doc.get(""), channels))


@given(histories)
def test_native_and_pure_agree(both_engines: tuple[Engine, Engine], case: Any) -> None:
    history, horizon = case
    native_engine, pure_engine = both_engines
    native = native_engine.StateDoc(sections=SECTIONS, max_tombstones=horizon)
    pure = pure_engine.StateDoc(sections=SECTIONS, max_tombstones=horizon)
    versions = [0]
    for op in history:
        assert apply_op(native, op) == apply_op(pure, op), op
        assert native.version == pure.version
        assert canon(native.get("")) == canon(pure.get(""))
        versions.append(native.version)
    n_stats, p_stats = native.stats(), pure.stats()
    for key in ("version", "floor", "tombstones"):
        assert n_stats[key] == p_stats[key], key
    for channels in CHANNEL_SETS:
        for fmt in FORMATS:
            assert canon(
                decode(fmt, native.encode_snapshot(fmt, channels, 3, "ep", 1234))
            ) == canon(decode(fmt, pure.encode_snapshot(fmt, channels, 3, "ep", 1234)))
    for version in versions:
        n_cs, p_cs = native.changes_since(version), pure.changes_since(version)
        assert (n_cs is None) == (p_cs is None)
        if n_cs is None:
            continue
        assert len(n_cs) == len(p_cs)
        assert canon(n_cs.changes()) == canon(p_cs.changes())
        assert n_cs.removed() == p_cs.removed()
        for channels in CHANNEL_SETS:
            for fmt in FORMATS:
                for form in FORMS:
                    n_raw = n_cs.encode(fmt, form, channels, 9, 99)
                    p_raw = p_cs.encode(fmt, form, channels, 9, 99)
                    assert (n_raw is None) == (p_raw is None)
                    if n_raw is not None:
                        assert canon(decode(fmt, n_raw)) == canon(decode(fmt, p_raw))


@given(values, values)
def test_diff_agrees_and_applies(both_engines: tuple[Engine, Engine], old: Any, new: Any) -> None:
    native_engine, pure_engine = both_engines
    ops = native_engine.diff(old, new)
    assert canon(ops) == canon(pure_engine.diff(old, new))
    patched = jsonpatch.apply_patch(
        {"root": old}, [{**op, "path": "/root" + op["path"]} for op in ops]
    )
    assert canon_unordered(patched["root"]) == canon_unordered(new)


@pytest.mark.parametrize("fmt", FORMATS)
@given(payload=st.binary(max_size=64))
def test_random_payloads_never_crash(engine: Engine, fmt: str, payload: bytes) -> None:
    doc = engine.StateDoc(sections=SECTIONS)
    doc.merge("/s1/a", {"keep": 1})
    try:
        doc.merge_bytes("/s1/a", payload, fmt)
    except ValueError as exc:
        assert str(exc).startswith("/s1/a")
        assert doc.get("/s1/a") == {"keep": 1}
