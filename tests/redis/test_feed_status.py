"""The ``status`` message with a real Redis: the clients hear about a dead Redis and stale
sections within a flush or so of the server knowing, and about the recovery."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import signal
import struct
import sys
import termios
import threading
from pathlib import Path
from typing import Any

from redis_helpers import RedisProcess, clients_of, health, redis_server, wait_health, write_item
from server_helpers import run, wait_until


def states(clients: list[Any]) -> set[str | None]:
    return {(c.status or {}).get("state") for c in clients}


def test_clients_hear_that_redis_is_down_then_back(
    engine_name: str, make_redis: Any, tmp_path: Path
) -> None:
    redis: RedisProcess = make_redis(tmp_path / "redis")
    redis.start()
    write_item(redis.client(), "market_data:BTC", {"last_price": 1.0})

    async def scenario() -> None:
        async with redis_server(engine_name, redis.url) as server, clients_of(server) as clients:
            await wait_health(server, "ok")
            await wait_until(lambda: states(clients) == {"ok"}, timeout=10)
            for client in clients:
                assert client.status is not None
                assert client.status["feed"] == "generic" and client.status["stale"] == []
                assert [s["name"] for s in client.status["sources"]] == ["redis"]
            redis.kill()
            await wait_health(server, "degraded")
            await wait_until(lambda: states(clients) == {"down"}, timeout=10)
            for client in clients:
                assert client.status is not None
                (source,) = client.status["sources"]
                assert source["state"] in ("down", "stalled") and source["error"]
                assert client.connected  # the WebSocket is fine: only the feed is not
            assert (await health(server))["redis"] in ("down", "stalled")
            redis.start()
            await wait_health(server, "ok")
            await wait_until(lambda: states(clients) == {"ok"}, timeout=15)

    run(scenario(), timeout=60)


def test_stale_sections_are_named(engine_name: str, make_redis: Any, tmp_path: Path) -> None:
    redis: RedisProcess = make_redis(tmp_path / "redis")
    redis.start()
    r = redis.client()

    def stale(clients: list[Any]) -> list[list[str]]:
        return [list((c.status or {}).get("stale", ["?"])) for c in clients]

    async def scenario() -> None:
        async with (
            redis_server(
                engine_name,
                redis.url,
                stale_after_s=1.0,
                stale_sections=("orders=0",),
                sections=("market_data", "orders", "positions"),
            ) as server,
            clients_of(server) as clients,
        ):
            await wait_health(server, "ok")
            # nothing written: after a second every section but orders (never stale) is stale
            everything = [["market_data", "positions"]] * len(clients)
            await wait_until(lambda: stale(clients) == everything, timeout=10)
            assert states(clients) == {"degraded"}

            async def keep_writing() -> None:  # market data keeps coming: it is live again
                n = 0
                while True:
                    n += 1
                    write_item(r, "market_data:BTC", {"last_price": float(n)})
                    await asyncio.sleep(0.1)

            writer = asyncio.create_task(keep_writing())
            try:
                await wait_until(lambda: stale(clients) == [["positions"]] * 2, timeout=10)
                assert states(clients) == {"degraded"}
            finally:
                writer.cancel()

    run(scenario(), timeout=60)


ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def test_watch_in_a_terminal_shows_redis_down_then_back(make_redis: Any, tmp_path: Path) -> None:
    """`dashboard-server watch` in a pseudo-terminal: a red DOWN banner naming Redis while it is
    killed, gone once it is back."""
    redis: RedisProcess = make_redis(tmp_path / "redis")
    redis.start()
    write_item(redis.client(), "market_data:BTCUSDT", {"last_price": 1.0})
    chunks: list[bytes] = []

    def read_until_closed(fd: int) -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            chunks.append(chunk)

    def last_frame() -> str:
        frames = b"".join(chunks).split(b"\x1b[H")
        return ESCAPES.sub(b"", frames[-1]).decode(errors="replace") if len(frames) > 1 else ""

    async def scenario() -> None:
        async with redis_server("pure", redis.url) as server:
            await wait_health(server, "ok")
            master, slave = pty.openpty()
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
            env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "dashboard_server", "watch",
                f"127.0.0.1:{server.port}", "--duration", "60",
                stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm"},
            )  # fmt: skip
            os.close(slave)
            reader = threading.Thread(target=read_until_closed, args=(master,), daemon=True)
            reader.start()
            try:
                await wait_until(lambda: "BTCUSDT" in last_frame(), timeout=20)
                assert "DOWN" not in last_frame()
                redis.kill()
                await wait_until(lambda: " DOWN redis " in last_frame(), timeout=20)
                assert "connected" in last_frame()  # the viewer's own connection is fine
                assert b"\x1b[1;97;41m DOWN redis" in b"".join(chunks)  # white on red
                redis.start()
                await wait_until(lambda: "DOWN" not in last_frame(), timeout=20)
            finally:
                proc.send_signal(signal.SIGINT)
                await asyncio.wait_for(proc.wait(), 20)
                await asyncio.to_thread(reader.join, 10)
                os.close(master)

    run(scenario(), timeout=90)
