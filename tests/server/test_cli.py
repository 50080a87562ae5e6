"""The ``dashboard-server`` command as a real process: serve, health, metrics, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import orjson
from server_helpers import http_get, run, small_socket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from dashboard_server.client.connection import DashboardClient

SOURCE = Path(__file__).resolve().parents[2] / "python"


def command() -> list[str]:
    """The installed console script if there is one, else ``python -m dashboard_server``."""
    script = Path(sys.executable).parent / "dashboard-server"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dashboard_server"]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


async def start(engine_name: str, *args: str) -> tuple[asyncio.subprocess.Process, int]:
    """Start ``serve`` on a free port; return the process and the port from its JSON log."""
    proc = await asyncio.create_subprocess_exec(
        *command(),
        "serve",
        "--port",
        "0",
        "--engine",
        engine_name,
        "--demo-rate",
        "200",
        *args,
        env=child_env(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    async with asyncio.timeout(20):
        while True:
            line = await proc.stderr.readline()
            assert line, "server exited before listening"
            entry = orjson.loads(line)
            assert set(entry) >= {"ts", "level", "logger", "msg"}
            if entry["msg"] == "listening":
                return proc, int(entry["port"])


async def read_all(ws: ClientConnection) -> int | None:
    """Read (as a live client does) until the connection closes; return the close code."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass
    return ws.close_code


async def drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stderr is not None
    while await proc.stderr.readline():
        pass


def test_serve_answers_health_and_metrics(engine_name: str) -> None:
    async def scenario() -> None:
        proc, port = await start(engine_name)
        draining = asyncio.create_task(drain(proc))
        try:
            status, _, body = await http_get(port, "/health")
            assert status == 200
            health = orjson.loads(body)
            assert health["status"] == "ok" and health["engine"] == engine_name
            status, _, body = await http_get(port, "/metrics")
            assert status == 200 and b"dashboard_connected_clients" in body
            async with DashboardClient(f"ws://127.0.0.1:{port}/ws", reconnect=False) as client:
                await client.wait_for(lambda c: c.state.updates >= 2, timeout=10)
                assert set(client.data) == {
                    "market_data",
                    "orderbook",
                    "orders",
                    "positions",
                    "account",
                    "strategies",
                }
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
            await draining

    run(scenario())


def test_sigterm_closes_every_client_with_1001_and_exits_0(engine_name: str) -> None:
    async def scenario() -> None:
        proc, port = await start(engine_name)
        draining = asyncio.create_task(drain(proc))
        queries = [
            "type=tui&format=json",
            "type=web",
            "type=tui&diff=json-patch",
            "format=json&channels=orders,events",
            "interval_ms=50",
        ]
        clients: list[ClientConnection] = [
            await connect(f"ws://127.0.0.1:{port}/ws?{q}") for q in queries * 2
        ]
        readers = [asyncio.create_task(read_all(ws)) for ws in clients]
        stuck = small_socket(port)  # and one that never reads: it must not hold the exit up
        stuck.send(
            b"GET /ws?type=tui&format=json&interval_ms=20 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await asyncio.sleep(1.0)  # its buffers fill up
        proc.send_signal(signal.SIGTERM)
        # the stuck reader does not hold the exit up: it happens (the timeouts only bound how
        # long the test waits)
        codes = await asyncio.wait_for(asyncio.gather(*readers), 30)
        assert codes == [1001] * len(clients)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await draining
        stuck.close()

    run(scenario(), timeout=90)


def test_bad_setting_stops_the_start_naming_it() -> None:
    async def attempt(*args: str, **env: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *command(),
            "serve",
            *args,
            env=child_env(**env),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, err.decode()

    async def scenario() -> None:
        code, err = await attempt("--port", "http")
        assert code == 2 and "--port" in err
        code, err = await attempt(DASHBOARD_WRITE_BUFFER_HIGH="-5")
        assert code == 2 and "DASHBOARD_WRITE_BUFFER_HIGH" in err
        code, err = await attempt("--engine", "warp")
        assert code == 2 and "--engine" in err
        code, err = await attempt(DASHBOARD_PROT="1", DASHBOARD_STRICT_ENV="on")
        assert code == 2 and "DASHBOARD_PROT" in err and "DASHBOARD_PORT" in err
        code, err = await attempt(DASHBOARD_AUTH_TOKENS="change-me-to-a-long-random-token")
        assert code == 2 and "placeholder" in err

    run(scenario())


def test_start_warns_about_unknown_variables_and_open_access(engine_name: str) -> None:
    async def scenario() -> None:
        proc = await asyncio.create_subprocess_exec(
            *command(),
            "serve",
            "--port",
            "0",
            "--host",
            "0.0.0.0",
            "--engine",
            engine_name,
            env=child_env(DASHBOARD_REDIS_ULR="redis://127.0.0.1:1/0"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        warnings: list[str] = []
        try:
            async with asyncio.timeout(20):
                while True:
                    line = await proc.stderr.readline()
                    assert line, "server exited"
                    entry = orjson.loads(line)
                    if entry["level"] == "warning":
                        warnings.append(entry["msg"])
                    if len(warnings) == 2:
                        break
        finally:
            proc.send_signal(signal.SIGTERM)
            await proc.communicate()
        assert "DASHBOARD_REDIS_ULR" in warnings[0] and "DASHBOARD_REDIS_URL" in warnings[0]
        assert "0.0.0.0" in warnings[1] and "authentication off" in warnings[1]

    run(scenario())
