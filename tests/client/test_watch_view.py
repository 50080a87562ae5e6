"""The terminal viewer: render() on a known state, and run_watch() against a real server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from dashboard_server.client.watch import WatchStats, render, run_watch, tier_interval, watch_url
from dashboard_server.config import Config
from dashboard_server.core.sources import load_preset, parse_sources
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


ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def set_size(fd: int, rows: int, columns: int) -> None:
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def frames(screen: bytes) -> list[list[str]]:
    """The visible lines of every frame the viewer drew (each starts by homing the cursor)."""
    return [
        ESCAPES.sub(b"", chunk).decode().replace("\r", "").split("\n")
        for chunk in screen.split(b"\x1b[H")[1:]
        if ESCAPES.sub(b"", chunk).strip()
    ]


def test_watch_command_in_a_pseudo_terminal() -> None:
    """`dashboard-server watch` run as a person runs it, with the dashboard page's http:// URL,
    on an 80x24 terminal (a pty) that is then resized to 160x48: every frame fits the terminal
    it was drawn for, with colours, and the viewer uses the new size once told (SIGWINCH)."""
    import os
    import pty
    import signal
    import sys
    import threading

    chunks: list[bytes] = []

    def read_until_closed(fd: int) -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the other side of the terminal is closed and drained
                return
            if not chunk:
                return
            chunks.append(chunk)

    async def scenario() -> bytes:
        config = Config().replace(port=0, engine="pure", demo=True, demo_symbols=20, demo_seed=1)
        server = DashboardServer(config)
        await server.start()
        master, slave = pty.openpty()
        set_size(master, 24, 80)
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "dashboard_server", "watch",
                f"http://127.0.0.1:{server.port}/", "--duration", "60",
                stdin=slave, stdout=slave, stderr=slave,
                env={**env, "TERM": "xterm-256color"},
            )  # fmt: skip
            os.close(slave)
            reader = threading.Thread(target=read_until_closed, args=(master,), daemon=True)
            reader.start()

            async def until(predicate: Any) -> None:
                while not predicate():
                    assert proc.returncode is None, b"".join(chunks)[-2000:]
                    await asyncio.sleep(0.05)

            drawn = lambda: b"".join(chunks).count(b"\x1b[H")  # noqa: E731
            await asyncio.wait_for(until(lambda: drawn() >= 3), 20)
            set_size(master, 48, 160)
            proc.send_signal(signal.SIGWINCH)
            before = drawn()
            await asyncio.wait_for(until(lambda: drawn() >= before + 3), 20)
            proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(proc.wait(), 20) == 0
            await asyncio.to_thread(reader.join, 10)
            return b"".join(chunks)
        finally:
            os.close(master)
            await server.shutdown()

    screen = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert b"\x1b[32m" in screen  # a terminal: colours
    assert any(lines[0].startswith(" DEMO ") for lines in frames(screen))  # the demo feed says so
    assert screen.startswith(b"\x1b[?1049h") and b"\x1b[?1049l" in screen  # alternate screen
    drawn = frames(screen)
    assert len(drawn) >= 6
    for lines in drawn:
        assert len(lines) <= 48 and all(len(line) <= 160 for line in lines)
    for lines in drawn[:3]:  # drawn before the resize
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
        assert "dashboard-server ws://127.0.0.1:" in lines[0] and "/ws" in lines[0]
    assert any(line.startswith("BTCUSDT") for line in drawn[2])
    last = drawn[-1]
    assert "connected" in last[0] and 24 < len(last) <= 48  # the bigger screen is used


def big_state() -> dict[str, Any]:
    """A desk's worth of state: more rows than any terminal has."""
    markets = {
        f"SYM{i:02d}USDT": {
            "last_price": 100.0 + i,
            "bid": 99.5 + i,
            "ask": 100.5 + i,
            "change_pct_24h": i - 10.0,
            "volume_24h": 1e6 * i,
        }
        for i in range(20)
    }
    orders = {
        str(i): {
            "id": str(i),
            "symbol": "SYM01USDT",
            "side": "buy" if i % 2 else "sell",
            "type": "limit",
            "price": 101.0,
            "quantity": 1.0,
            "filled_quantity": 0.0,
            "status": "new",
        }
        for i in range(30)
    }
    positions = {
        f"SYM{i:02d}USDT": {
            "side": "long",
            "quantity": 1.0,
            "entry_price": 100.0,
            "mark_price": 101.0,
            "unrealized_pnl": 1.0,
        }
        for i in range(15)
    }
    strategies = {f"strat{i}": {"status": "running", "pnl": 1.0} for i in range(8)}
    return {**STATE, "market_data": markets, "orders": orders, "positions": positions} | {
        "strategies": strategies
    }


def visible(text: str) -> list[str]:
    return ANSI.sub("", text).rstrip("\n").split("\n")


