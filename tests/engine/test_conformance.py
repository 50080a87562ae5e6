"""The engine contract (docs/engine.md), run against the native engine and the pure twin."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from dashboard_server.core.engine import Engine
from support import apply_update, canon, decode

SECTIONS = ("market_data", "orders")


def new_doc(engine: Engine, **kwargs: Any) -> Any:
    return engine.StateDoc(sections=SECTIONS, **kwargs)


# -- RFC 6901 pointers ---------------------------------------------------------------------

RFC6901_DOC = {
    "foo": ["bar", "baz"],
    "": 0,
    "a/b": 1,
    "c%d": 2,
    "e^f": 3,
    "g|h": 4,
    "i\\j": 5,
    'k"l': 6,
    " ": 7,
    "m~n": 8,
}

RFC6901_POINTERS = [
    ("", RFC6901_DOC),
    ("/foo", ["bar", "baz"]),
    ("/", 0),
    ("/a~1b", 1),
    ("/c%d", 2),
    ("/e^f", 3),
    ("/g|h", 4),
    ("/i\\j", 5),
    ('/k"l', 6),
    ("/ ", 7),
    ("/m~0n", 8),
]


@pytest.mark.parametrize(("pointer", "expected"), RFC6901_POINTERS)
def test_rfc6901_examples_resolve(engine: Engine, pointer: str, expected: Any) -> None:
    doc = engine.StateDoc()
    doc.replace("", RFC6901_DOC)
    assert canon(doc.get(pointer)) == canon(expected)


def test_pointers_in_changes_are_escaped(engine: Engine) -> None:
    doc = engine.StateDoc()
    doc.replace("", {"s": {}})
    v = doc.version
    doc.merge("/s", {"a/b": 1, "m~n": 2, "": 3})
    assert doc.get("/s/a~1b") == 1
    assert list(doc.changes_since(v).changes()) == ["/s/a~1b", "/s/m~0n", "/s/"]
    doc.merge("/s", {"a/b": 10, "m~n": 20, "": 30})
    w = doc.version - 1
    assert list(doc.changes_since(w).changes()) == ["/s/a~1b", "/s/m~0n", "/s/"]


def test_array_index_is_not_addressable(engine: Engine) -> None:
    doc = engine.StateDoc()
    doc.replace("", RFC6901_DOC)
    with pytest.raises(KeyError):
        doc.get("/foo/0")
    with pytest.raises(ValueError, match="array"):
        doc.merge("/foo/0", "x")
    assert canon(doc.get("")) == canon(RFC6901_DOC)


@pytest.mark.parametrize("pointer", ["a", "a/b", "/a~", "/a~2b", "/~x"])
def test_bad_pointer_rejected(engine: Engine, pointer: str) -> None:
    doc = new_doc(engine)
    for op in (
        lambda: doc.merge(pointer, 1),
        lambda: doc.replace(pointer, 1),
        lambda: doc.remove(pointer),
        lambda: doc.merge_bytes(pointer, b"1"),
    ):
        with pytest.raises(ValueError, match="pointer"):
            op()
    assert doc.version == 0


def test_pointer_with_too_many_tokens_rejected(engine: Engine) -> None:
    doc = new_doc(engine)
    with pytest.raises(ValueError, match="pointer"):
        doc.merge("/a" * (engine.MAX_DEPTH + 1), 1)
    doc.merge("/a" * engine.MAX_DEPTH, 1)  # exactly the limit is fine


# -- RFC 7386 merge patch (appendix A) -------------------------------------------------------

RFC7386_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    (["a", "b"], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC7386_EXAMPLES)
def test_rfc7386_examples(engine: Engine, original: Any, patch: Any, result: Any) -> None:
    for merge in ("merge", "merge_bytes"):
        doc = new_doc(engine)
        doc.replace("/orders/t", original)
        if merge == "merge":
            doc.merge("/orders/t", patch)
        else:
            doc.merge_bytes("/orders/t", msgpack.packb(patch), "msgpack")
        assert canon(doc.get("/orders/t")) == canon(result)


def test_rfc7386_null_patch_removes_member(engine: Engine) -> None:
    """RFC 7386's ``{"a":"foo"} + null = null``, seen from the parent, is a removal."""
    doc = new_doc(engine)
    doc.replace("/orders/t", {"a": "foo"})
    assert doc.merge("/orders/t", None) is True
    with pytest.raises(KeyError):
        doc.get("/orders/t")
    assert doc.merge_bytes("/orders/u", b"null") is False


