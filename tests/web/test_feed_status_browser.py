"""What the page says about the server's feed, in headless Chromium against real processes:

- the demo feed: a DEMO badge, and LIVE;
- Redis killed: FEED DOWN naming Redis and its error, every panel dimmed, while the WebSocket
  itself stays connected; Redis restarted: LIVE again, nothing dimmed;
- a section without updates for longer than its staleness limit: its panel (only) dimmed and
  tagged, a STALE banner.

Skipped, with the reason, when Playwright, Chromium or redis-server is missing.
"""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webtools import ServerProcess, browser_unavailable, chromium, page_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "redis"))
from redis_helpers import RedisProcess, write_item

_reason = browser_unavailable() or (
    None if shutil.which("redis-server") else "redis-server is not installed (make system-deps)"
)
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")

FAST_REDIS = [
    "--redis-health-interval-s", "0.2", "--redis-health-timeout-s", "0.5",
    "--redis-backoff-initial-s", "0.05", "--redis-backoff-max-s", "0.3",
]  # fmt: skip

VIEW = "() => window.dashboard && window.dashboard.renderedSeq !== null && window.dashboard.view"


def view_is(page: Any, state: str, timeout: float = 15.0) -> None:
    page.wait_for_function(f"({VIEW})() === {state!r}", timeout=timeout * 1000)
    assert page.evaluate("document.getElementById('status').dataset.state") == state


DIMMED = """() => Object.fromEntries([...document.querySelectorAll('.panel')].map((p) =>
  [p.classList[1], Number(getComputedStyle(p).opacity) < 0.9]))"""


def wait_dimmed(page: Any, expected: dict[str, bool] | bool, timeout: float = 5.0) -> None:
    """Wait until the panels are dimmed as ``expected`` (all or none, or per panel class), once
    their opacity transition is over."""
    check = (
        f"Object.values(d).every((v) => v === {str(expected).lower()})"
        if isinstance(expected, bool)
        else " && ".join(f"d[{k!r}] === {str(v).lower()}" for k, v in expected.items())
    )
    try:
        page.wait_for_function(f"(() => {{ const d = ({DIMMED})(); return {check}; }})()",
                               timeout=timeout * 1000)  # fmt: skip
    except Exception as exc:
        raise AssertionError(
            f"panels dimmed: {page.evaluate(DIMMED)}, expected {expected}"
        ) from exc


class Backend:
    """Writes every section once, then keeps changing market data (a thread)."""

    def __init__(self, redis: RedisProcess) -> None:
        self.redis = redis
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def seed(self) -> None:
        r = self.redis.client()
        write_item(r, "market_data:BTCUSDT", {"symbol": "BTCUSDT", "last_price": 1.0})
        write_item(r, "orderbook:BTCUSDT", {"bids": [[1.0, 1.0]], "asks": [[1.1, 1.0]]})
        write_item(r, "orders:1", {"id": "1", "symbol": "BTCUSDT", "status": "new"})
        write_item(r, "positions:BTCUSDT", {"symbol": "BTCUSDT", "quantity": 1.0})
        write_item(r, "account:main", {"equity": 1000.0, "balances": {}})
        write_item(r, "strategies:momentum", {"name": "momentum", "pnl": 1.0})
        r.close()

    def run(self) -> None:
        n = 0
        while not self.stop.wait(0.1):
            n += 1
            try:
                r = self.redis.client()
                write_item(r, "market_data:BTCUSDT", {"symbol": "BTCUSDT", "last_price": 1.0 + n})
                r.close()
            except Exception:  # Redis is down on purpose: try again
                pass


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = RedisProcess(binary, tmp_path / "redis", persistent=True)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_demo_feed_shows_a_demo_badge() -> None:
    server = ServerProcess(symbols=5, rate=20.0)
    server.start()
    try:
        with chromium() as page:
            page.goto(page_url(server, None))
            view_is(page, "live")
            page.wait_for_function("!document.getElementById('demo-badge').hidden")
            assert "DEMO" in page.locator("#demo-badge").inner_text()
            assert page.evaluate("window.dashboard.serverStatus.feed") == "demo"
            assert "DEMO" in page.title()
            wait_dimmed(page, False)
    finally:
        server.stop()


def test_redis_killed_then_restarted(redis: RedisProcess) -> None:
    backend = Backend(redis)
    backend.seed()
    backend.thread.start()
    server = ServerProcess(extra=["--redis-url", redis.url, *FAST_REDIS])
    server.start()
    try:
        with chromium() as page:
            page.goto(page_url(server, None, format="json"))
            view_is(page, "live")
            assert page.locator("#demo-badge").is_hidden()
            assert page.locator("#banner").is_hidden()

            redis.kill()
            view_is(page, "down")
            banner = page.locator("#banner").inner_text()
            assert "FEED DOWN" in banner and "redis" in banner
            assert page.evaluate("window.dashboard.conn.status") == "open"  # only the feed is
            wait_dimmed(page, True)
            assert page.locator("#status-text").inner_text() == "FEED DOWN"

            redis.start()
            view_is(page, "live", timeout=20)
            assert page.locator("#banner").is_hidden()
            wait_dimmed(page, False)
    finally:
        backend.stop.set()
        server.stop()


def test_stale_section_is_dimmed_on_its_own(redis: RedisProcess) -> None:
    backend = Backend(redis)
    backend.seed()
    backend.thread.start()
    server = ServerProcess(
        extra=[
            "--redis-url", redis.url, *FAST_REDIS,
            "--stale-after-s", "0", "--stale-sections", "positions=3",
        ]
    )  # fmt: skip
    server.start()
    try:
        with chromium() as page:
            page.goto(page_url(server, None, format="json"))
            view_is(page, "degraded")  # positions: written once, over 3 s ago
            page.wait_for_function("document.querySelector('.p-positions.stale-data')")
            banner = page.locator("#banner").inner_text()
            assert "STALE" in banner and "positions" in banner
            wait_dimmed(page, {"p-positions": True, "p-market": False, "p-orders": False})

            r = redis.client()
            write_item(r, "positions:BTCUSDT", {"symbol": "BTCUSDT", "quantity": 2.0})
            r.close()
            view_is(page, "live")  # an update: no longer stale (for 3 s)
            wait_dimmed(page, {"p-positions": False})
    finally:
        backend.stop.set()
        server.stop()
