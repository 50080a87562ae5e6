"""The client's ``diff=json-patch`` path: it applies what the server produces and refuses the rest.

The client applies patches with the ``jsonpatch`` library. These tests check what the client adds
around it: the server's own patches (both engines, stateful ``update`` messages and the stateless
``diff``) bring a client's copy to the server's state; applying one operation at a time (to name
the one that fails) changes nothing to the result; a bad operation raises :class:`PatchError`
naming it, and makes :class:`ClientState` ask for a refresh.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard_server.client.connection import (
    ClientState,
    Outcome,
    PatchError,
    apply_json_patch,
    decode_message,
)
from dashboard_server.core.engine import Engine

KEYS = st.sampled_from(["a", "b", "c", "0", "1", "-", "a/b", "t~x", ""])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12,
)
DOCS = st.dictionaries(KEYS, VALUES, max_size=4)
SECTIONS = ("orders", "positions")
# (kind, section, key, value): merge/replace/remove at /<section>/<key>
OPS = st.lists(
    st.tuples(
        st.sampled_from(["merge", "replace", "remove"]),
        st.sampled_from(SECTIONS),
        KEYS,
        VALUES,
    ),
    min_size=1,
    max_size=6,
)


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@given(old=DOCS, new=DOCS)
def test_the_servers_diff_brings_the_client_to_the_new_document(
    engine: Engine, old: dict[str, Any], new: dict[str, Any]
) -> None:
    patch = engine.diff(old, new)
    assert apply_json_patch(copy.deepcopy(old), copy.deepcopy(patch)) == new


def frame(fmt: str, data: bytes) -> bytes | str:
    """What the client receives: a binary frame for MessagePack, a text frame for JSON."""
    return data if fmt == "msgpack" else data.decode()


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
@given(batches=st.lists(OPS, min_size=1, max_size=4))
def test_a_client_follows_the_servers_json_patch_updates(
    engine: Engine, fmt: str, batches: list[list[tuple[str, str, str, Any]]]
) -> None:
    doc = engine.StateDoc(SECTIONS)
    client = ClientState()
    seq = 1
    snapshot = doc.encode_snapshot(fmt, None, seq, "e1", 0)
    assert client.apply(decode_message(frame(fmt, snapshot))) is Outcome.APPLIED
    for batch in batches:
        before = doc.version
        for kind, section, key, value in batch:
            path = f"/{section}/{escape(key)}"
            if kind == "remove":
                doc.remove(path)
            else:
                getattr(doc, kind)(path, value)
        changes = doc.changes_since(before)
        assert changes is not None
        encoded = changes.encode(fmt, "json-patch", None, seq + 1, 0)
        if encoded is None:
            assert client.data == doc.get("")
            continue
        seq += 1
        message = decode_message(frame(fmt, encoded))
        assert "patch" in message
        assert client.apply(message) is Outcome.APPLIED, client.last_problem
        assert client.data == doc.get("")
    assert client.gaps == 0


def reference(doc: Any, ops: list[dict[str, Any]]) -> tuple[bool, Any]:
    try:
        return True, jsonpatch.apply_patch(doc, ops)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException):
        return False, None


def ours(doc: Any, ops: list[dict[str, Any]]) -> tuple[bool, Any]:
    try:
        # The values are inserted by reference: give the applier its own copies.
        return True, apply_json_patch(copy.deepcopy(doc), copy.deepcopy(ops))
    except PatchError:
        return False, None


@given(
    doc=DOCS,
    ops=st.lists(
        st.fixed_dictionaries(
            {
                "op": st.sampled_from(["add", "replace", "remove"]),
                "path": st.sampled_from(["", "/a", "/b", "/a/0", "/a/-", "/a/b", "/c/x", "/-"]),
                "value": VALUES,
            }
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_one_operation_at_a_time_is_the_same_as_the_whole_patch(
    doc: dict[str, Any], ops: list[dict[str, Any]]
) -> None:
    assert ours(doc, ops) == reference(doc, ops)


@pytest.mark.parametrize(
    ("ops", "named"),
    [
        ([{"op": "remove", "path": ""}], "operation 0 ('remove' at '')"),
        ([{"op": "move", "from": "/zz", "path": "/b"}], "operation 0 ('move' at '/b')"),
        ([{"op": "add", "path": "/a"}], "operation 0 ('add' at '/a')"),
        ([{"op": "add", "path": "/l/5", "value": 1}], "operation 0 ('add' at '/l/5')"),
        ([{"op": "replace", "path": "/l/-", "value": 1}], "operation 0 ('replace' at '/l/-')"),
        ([{"op": "add", "path": "/a/x", "value": 1}], "operation 0 ('add' at '/a/x')"),
        ([{"op": "add", "path": "/l/01", "value": 1}], "operation 0 ('add' at '/l/01')"),
        ([{"op": "add", "path": "a", "value": 1}], "operation 0 ('add' at 'a')"),
        ([{"op": "bogus", "path": "/a"}], "operation 0 ('bogus' at '/a')"),
        ([{"op": "add", "path": "/b", "value": 1}, "x"], "operation 1 (str"),
        (
            [{"op": "add", "path": "/b", "value": 1}, {"op": "remove", "path": "/o/y/z"}],
            "operation 1 ('remove' at '/o/y/z')",
        ),
    ],
)  # fmt: skip
def test_a_bad_operation_raises_patch_error_naming_it(ops: list[Any], named: str) -> None:
    with pytest.raises(PatchError) as info:
        apply_json_patch({"a": 1, "l": [1, 2], "o": {"x": 1}}, ops)
    assert str(info.value).startswith(named)


def test_a_pointer_error_does_not_quote_a_large_document() -> None:
    doc = {"o": {str(i): "v" * 50 for i in range(100)}}
    with pytest.raises(PatchError) as info:
        apply_json_patch(doc, [{"op": "remove", "path": "/o/missing/deeper"}])
    assert len(str(info.value)) < 300


def test_a_patch_that_is_not_a_list_is_refused() -> None:
    with pytest.raises(PatchError):
        apply_json_patch({}, {"op": "add", "path": "/a", "value": 1})  # type: ignore[arg-type]


def test_a_bad_patch_in_an_update_makes_the_client_ask_for_a_refresh() -> None:
    client = ClientState()
    client.apply({"type": "snapshot", "seq": 1, "version": 1, "data": {"orders": {}}})
    update = {
        "type": "update",
        "seq": 2,
        "version": 2,
        "patch": [{"op": "replace", "path": "/orders/7", "value": 1}],
    }
    assert client.apply(update) is Outcome.GAP
    assert "operation 0 ('replace' at '/orders/7')" in (client.last_problem or "")


def test_array_operations() -> None:
    doc = {"l": [1, 2, 3]}
    out = apply_json_patch(
        doc,
        [
            {"op": "add", "path": "/l/1", "value": 9},
            {"op": "add", "path": "/l/-", "value": 4},
            {"op": "remove", "path": "/l/0"},
            {"op": "replace", "path": "/l/0", "value": 8},
        ],
    )
    assert out == {"l": [8, 2, 3, 4]}
    assert doc is out  # in place


def test_a_root_replacement_returns_the_new_root() -> None:
    assert apply_json_patch({"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}]) == {
        "b": 2
    }