def test_merge_records_only_real_differences(engine: Engine) -> None:
    doc = new_doc(engine)
    doc.merge("/market_data/BTC", {"price": 1.5, "qty": 2, "flags": [1, 2]})
    v = doc.version
    assert doc.merge("/market_data/BTC", {"price": 1.5, "qty": 2, "flags": [1, 2]}) is False
    assert doc.version == v
    assert doc.merge("/market_data/BTC", {"price": 1.5, "qty": 3}) is True
    assert doc.version == v + 1
    assert doc.changes_since(v).changes() == {"/market_data/BTC/qty": 3}


def test_int_and_float_are_different_values(engine: Engine) -> None:
    doc = new_doc(engine)
    doc.merge("/market_data/X", {"a": 1, "b": True, "c": 0.0})
    v = doc.version
    assert doc.merge("/market_data/X", {"a": 1.0, "b": 1, "c": -0.0}) is True
    cs = doc.changes_since(v)
    assert canon(cs.changes()) == canon(
        {"/market_data/X/a": 1.0, "/market_data/X/b": 1, "/market_data/X/c": -0.0}
    )


def test_merge_creates_missing_intermediates(engine: Engine) -> None:
    doc = new_doc(engine)
    assert doc.merge("/strategies/alpha/params", {"x": 1, "y": None}) is True
    assert doc.get("/strategies") == {"alpha": {"params": {"x": 1}}}
    assert doc.changes_since(0).changes() == {"/strategies": {"alpha": {"params": {"x": 1}}}}


def test_merge_through_a_scalar_is_rejected(engine: Engine) -> None:
    doc = new_doc(engine)
    doc.merge("/orders/1", {"qty": 5})
    with pytest.raises(ValueError, match="not an object"):
        doc.merge("/orders/1/qty/x", 1)
    assert doc.get("/orders/1") == {"qty": 5}


# -- replace and remove ----------------------------------------------------------------------


def test_replace_is_a_structural_diff(engine: Engine) -> None:
    doc = new_doc(engine)
    doc.replace("/orders/1", {"a": 1, "b": {"c": 2, "d": 3}, "e": [1]})
    v = doc.version
    assert doc.replace("/orders/1", {"a": 1, "b": {"c": 2, "d": 4}, "f": None}) is True
    cs = doc.changes_since(v)
    assert cs.removed() == ["/orders/1/e"]
    assert canon(cs.changes()) == canon({"/orders/1/b/d": 4, "/orders/1/f": None})
    assert doc.get("/orders/1") == {"a": 1, "b": {"c": 2, "d": 4}, "f": None}
    assert doc.replace("/orders/1", {"a": 1, "b": {"c": 2, "d": 4}, "f": None}) is False


def test_replace_root(engine: Engine) -> None:
    doc = new_doc(engine)
    doc.replace("", {"orders": {"1": {"q": 1}}, "new": {}})
    assert list(doc.get("")) == ["orders", "new"]
    with pytest.raises(ValueError, match="root"):
        doc.replace("", [1, 2])
    with pytest.raises(ValueError, match="root"):
        doc.merge("", 5)


def test_remove(engine: Engine) -> None:
    doc = new_doc(engine)
    doc.merge("/orders/1", {"q": 1})
    v = doc.version
    assert doc.remove("/orders/1") is True
    assert doc.remove("/orders/1") is False
    assert doc.remove("/orders/2/x") is False
    assert doc.version == v + 1
    assert doc.changes_since(v).removed() == ["/orders/1"]
    with pytest.raises(ValueError, match="root"):
        doc.remove("")


def test_get_returns_copies(engine: Engine) -> None:
    doc = new_doc(engine)
    doc.merge("/orders/1", {"levels": [[1, 2]], "meta": {"a": 1}})
    got = doc.get("/orders/1")
    got["levels"][0][0] = 99
    got["meta"]["a"] = 99
    assert doc.get("/orders/1") == {"levels": [[1, 2]], "meta": {"a": 1}}
    with pytest.raises(KeyError):
        doc.get("/orders/2")


