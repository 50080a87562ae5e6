"""The subscriber scanners, both engines: ``PubSubScanner`` against hiredis as the reference
parser, and ``NatsScanner`` against the messages the stream was built from.

A random stream of RESP2/RESP3 replies — messages on conflated and other patterns, plain
``message``s, oversized payloads, subscription confirmations, PONGs, errors, maps, sets,
attributes, nulls — is fed in random pieces. Whatever the split:

- the messages counted are every message of the stream;
- per conflated pattern the batch holds the latest payload of each channel, in first-seen order,
  and the number of messages, exactly what a dict built from hiredis's parse holds;
- the other messages come in order, oversized ones are reported with their size and skipped;
- every other reply comes out whole: hiredis parses each piece to what it parsed in the stream;
- both engines give the same results (and the same errors for broken streams).
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.conftest import engine_or_skip

from dashboard_server.core.engine import Engine

MAX_PAYLOAD = 64
SLACK = 4 * 1024 * 1024 + 64 * 1024
"""What a frame may take beyond max_payload while incomplete (a channel name of up to 4 MiB)."""
CONFLATE = [b"md:*", b"book:*"]


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def pmessage(pattern: bytes, channel: bytes, payload: bytes, push: bool) -> bytes:
    head = b">4\r\n" if push else b"*4\r\n"
    return head + bulk(b"pmessage") + bulk(pattern) + bulk(channel) + bulk(payload)


def message(channel: bytes, payload: bytes, push: bool, kind: bytes = b"message") -> bytes:
    return (b">3\r\n" if push else b"*3\r\n") + bulk(kind) + bulk(channel) + bulk(payload)


OTHER_REPLIES = [
    b"*3\r\n" + bulk(b"psubscribe") + bulk(b"md:*") + b":1\r\n",
    b">3\r\n" + bulk(b"psubscribe") + bulk(b"book:*") + b":2\r\n",
    b"+PONG\r\n",
    b"*2\r\n" + bulk(b"pong") + bulk(b""),
    b"-ERR unknown command 'FOO'\r\n",
    b":42\r\n",
    b"$-1\r\n",
    b"*-1\r\n",
    b"_\r\n",
    b",3.25\r\n",
    b"#t\r\n",
    b"(12345678901234567890\r\n",
    b"%2\r\n+server\r\n+redis\r\n+proto\r\n:3\r\n",
    b"~2\r\n:1\r\n:2\r\n",
    b"*4\r\n" + bulk(b"pmessage") + b":1\r\n" + bulk(b"x") + bulk(b"y"),  # not a message
    b"*2\r\n" + bulk(b"message") + bulk(b"ch"),  # not a message: 2 elements
    b"=8\r\ntxt:abcd\r\n",
]

channels = st.sampled_from([b"md:A", b"md:B", b"md:C", b"book:A", b"book:B", b"ev:x", b""])
payloads = st.one_of(
    st.binary(max_size=MAX_PAYLOAD),
    st.binary(min_size=MAX_PAYLOAD + 1, max_size=3 * MAX_PAYLOAD),  # oversized
    st.sampled_from([b"\r\n", b"*4\r\n", b"$3\r\n"]),
)
items = st.one_of(
    st.tuples(
        st.just("p"),
        st.sampled_from([*CONFLATE, b"ev:*", b""]),
        channels,
        payloads,
        st.booleans(),
    ),
    st.tuples(
        st.just("m"), channels, payloads, st.booleans(), st.sampled_from([b"message", b"smessage"])
    ),
    st.tuples(st.just("r"), st.sampled_from(OTHER_REPLIES)),
)


def encode(item: tuple[Any, ...]) -> bytes:
    if item[0] == "p":
        return pmessage(item[1], item[2], item[3], item[4])
    if item[0] == "m":
        return message(item[1], item[2], item[3], item[4])
    reply: bytes = item[1]
    return reply


def expected(stream: list[tuple[Any, ...]]) -> dict[str, Any]:
    """What a scanner must give for ``stream``, from hiredis's parse of each reply."""
    conflated: dict[bytes, dict[bytes, bytes]] = {}
    counts: dict[bytes, int] = {}
    ordered: list[tuple[bytes, bytes, bytes]] = []
    oversized: list[tuple[bytes, bytes, int]] = []
    replies: list[Any] = []
    for item in stream:
        if item[0] in ("p", "m"):
            pattern, channel, payload = (
                (item[1], item[2], item[3])
                if item[0] == "p"
                else (
                    b"",
                    item[1],
                    item[2],
                )
            )
            if len(payload) > MAX_PAYLOAD:
                oversized.append((pattern, channel, len(payload)))
            elif item[0] == "p" and pattern in CONFLATE:
                conflated.setdefault(pattern, {})[channel] = payload
                counts[pattern] = counts.get(pattern, 0) + 1
            else:
                ordered.append((pattern, channel, payload))
            continue
        reader = hiredis.Reader()
        reader.feed(item[1])
        replies.append(parsed(reader.gets()))
    messages = sum(1 for item in stream if item[0] != "r")
    return {
        "messages": messages,
        "replies": replies,
        "batch": (conflated, counts, ordered, oversized),
    }


