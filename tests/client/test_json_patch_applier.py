"""The client's RFC 6902 applier agrees with the `jsonpatch` library on random documents."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard_server.client.connection import PatchError, apply_json_patch

KEYS = st.sampled_from(["a", "b", "c", "0", "1", "-", "a/b", "t~x", ""])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False)
    | st.text(max_size=3)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12,
)
DOCS = st.dictionaries(KEYS, VALUES, max_size=4)


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def pointers(value: Any, prefix: str = "") -> list[str]:
    """Every pointer into ``value``, plus pointers one step past each container."""
    out = [prefix]
    if isinstance(value, dict):
        out += [f"{prefix}/{escape(k)}" for k in ("new", "-")]
        for k, v in value.items():
            out += pointers(v, f"{prefix}/{escape(k)}")
    elif isinstance(value, list):
        out += [f"{prefix}/{i}" for i in ("-", str(len(value)), "01", "x")]
        for i, v in enumerate(value):
            out += pointers(v, f"{prefix}/{i}")
    return out


@st.composite
def doc_and_patch(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    doc = draw(DOCS)
    ops = []
    shadow: Any = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 4))):
        candidates = [*pointers(shadow), "/missing/deep", "/a/b/c/d"]
        path = draw(st.sampled_from(candidates))
        kind = draw(st.sampled_from(["add", "replace", "remove"]))
        op: dict[str, Any] = {"op": kind, "path": path}
        if kind != "remove":
            op["value"] = draw(VALUES)
        ops.append(op)
        try:  # follow the document so later ops can reach what earlier ones created
            shadow = jsonpatch.apply_patch(shadow, [op])
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
            break
    return doc, ops


def reference(doc: Any, ops: list[dict[str, Any]]) -> tuple[bool, Any]:
    try:
        return True, jsonpatch.apply_patch(doc, ops)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
        return False, None


def ours(doc: Any, ops: list[dict[str, Any]]) -> tuple[bool, Any]:
    try:
        # Our applier inserts the operations' values by reference: give it its own copies.
        return True, apply_json_patch(copy.deepcopy(doc), copy.deepcopy(ops))
    except PatchError:
        return False, None


@given(doc_and_patch())
def test_applier_matches_jsonpatch(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    doc, ops = case
    assert ours(doc, ops) == reference(doc, ops)


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "remove", "path": ""}],
        [{"op": "move", "from": "/a", "path": "/b"}],
        [{"op": "add", "path": "/a"}],
        [{"op": "add", "path": "/l/5", "value": 1}],
        [{"op": "replace", "path": "/l/-", "value": 1}],
        [{"op": "add", "path": "/a/x", "value": 1}],
    ],
)
def test_invalid_operations_raise(ops: list[dict[str, Any]]) -> None:
    with pytest.raises(PatchError):
        apply_json_patch({"a": 1, "l": [1, 2]}, ops)


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
