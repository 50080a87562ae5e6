"""The value rules of the state document, applied to what is not state: events.

The engine rejects, for every state op (docs/engine.md, "Values"): integers outside
``[-2**63, 2**64 - 1]``, NaN and infinities, non-string object keys, anything that is not JSON
data (``bytes``, MessagePack ``bin``/``ext``, other types) and containers nested more than
``MAX_DEPTH`` levels, with a :class:`ValueError` naming the place as a JSON Pointer. Events are
copied and encoded in Python instead; :func:`check_value` holds them to the same rules (so an
integer beyond 64 bits never becomes a float, NaN never becomes ``null``), and
:func:`decode_payload` decodes a JSON or MessagePack payload without losing what those rules
look at.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final, Literal

import msgpack
import orjson

from dashboard_server.core.pointer import escape_token

__all__ = ["INT_MAX", "INT_MIN", "MAX_DEPTH", "check_value", "decode_payload"]

MAX_DEPTH: Final = 128
"""Containers may nest at most this many levels (the engine's ``MAX_DEPTH``)."""
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1
_BIG: Final = float(2**63)


def check_value(value: Any, path: str = "") -> bool:
    """Raise :class:`ValueError` (``"<pointer>: <problem>"``, the root named ``(root)``) if
    ``value`` breaks a rule of the state document; returns whether it holds a float of
    magnitude 2**63 or more (which a JSON decoder may have made of an integer literal)."""
    big_float = False
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if item is None or isinstance(item, bool | str):
            continue
        if isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                raise ValueError(
                    f"{where or '(root)'}: out of range: int outside [-2**63, 2**64 - 1]"
                )
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{where or '(root)'}: non-finite float: {item}")
            big_float = big_float or abs(item) >= _BIG
            continue
        if isinstance(item, dict | list | tuple):
            if depth >= MAX_DEPTH:
                raise ValueError(
                    f"{where or '(root)'}: depth: containers nest more than {MAX_DEPTH} levels"
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise ValueError(
                            f"{where or '(root)'}: non-string key: {type(key).__name__} key {key!r}"
                        )
                    stack.append((child, f"{where}/{escape_token(key)}", depth + 1))
            else:
                stack.extend((child, f"{where}/{i}", depth + 1) for i, child in enumerate(item))
            continue
        raise ValueError(f"{where or '(root)'}: unsupported type: {type(item).__name__}")
    return big_float


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-finite float: {name}")


def decode_payload(payload: bytes, fmt: Literal["json", "msgpack"]) -> Any:
    """Decode a JSON or MessagePack payload and :func:`check_value` it.

    JSON is decoded by ``orjson``, which turns an integer literal beyond 64 bits into a float:
    when the result holds a float that large, the payload is decoded again with integer
    literals checked, so such an integer is rejected rather than silently rounded.
    Raises :class:`ValueError` for anything undecodable or breaking a rule.
    """
    if fmt == "msgpack":
        try:
            value = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ValueError(f"invalid MessagePack: {exc or type(exc).__name__}") from None
        check_value(value)
        return value
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if check_value(value):
        try:  # the standard library keeps every integer exact: check_value then names it
            check_value(json.loads(payload, parse_constant=_no_constant))
        except RecursionError:
            raise ValueError(
                f"(root): depth: containers nest more than {MAX_DEPTH} levels"
            ) from None
    return value
