"""The dashboard page in headless Chromium against a real server process with the demo feed.

- what the page holds and shows equals the server's document at the same seq (a recording
  client in the page's group gives the document at every seq), in JSON and in MessagePack with
  json-patch updates;
- an order that the feed removes disappears from the page, and new orders appear;
- the server is killed: the page says it is disconnected; restarted: the page recovers (new epoch)
  and matches the new server's document again;
- a server that refuses the handshake with 401: the page says so and asks for a token, which it
  then sends.

Skipped, with the reason, only when Playwright or a Chromium executable is missing.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from webtools import (
    Recorder,
    ServerProcess,
    StaticServer,
    browser_unavailable,
    chromium,
    page_url,
    wait_until,
)

_reason = browser_unavailable()
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")

NOTHING = "\N{EN DASH}"
"""What the page shows for a missing value."""

TABLES = {
    "market_data": "t-market",
    "orders": "t-orders",
    "positions": "t-positions",
    "strategies": "t-strategies",
}

# Everything the page shows, read in one synchronous evaluation (so state and DOM are consistent).
READ_PAGE = """
() => {
  const d = window.dashboard;
  const cells = (root) => {
    const out = {};
    for (const el of root.querySelectorAll("[data-k]")) {
      out[el.dataset.k] = [el.textContent, el.dataset.scale || null];
    }
    return out;
  };
  const rows = (tableId) => {
    const out = {};
    for (const tr of document.querySelectorAll(`#${tableId} tbody tr`)) {
      out[tr.dataset.id] = cells(tr);
    }
    return out;
  };
  const tables = {};
  for (const [section, id] of Object.entries(TABLES)) tables[section] = rows(id);
  const levels = (id) => [...document.querySelectorAll(`#${id} tbody tr`)]
    .filter((tr) => tr.dataset.level !== "")
    .map((tr) => [Number(tr.dataset.level), tr.children[0].textContent, tr.children[1].textContent])
    .sort((a, b) => a[0] - b[0]);
  return {
    status: document.getElementById("status").dataset.state,
    renderedSeq: d.renderedSeq,
    state: d.snapshot(),
    tables,
    account: cells(document.getElementById("acct-totals")),
    kpis: cells(document.getElementById("kpis")),
    accountId: document.getElementById("acct-id").textContent,
    balances: rows("t-balances"),
    book: { symbol: d.selected, bids: levels("t-bids"), asks: levels("t-asks") },
  };
}
""".replace("TABLES", repr(TABLES).replace("'", '"'))


@dataclass
class Env:
    server: ServerProcess
    static: StaticServer | None
    page: Any
    recorders: dict[str, Recorder] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def recorder(self, query: str) -> Recorder:
        rec = self.recorders.get(query)
        if rec is None or rec.error is not None:
            rec = self.recorders[query] = Recorder(self.server.ws_url, query)
        return rec

    def open(self, **params: str) -> None:
        self.page.goto(page_url(self.server, self.static, backoff_max_ms="1500", **params))
        wait_live(self.page)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    server = ServerProcess(symbols=30, rate=60.0)
    server.start()
    static = None if server.serves_dashboard() else StaticServer()
    try:
        with chromium() as page:
            e = Env(server, static, page)
            page.on("pageerror", lambda exc: e.errors.append(str(exc)))
            yield e
            for rec in e.recorders.values():
                rec.close()
    finally:
        if static is not None:
            static.close()
        server.stop()


def wait_live(page: Any, timeout: float = 15.0) -> None:
    page.wait_for_function(
        "window.dashboard && window.dashboard.renderedSeq !== null"
        " && document.getElementById('status').dataset.state === 'live'",
        timeout=timeout * 1000,
    )


# --- comparing what is shown with the document -------------------------------------------------


def pick(item: Any, path: str) -> Any:
    for key in path.split("."):
        item = item.get(key) if isinstance(item, dict) else None
    return item


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_number(text: str, value: Any, scale: str | None, where: str) -> None:
    """The text shows ``value`` (times ``scale``) to the precision of its decimals."""
    if value is None:
        assert text in (NOTHING, ""), f"{where}: shows {text!r} for a missing value"
        return
    cleaned = text.replace(",", "").replace("%", "").replace("+", "").strip()
    assert cleaned not in ("", NOTHING), f"{where}: shows nothing for {value!r}"
    shown = float(cleaned)
    expected = value * (float(scale) if scale else 1.0)
    decimals = len(cleaned) - cleaned.index(".") - 1 if "." in cleaned else 0
    tolerance = 0.5 * 10.0**-decimals + 1e-9 * abs(expected)
    assert abs(shown - expected) <= tolerance, f"{where}: shows {text!r}, document has {value!r}"


def check_cells(cells: dict[str, list[Any]], item: dict[str, Any], where: str) -> int:
    """Every cell of a row against its item; returns how many numbers were compared."""
    numbers = 0
    for key, (text, scale) in cells.items():
        value = pick(item, key)
        if is_number(value):
            check_number(text, value, scale, f"{where}.{key}")
            numbers += 1
        elif isinstance(value, str):
            shown = text.lower()
            assert (
                shown == value.lower()
                or (key == "status" and value.startswith(shown))  # "partial"
                or (key.endswith("_at") and text == value[11:23])  # the time of day
            ), f"{where}.{key}: shows {text!r}, document has {value!r}"
    return numbers


def check_dom(view: dict[str, Any], doc: dict[str, Any]) -> int:
    """Every table, the account, its balances and the selected book against ``doc``."""
    numbers = 0
    for section, rows in view["tables"].items():
        items = doc.get(section, {})
        assert set(rows) == set(items), (
            f"{section}: page rows {sorted(set(rows) ^ set(items))[:10]} differ from the document"
        )
        for key, cells in rows.items():
            numbers += check_cells(cells, items[key], f"{section}/{key}")
    account_id = view["accountId"]
    account = doc["account"][account_id]
    numbers += check_cells(view["account"], account, f"account/{account_id}")
    numbers += check_cells(view["kpis"], account, f"header kpis/{account_id}")
    assert set(view["balances"]) == set(account["balances"])
    for asset, cells in view["balances"].items():
        numbers += check_cells(cells, account["balances"][asset], f"balances/{asset}")
    book = view["book"]
    levels = doc["orderbook"][book["symbol"]]
    for side in ("bids", "asks"):
        expected = levels[side][:10]
        assert len(book[side]) == len(expected), f"book {side}: {len(book[side])} levels shown"
        for (index, price, qty), (want_price, want_qty) in zip(book[side], expected, strict=True):
            check_number(price, want_price, None, f"orderbook/{book['symbol']}/{side}/{index}")
            check_number(qty, want_qty, None, f"orderbook/{book['symbol']}/{side}/{index}/qty")
            numbers += 2
    return numbers


def read(page: Any) -> dict[str, Any]:
    view: dict[str, Any] = page.evaluate(READ_PAGE)
    return view


def read_recorded(page: Any, recorder: Recorder, timeout: float = 5.0) -> dict[str, Any]:
    """What the page shows, once the recorder (which may have joined the group after the page)
    has the seqs that the page's state and DOM are at."""
    deadline = time.monotonic() + timeout
    while True:
        view = read(page)
        first = recorder.first_seq()
        seqs = (view["state"]["appliedSeq"], view["renderedSeq"])
        if first is not None and None not in seqs and min(seqs) >= first:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"the recorder (from seq {first}) never covered seqs {seqs}")
        time.sleep(0.1)


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [{"format": "json"}, {"format": "msgpack", "diff": "json-patch"}],
    ids=["json", "msgpack-json-patch"],
)
def test_page_equals_server_document(env: Env, params: dict[str, str]) -> None:
    recorder = env.recorder("type=web&" + "&".join(f"{k}={v}" for k, v in params.items()))
    env.open(**params)
    checked = 0
    for _ in range(3):
        time.sleep(0.7)
        view = read_recorded(env.page, recorder)
        assert view["status"] == "live"
        state = view["state"]
        # The page's reconstructed document at the seq of its last applied message...
        assert state["data"] == recorder.state_at(state["appliedSeq"]), (
            f"page state differs from the server's document at seq {state['appliedSeq']}"
        )
        assert state["epoch"] == env.server.health()["epoch"]
        # ...and what its DOM shows at the seq it last rendered.
        checked += check_dom(view, recorder.state_at(view["renderedSeq"]))
    assert checked > 500, f"only {checked} numbers compared"
    # Another symbol's book, chosen by clicking its row.
    symbol = list(recorder.latest()[1]["market_data"])[3]
    env.page.click(f'#t-market tr[data-id="{symbol}"]')
    env.page.wait_for_function(
        f"document.getElementById('book-symbol').textContent === '{symbol}'", timeout=2000
    )
    view = read_recorded(env.page, recorder)
    assert view["book"]["symbol"] == symbol
    check_dom(view, recorder.state_at(view["renderedSeq"]))
    assert env.errors == []


