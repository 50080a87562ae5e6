"""Hostile payloads against the decoders: ``merge_bytes``/``replace_bytes`` of both engines (JSON
and MessagePack) and the server's client message parser.

The contract: any input either decodes or raises the documented exception (``ValueError`` for
the engines, ``MessageError`` for the parser) and leaves the document unchanged; nothing
crashes, hangs, or surfaces a Rust panic; deep nesting is refused with a clear ``depth`` error
rather than a stack overflow; a huge declared length is refused without allocating it. The two
engines agree on what they accept and on the resulting document.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sectools import ENGINE

from dashboard_server.core.engine import load_engine
from dashboard_server.core.protocol import (
    ClientMessage,
    MessageError,
    Ping,
    Refresh,
    Subscribe,
    Unsubscribe,
    parse_client_message,
)

SECTIONS = ("market_data", "orders")
ENGINES = ("native", "pure") if ENGINE == "native" else ("pure",)
FORMATS = ("json", "msgpack")
OPS = ("merge_bytes", "replace_bytes")
DEEP = 100_000


def _doc(engine: str) -> Any:
    doc = load_engine(engine).StateDoc(sections=SECTIONS, max_tombstones=1000)
    doc.merge("/orders/1", {"qty": 1.0, "tags": ["a"], "fill": {"px": 10}})
    return doc


def _apply(engine: str, op: str, payload: bytes, fmt: str) -> tuple[str, Any]:
    """Apply one op to a fresh document: ``("ok", document)`` or ``("error", unchanged?)``."""
    doc = _doc(engine)
    before = doc.get("")
    try:
        getattr(doc, op)("/orders/1", payload, fmt)
    except ValueError as exc:
        assert str(exc).startswith("/"), str(exc)  # names the offending place
        assert doc.get("") == before and doc.version == 1  # atomic: nothing changed
        return "error", None
    return "ok", doc.get("")


def _check_all(payload: bytes, fmt: str) -> None:
    for op in OPS:
        outcomes = {engine: _apply(engine, op, payload, fmt) for engine in ENGINES}
        first = outcomes[ENGINES[0]]
        for engine, outcome in outcomes.items():
            assert outcome == first, (op, fmt, payload[:200], engine, outcome, first)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def mutated(draw: st.DrawFn, fmt: str) -> bytes:
    """A valid payload, then a few byte-level mutations (flip, insert, delete, truncate)."""
    value = draw(json_values)
    data = bytearray(
        orjson.dumps(value) if fmt == "json" else msgpack.packb(value, use_bin_type=True)
    )
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(("flip", "insert", "delete", "truncate", "set")))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and data:
            del data[at]
        elif kind == "truncate":
            del data[at:]
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from((0x00, 0x7F, 0x80, 0xC1, 0xDC, 0xDD, 0xDF, 0xFF)))
    return bytes(data)


@pytest.mark.parametrize("fmt", FORMATS)
@given(payload=st.binary(max_size=64))
def test_random_bytes(fmt: str, payload: bytes) -> None:
    _check_all(payload, fmt)


@given(payload=mutated("json"))
def test_mutated_json(payload: bytes) -> None:
    _check_all(payload, "json")


@given(payload=mutated("msgpack"))
def test_mutated_msgpack(payload: bytes) -> None:
    _check_all(payload, "msgpack")


@given(value=json_values)
def test_valid_payloads_decode_alike(value: Any) -> None:
    for fmt, payload in (
        ("json", orjson.dumps(value)),
        ("msgpack", msgpack.packb(value, use_bin_type=True)),
    ):
        _check_all(payload, fmt)


DEEP_PAYLOADS = {
    "json array": (b"[" * DEEP + b"]" * DEEP, "json"),
    "json object": (b'{"a":' * DEEP + b"1" + b"}" * DEEP, "json"),
    "json unterminated": (b"[" * DEEP, "json"),
    "msgpack array": (b"\x91" * DEEP + b"\xc0", "msgpack"),
    "msgpack map": (b"\x81\xa1a" * DEEP + b"\xc0", "msgpack"),
    "msgpack unterminated": (b"\xdc\x00\x01" * DEEP, "msgpack"),
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", sorted(DEEP_PAYLOADS))
@pytest.mark.parametrize("op", OPS)
def test_deep_nesting_is_a_clear_error(engine: str, case: str, op: str) -> None:
    payload, fmt = DEEP_PAYLOADS[case]
    doc = _doc(engine)
    with pytest.raises(ValueError, match=r"depth.*128"):
        getattr(doc, op)("/orders/1", payload, fmt)


HUGE_LENGTHS = [
    b"\xdd\xff\xff\xff\xff",  # array32 of 4 G elements, none present
    b"\xdf\xff\xff\xff\xff",  # map32
    b"\xdb\xff\xff\xff\xffabc",  # str32
    b"\xc6\xff\xff\xff\xff",  # bin32
    b"\xc9\xff\xff\xff\xff\x01",  # ext32
    b"\xdc\xff\xff" + b"\xc0" * 10,  # array16 of 65535, 10 present
    b"\x81\xdb\xff\xff\xff\xff",  # map whose key is a str32 of 4 G
    struct.pack(">BI", 0xDD, 1 << 31) + b"\x91" * 64,
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("payload", HUGE_LENGTHS, ids=lambda p: p[:6].hex())
def test_huge_declared_lengths_are_refused(engine: str, payload: bytes) -> None:
    for op in OPS:
        with pytest.raises(ValueError, match="MessagePack"):
            getattr(_doc(engine), op)("/orders/1", payload, "msgpack")


# --- the client message parser -----------------------------------------------------------------


def _parse(data: str | bytes) -> ClientMessage | MessageError:
    try:
        return parse_client_message(data, SECTIONS)
    except MessageError as exc:
        assert exc.code in (
            "bad_message",
            "unknown_type",
            "unknown_channel",
            "message_too_large",
            "message_too_complex",
        )
        return exc


@given(data=st.binary(max_size=256) | st.text(max_size=256))
def test_client_parser_random_input(data: str | bytes) -> None:
    _parse(data)


client_like = st.fixed_dictionaries(
    {"type": st.sampled_from(("subscribe", "unsubscribe", "refresh", "ping", "pong", ""))},
    optional={
        "channels": st.lists(st.sampled_from((*SECTIONS, "events", "nope", "")), max_size=3)
        | json_values,
        "payload": json_values,
        "extra": json_values,
    },
)


@given(message=client_like, as_text=st.booleans(), cut=st.integers(0, 64))
def test_client_parser_structured_and_truncated(
    message: dict[str, Any], as_text: bool, cut: int
) -> None:
    data: str | bytes = (
        orjson.dumps(message).decode() if as_text else msgpack.packb(message, use_bin_type=True)
    )
    result = _parse(data)
    if not isinstance(result, MessageError):
        assert isinstance(result, Subscribe | Unsubscribe | Refresh | Ping)
        assert result.__class__.__name__.lower() == message["type"]
    _parse(data[: len(data) - cut] if cut < len(data) else data[:1])


@pytest.mark.parametrize(
    "data",
    [
        "[" * DEEP,
        '{"type":"ping","payload":' + "[" * DEEP,
        b"\x91" * DEEP,
        b"\x82\xa4type\xa4ping\xa7payload" + b"\x91" * DEEP + b"\xc0",
        b"\xdd\xff\xff\xff\xff",
        b"\xdf\xff\xff\xff\xff",
        b"\xdb\xff\xff\xff\xff",
        b"\x81\xa4type\xc7\x01\x05x",  # ext type as the message type
        b"\x81\x01\xa4ping",  # int key
        "\ud800",  # lone surrogate
    ],
    ids=lambda d: repr(d[:12]),
)
def test_client_parser_bombs(data: str | bytes) -> None:
    result = _parse(data)
    assert isinstance(result, MessageError)
    assert result.code in ("bad_message", "message_too_large", "message_too_complex")
