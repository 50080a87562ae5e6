"""The desk features of the page in headless Chromium, against a real server with the demo feed:
a symbol filter (``?symbols=``, the server's per-symbol subscription), charts drawn from
``/api/v1/history`` and growing live, sorting and search, the flash budget, the events header
after a reconnect, and the layout at 1280x720 and 1920x1080 (both sides of the book visible)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from test_browser import Env, read_recorded, wait_live
from webtools import (
    ServerProcess,
    StaticServer,
    browser_unavailable,
    chromium,
    http_get,
    wait_until,
)

_reason = browser_unavailable()
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")


@pytest.fixture(scope="module")
def desk() -> Iterator[Env]:
    server = ServerProcess(symbols=30, rate=60.0)
    server.start()
    static = None if server.serves_dashboard() else StaticServer()
    try:
        with chromium(1280, 720) as page:
            e = Env(server, static, page)
            page.on("pageerror", lambda exc: e.errors.append(str(exc)))
            yield e
            for rec in e.recorders.values():
                rec.close()
    finally:
        if static is not None:
            static.close()
        server.stop()


def history(server: ServerProcess, query: str) -> tuple[int, Any]:
    status, _, body = http_get(f"{server.http_url}/api/v1/history?{query}")
    return status, orjson.loads(body)


def test_symbol_filter_shows_only_those_symbols(desk: Env) -> None:
    symbols = "BTCUSDT,ETHUSDT"
    recorder = desk.recorder(f"type=web&format=json&symbols={symbols}")
    desk.open(format="json", symbols=symbols)
    time.sleep(1.0)
    view = read_recorded(desk.page, recorder)
    state = view["state"]
    assert set(view["tables"]["market_data"]) == {"BTCUSDT", "ETHUSDT"}
    assert {o["symbol"] for o in state["data"]["orders"].values()} <= {"BTCUSDT", "ETHUSDT"}
    assert set(state["data"]["positions"]) <= {"BTCUSDT", "ETHUSDT"}
    assert state["data"]["account"]  # not about one symbol: kept
    assert state["data"] == recorder.state_at(state["appliedSeq"])
    assert "symbols=BTCUSDT%2CETHUSDT" in desk.page.evaluate("window.dashboard.conn.connectUrl()")
    assert desk.errors == []


def test_charts_backfill_from_history_then_grow_live(desk: Env) -> None:
    # let the server record a few seconds of history first (1 s samples)
    wait_until(
        lambda: (
            len(
                history(desk.server, "type=market_data&symbol=BTCUSDT&limit=1000")[1].get(
                    "points", []
                )
            )
            >= 5
        ),
        30,
        "5 history points",
    )
    _status, body = history(desk.server, "type=market_data&symbol=BTCUSDT&limit=1000")
    recorded = len(body["points"])
    _, acct = history(desk.server, "type=account&symbol=main&limit=1000")
    desk.open(format="json", symbol="BTCUSDT")
    page = desk.page
    # right after loading, the series hold the history (live updates add one point a second)
    page.wait_for_function(
        f"window.dashboard.charts.length('market_data', 'BTCUSDT') >= {recorded}", timeout=5000
    )
    page.wait_for_function(
        f"window.dashboard.charts.length('account', 'main') >= {len(acct['points'])}",
        timeout=5000,
    )
    page.wait_for_function(
        "(() => { const s = document.querySelector('#t-market tr[data-id=BTCUSDT] svg.spark');"
        f" return s && Number(s.dataset.points) >= {recorded}; }})()",
        timeout=5000,
    )
    # the charts redraw on a timer (charts.js: 250 ms, then a frame) after their series grow
    for box, points in (("chart-price", recorded), ("chart-equity", len(acct["points"]))):
        page.wait_for_function(
            f"(() => {{ const s = document.querySelector('#{box} svg');"
            f" return s && Number(s.dataset.points) >= {points}; }})()",
            timeout=5000,
        )
    drawn = page.evaluate(
        """() => ({
          price: Number(document.querySelector('#chart-price svg').dataset.points),
          equity: Number(document.querySelector('#chart-equity svg').dataset.points),
          path: document.querySelector('#chart-price path.line').getAttribute('d'),
          sparks: document.querySelectorAll('#t-market svg.spark path[d^=M]').length,
          rows: document.querySelectorAll('#t-market tbody tr').length,
          requests: window.dashboard.charts.requests,
          failures: window.dashboard.charts.failures,
        })"""
    )
    assert drawn["price"] >= recorded and drawn["equity"] >= len(acct["points"])
    assert drawn["path"].count("L") >= recorded - 1
    assert drawn["sparks"] == drawn["rows"]
    assert drawn["requests"] >= 2 and drawn["failures"] == 0
    before = drawn["price"]
    page.wait_for_function(
        f"Number(document.querySelector('#chart-price svg').dataset.points) > {before}",
        timeout=10_000,
    )  # grows live, one point per history interval
    assert desk.errors == []


def test_sort_search_and_flash_budget(desk: Env) -> None:
    desk.open(format="json")
    page = desk.page
    page.click("#t-market thead th:nth-child(2)")  # Last, ascending
    time.sleep(1.5)

    def last_prices() -> list[float]:
        texts = page.eval_on_selector_all(
            "#t-market tbody tr:not([hidden]) td[data-k=last_price]",
            "els => els.map(e => e.textContent)",
        )
        return [float(t.replace(",", "")) for t in texts]

    prices = last_prices()
    assert len(prices) > 10
    assert sum(a > b for a, b in itertools.pairwise(prices)) <= 2  # moves meanwhile
    page.click("#t-market thead th:nth-child(2)")  # descending
    time.sleep(1.5)
    prices = last_prices()
    assert sum(a < b for a, b in itertools.pairwise(prices)) <= 2
    assert page.evaluate("document.querySelector('#t-market thead th:nth-child(2)').className")
    page.fill("#search", "eth")
    shown = page.eval_on_selector_all(
        "#t-market tbody tr:not([hidden])", "els => els.map(e => e.dataset.id)"
    )
    assert shown and all("ETH" in s for s in shown)
    orders = page.eval_on_selector_all(
        "#t-orders tbody tr:not([hidden]) td[data-k=symbol]", "els => els.map(e => e.textContent)"
    )
    assert all("ETH" in s for s in orders)
    page.press("#search", "Enter")
    assert "ETH" in page.evaluate("window.dashboard.selected")
    page.press("#search", "Escape")
    assert page.eval_on_selector_all("#t-market tbody tr[hidden]", "els => els.length") == 0
    # the flash budget: never more than its rate (plus the burst) since the page loaded
    start = page.evaluate("performance.now()")
    time.sleep(2.0)
    budget = page.evaluate(
        "(() => { const f = window.dashboard.flashes;"
        " return {allowed: f.allowed, denied: f.denied, per: f.perSecond, burst: f.burst,"
        " now: performance.now()}; })()"
    )
    assert budget["allowed"] <= budget["per"] * budget["now"] / 1000 + budget["burst"]
    assert budget["allowed"] > 0 and budget["denied"] > 0, budget  # it did limit at 60 steps/s
    assert start > 0
    assert desk.errors == []


def test_events_header_counts_the_tape_after_a_reload(desk: Env) -> None:
    desk.open(format="json")
    time.sleep(1.0)
    desk.page.reload()  # a new connection: the tape is refilled from the server's backlog
    wait_live(desk.page)
    time.sleep(0.5)
    got = desk.page.evaluate(
        """() => ({
          header: document.getElementById('c-events').textContent,
          fills: document.querySelectorAll('#events li[data-channel=fills]').length,
          alerts: document.querySelectorAll('#events li[data-channel=alerts]').length,
        })"""
    )
    assert got["fills"] > 0
    fills, alerts = (int(part.split()[0]) for part in got["header"].split("·")[:2])
    assert (fills, alerts) == (got["fills"], got["alerts"]), got


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)], ids=["1280x720", "1920x1080"])
def test_layout_fits_the_screen(desk: Env, size: tuple[int, int]) -> None:
    width, height = size
    desk.page.set_viewport_size({"width": width, "height": height})
    desk.open(format="json")
    time.sleep(1.0)
    box = desk.page.evaluate(
        """() => {
          const r = (el) => { const b = el.getBoundingClientRect();
            return {top: b.top, bottom: b.bottom, left: b.left, right: b.right, width: b.width}; };
          const book = document.getElementById('book');
          return {
            book: r(book),
            bestAsk: r(document.querySelector('#t-asks tbody tr:last-child')),
            bestBid: r(document.querySelector('#t-bids tbody tr:first-child')),
            spread: r(document.getElementById('book-spread')),
            panels: [...document.querySelectorAll('.panel')].map(r),
            chart: r(document.querySelector('#chart-price svg')),
            equity: r(document.querySelector('#chart-equity svg')),
            scrollW: document.documentElement.scrollWidth,
          };
        }"""
    )
    book = box["book"]
    for side in ("bestAsk", "bestBid", "spread"):
        assert book["top"] <= box[side]["top"] and box[side]["bottom"] <= book["bottom"] + 1, side
    assert box["scrollW"] <= width  # nothing wider than the screen
    for panel in box["panels"]:
        assert panel["bottom"] <= height + 1 and panel["right"] <= width + 1, panel
    assert box["chart"]["width"] > 150 and box["equity"]["width"] > 150
    # several book levels a side, not ten asks and one bid
    levels = desk.page.evaluate(
        """() => {
          const b = document.getElementById('book').getBoundingClientRect();
          const inside = (id) => [...document.querySelectorAll(`#${id} tbody tr`)].filter((tr) => {
            const r = tr.getBoundingClientRect();
            return r.top >= b.top - 1 && r.bottom <= b.bottom + 1;
          }).length;
          return {asks: inside('t-asks'), bids: inside('t-bids')};
        }"""
    )
    assert levels["asks"] >= 4 and abs(levels["asks"] - levels["bids"]) <= 1, levels
    assert desk.errors == []
