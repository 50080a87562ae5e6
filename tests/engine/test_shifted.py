"""ShiftedDoc: an engine document seen in a shared version space (core/shifted.py)."""

from __future__ import annotations

import pytest

from dashboard_server.core.engine import Engine
from dashboard_server.core.shifted import ShiftedDoc, patch_version
from support import decode

BASE = 1_795_795_035_000_000  # a lineage started at a Unix time in microseconds


def shifted(engine: Engine) -> ShiftedDoc:
    doc = ShiftedDoc(engine.StateDoc(sections=("a", "b"), max_tombstones=4))
    doc.replace("/a/x", {"p": 1})
    doc.rebase(BASE)
    return doc


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("diff", ["changes", "json-patch"])
def test_messages_carry_the_shared_version(engine: Engine, fmt: str, diff: str) -> None:
    doc = shifted(engine)
    assert doc.version == BASE and doc.floor == BASE
    doc.replace("/a/y", 2.5)
    doc.remove("/a/x")
    snapshot = decode(fmt, doc.encode_snapshot(fmt, None, 2**40, "e", 1))  # type: ignore[arg-type]
    assert snapshot["version"] == BASE + 2 and snapshot["seq"] == 2**40
    assert snapshot["data"] == {"a": {"y": 2.5}, "b": {}}
    changes = doc.changes_since(BASE)
    assert changes is not None and changes.from_version == BASE
    update = decode(fmt, changes.encode(fmt, diff, None, 7, 1))  # type: ignore[arg-type]
    assert update["version"] == BASE + 2 and update["seq"] == 7
    assert doc.changes_since(BASE - 1) is None  # before the rebase: never held here
    with pytest.raises(ValueError):
        doc.changes_since(BASE + 3)


def test_rebase_never_goes_back(engine: Engine) -> None:
    doc = shifted(engine)
    doc.replace("/b/z", 1)
    with pytest.raises(ValueError):
        doc.rebase(BASE)
    seen = doc.version
    doc.replace("/b/z", 2)
    doc.replace("/b/w", 3)
    doc.rebase(seen, seen=seen)  # changed without yielding since `seen` was read: allowed
    assert doc.version == seen and doc.floor == seen


@pytest.mark.parametrize("version", [0, 5, 127, 128, 255, 256, 65535, 65536, 2**32, 2**53])
def test_patch_version_every_int_width(version: int) -> None:
    import msgpack
    import orjson

    for seq in (0, 200, 70000, 2**33):
        body = {"type": "update", "seq": seq, "version": 3, "timestamp": "t", "changes": {}}
        packed = patch_version("msgpack", msgpack.packb(body), version)
        assert msgpack.unpackb(packed) == {**body, "version": version}
        text = patch_version("json", orjson.dumps(body), version)
        assert orjson.loads(text) == {**body, "version": version}
