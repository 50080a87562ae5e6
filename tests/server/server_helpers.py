"""Helpers of the server tests: in-process servers on OS-chosen ports, waiting, running."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import orjson

if importlib.util.find_spec("dashboard_server") is None:  # not installed: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))

from dashboard_server.config import Config
from dashboard_server.server.app import DashboardServer

__all__ = [
    "ENGINES",
    "DashboardServer",
    "decode",
    "http_get",
    "make_config",
    "native_available",
    "restricted",
    "rss_bytes",
    "run",
    "running_server",
    "small_socket",
    "wait_until",
]

T = TypeVar("T")

ENGINES = ("native", "pure")


def native_available() -> bool:
    """Whether the Rust extension is built."""
    return importlib.util.find_spec("dashboard_server._fastdiff") is not None


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    """Run ``coro`` in a fresh event loop, failing the test after ``timeout`` seconds."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def make_config(engine_name: str, **overrides: Any) -> Config:
    """A config for an in-process test server: port 0, no demo feed unless asked."""
    settings: dict[str, Any] = {"port": 0, "engine": engine_name, "demo": False}
    settings.update(overrides)
    return Config().replace(**settings)


@asynccontextmanager
async def running_server(engine_name: str, **overrides: Any) -> AsyncIterator[DashboardServer]:
    """A started :class:`DashboardServer` that is shut down afterwards."""
    server = DashboardServer(make_config(engine_name, **overrides))
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown()


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` (every 10 ms) until it holds; fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 GET on 127.0.0.1: status, headers (lower-cased names), body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body
    finally:
        writer.close()


def decode(frame: str | bytes) -> dict[str, Any]:
    """A server message: JSON in text frames, MessagePack in binary frames."""
    msg = orjson.loads(frame) if isinstance(frame, str) else msgpack.unpackb(frame, raw=False)
    assert isinstance(msg, dict)
    return msg


async def recv_data(ws: Any) -> dict[str, Any]:
    """The next server message that is not a ``status`` (sent after every snapshot and catch-up,
    and whenever the feed's status changes: docs/protocol.md)."""
    while True:
        msg = decode(await ws.recv())
        if msg.get("type") != "status":
            return msg


def small_socket(port: int, rcvbuf: int = 4096) -> socket.socket:
    """A connected TCP socket whose receive buffer is tiny (a slow reader fills it at once)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def rss_bytes() -> int:
    """This process's resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def restricted(doc: dict[str, Any], channels: Iterable[str] | None) -> dict[str, Any]:
    """The document as a client subscribed to ``channels`` (None: all) should have it."""
    if channels is None:
        return doc
    wanted = set(channels)
    return {k: v for k, v in doc.items() if k in wanted}