@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 48), (100, 12), (200, 70)])
def test_render_fits_the_terminal(width: int, height: int) -> None:
    stats = WatchStats(**{**STATS.__dict__, "events": STATS.events * 5})
    for colour in (False, True):
        lines = visible(render(big_state(), stats, width, height, color=colour))
        assert len(lines) <= height, len(lines)
        assert all(len(line) <= width for line in lines)
        text = "\n".join(lines)
        # the header, the connection and the market always show
        assert lines[0].startswith("dashboard-server") and "connected" in lines[0]
        assert "seq 41" in text and "account main" in text and "MARKET" in text
        assert re.search(r"^SYM00USDT ", text, re.M)
        if height < 70:
            assert "more symbols" in text  # 20 symbols do not fit with everything else
        assert re.search(r"^\.\.\. \d+ more ", text, re.M)


def test_render_tables_share_the_rows() -> None:
    lines = visible(render(big_state(), STATS, 160, 48, color=False))
    text = "\n".join(lines)
    assert len(lines) == 48  # the whole screen is used
    for heading in ("POSITIONS (15)", "ORDERS 30 open", "STRATEGY", "EVENTS"):
        assert heading in text, heading
    markets = sum(1 for line in lines if line.startswith("SYM") and "%" in line)
    orders = sum(1 for line in lines if re.match(r"^\d+ +SYM01USDT", line))
    assert markets > orders >= 3  # the market first, but nobody starves
    assert re.search(r"^\.\.\. \d+ more orders$", text, re.M)


def test_render_leaves_out_whole_tables_on_a_tiny_terminal() -> None:
    lines = visible(render(big_state(), STATS, 80, 12, color=False))
    text = "\n".join(lines)
    assert len(lines) <= 12 and "MARKET" in text and "EVENTS" not in text


def test_render_aligns_decimal_points() -> None:
    state = {
        "market_data": {
            "BTCUSDT": {"last_price": 67012.5, "bid": 67012.4, "ask": 67012.6},
            "ETHUSDT": {"last_price": 3.5, "bid": 3.25, "ask": 3.75},
            "DOGEUSDT": {"last_price": 0.0123, "bid": 0.0122, "ask": 0.0124},
            "NONE": {"bid": 1.5},
        }
    }
    lines = visible(render(state, STATS, 120, color=False))
    rows = [line for line in lines if line.split(" ")[0] in state["market_data"]]
    assert len(rows) == 4 and "0.01230" in rows[2] and "e-" not in rows[2]
    for column in range(1, 4):  # last, bid, ask
        dots = set()
        for row in rows:
            start = 13 + (column - 1) * 14
            cell = row[start : start + 13]
            if "." in cell:
                dots.add(cell.index("."))
        assert len(dots) == 1, (column, rows)


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("ws://h:1/ws", "ws://h:1/ws"),
        ("wss://h/feed/ws?x=1", "wss://h/feed/ws?x=1"),
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/ws"),
        ("http://127.0.0.1:8080/", "ws://127.0.0.1:8080/ws"),
        ("https://desk.example.com/dash/index.html", "wss://desk.example.com/dash/ws"),
        ("https://desk.example.com/dash/", "wss://desk.example.com/dash/ws"),
        ("http://h/ws", "ws://h/ws"),
        ("127.0.0.1:8080", "ws://127.0.0.1:8080/ws"),
        ("ws://h:1", "ws://h:1/ws"),
    ],
)
def test_watch_url(given: str, url: str) -> None:
    assert watch_url(given) == url


@pytest.mark.parametrize("bad", ["redis://h:6379", "ftp://h/", "http://", "://x"])
def test_watch_url_says_what_it_wants(bad: str) -> None:
    with pytest.raises(ValueError, match="expected the server's address"):
        watch_url(bad)


def test_redraw_interval_follows_the_tier() -> None:
    assert tier_interval("tui", None) == 0.1
    assert tier_interval("web", None) == 0.25
    assert tier_interval("web", 40) == 0.04


def test_watch_subscribes_with_its_interval() -> None:
    async def scenario() -> None:
        config = Config().replace(port=0, engine="pure", demo=True, demo_symbols=3, demo_seed=1)
        server = DashboardServer(config)
        await server.start()
        try:
            watching = asyncio.create_task(
                run_watch(f"127.0.0.1:{server.port}", interval_ms=40, out=io.StringIO())
            )
            while 50 not in server.hub.intervals():  # 40 ms, rounded to the 50 ms step
                assert not watching.done()
                await asyncio.sleep(0.02)
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        finally:
            await server.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_watch_command_rejects_what_is_not_a_server_address() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "dashboard_server", "watch", "redis://127.0.0.1:6379"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "expected the server's address" in result.stderr and "Traceback" not in result.stderr


def test_watch_command_says_when_a_token_is_needed() -> None:
    import sys

    async def scenario() -> tuple[int | None, str]:
        config = Config().replace(port=0, engine="pure", demo=False, auth_tokens=("t" * 20,))
        server = DashboardServer(config)
        await server.start()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "dashboard_server", "watch",
                f"http://127.0.0.1:{server.port}/", "--duration", "5",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                env={k: v for k, v in __import__("os").environ.items() if k != "DASHBOARD_TOKEN"},
            )  # fmt: skip
            _, err = await proc.communicate()
            return proc.returncode, err.decode()
        finally:
            await server.shutdown()

    code, err = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert code == 1 and "HTTP 401" in err and "--token" in err and "Traceback" not in err