def parsed(value: Any) -> Any:
    if isinstance(value, hiredis.ReplyError):
        return ("error", str(value))
    return value


def scan(engine: Engine, data: bytes, cuts: list[int]) -> dict[str, Any]:
    scanner = engine.PubSubScanner(CONFLATE, MAX_PAYLOAD)
    messages = 0
    replies: list[Any] = []
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for start, end in itertools.pairwise(bounds):
        piece = data[start:end]
        count, raw = scanner.feed(memoryview(bytearray(piece)) if start % 2 else piece)
        messages += count
        for reply in raw:
            reader = hiredis.Reader()
            reader.feed(reply)
            replies.append(parsed(reader.gets()))
            assert reader.gets() is False, "one reply per piece"
    return {"messages": messages, "replies": replies, "batch": scanner.take()}


@given(stream=st.lists(items, max_size=40), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_both_engines_scan_a_stream_as_hiredis_parses_it(
    stream: list[tuple[Any, ...]], cuts: list[int]
) -> None:
    data = b"".join(encode(item) for item in stream)
    want = expected(stream)
    for name in ("native", "pure"):
        engine = engine_or_skip(name)
        assert scan(engine, data, cuts) == want, name


def test_pending_counts_and_take_resets(engine: Engine) -> None:
    scanner = engine.PubSubScanner(CONFLATE, MAX_PAYLOAD)
    data = (
        pmessage(b"md:*", b"md:A", b"1", False)
        + pmessage(b"md:*", b"md:A", b"2", True)
        + pmessage(b"md:*", b"md:B", b"3", False)
        + pmessage(b"ev:*", b"ev:1", b"4", False)
        + pmessage(b"md:*", b"md:C", b"x" * 100, False)
    )
    assert scanner.feed(data) == (5, [])
    assert (scanner.pending_keys, scanner.pending_ordered) == (2, 2)
    conflated, counts, ordered, oversized = scanner.take()
    assert conflated == {b"md:*": {b"md:A": b"2", b"md:B": b"3"}}
    assert list(conflated[b"md:*"]) == [b"md:A", b"md:B"]
    assert counts == {b"md:*": 3}
    assert ordered == [(b"ev:*", b"ev:1", b"4")]
    assert oversized == [(b"md:*", b"md:C", 100)]
    assert (scanner.pending_keys, scanner.pending_ordered) == (0, 0)
    assert scanner.take() == ({}, {}, [], [])


def test_an_oversized_payload_is_never_buffered(engine: Engine) -> None:
    scanner = engine.PubSubScanner(CONFLATE, 1000)
    big = pmessage(b"md:*", b"md:A", b"x" * 10_000_000, False)
    after = pmessage(b"md:*", b"md:B", b"ok", False)
    data = big + after
    total = 0
    for i in range(0, len(data), 65536):
        count, replies = scanner.feed(data[i : i + 65536])
        total += count
        assert replies == []
    assert total == 2
    _, _, _, oversized = scanner.take()
    assert oversized == [(b"md:*", b"md:A", 10_000_000)]


BROKEN = [
    (b"?what\r\n", "RESP protocol error: unexpected byte 0x3f at the start of a reply (byte 0)"),
    (b"$3\r\nabcd\r\n", "RESP protocol error: a bulk string is not followed by CRLF at byte 7"),
    (b"*x\r\n", 'RESP protocol error: bad length "x" at byte 0'),
    (b"*1\n", None),  # incomplete: no error yet
    (b"*1\r:1\r\n", "RESP protocol error: a header line not ended by CRLF at byte 0"),
    (b"$-2\r\n", "RESP protocol error: negative length -2 at byte 0"),
    (b"~-3\r\n", "RESP protocol error: negative count -3 at byte 0"),
    (b"*" + b"9" * 40 + b"\r\n", "RESP protocol error: a header line over 32 bytes at byte 0"),
    (b"*1\r\n" * 40 + b":1\r\n", "RESP protocol error: replies nested over 32 levels"),
    (
        b"*3\r\n" + bulk(b"message") + b"$5000000\r\n",
        "a channel name of 5000000 bytes is over the limit of 4194304 bytes",
    ),
    (
        b"+" + b"a" * (MAX_PAYLOAD + SLACK + 1),
        f"an incomplete frame of {MAX_PAYLOAD + SLACK + 2} bytes is over the limit of "
        f"{MAX_PAYLOAD + SLACK} bytes",
    ),
]


@pytest.mark.parametrize(("data", "error"), BROKEN)
def test_a_broken_stream_fails_with_the_same_clear_error(
    engine: Engine, data: bytes, error: str | None
) -> None:
    scanner = engine.PubSubScanner(CONFLATE, MAX_PAYLOAD)
    if error is None:
        assert scanner.feed(data) == (0, [])
        return
    with pytest.raises(ValueError) as raised:
        scanner.feed(data)
    assert str(raised.value) == error
    with pytest.raises(ValueError, match=r"RESP protocol error|over the limit"):
        scanner.feed(b"+OK\r\n")  # failed for good: the stream is lost


def test_a_broken_stream_keeps_what_was_read_before_it(engine: Engine) -> None:
    scanner = engine.PubSubScanner(CONFLATE, MAX_PAYLOAD)
    assert scanner.feed(pmessage(b"md:*", b"md:A", b"1", False)) == (1, [])
    with pytest.raises(ValueError):
        scanner.feed(b"?")
    assert scanner.take()[0] == {b"md:*": {b"md:A": b"1"}}


@pytest.mark.parametrize("bad", [["md:*"], [1]])
def test_patterns_must_be_bytes(engine: Engine, bad: list[Any]) -> None:
    with pytest.raises(TypeError, match="conflate: expected bytes patterns"):
        engine.PubSubScanner(bad, 10)


def test_data_must_be_a_buffer(engine: Engine) -> None:
    with pytest.raises(TypeError):
        engine.PubSubScanner(CONFLATE, 10).feed(5)  # type: ignore[arg-type]


def test_random_splits_of_a_large_stream_agree() -> None:
    """A long stream (10,000 messages) in random pieces: both engines, same batch."""
    rng = random.Random(7)
    parts = []
    for i in range(10_000):
        sym = b"md:S%d" % rng.randrange(300)
        parts.append(pmessage(b"md:*", sym, b'{"seq":%d}' % i, bool(i % 2)))
    data = b"".join(parts)
    cuts = sorted(rng.randrange(len(data)) for _ in range(200))
    results = [scan(engine_or_skip(name), data, cuts) for name in ("native", "pure")]
    assert results[0] == results[1]
    assert results[0]["messages"] == 10_000
    assert len(results[0]["batch"][0][b"md:*"]) == 300


# -- NatsScanner ---------------------------------------------------------------------------------

NATS_CONTROL = [
    b'INFO {"server_id":"x","max_payload":1048576}',
    b"PING",
    b"PONG",
    b"+OK",
    b"-ERR 'Permissions Violation for Subscription to \"x\"'",
    b"ping",
]
nats_items = st.one_of(
    st.tuples(
        st.just("msg"),
        st.sampled_from([b"md.A", b"md.B", b"ev.x", b"a.b.c"]),
        st.sampled_from([b"1", b"2", b"7"]),
        st.sampled_from([None, b"_INBOX.r"]),
        st.one_of(st.none(), st.binary(max_size=20)),  # headers (HMSG) or not
        payloads,
    ),
    st.tuples(st.just("ctl"), st.sampled_from(NATS_CONTROL)),
)


def nats_encode(item: tuple[Any, ...]) -> bytes:
    if item[0] == "ctl":
        line: bytes = item[1]
        return line + b"\r\n"
    _, subject, sid, reply, headers, payload = item
    head = [subject, sid] + ([reply] if reply else [])
    if headers is None:
        return b"MSG %s %d\r\n%s\r\n" % (b" ".join(head), len(payload), payload)
    body = headers + payload
    return b"HMSG %s %d %d\r\n%s\r\n" % (b" ".join(head), len(headers), len(body), body)


def nats_expected(stream: list[tuple[Any, ...]]) -> dict[str, Any]:
    conflated: dict[bytes, dict[bytes, bytes]] = {}
    counts: dict[bytes, int] = {}
    ordered: list[tuple[bytes, bytes, bytes]] = []
    oversized: list[tuple[bytes, bytes, int]] = []
    lines: list[bytes] = []
    for item in stream:
        if item[0] == "ctl":
            lines.append(item[1])
            continue
        _, subject, sid, _, headers, payload = item
        total = len(payload) + len(headers or b"")
        if total > MAX_PAYLOAD:
            oversized.append((sid, subject, len(payload)))
        elif sid in NATS_CONFLATE:
            conflated.setdefault(sid, {})[subject] = payload
            counts[sid] = counts.get(sid, 0) + 1
        else:
            ordered.append((sid, subject, payload))
    messages = sum(1 for item in stream if item[0] == "msg")
    return {
        "messages": messages,
        "replies": lines,
        "batch": (conflated, counts, ordered, oversized),
    }


NATS_CONFLATE = [b"1", b"7"]


def nats_scan(engine: Engine, data: bytes, cuts: list[int]) -> dict[str, Any]:
    scanner = engine.NatsScanner(NATS_CONFLATE, MAX_PAYLOAD)
    messages = 0
    lines: list[bytes] = []
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for start, end in itertools.pairwise(bounds):
        count, got = scanner.feed(data[start:end])
        messages += count
        lines += got
    return {"messages": messages, "replies": lines, "batch": scanner.take()}


@given(stream=st.lists(nats_items, max_size=40), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_both_engines_scan_a_nats_stream_whatever_the_split(
    stream: list[tuple[Any, ...]], cuts: list[int]
) -> None:
    data = b"".join(nats_encode(item) for item in stream)
    want = nats_expected(stream)
    for name in ("native", "pure"):
        assert nats_scan(engine_or_skip(name), data, cuts) == want, name


NATS_BROKEN = [
    (b"WHAT x\r\n", 'NATS protocol error: unknown operation "WHAT" at byte 0'),
    (b"MSG a 1\r\n", "NATS protocol error: a message line with 3 fields at byte 0"),
    (b"MSG a 1 -3\r\n", 'NATS protocol error: bad size "-3" in a message line at byte 0'),
    (
        b"HMSG a 1 9 3\r\n",
        "NATS protocol error: a message's headers (9 bytes) longer than the message (3) at byte 0",
    ),
    (b"MSG a 1 2\r\nabcd\r\n", "NATS protocol error: a message is not followed by CRLF at byte 13"),
    (
        b"+" + b"a" * (64 * 1024 + 2),
        "NATS protocol error: a control line over 65536 bytes at byte 0",
    ),
]


@pytest.mark.parametrize(("data", "error"), NATS_BROKEN)
def test_a_broken_nats_stream_fails_with_the_same_clear_error(
    engine: Engine, data: bytes, error: str
) -> None:
    scanner = engine.NatsScanner(NATS_CONFLATE, MAX_PAYLOAD)
    with pytest.raises(ValueError) as raised:
        scanner.feed(data)
    assert str(raised.value) == error