def test_dropped_connection_resumes_with_a_catch_up(env: Env) -> None:
    recorder = env.recorder("type=web&format=json")
    env.open(format="json")
    time.sleep(0.5)
    stats = env.page.evaluate("({...window.dashboard.conn.stats})")
    # Drop the socket under the page's feet: it reconnects with since=<version>&epoch=<epoch>
    # and the server answers with one catch-up update instead of a snapshot.
    url = env.page.evaluate("window.dashboard.conn.connectUrl()")
    assert "since=" in url and "epoch=" in url
    env.page.evaluate("window.dashboard.conn._ws.close()")
    env.page.wait_for_function(
        f"window.dashboard.conn.stats.reconnects > {stats['reconnects']}", timeout=5000
    )
    wait_live(env.page)
    # updates flow again (the timeout only bounds the wait)
    env.page.wait_for_function(
        f"window.dashboard.conn.stats.updates > {stats['updates']}", timeout=30_000
    )
    view = read_recorded(env.page, recorder)
    after = env.page.evaluate("({...window.dashboard.conn.stats})")
    assert after["snapshots"] == stats["snapshots"], "resumed with a snapshot, not a catch-up"
    assert view["state"]["data"] == recorder.state_at(view["state"]["appliedSeq"])
    check_dom(view, recorder.state_at(view["renderedSeq"]))
    assert env.errors == []