def status(state: str, stale: list[str] | None = None, feed: str = "redis") -> dict[str, Any]:
    source = {"name": feed, "state": "ok" if state == "ok" else "down", "error": None}
    if state != "ok":
        source["error"] = "ConnectionError: refused"
    return {
        "type": "status",
        "feed": feed,
        "state": state,
        "sources": [source],
        "stale": stale or [],
    }


def test_render_demo_badge_and_feed_banners() -> None:
    demo = render(STATE, WatchStats(**{**STATS.__dict__, "feed": status("ok", feed="demo")}), 100)
    assert ANSI.sub("", demo).startswith(" DEMO  dashboard-server")
    fine = render(STATE, WatchStats(**{**STATS.__dict__, "feed": status("ok")}), 100, color=False)
    assert "DEMO" not in fine and "DOWN" not in fine and "STALE" not in fine
    down = render(STATE, WatchStats(**{**STATS.__dict__, "feed": status("down")}), 100, 24)
    banner = ANSI.sub("", down).splitlines()[3]
    assert banner.startswith(" DOWN redis down: ConnectionError: refused")
    assert "\x1b[1;97;41m DOWN" in down  # white on red
    stale = WatchStats(**{**STATS.__dict__, "feed": status("degraded", ["market_data"])})
    text = render(STATE, stale, 100, 24)
    assert "stale: market_data" in ANSI.sub("", text)
    btc = next(line for line in text.splitlines() if "BTCUSDT" in line and "%" in line)
    assert btc.startswith("\x1b[2mBTCUSDT")  # the stale section's rows are dimmed
    pos = next(line for line in text.splitlines() if line.startswith("BTCUSDT") or "long" in line)
    assert "\x1b[2m" not in pos  # positions are not stale
    only_stale = {**status("ok"), "stale": ["orders"]}
    text = render(STATE, WatchStats(**{**STATS.__dict__, "feed": only_stale}), 100, color=False)
    assert " STALE orders " in text


def test_render_says_disconnected_over_an_old_status() -> None:
    stats = WatchStats(**{**STATS.__dict__, "status": "reconnecting", "feed": status("ok")})
    text = render(STATE, stats, 100, color=False)
    assert "DISCONNECTED" in text and "last received" in text


PAYLOADS = Path(__file__).resolve().parents[2] / "benches" / "payloads"


def b25_state() -> dict[str, Any]:
    """The original system's sample payloads mapped by the b25 preset, as a client holds them."""
    sections, raw = load_preset("b25")
    sources = {s.name: s for s in parse_sources(raw, sections)}
    state: dict[str, Any] = {s: {} for s in sections}
    feeds = [
        ("market_data", "BTCUSDT", "redis-SET-market_data.json"),
        ("orderbook", "BTCUSDT", "redis-PUBLISH-orderbook.json"),
        ("orders", "3f2b6c1e", "redis-SET-order.json"),
        ("positions", "BTCUSDT", "redis-SET-position.json"),
        ("balances", "USDT", "redis-SET-balance.json"),
        ("strategies", "/api/service-info", "http-strategy-service-info.json"),
        ("strategy_status", "/status", "http-strategy-status.json"),
        ("risk_metrics", "risk.metrics", "nats-risk.metrics.json"),
    ]
    for name, key, sample in feeds:
        for out in sources[name].outputs:
            for op in out.apply(key, json.loads((PAYLOADS / sample).read_text())):
                _, section, ident = op.path.split("/", 2)
                state[section][ident] = op.value
    return state


def test_the_original_systems_sections_show_their_values() -> None:
    screen = render(b25_state(), WatchStats(), width=160, height=None, color=False)
    assert "67,421.35" in screen  # market data: last; bid and ask from bid_price/ask_price
    assert "67,421.30" in screen and "67,421.40" in screen
    position = next(line for line in screen.splitlines() if line.startswith("BTCUSDT      long"))
    assert "67,421.35" in position  # the mark from market data: current_price is "0"
    assert "submitted" in screen  # the order's b25 state, counted as working
    assert "ORDERS 1 open" in screen
    assert "BALANCES (1)" in screen and "14,873.21" in screen
    assert "mode simulation" in screen and "active_strategies 3" in screen
    assert "margin_ratio 10" in screen and "total_equity 100,000" in screen
    assert "STRATEGIES (3)" in screen and "market_making" in screen


def test_an_unknown_schema_is_rendered_from_its_fields() -> None:
    state = {
        "fills_by_desk": {
            "a": {"price": 101.5, "qty": 3, "pnl": -2.25},
            "b": {"price": 99.0, "qty": 1, "pnl": 4.0},
        }
    }
    screen = render(state, WatchStats(), width=120, height=None, color=False)
    rows = [line for line in screen.splitlines() if line.startswith(("a ", "b "))]
    assert len(rows) == 2
    assert "101.50" in rows[0] and "-2.25" in rows[0] and "3" in rows[0]
    assert "price" in screen and "qty" in screen and "pnl" in screen
