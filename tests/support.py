"""Test helpers written independently of the engines: strict equality, decoding, applying."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import orjson


def canon(value: Any) -> Any:
    """A form of a JSON value in which ``==`` is strict: ``1 != 1.0 != True``, -0.0 != 0.0,
    and object member order counts."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", value, math.copysign(1.0, value))
    if isinstance(value, str):
        return ("str", value)
    if value is None:
        return ("null",)
    if isinstance(value, list):
        return ("list", tuple(canon(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, canon(v)) for k, v in value.items()))
    raise TypeError(f"not a JSON value: {value!r}")


def canon_unordered(value: Any) -> Any:
    """Like :func:`canon`, but object member order does not count."""
    if isinstance(value, dict):
        return ("dict", frozenset((k, canon_unordered(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", tuple(canon_unordered(v) for v in value))
    return canon(value)


def decode(fmt: str, data: bytes) -> Any:
    if fmt == "json":
        return orjson.loads(data)
    return msgpack.unpackb(data, raw=False)


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def split_pointer(pointer: str) -> list[str]:
    return [unescape(t) for t in pointer.split("/")[1:]] if pointer else []


def set_at(state: dict[str, Any], pointer: str, value: Any) -> None:
    tokens = split_pointer(pointer)
    node = state
    for token in tokens[:-1]:
        node = node[token]  # strict: the parent of a change exists on the client
    node[tokens[-1]] = value


def remove_at(state: dict[str, Any], pointer: str) -> None:
    tokens = split_pointer(pointer)
    node = state
    for token in tokens[:-1]:
        node = node[token]
    del node[tokens[-1]]


def apply_update(state: dict[str, Any], message: dict[str, Any]) -> None:
    """Apply a decoded ``update`` message in the ``changes`` form (removals, then changes)."""
    assert message["type"] == "update"
    for pointer in message.get("removed", []):
        remove_at(state, pointer)
    for pointer, value in message["changes"].items():
        set_at(state, pointer, value)