def test_removed_order_disappears_and_new_orders_appear(env: Env) -> None:
    recorder = env.recorder("type=web&format=json")
    env.open(format="json")
    before = set(read(env.page)["tables"]["orders"])
    assert before, "the page shows no orders"
    # Wait until the feed removes an order that the page showed, then for the page to drop it.
    removed: set[str] = set()

    def some_removed() -> bool:
        removed.update(p.rsplit("/", 1)[1] for p in recorder.removed if p.startswith("/orders/"))
        return bool(removed & before)

    wait_until(some_removed, 20.0, "the feed to remove an order shown by the page")
    gone = sorted(removed & before)[0]
    env.page.wait_for_function(
        f"!document.querySelector('#t-orders tr[data-id=\"{gone}\"]')", timeout=3000
    )

    # New orders appear (the feed may remove one before it creates one: wait for that too);
    # the document's orders at the rendered seq are exactly the rows.
    def new_order_rendered() -> bool:
        view = read_recorded(env.page, recorder)
        return bool(set(recorder.state_at(view["renderedSeq"])["orders"]) - before)

    wait_until(new_order_rendered, 20.0, "the page to show an order the feed created")
    view = read_recorded(env.page, recorder)
    doc = recorder.state_at(view["renderedSeq"])
    assert gone not in view["tables"]["orders"]
    assert set(view["tables"]["orders"]) == set(doc["orders"])
    assert set(doc["orders"]) - before, "no new order appeared"
    assert env.errors == []


def test_frozen_server_shows_stale_then_live(env: Env) -> None:
    env.open(format="json", stale_ms="1500")
    proc = env.server.proc
    assert proc is not None
    proc.send_signal(signal.SIGSTOP)  # the connection stays open, nothing arrives
    try:
        env.page.wait_for_function(
            "document.getElementById('status').dataset.state === 'stale'", timeout=5000
        )
        assert "STALE" in env.page.locator("#banner").inner_text()
        assert env.page.evaluate("document.body.classList.contains('stale')")
    finally:
        proc.send_signal(signal.SIGCONT)
    wait_live(env.page, timeout=10.0)
    assert env.page.locator("#banner").is_hidden()


