"""dashboard-protocol.js under node: its unit tests, and a replay of frames recorded from a real
server (JSON and MessagePack, ``changes`` and ``json-patch``) that must rebuild exactly the
document that the Python client rebuilds from the same frames.

Skipped, with the reason, when no ``node`` executable is available.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from webtools import ServerProcess

from dashboard_server.client.connection import ClientState, Outcome, decode_message

HERE = Path(__file__).resolve().parent
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="no node executable on PATH")

VARIANTS = {
    "json-changes": "format=json",
    "json-patch": "format=json&diff=json-patch",
    "msgpack-changes": "format=msgpack",
    "msgpack-patch": "format=msgpack&diff=json-patch",
}


def node(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[bytes]:
    assert NODE is not None
    return subprocess.run([NODE, *args], capture_output=True, timeout=timeout, check=False)


def test_node_unit_tests() -> None:
    result = node("--test", str(HERE / "protocol.test.mjs"))
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, output[-4000:]
    assert "# fail 0" in output and "# pass " in output


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    proc = ServerProcess(symbols=25, rate=80.0)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def record(
    url: str, *, frames_at_least: int, updates_at_least: int, timeout: float = 60.0
) -> tuple[list[dict[str, str]], ClientState]:
    """Frames from ``url`` until there are ``frames_at_least`` of them with ``updates_at_least``
    updates applied (however long the server takes: ``timeout`` only bounds the wait)."""
    from websockets.asyncio.client import connect

    frames: list[dict[str, str]] = []
    state = ClientState()
    async with asyncio.timeout(timeout), connect(url, max_size=None, compression=None) as ws:
        while len(frames) < frames_at_least or state.updates < updates_at_least:
            frame = await ws.recv()
            if isinstance(frame, str):
                frames.append({"text": frame})
            else:
                frames.append({"b64": base64.b64encode(frame).decode()})
            assert state.apply(decode_message(frame)) is not Outcome.GAP, state.last_problem
    return frames, state


def test_replay_recorded_frames(server: ServerProcess, tmp_path: Path) -> None:
    async def record_all() -> dict[str, tuple[list[dict[str, str]], ClientState]]:
        names = list(VARIANTS)
        results = await asyncio.gather(
            *(
                record(
                    f"{server.ws_url}?type=web&{VARIANTS[n]}",
                    frames_at_least=11,
                    updates_at_least=6,
                )
                for n in names
            )
        )
        return dict(zip(names, results, strict=True))

    recorded = asyncio.run(record_all())
    path = tmp_path / "recording.json"
    path.write_bytes(orjson.dumps({n: {"frames": f} for n, (f, _) in recorded.items()}))
    result = node(str(HERE / "replay.mjs"), str(path))
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]
    replayed: dict[str, Any] = orjson.loads(result.stdout)
    for name, (frames, state) in recorded.items():
        js = replayed[name]
        assert len(frames) > 10, f"{name}: only {len(frames)} frames recorded"
        assert js["outcomes"].get("gap", 0) == 0, f"{name}: {js['outcomes']}"
        assert js["outcomes"].get("applied", 0) > 5, f"{name}: {js['outcomes']}"
        assert (js["seq"], js["version"], js["epoch"]) == (state.seq, state.version, state.epoch)
        assert js["data"] == state.data, f"{name}: the JS state differs from the Python client's"
        assert set(js["data"]) >= {"market_data", "orderbook", "orders", "account"}


def test_replay_detects_a_dropped_frame(server: ServerProcess, tmp_path: Path) -> None:
    url = f"{server.ws_url}?type=web&format=json"
    frames, _ = asyncio.run(record(url, frames_at_least=1, updates_at_least=3))
    updates = [i for i, f in enumerate(frames) if f["text"].startswith('{"type":"update"')]
    assert len(updates) >= 3
    dropped = frames[: updates[1]] + frames[updates[1] + 1 :]
    path = tmp_path / "dropped.json"
    path.write_bytes(orjson.dumps({"dropped": {"frames": dropped}}))
    result = node(str(HERE / "replay.mjs"), str(path))
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    outcomes = orjson.loads(result.stdout)["dropped"]["outcomes"]
    assert outcomes.get("gap", 0) == 1, outcomes
    assert outcomes.get("ignored", 0) >= 1, outcomes
