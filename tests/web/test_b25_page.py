"""The page shows the original system's desk (the ``b25`` preset), in headless Chromium against
real processes: a real redis-server holding the backends' keys (SET-only positions, balances and
orders with decimal strings, SET + PUBLISH market data, a published price-keyed book) and a local
HTTP server answering as the account monitor and the strategy engine do.

Every panel shows values: market data with its bid/ask from ``bid_price``/``ask_price``, the book
from the price-keyed sides, the order with its b25 state, the position LONG from its signed
quantity and marked from market data, balances as numbers, the P&L, the strategies' own fields,
and the sections the page has no layout for (``strategy_engine``) rendered from their fields.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import nats
import pytest
from webtools import ServerProcess, browser_unavailable, chromium, free_port, page_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "redis"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sources"))
from nats_helpers import NatsProcess, nats_server_binary
from redis_helpers import RedisProcess

_reason = (
    browser_unavailable()
    or (
        None if shutil.which("redis-server") else "redis-server is not installed (make system-deps)"
    )
    or (None if nats_server_binary() else "nats-server is not installed (make system-deps)")
)
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")

SAMPLES = Path(__file__).resolve().parents[2] / "benches" / "payloads"
ORDER_ID = "3f2b6c1e-8a4d-4e2b-9c51-7d0e4a1b2c3d"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


class BackendHttp:
    """The account monitor's and the strategy engine's HTTP APIs, from the samples."""

    ROUTES: ClassVar[dict[str, str]] = {
        "/api/account": "http-account-account.json",
        "/api/service-info": "http-strategy-service-info.json",
        "/status": "http-strategy-status.json",
    }

    def __init__(self) -> None:
        routes = {path: (SAMPLES / f).read_bytes() for path, f in self.ROUTES.items()}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = routes.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body or b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> BackendHttp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = RedisProcess(binary, tmp_path / "redis")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsProcess]:
    binary = nats_server_binary()
    assert binary is not None
    proc = NatsProcess(binary, tmp_path / "nats")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def publish_nats(url: str) -> None:
    """risk.metrics, a risk alert and a fill, as the risk manager and the desk publish them."""
    client = await nats.connect(url)
    try:
        await client.publish("risk.metrics", (SAMPLES / "nats-risk.metrics.json").read_bytes())
        alert = (SAMPLES / "nats-risk.alerts.critical.json").read_bytes()
        await client.publish("risk.alerts.critical", alert)
        await client.publish("trading.fills", (SAMPLES / "nats-trading.fills.json").read_bytes())
        await client.flush()
    finally:
        await client.close()


def seed_redis(redis: RedisProcess) -> None:
    r = redis.client()
    r.set("market_data:BTCUSDT", json.dumps(sample("redis-SET-market_data.json")), ex=300)
    r.set(f"order:{ORDER_ID}", json.dumps(sample("redis-SET-order.json")), ex=86400)
    r.set("position:BTCUSDT", json.dumps(sample("redis-SET-position.json")), ex=86400)
    r.set("balance:USDT", json.dumps(sample("redis-SET-balance.json")), ex=86400)
    r.close()


def publish_book(redis: RedisProcess) -> None:
    r = redis.client()
    r.publish("orderbook:BTCUSDT", json.dumps(sample("redis-PUBLISH-orderbook.json")))
    r.close()


CELLS = "(sel) => [...document.querySelectorAll(sel + ' tbody td')].map((td) => td.innerText)"
DASH = "\u2013"  # what the page shows for a missing value
PANEL_TEXT = (
    """(sel) => [...document.querySelectorAll(sel)].map((el) => el.innerText).join(' | ')"""
)


def test_every_panel_of_the_original_desk_shows_values(
    redis: RedisProcess, nats_server: NatsProcess
) -> None:
    seed_redis(redis)
    with BackendHttp() as http_api:
        server = ServerProcess(
            extra=[
                "--sources", "b25", "--redis-url", redis.url, "--nats-url", nats_server.url,
                "--account-monitor-url", http_api.url, "--strategy-engine-url", http_api.url,
            ]
        )  # fmt: skip
        server.start()
        try:
            with chromium(1600, 1000) as page:
                page.goto(page_url(server, None, format="json"))
                page.wait_for_function(
                    "window.dashboard && window.dashboard.renderedSeq !== null", timeout=15_000
                )
                page.wait_for_function(  # the HTTP sources have answered
                    "() => { const d = window.dashboard.conn.state.data;"
                    " return d && d.strategy_engine && d.strategy_engine.status && d.pnl"
                    " && d.pnl.account && Object.keys(d.strategies || {}).length === 3; }",
                    timeout=20_000,
                )
                page.wait_for_function(  # NATS is subscribed: its source is live
                    "() => window.dashboard.serverStatus && window.dashboard.serverStatus"
                    ".sources.some((s) => s.name === 'nats' && s.state === 'ok')",
                    timeout=20_000,
                )
                # playwright's sync API holds this thread's event loop: publish from another
                publisher = threading.Thread(
                    target=asyncio.run, args=(publish_nats(nats_server.url),)
                )
                publisher.start()
                publisher.join(15)
                publish_book(redis)
                page.wait_for_function(
                    "() => document.querySelector('[data-section=risk]') !== null"
                    " && document.querySelectorAll('#events li').length >= 2",
                    timeout=15_000,
                )
                page.wait_for_function(
                    "() => document.querySelector('#t-bids tbody tr td').innerText !== ''",
                    timeout=15_000,
                )
                market = page.evaluate(PANEL_TEXT, "#t-market tbody tr")
                assert "BTCUSDT" in market and "67,421.35" in market
                assert "67,421.30" in market and "67,421.40" in market  # bid_price / ask_price
                book = page.evaluate(PANEL_TEXT, "#t-bids tbody tr, #t-asks tbody tr")
                assert "67,421.30" in book and "67,421.40" in book  # best bid, best ask
                orders = page.evaluate(PANEL_TEXT, "#t-orders tbody tr")
                assert "submitted" in orders and "BUY" in orders and "67,400" in orders
                assert "1 working" in page.locator("#c-orders").inner_text().lower()
                positions = page.evaluate(PANEL_TEXT, "#t-positions tbody tr")
                assert "LONG" in positions and "67,421.35" in positions  # marked from market
                balances = page.evaluate(PANEL_TEXT, "#t-balances tbody tr")
                assert "USDT" in balances and "14,873.21" in balances
                account = page.evaluate(PANEL_TEXT, "#acct-totals dd")
                assert "+12.30" in account and "+0.37" in account  # realized / unrealized
                strategies = page.locator(".p-strategies").inner_text().lower()
                assert "market_making" in strategies and "spread" in strategies
                extra = page.locator("[data-section=strategy_engine]").inner_text().lower()
                assert "simulation" in extra and "active_strategies" in extra
                risk = page.locator("[data-section=risk]").inner_text().lower()
                assert "margin_ratio" in risk and "100,000" in risk  # total_equity
                tape = page.locator("#events").inner_text()
                assert "CRIT" in tape and "Min Margin Ratio" in tape  # the risk alert
                assert "FILL" in tape and "BUY" in tape and "67,400" in tape
                # no panel that has data is a row of dashes
                for sel in ("#t-market", "#t-orders", "#t-positions", "#t-balances"):
                    cells = page.evaluate(CELLS, sel)
                    filled = [c for c in cells if c.strip() not in ("", DASH)]
                    assert len(filled) >= len(cells) / 2, (sel, cells)
        finally:
            server.stop()