def test_server_killed_then_restarted(env: Env) -> None:
    env.open(format="json")
    old_epoch = read(env.page)["state"]["epoch"]
    for rec in env.recorders.values():
        rec.close()
    env.recorders.clear()
    env.server.kill()
    env.page.wait_for_function(
        "document.getElementById('status').dataset.state === 'disconnected'", timeout=5000
    )
    banner = env.page.locator("#banner")
    assert banner.is_visible()
    assert "DISCONNECTED" in banner.inner_text()
    assert env.page.evaluate("document.body.classList.contains('stale')")
    time.sleep(1.0)  # still down: keeps retrying, still says so
    assert env.page.evaluate("document.getElementById('status').dataset.state") == "disconnected"

    env.server.start()
    new_epoch = env.server.health()["epoch"]
    assert new_epoch != old_epoch
    recorder = env.recorder("type=web&format=json")
    wait_live(env.page, timeout=15.0)
    assert env.page.locator("#banner").is_hidden()
    time.sleep(0.5)
    view = read_recorded(env.page, recorder)
    assert view["state"]["epoch"] == new_epoch
    assert view["state"]["data"] == recorder.state_at(view["state"]["appliedSeq"])
    check_dom(view, recorder.state_at(view["renderedSeq"]))
    assert env.page.evaluate("window.dashboard.conn.stats.reconnects") >= 1
    assert env.errors == []


def test_refused_by_the_real_server_says_why(env: Env) -> None:
    if env.static is not None:
        pytest.skip("the server does not serve / yet: the page's probe would be cross-origin")
    env.page.goto(page_url(env.server, env.static, interval_ms="1"))  # out of bounds: 400
    env.page.wait_for_function(
        "document.getElementById('status').dataset.state === 'refused'", timeout=10_000
    )
    text = env.page.locator("#banner").inner_text()
    assert "HTTP 400" in text and "interval_ms" in text, text
    assert env.page.locator("#token-form").is_hidden()
    attempts = env.page.evaluate("window.dashboard.conn.stats.attempts")
    time.sleep(1.0)  # a refusal that retrying cannot fix: no more attempts
    assert env.page.evaluate("window.dashboard.conn.stats.attempts") == attempts


def test_refused_handshake_asks_for_a_token(env: Env) -> None:
    static = StaticServer(auth_token="s3cret")
    context = env.page.context.browser.new_context()
    try:
        page = context.new_page()
        ws = f"ws://127.0.0.1:{static.port}/ws"
        page.goto(f"{static.url}?ws={ws}")
        page.wait_for_function(
            "document.getElementById('status').dataset.state === 'refused'", timeout=10_000
        )
        assert "401" in page.locator("#banner").inner_text()
        assert page.locator("#token-form").is_visible()
        page.fill("#token-input", "s3cret")
        page.click("#token-form button")
        wait_until(
            lambda: any("token=s3cret" in r for r in static.requests),
            10.0,
            "a connection attempt with the token",
        )
        assert page.evaluate("window.dashboard.conn.connectUrl()").count("token=s3cret") == 1
    finally:
        context.close()
        static.close()


AUTH_TOKEN = "web-page-token-0123456789"


def test_page_with_token_auth_on_the_real_server(env: Env) -> None:
    server = ServerProcess(symbols=10, rate=30.0, extra=["--auth-tokens", AUTH_TOKEN])
    try:
        server.start()
    except RuntimeError as exc:
        if "auth-tokens" in str(exc):
            pytest.skip(f"this server has no token auth: {exc}")
        raise
    recorder = Recorder(server.ws_url, f"type=web&format=json&token={AUTH_TOKEN}")
    context = env.page.context.browser.new_context()
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # No token: the server refuses the handshake with 401, the page says so and asks for one.
        page.goto(f"{server.http_url}/")
        page.wait_for_function(
            "document.getElementById('status').dataset.state === 'refused'", timeout=10_000
        )
        assert "HTTP 401" in page.locator("#banner").inner_text()
        page.fill("#token-input", AUTH_TOKEN)
        page.click("#token-form button")
        wait_live(page)
        time.sleep(0.6)
        view = read_recorded(page, recorder)
        assert view["state"]["data"] == recorder.state_at(view["state"]["appliedSeq"])
        check_dom(view, recorder.state_at(view["renderedSeq"]))
        # The token is kept for the tab: a reload goes live without asking again.
        page.reload()
        wait_live(page)
        assert page.locator("#token-form").is_hidden()
        # A token in the link works too, in a fresh tab with nothing stored.
        other = context.browser.new_context().new_page() if context.browser else None
        assert other is not None
        other.goto(f"{server.http_url}/?token={AUTH_TOKEN}")
        wait_live(other)
        other.context.close()
        assert errors == []
    finally:
        recorder.close()
        context.close()
        server.stop()
