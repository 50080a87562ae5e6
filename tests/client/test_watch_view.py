"""The terminal viewer: render() on a known state, and run_watch() against a real server."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

from dashboard_server.client.watch import WatchStats, render, run_watch
from dashboard_server.config import Config
from dashboard_server.server.app import DashboardServer

STATE: dict[str, Any] = {
    "market_data": {
        "BTCUSDT": {
            "last_price": 67012.5,
            "bid": 67012.4,
            "ask": 67012.5,
            "change_pct_24h": 1.234,
            "volume_24h": 12345.678,
        },
        "ETHUSDT": {
            "last_price": 3499.25,
            "bid": 3499.2,
            "ask": 3499.3,
            "change_pct_24h": -0.5,
            "volume_24h": 2_230_233_036.0,
        },
    },
    "orders": {
        "101": {
            "id": "101",
            "symbol": "BTCUSDT",
            "side": "buy",
            "type": "limit",
            "price": 67000.0,
            "quantity": 0.5,
            "filled_quantity": 0.1,
            "status": "partially_filled",
        },
        "102": {
            "id": "102",
            "symbol": "ETHUSDT",
            "side": "sell",
            "type": "limit",
            "price": 3600.0,
            "quantity": 2.0,
            "filled_quantity": 2.0,
            "status": "filled",
        },
    },
    "positions": {
        "BTCUSDT": {
            "side": "long",
            "quantity": 1.5,
            "entry_price": 66000.0,
            "mark_price": 67012.5,
            "unrealized_pnl": 1518.75,
        },
    },
    "account": {
        "main": {
            "equity": 1001518.75,
            "currency": "USDT",
            "unrealized_pnl": 1518.75,
            "realized_pnl": -20.0,
            "margin": {"ratio": 0.0201},
        }
    },
    "strategies": {"momentum": {"status": "paused", "pnl": -12.5, "fills": 7, "open_orders": 1}},
}

STATS = WatchStats(
    url="ws://x/ws",
    status="connected",
    seq=41,
    version=1234,
    epoch="ep",
    messages_per_s=10.0,
    updates_per_s=9.5,
    bytes_per_s=20480.0,
    rtt_ms=1.25,
    events=[{"type": "event", "channel": "fills", "data": {"order_id": "101", "quantity": 0.1}}],
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_render_plain_text() -> None:
    text = render(STATE, STATS, 100, color=False)
    assert "\x1b" not in text
    assert "connected" in text and "seq 41" in text and "version 1234" in text
    assert "updates 9.5/s" in text and "20.5kB/s" in text and "rtt 1.2 ms" in text
    assert "equity 1,001,518.75 USDT" in text and "margin 2.0%" in text
    btc = next(line for line in text.splitlines() if line.startswith("BTCUSDT "))
    assert "67,012.50" in btc and "+1.23%" in btc and "12,345.68" in btc
    assert "-0.50%" in text and "2.23B" in text
    assert "ORDERS 1 open (2 in state)" in text
    assert "partially_filled" in text and not re.search(r"^102 ", text, re.M)  # filled: hidden
    assert "POSITIONS (1)" in text and "+1,518.75" in text and "rPnL -20.00" in text
    assert "momentum" in text and "paused" in text
    assert "fills   order_id=101 quantity=0.1" in text


def test_render_colours_and_width() -> None:
    text = render(STATE, STATS, 100, color=True)
    assert "\x1b[32m  +1.23%" in text and "\x1b[31m  -0.50%" in text  # up green, down red
    assert "\x1b[32mconnected" in text and "\x1b[33mpaused" in text
    assert ANSI.sub("", text) == render(STATE, STATS, 100, color=False)
    narrow = render(STATE, STATS, 60, color=True)
    assert all(len(ANSI.sub("", line)) <= 60 for line in narrow.splitlines())
    assert "chg%" not in narrow  # columns that do not fit are dropped whole


def test_render_empty_state_and_status() -> None:
    text = render({}, WatchStats(status="reconnecting"), 80, color=False)
    assert "reconnecting" in text and "seq -" in text and "ORDERS 0 open" in text


def test_run_watch_against_a_server() -> None:
    async def scenario() -> str:
        config = Config().replace(port=0, engine="pure", demo=True, demo_symbols=5, demo_seed=1)
        server = DashboardServer(config)
        await server.start()
        try:
            out = io.StringIO()
            await run_watch(f"ws://127.0.0.1:{server.port}/ws", duration=0.6, refresh=0.2, out=out)
            return out.getvalue()
        finally:
            await server.shutdown()

    text = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert "\x1b" not in text  # not a terminal: no clearing, no colours
    assert text.count("dashboard-server") >= 2
    assert "BTCUSDT" in text and "connected" in text and "account main" in text


def test_watch_command_in_a_pseudo_terminal() -> None:
    """`dashboard-server watch` run as a person runs it: on a terminal (a pty), it redraws the
    screen with colours and shows the live market."""
    import os
    import pty
    import sys

    async def scenario() -> bytes:
        config = Config().replace(port=0, engine="pure", demo=True, demo_symbols=5, demo_seed=1)
        server = DashboardServer(config)
        await server.start()
        master, slave = pty.openpty()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "dashboard_server", "watch",
                "--url", f"ws://127.0.0.1:{server.port}/ws", "--duration", "1.5",
                stdin=slave, stdout=slave, stderr=slave,
                env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"},
            )  # fmt: skip
            os.close(slave)
            reading = asyncio.create_task(asyncio.to_thread(read_until_closed, master))
            assert await asyncio.wait_for(proc.wait(), 20) == 0
            chunks = await asyncio.wait_for(reading, 10)
            return b"".join(chunks)
        finally:
            os.close(master)
            await server.shutdown()

    def read_until_closed(fd: int) -> list[bytes]:
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the other side of the terminal is closed and drained
                return chunks
            if not chunk:
                return chunks
            chunks.append(chunk)

    screen = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert b"\x1b[" in screen  # a terminal: the viewer clears and colours
    assert b"BTCUSDT" in screen and b"connected" in screen
