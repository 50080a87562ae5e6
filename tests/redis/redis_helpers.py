"""Helpers of the Redis tests: a real redis-server process, a plain redis-py "backend", and
waiting for clients to converge on what Redis holds."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import orjson
from redis.asyncio import Redis as AsyncRedis
from redis.client import Redis
from redis.exceptions import RedisError
from server_helpers import http_get, make_config

from dashboard_server.client.connection import DashboardClient
from dashboard_server.config import DEFAULT_SECTIONS
from dashboard_server.server.app import DashboardServer


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_ping(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until the redis-server ``proc`` just started on ``port`` answers PING."""
    deadline = time.monotonic() + timeout
    client = Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        while True:
            try:
                if client.ping():
                    return
            except RedisError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on {port}") from None
                time.sleep(0.02)
    finally:
        client.close()


class RedisProcess:
    """One redis-server on 127.0.0.1: ``persistent`` keeps an append-only file in ``data_dir``
    (fsync on every write, so ``kill -9`` loses nothing), otherwise nothing is saved."""

    def __init__(
        self, binary: str, data_dir: Path, *, port: int | None = None, persistent: bool = False
    ) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.port = port or free_port()
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start redis-server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--appendonly", "no"]
        )
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--save",
                "",
                *persistence,
                "--logfile",
                str(self.data_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_ping(self.port, self.proc, timeout)

    def signal(self, signum: int) -> None:
        """Send ``signum`` (SIGSTOP, SIGCONT, SIGKILL, ...)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        """``kill -9`` and reap."""
        assert self.proc is not None
        self.signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: the append-only file is complete), if running."""
        if self.proc is None:
            return
        with_cont = self.proc.poll() is None
        if with_cont:
            self.signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def client(self) -> Redis:
        """A plain synchronous redis-py client."""
        return Redis(port=self.port, socket_timeout=5)


def encode(value: Any, fmt: str) -> bytes:
    """A payload as a backend writes it: JSON or MessagePack."""
    if fmt == "json":
        return orjson.dumps(value)
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def decode_payload(payload: bytes) -> Any:
    """The value of a payload (first byte >= 0x80: MessagePack, else JSON)."""
    if payload[:1] and payload[0] >= 0x80:
        return msgpack.unpackb(payload, raw=False)
    return orjson.loads(payload)


def write_item(r: Redis, key: str, value: Any, fmt: str = "json") -> None:
    """SET the item and PUBLISH the same payload (the backends' contract)."""
    payload = encode(value, fmt)
    pipe = r.pipeline(transaction=False)
    pipe.set(key, payload)
    pipe.publish(key, payload)
    pipe.execute()


def delete_item(r: Redis, key: str, removal: bytes = b"") -> None:
    """DEL the key and PUBLISH a removal payload (empty, ``null`` or MessagePack nil)."""
    pipe = r.pipeline(transaction=False)
    pipe.delete(key)
    pipe.publish(key, removal)
    pipe.execute()


def redis_state(r: Redis, sections: Iterable[str] = DEFAULT_SECTIONS) -> dict[str, Any]:
    """What Redis holds, as the state document should look: every section, its string keys
    decoded (empty or null payloads are no item)."""
    state: dict[str, Any] = {s: {} for s in sections}
    for section in state:
        for key in r.scan_iter(match=f"{section}:*", count=1000):
            payload = r.mget([key])[0]  # None for a key that is not a string
            if payload is None or payload in (b"", b"null", b"\xc0"):
                continue
            item_id = key.decode()[len(section) + 1 :]
            state[section][item_id] = decode_payload(payload)
    return state


async def health(server: DashboardServer) -> dict[str, Any]:
    """The ``/health`` body, over HTTP."""
    status, _, body = await http_get(server.port, "/health")
    assert status == 200, (status, body)
    result: dict[str, Any] = orjson.loads(body)
    return result


async def wait_health(server: DashboardServer, status: str, timeout: float = 15.0) -> None:
    """Poll ``/health`` until its ``status`` is ``status``."""
    last: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = await health(server)
                if last["status"] == status:
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"health never became {status!r}; last: {last}") from None


async def converge(
    clients: Iterable[DashboardClient], expected: dict[str, Any], timeout: float = 15.0
) -> None:
    """Wait until every client's state equals ``expected``; fail with a diff otherwise."""
    clients = list(clients)

    def done() -> bool:
        return all(c.state.synced and c.data == expected for c in clients)

    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.02)
    except TimeoutError:
        for c in clients:
            assert c.data == expected
        raise


def metric(server: DashboardServer, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of the server's metrics (0 if absent)."""
    return server.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def metric_sum(server: DashboardServer, name: str) -> float:
    """The sum of a metric's samples over every label set."""
    total = 0.0
    for family in server.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


@asynccontextmanager
async def redis_server(engine_name: str, url: str, **overrides: Any) -> AsyncIterator[Any]:
    """A started in-process server on ``url`` with fast health checks, shut down afterwards."""
    settings: dict[str, Any] = {
        "redis_url": url,
        "redis_health_interval_s": 0.2,
        "redis_health_timeout_s": 0.5,
        "redis_backoff_initial_s": 0.05,
        "redis_backoff_max_s": 0.3,
        "tui_interval_ms": 50,
    }
    settings.update(overrides)
    server = DashboardServer(make_config(engine_name, **settings))
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown()


@asynccontextmanager
async def clients_of(server: DashboardServer, **options: Any) -> AsyncIterator[list[Any]]:
    """One client per (format, diff form), tui tier, connected; closed afterwards."""
    url = f"ws://127.0.0.1:{server.port}/ws"
    clients = [
        DashboardClient(url, type="tui", format=fmt, diff=diff, **options)
        for fmt, diff in (("msgpack", "changes"), ("json", "json-patch"))
    ]
    for c in clients:
        await c.connect()
    try:
        yield clients
    finally:
        for c in clients:
            await c.close()


def async_backend(port: int) -> AsyncRedis:
    """An asyncio redis-py client for a "backend" that keeps writing in the background."""
    return AsyncRedis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