def test_sections_and_stats(engine: Engine) -> None:
    doc = new_doc(engine)
    assert doc.get("") == {"market_data": {}, "orders": {}}
    assert doc.version == 0
    stats = doc.stats()
    assert (stats["version"], stats["floor"], stats["tombstones"]) == (0, 0, 0)


# -- rejection and atomicity -----------------------------------------------------------------


class Unsupported:
    pass


BAD_VALUES = [
    ({"a": 1, "b": {"c": float("nan")}}, "/b/c", "non-finite"),
    ({"a": float("inf")}, "/a", "non-finite"),
    ({"a": [1, float("-inf")]}, "/a/1", "non-finite"),
    ({"a": {1: "x"}}, "/a", "non-string key"),
    ({"a": {None: "x"}}, "/a", "non-string key"),
    ({"a": 2**64}, "/a", "out of range"),
    ({"a": -(2**63) - 1}, "/a", "out of range"),
    ({"a": "\ud800"}, "/a", "UTF-8"),
    ({"a": {"\udfff": 1}}, "/a", "UTF-8"),
    ({"a": {1, 2}}, "/a", "unsupported type"),
    ({"a": b"bytes"}, "/a", "unsupported type"),
    ({"a": Unsupported()}, "/a", "unsupported type"),
]


@pytest.mark.parametrize(("value", "where", "keyword"), BAD_VALUES)
@pytest.mark.parametrize("op", ["merge", "replace"])
def test_bad_values_rejected_atomically(
    engine: Engine, op: str, value: Any, where: str, keyword: str
) -> None:
    doc = new_doc(engine)
    doc.merge("/orders/1", {"keep": 1, "a": 0})
    before, version = doc.get(""), doc.version
    with pytest.raises(ValueError, match=keyword) as info:
        getattr(doc, op)("/orders/1", value)
    assert f"/orders/1{where}" in str(info.value)
    assert canon(doc.get("")) == canon(before)
    assert doc.version == version
    assert doc.changes_since(version).changes() == {}


def test_int_bounds_accepted(engine: Engine) -> None:
    doc = new_doc(engine)
    doc.merge("/orders/1", {"max": 2**64 - 1, "min": -(2**63)})
    assert doc.get("/orders/1") == {"max": 2**64 - 1, "min": -(2**63)}
    for fmt in ("json", "msgpack"):
        message = decode(fmt, doc.encode_snapshot(fmt, None, 1, "e", 0))
        assert message["data"]["orders"]["1"] == {"max": 2**64 - 1, "min": -(2**63)}


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_depth_limit(engine: Engine) -> None:
    doc = new_doc(engine)
    limit = engine.MAX_DEPTH
    assert doc.replace("/orders/deep", nested(limit)) is True
    with pytest.raises(ValueError, match="depth"):
        doc.replace("/orders/deeper", nested(limit + 1))
    with pytest.raises(ValueError, match="depth"):
        doc.replace_bytes("/orders/deeper", b"[" * (limit + 1) + b"]" * (limit + 1))
    with pytest.raises(ValueError, match="depth"):
        doc.replace_bytes("/orders/bomb", b"[" * 100_000)
    with pytest.raises(ValueError, match="depth"):
        doc.replace_bytes("/orders/bomb", b"\x91" * 100_000, "msgpack")
    with pytest.raises(KeyError):
        doc.get("/orders/deeper")


BAD_JSON = [
    b"",
    b"{",
    b'{"a": 1} x',
    b'{"a": 1,}',
    b"NaN",
    b"Infinity",
    b"[1, 2",
    b"'single'",
    b'"\xff"',
    b'{"a": 18446744073709551616}',
    b'{"a": -9223372036854775809}',
    b'{"a": 1e400}',
]


@pytest.mark.parametrize("payload", BAD_JSON)
def test_bad_json_payload_rejected(engine: Engine, payload: bytes) -> None:
    doc = new_doc(engine)
    doc.merge("/orders/1", {"a": 0})
    with pytest.raises(ValueError) as info:
        doc.merge_bytes("/orders/1", payload)
    assert str(info.value).startswith("/orders/1")
    assert doc.get("/orders/1") == {"a": 0}
    assert doc.version == 1


def test_json_payload_rejection_keywords(engine: Engine) -> None:
    doc = new_doc(engine)
    cases = [
        (b'"\xff"', "UTF-8"),
        (b'{"a": 18446744073709551616}', "out of range"),
        (b'{"a": 1e400}', "non-finite"),
        (b"{", "invalid JSON"),
    ]
    for payload, keyword in cases:
        with pytest.raises(ValueError, match=keyword):
            doc.merge_bytes("/orders/1", payload)


BAD_MSGPACK = [
    (b"", "invalid MessagePack"),
    (b"\x82\xa1a\x01", "invalid MessagePack"),  # truncated map
    (b"\x01\x02", "invalid MessagePack"),  # trailing bytes
    (b"\xc4\x01x", "bin"),
    (b"\x81\xa1a\xc4\x01x", "bin"),  # inside a map
    (b"\xd4\x01\x00", "ext"),  # fixext
    (b"\xd6\xff\x00\x00\x00\x01", "ext"),  # the timestamp extension
    (b"\x81\x01\x02", "non-string key"),
    (b"\xa2\xff\xfe", "UTF-8"),
    (b"\xdd\xff\xff\xff\xff", "invalid MessagePack"),  # array declaring 4G elements
    (b"\xdf\xff\xff\xff\xff", "invalid MessagePack"),  # map declaring 4G entries
    (b"\xdb\xff\xff\xff\xff", "invalid MessagePack"),  # str declaring 4 GB
    (b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", "non-finite"),  # float64 NaN
]


@pytest.mark.parametrize(("payload", "keyword"), BAD_MSGPACK)
def test_bad_msgpack_payload_rejected(engine: Engine, payload: bytes, keyword: str) -> None:
    doc = new_doc(engine)
    doc.merge("/orders/1", {"a": 0})
    with pytest.raises(ValueError, match=keyword) as info:
        doc.merge_bytes("/orders/1", payload, "msgpack")
    assert str(info.value).startswith("/orders/1")
    assert doc.get("/orders/1") == {"a": 0}
    assert doc.version == 1


def test_payload_formats_agree(engine: Engine) -> None:
    value = {"a": 1, "b": -2, "c": 1.5, "d": "é✓", "e": [True, None, {"f": 2**64 - 1}]}
    json_doc, mp_doc = new_doc(engine), new_doc(engine)
    import orjson

    json_doc.replace_bytes("/orders/1", orjson.dumps(value))
    mp_doc.replace_bytes("/orders/1", msgpack.packb(value), "msgpack")
    assert canon(json_doc.get("/orders/1")) == canon(value)
    assert canon(mp_doc.get("/orders/1")) == canon(value)


def test_json_duplicate_keys_last_wins(engine: Engine) -> None:
    doc = new_doc(engine)
    doc.replace_bytes("/orders/1", b'{"a": 1, "b": 2, "a": 3}')
    assert canon(doc.get("/orders/1")) == canon({"a": 3, "b": 2})


def test_unknown_payload_format(engine: Engine) -> None:
    doc = new_doc(engine)
    with pytest.raises(ValueError, match="format"):
        doc.merge_bytes("/orders/1", b"1", "xml")


# -- batch ingest (merge_many) ---------------------------------------------------------------

BATCH = [
    ("/orders/1", b'{"q": 1, "s": "open"}'),
    ("/orders/2", b'{"q": 2}'),
    ("/orders/1", b'{"q": 1}'),  # no change
    ("/orders/1", b'{"q": 1.5, "fills": [1, 2]}'),
    ("/orders/1/q", b"NaN"),  # invalid JSON
    ("/orders/1/fills/x", b"1"),  # into an array
    ("orders/3", b"1"),  # bad pointer
    ("/orders/1/s/deeper", b"1"),  # through a scalar
    ("/orders/3", b'{"bad": 1e999}'),  # non-finite float
    ("/orders/2", b"null"),  # removal
    ("/orders/2", b"null"),  # nothing to remove
    ("/market_data/BTC", b'{"p": 1.0, "x": null}'),
    ("", b'{"market_data": {"ETH": {"p": 2}}}'),
    ("", b"[1]"),  # the root must be an object
]


def sequential(doc: Any, items: list[tuple[str, bytes]], fmt: str = "json") -> list[Any]:
    results: list[Any] = []
    for path, payload in items:
        try:
            results.append(doc.merge_bytes(path, payload, fmt))
        except ValueError as exc:
            results.append(str(exc))
    return results


def sequential_replace(doc: Any, items: list[tuple[str, bytes]], fmt: str = "json") -> list[Any]:
    results: list[Any] = []
    for path, payload in items:
        try:
            results.append(doc.replace_bytes(path, payload, fmt))
        except ValueError as exc:
            results.append(str(exc))
    return results


def test_merge_many_equals_sequential_merge_bytes(engine: Engine) -> None:
    one, many = new_doc(engine), new_doc(engine)
    expected = sequential(one, BATCH)
    results = many.merge_many(BATCH)
    assert results == expected
    assert [type(r) for r in results] == [type(r) for r in expected]
    assert results[:4] == [True, True, False, True]
    assert all(isinstance(r, str) for r in results[4:9])
    assert results[9:12] == [True, False, True]
    assert results[4].startswith("/orders/1/q")
    assert results[6].startswith("invalid JSON pointer")
    assert isinstance(results[13], str) and "object" in results[13]
    assert many.version == one.version == 6
    assert canon(many.get("")) == canon(one.get(""))
    for v in range(one.version + 1):
        a, b = one.changes_since(v), many.changes_since(v)
        assert a.encode("json", "changes", None, 1, 0) == b.encode("json", "changes", None, 1, 0)


def test_merge_many_msgpack_and_payload_types(engine: Engine) -> None:
    one, many = new_doc(engine), new_doc(engine)
    items = [
        ("/orders/1", msgpack.packb({"q": 1})),
        ("/orders/2", b"\xc1"),  # never used in MessagePack
        ("/orders/1", msgpack.packb({"q": 2, "r": None})),
    ]
    assert many.merge_many(items, "msgpack") == sequential(one, items, "msgpack")
    assert canon(many.get("")) == canon(one.get(""))
    mixed: list[Any] = [
        ["/orders/3", bytearray(b'{"a": 1}')],
        ("/orders/4", memoryview(b'{"b": 2}')),
    ]
    assert many.merge_many(iter(mixed)) == [True, True]
    assert many.merge_many(()) == []
    assert many.get("/orders/3") == {"a": 1}
    assert many.get("/orders/4") == {"b": 2}


def test_merge_many_bad_item_touches_nothing_else(engine: Engine) -> None:
    doc = new_doc(engine)
    doc.merge("/orders/1", {"q": 1, "s": "open"})
    before, version = doc.get(""), doc.version
    results = doc.merge_many([("/orders/1", b'{"q": 2, "s": NaN}'), ("/orders/1/s/x", b"1")])
    assert all(isinstance(r, str) and r.startswith("/orders/1") for r in results)
    assert doc.get("") == before and doc.version == version
    assert doc.changes_since(version).encode("json", "changes", None, 1, 0) is None


@pytest.mark.parametrize(
    "items",
    [
        None,
        1,
        "/orders/1",
        b"{}",
        [("/orders/1",)],
        [("/orders/1", b"1", "json")],
        ["/orders/1"],
        [(1, b"1")],
        [("/orders/1", "1")],
        [("/orders/1", None)],
    ],
)
def test_merge_many_wrong_shape_raises_before_applying(engine: Engine, items: Any) -> None:
    doc = new_doc(engine)
    with pytest.raises(TypeError):
        doc.merge_many([("/orders/9", b"1"), *items] if isinstance(items, list) else items)
    assert doc.version == 0
    with pytest.raises(ValueError, match="format"):
        doc.merge_many([("/orders/9", b"1")], "xml")
    assert doc.version == 0


# -- batch ingest (replace_many) -------------------------------------------------------------


def test_replace_many_equals_sequential_replace_bytes(engine: Engine) -> None:
    one, many = new_doc(engine), new_doc(engine)
    expected = sequential_replace(one, BATCH)
    results = many.replace_many(BATCH)
    assert results == expected
    assert [type(r) for r in results] == [type(r) for r in expected]
    # replace: the second {"q": 1} removes "s" (absent members go), so "/orders/1/s/deeper"
    # creates it again; null is a value, not a removal
    assert results[:4] == [True, True, True, True]
    assert all(isinstance(r, str) for r in (*results[4:7], results[8]))
    assert results[7] is True
    assert results[9:11] == [True, False]
    assert results[4].startswith("/orders/1/q")
    assert results[6].startswith("invalid JSON pointer")
    assert many.version == one.version
    assert canon(many.get("")) == canon(one.get(""))
    for v in range(one.version + 1):
        a, b = one.changes_since(v), many.changes_since(v)
        assert a.encode("json", "changes", None, 1, 0) == b.encode("json", "changes", None, 1, 0)


def test_replace_many_latest_wins_and_unchanged_items(engine: Engine) -> None:
    doc = new_doc(engine)
    assert doc.replace_many([("/market_data/BTC", b'{"p": 1, "q": 2}')]) == [True]
    version = doc.version
    # the same item again changes nothing; a new value of one field changes only that field
    assert doc.replace_many([("/market_data/BTC", b'{"q": 2, "p": 1}')]) == [False]
    assert doc.version == version
    assert doc.replace_many([("/market_data/BTC", b'{"p": 3, "q": 2}')]) == [True]
    assert doc.changes_since(version).changes() == {"/market_data/BTC/p": 3}


def test_replace_many_msgpack_and_payload_types(engine: Engine) -> None:
    one, many = new_doc(engine), new_doc(engine)
    items = [
        ("/orders/1", msgpack.packb({"q": 1, "r": 2})),
        ("/orders/2", b"\xc1"),  # never used in MessagePack
        ("/orders/1", msgpack.packb({"q": 2})),
    ]
    assert many.replace_many(items, "msgpack") == sequential_replace(one, items, "msgpack")
    assert canon(many.get("")) == canon(one.get(""))
    assert many.get("/orders/1") == {"q": 2}
    mixed: list[Any] = [
        ["/orders/3", bytearray(b'{"a": 1}')],
        ("/orders/4", memoryview(b'{"b": 2}')),
    ]
    assert many.replace_many(iter(mixed)) == [True, True]
    assert many.replace_many(()) == []
    assert many.get("/orders/3") == {"a": 1}
    assert many.get("/orders/4") == {"b": 2}


@pytest.mark.parametrize(
    "items",
    [
        None,
        1,
        "/orders/1",
        b"{}",
        [("/orders/1",)],
        [("/orders/1", b"1", "json")],
        ["/orders/1"],
        [(1, b"1")],
        [("/orders/1", "1")],
        [("/orders/1", None)],
    ],
)
def test_replace_many_wrong_shape_raises_before_applying(engine: Engine, items: Any) -> None:
    doc = new_doc(engine)
    with pytest.raises(TypeError):
        doc.replace_many([("/orders/9", b"1"), *items] if isinstance(items, list) else items)
    assert doc.version == 0
    with pytest.raises(ValueError, match="format"):
        doc.replace_many([("/orders/9", b"1")], "xml")
    assert doc.version == 0


# -- change tracking and the horizon ---------------------------------------------------------


def test_changes_coalesce_and_read_latest_value(engine: Engine) -> None:
    doc = new_doc(engine)
    doc.merge("/market_data/BTC", {"p": 1.0})
    v = doc.version
    for price in (2.0, 3.0, 4.0):
        doc.merge("/market_data/BTC", {"p": price})
    assert doc.changes_since(v).changes() == {"/market_data/BTC/p": 4.0}
    assert len(doc.changes_since(v)) == 1


def test_created_and_removed_after_cursor_is_not_reported(engine: Engine) -> None:
    doc = new_doc(engine)
    v = doc.version
    doc.merge("/orders/1", {"q": 1})
    doc.remove("/orders/1")
    cs = doc.changes_since(v)
    assert cs.removed() == [] and cs.changes() == {}
    assert cs.is_empty()


def test_removed_then_recreated_then_removed(engine: Engine) -> None:
    doc = new_doc(engine)
    doc.merge("/orders/1", {"q": 1})
    v_existed = doc.version
    doc.remove("/orders/1")
    v_absent = doc.version
    doc.merge("/orders/1", {"q": 2})
    v_back = doc.version
    doc.remove("/orders/1")
    assert doc.changes_since(v_existed).removed() == ["/orders/1"]
    assert doc.changes_since(v_absent).removed() == []
    assert doc.changes_since(v_back).removed() == ["/orders/1"]
    doc.merge("/orders/1", {"q": 3})
    cs = doc.changes_since(v_existed)
    assert cs.removed() == [] and cs.changes() == {"/orders/1": {"q": 3}}


def test_type_change_keeps_key_history(engine: Engine) -> None:
    doc = new_doc(engine)
    doc.merge("/orders/1", {"q": 1})
    v = doc.version
    doc.replace("/orders/1", 5)  # object -> leaf: a new node
    doc.remove("/orders/1")
    assert doc.changes_since(v).removed() == ["/orders/1"]


def test_removal_order_is_by_version_then_key(engine: Engine) -> None:
    doc = new_doc(engine)
    doc.merge("/orders", {k: {"q": 1} for k in ("d", "c", "b", "a")})
    v = doc.version
    doc.remove("/orders/c")
    doc.replace("/orders", {"c2": 1})  # removes d, b, a in one version
    assert doc.changes_since(v).removed() == ["/orders/c", "/orders/a", "/orders/b", "/orders/d"]


def test_tombstone_horizon(engine: Engine) -> None:
    doc = new_doc(engine, max_tombstones=3)
    for i in range(5):
        doc.merge(f"/orders/{i}", {"q": i})
    start = doc.version
    removal_versions = []
    for i in range(5):
        doc.remove(f"/orders/{i}")
        removal_versions.append(doc.version)
    assert doc.stats()["tombstones"] == 3
    assert doc.floor == removal_versions[1]
    assert doc.changes_since(start) is None
    assert doc.changes_since(doc.floor - 1) is None
    cs = doc.changes_since(doc.floor)
    assert cs.removed() == ["/orders/2", "/orders/3", "/orders/4"]
    with pytest.raises(ValueError):
        doc.changes_since(doc.version + 1)
    with pytest.raises(ValueError):
        doc.changes_since(-1)


def test_changes_since_current_version_is_empty(engine: Engine) -> None:
    doc = new_doc(engine)
    doc.merge("/orders/1", {"q": 1})
    cs = doc.changes_since(doc.version)
    assert len(cs) == 0 and cs.from_version == cs.to_version == doc.version
    assert cs.encode("json", "changes", None, 1, 0) is None


def test_changes_since_reconstructs_every_earlier_state(engine: Engine) -> None:
    doc = new_doc(engine)
    states = [doc.get("")]
    ops = [
        lambda: doc.merge("/orders/1", {"q": 1, "s": "open"}),
        lambda: doc.merge("/orders/2", {"q": 2}),
        lambda: doc.merge("/orders/1", {"s": "filled", "fills": [1, 2]}),
        lambda: doc.remove("/orders/2"),
        lambda: doc.replace("/market_data", {"BTC": {"p": 1.0}}),
        lambda: doc.merge("/market_data/BTC", {"p": 2.0, "book": {"b": [1]}}),
        lambda: doc.replace("/orders/1", "gone"),
        lambda: doc.merge("/orders/2", {"q": 3}),
    ]
    for op in ops:
        assert op() is True
        states.append(doc.get(""))
    for v, old in enumerate(states):
        cs = doc.changes_since(v)
        state = old
        apply_update(
            state,
            decode(
                "json",
                cs.encode("json", "changes", None, 1, 0) or b'{"type":"update","changes":{}}',
            ),
        )
        assert canon(state) == canon(doc.get("")), f"from version {v}"


def test_keys_lists_member_names_without_copying(engine: Engine) -> None:
    doc = new_doc(engine)
    doc.merge("/orders", {"b": {"q": 1}, "a": {"q": 2}, "x/y": 3})
    doc.remove("/orders/b")
    doc.merge("/orders/b", {"q": 4})
    assert doc.keys("/orders") == ["a", "x/y", "b"]
    assert doc.keys() == ["market_data", "orders"]
    assert doc.keys("/market_data") == []
    with pytest.raises(KeyError):
        doc.keys("/nope")
    with pytest.raises(ValueError, match="not an object"):
        doc.keys("/orders/x~1y")
    with pytest.raises(ValueError, match="pointer"):
        doc.keys("orders")
