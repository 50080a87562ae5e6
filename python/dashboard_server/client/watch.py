"""The terminal viewer: live state and update rate of a dashboard-server, using the Python client.

:func:`render` is a pure function from a state document and :class:`WatchStats` to the text of one
screen (ANSI colours optional), so it can be tested on a known state; :func:`run_watch` connects
with :class:`~dashboard_server.client.connection.DashboardClient` and redraws that screen at the
tier's rate, fitted to the terminal (tables share its rows; a resize redraws at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import signal
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TextIO
from urllib.parse import urlsplit, urlunsplit

from dashboard_server.client.connection import ClientClosed, DashboardClient

__all__ = ["WatchStats", "render", "run_watch", "tier_interval", "watch_url"]

_RESET: Final = "\x1b[0m"
_COLORS: Final = {
    "green": "\x1b[32m",
    "red": "\x1b[31m",
    "yellow": "\x1b[33m",
    "bold": "\x1b[1m",
    "dim": "\x1b[2m",
    "alert": "\x1b[1;97;41m",
    "warn": "\x1b[1;30;43m",
    "reverse_yellow": "\x1b[1;30;43m",
}
_CLEAR: Final = "\x1b[H\x1b[2J"
_MAX_ROWS: Final = 12
_TIER_INTERVALS_MS: Final = {"tui": 100, "web": 250}
"""The server's default tier intervals (``tui_interval_ms``, ``web_interval_ms``)."""


@dataclass
class WatchStats:
    """What the viewer knows about the connection, next to the state itself."""

    url: str = ""
    status: str = "connecting"
    """``connected``, ``reconnecting``, ``connecting`` or ``closed``."""
    seq: int | None = None
    version: int | None = None
    epoch: str | None = None
    messages_per_s: float = 0.0
    updates_per_s: float = 0.0
    bytes_per_s: float = 0.0
    gaps: int = 0
    reconnects: int = 0
    rtt_ms: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    """The newest event messages, oldest first."""
    feed: dict[str, Any] | None = None
    """The server's last ``status`` message (feed, state, sources, stale sections)."""


def _paint(text: str, color: str | None, enabled: bool) -> str:
    return f"{_COLORS[color]}{text}{_RESET}" if enabled and color else text


def _sign_color(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value:
        return "green" if value > 0 else "red"
    return None


def _decimals(magnitude: float) -> int:
    """Decimals that show a number of this size usefully: 2 from 100 up, 4 from 1, and enough
    for 4 significant digits below (never scientific notation)."""
    if magnitude >= 100:
        return 2
    if magnitude >= 1 or magnitude == 0:
        return 4
    return min(12, 3 - math.floor(math.log10(magnitude)))


def _num(value: Any, like: Any = None) -> str:
    """A number formatted for a table cell (``-`` when absent); floats get the decimals that
    suit ``like`` (e.g. a row's last price for its bid and ask) or else their own size."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    ref = like if isinstance(like, int | float) and not isinstance(like, bool) else value
    return f"{value:,.{_decimals(abs(ref))}f}"


def _money(value: Any) -> str:
    """An amount of money: signed, thousands separators, cents."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:+,.2f}"


def _compact(value: Any) -> str:
    """A large quantity in a few characters: ``745.79M``, ``2.23B``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:,.2f}"


def _rate(value: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.1f}"


class _Table:
    """Fixed-width columns; a row keeps as many whole cells as fit in ``width``.

    Rows are collected first: the numeric columns (``align`` set) then line their decimal points
    up across the rows (the fractional parts padded on the right to the longest), so a column of
    prices with 2 and 6 decimals still reads at a glance.
    """

    def __init__(
        self,
        columns: Sequence[tuple[str, int]],
        width: int,
        color: bool,
        numeric: frozenset[int] = frozenset(),
    ) -> None:
        self.columns = columns  # (title, width): negative width = left-aligned
        self.width = width
        self.color = color
        self.numeric = numeric
        self.rows: list[list[tuple[str, str | None]]] = []

    def add(self, cells: list[tuple[str, str | None]]) -> None:
        self.rows.append(cells)

    def _fit(self, cells: Sequence[tuple[str, str | None]]) -> str:
        out: list[str] = []
        used = 0
        for (_, w), (text, color) in zip(self.columns, cells, strict=True):
            size = abs(w)
            text = text if len(text) <= size else text[: size - 1] + "~"
            cell = text.ljust(size) if w < 0 else text.rjust(size)
            if used + size + (1 if out else 0) > self.width:
                break
            used += size + (1 if out else 0)
            out.append(_paint(cell, color, self.color))
        return " ".join(out).rstrip()

    def header(self) -> str:
        return _paint(self._fit([(title, None) for title, _ in self.columns]), "bold", self.color)

    def lines(self) -> list[str]:
        """The rows, with the numeric columns' decimal points aligned."""
        rows = [list(row) for row in self.rows]
        for index in self.numeric:
            size = abs(self.columns[index][1])
            fractions = [_fraction(row[index][0]) for row in rows]
            longest = max((len(f) for f in fractions), default=0)
            for row, fraction in zip(rows, fractions, strict=True):
                text, color = row[index]
                pad = min(longest - len(fraction), size - len(text))  # never wider than the cell
                row[index] = (text + " " * max(0, pad), color)
        return [self._fit(row) for row in rows]


def _fraction(text: str) -> str:
    """What follows the decimal point of a formatted number ("" when it has none)."""
    head, dot, tail = text.partition(".")
    return dot + tail if dot and head[-1:].isdigit() else ""


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


@dataclass
class _Block:
    """One table of the screen: its heading lines, its body rows and how many rows it wants."""

    heading: list[str]
    table: _Table | None
    total: int
    """Rows it has in all (the "more" line counts what is not shown)."""
    noun: str
    body: list[str] = field(default_factory=list)
    keep_newest: bool = False


def _share(wants: list[int], weights: list[int], room: int) -> list[int]:
    """Split ``room`` rows between blocks wanting ``wants`` rows, in proportion to ``weights``
    (water-filling): a block wanting less than its share gives the rest to the others."""
    given = [0] * len(wants)
    open_ = [i for i, w in enumerate(wants) if w > 0]
    while room > 0 and open_:
        total = sum(weights[i] for i in open_)
        progress = False
        for i in list(open_):
            share = max(1, room * weights[i] // total)
            take = min(share, wants[i] - given[i], room)
            given[i] += take
            room -= take
            progress = progress or take > 0
            if given[i] >= wants[i]:
                open_.remove(i)
            if room == 0:
                break
        if not progress:
            break
    return given


_MIN_ROWS: Final = 3
"""A table shows at least this many lines (rows and its "more" line), or is left out."""


def render(
    state: dict[str, Any],
    stats: WatchStats,
    width: int = 100,
    height: int | None = None,
    *,
    color: bool = True,
    max_rows: int = _MAX_ROWS,
) -> str:
    """The text of one screen for ``state`` (the document) and ``stats`` (the connection).

    With ``height`` the screen has at most that many lines: the header, the feed status and the
    account always show, the tables (market, positions, orders, strategies, events) share the
    remaining rows fairly, each cut with a "... N more" line, and the tables that do not fit at
    all are left out, the market last. Without it every table shows up to ``max_rows`` rows.
    Every line fits in ``width`` columns.
    """
    width = max(40, width)
    lines: list[str] = []

    def text_line(*segments: str | tuple[str, str | None]) -> str:
        """A line of text segments (plain or ``(text, colour)``), cut to ``width``."""
        out, room = [], width
        for segment in segments:
            text, tint = segment if isinstance(segment, tuple) else (segment, None)
            text = text[:room]
            room -= len(text)
            out.append(_paint(text, tint, color) if text else "")
        return "".join(out)

    def add(*segments: str | tuple[str, str | None]) -> None:
        lines.append(text_line(*segments))

    status_color = {"connected": "green", "closed": "red"}.get(stats.status, "yellow")
    rtt = f"{stats.rtt_ms:.1f} ms" if stats.rtt_ms is not None else "-"
    badges: list[str | tuple[str, str | None]] = []
    feed = stats.feed or {}
    if feed.get("feed") == "demo":
        badges.append((" DEMO ", "reverse_yellow"))
        badges.append(" ")
    add(
        *badges,
        ("dashboard-server", "bold"),
        f" {stats.url}  ",
        (stats.status, status_color),
    )
    add(
        f"seq {stats.seq if stats.seq is not None else '-'}  "
        f"version {stats.version if stats.version is not None else '-'}  "
        f"epoch {stats.epoch or '-'}  gaps {stats.gaps}  "
        f"reconnects {stats.reconnects}"
    )
    add(
        f"updates {stats.updates_per_s:.1f}/s  messages {stats.messages_per_s:.1f}/s  "
        f"{_rate(stats.bytes_per_s)}B/s  rtt {rtt}"
    )
    stale = set(_stale_sections(feed))
    banner = _banner(feed, stats.status)
    if banner is not None:
        add(banner)

    accounts = _section(state, "account") or _section(state, "pnl")
    for account_id, acc in accounts.items():
        if not isinstance(acc, dict):
            continue
        margin = acc.get("margin") if isinstance(acc.get("margin"), dict) else {}
        ratio = margin.get("ratio") if isinstance(margin, dict) else None
        upnl = acc.get("unrealized_pnl")
        dim = "dim" if "account" in stale or "pnl" in stale else None
        equity = _get(acc, "equity", "net_pnl")
        add(
            (
                f"account {account_id}: {'equity' if 'equity' in acc else 'net PnL'} "
                f"{_num(equity)} "
                f"{acc.get('currency', '')}  uPnL ",
                dim,
            ),
            (_money(upnl), dim or _sign_color(upnl)),
            (
                f"  rPnL {_money(acc.get('realized_pnl'))}"
                f"  margin {f'{ratio * 100:.1f}%' if isinstance(ratio, float) else '-'}",
                dim,
            ),
        )

    blocks = _blocks(state, stats, width, color, stale, text_line)
    if height is None:
        for block in blocks:
            lines.append("")
            lines.extend(block.heading)
            lines.extend(_body(block, max_rows, text_line))
        return "\n".join(lines) + "\n"

    room = height - len(lines)
    # Leave out whole tables, the least important first, until each can show a few lines.
    shown = list(blocks)
    while len(shown) > 1 and room - sum(1 + len(b.heading) for b in shown) < sum(
        min(b.total, _MIN_ROWS) for b in shown
    ):
        shown.pop(_least_important(shown))
    room -= sum(1 + len(b.heading) for b in shown)
    weights = [2 if b.noun == "market" else 1 for b in shown]
    rows = _share([b.total for b in shown], weights, max(0, room))
    for block, given in zip(shown, rows, strict=True):
        lines.append("")
        lines.extend(block.heading)
        lines.extend(_body(block, given, text_line))
    return "\n".join(lines[:height]) + "\n"


_IMPORTANCE: Final = ("market", "positions", "orders", "strategies", "other", "events")

WORKING: Final = frozenset({"new", "submitted", "partially_filled", "pending", "open", "accepted"})
"""Order states that mean the order still works (the demo's and the original system's)."""


def _get(item: dict[str, Any], *names: str) -> Any:
    """The first of ``names`` that ``item`` has (a desk's own schema may name a field its way)."""
    for name in names:
        value = item.get(name)
        if value is not None:
            return value
    return None


def order_status(order: dict[str, Any]) -> str:
    """An order's state in lower case (``status`` in the demo, ``state`` in the original)."""
    return str(_get(order, "status", "state") or "-").lower()


def position_side(position: dict[str, Any]) -> str:
    """``long``/``short``/``flat``: the position's side, or the sign of its quantity."""
    side = position.get("side")
    if isinstance(side, str) and side:
        return side.lower()
    quantity = position.get("quantity")
    if isinstance(quantity, int | float) and not isinstance(quantity, bool):
        return "long" if quantity > 0 else "short" if quantity < 0 else "flat"
    return "-"


def position_mark(position: dict[str, Any], market: Any) -> Any:
    """The mark price: the position's own (``mark_price``, a non-zero ``current_price``), else
    the market's last price."""
    mark = _get(position, "mark_price") or position.get("current_price") or None
    if mark is None and isinstance(market, dict):
        mark = market.get("last_price")
    return mark


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "-"
    if isinstance(value, int | float):
        return _num(value)
    if isinstance(value, dict | list):
        return "{...}" if isinstance(value, dict) else f"[{len(value)}]"
    return str(value)


def _generic_block(
    name: str, items: dict[str, Any], width: int, color: bool, stale: bool, text_line: Any
) -> _Block:
    """A section the viewer has no layout for: its items' fields as columns (a single item as
    ``field value`` pairs), so a desk's own schema shows its values."""
    dim = "dim" if stale else None
    rows = [(k, v) for k, v in items.items() if isinstance(v, dict)]
    heading = [text_line((f"{name.upper()} ({len(items)})", "bold"))]
    if len(rows) == 1:
        _, only = rows[0]
        pairs = [f"{k} {_cell(v)}" for k, v in only.items() if not isinstance(v, dict | list)]
        body: list[str] = []
        line = ""
        for pair in pairs:
            if line and len(line) + 3 + len(pair) > width:
                body.append(text_line((line, dim)))
                line = ""
            line = f"{line}   {pair}" if line else pair
        if line:
            body.append(text_line((line, dim)))
        return _Block(heading, None, len(body), "other", body)
    fields: list[str] = []
    for _, item in rows[:50]:
        for key, value in item.items():
            if key not in fields and not isinstance(value, dict | list):
                fields.append(key)
    columns = [("id", -14)] + [(f[:12], 12) for f in fields[:10]]
    numeric = frozenset(
        i + 1
        for i, f in enumerate(fields[:10])
        if all(isinstance(item.get(f), int | float) for _, item in rows[:50] if f in item)
    )
    table = _Table(columns, width, color, numeric=numeric)
    for ident, item in rows:
        table.add([(ident, dim)] + [(_cell(item.get(f)), dim) for f in fields[:10]])
    heading.append(table.header())
    return _Block(heading, table, len(table.rows), "other", table.lines())


def _least_important(blocks: list[_Block]) -> int:
    return max(range(len(blocks)), key=lambda i: _IMPORTANCE.index(blocks[i].noun))


def _body(block: _Block, rows: int, text_line: Any) -> list[str]:
    """At most ``rows`` lines of ``block``: its newest or first rows, then "... N more"."""
    body = block.body
    if len(body) <= rows:
        return body
    if rows <= 0:
        return []
    kept = body[len(body) - (rows - 1) :] if block.keep_newest else body[: rows - 1]
    if rows == 1:
        kept = []
    hidden = block.total - len(kept)
    more = text_line((f"... {hidden} more {_NOUNS[block.noun]}", "dim"))
    return [*kept, more] if not block.keep_newest else [more, *kept]


_NOUNS: Final = {
    "market": "symbols",
    "positions": "positions",
    "orders": "orders",
    "strategies": "strategies",
    "events": "events",
}


def _stale_sections(feed: dict[str, Any]) -> list[str]:
    stale = feed.get("stale")
    return [s for s in stale if isinstance(s, str)] if isinstance(stale, list) else []


def _banner(feed: dict[str, Any], connection: str) -> tuple[str, str | None] | None:
    """The DEGRADED / DOWN / STALE line for a status message (``None``: all is well)."""
    if connection != "connected" and feed:
        return (f" DISCONNECTED: the data below is the last received ({connection}) ", "alert")
    state = feed.get("state")
    problems = []
    for source in feed.get("sources") or []:
        if isinstance(source, dict) and source.get("state") not in ("ok", None):
            error = f": {source['error']}" if source.get("error") else ""
            problems.append(f"{source.get('name', '?')} {source.get('state')}{error}")
    stale = _stale_sections(feed)
    if stale:
        problems.append("stale: " + ", ".join(stale))
    if state in ("degraded", "down"):
        return (f" {str(state).upper()} " + "; ".join(problems) + " ", "alert")
    if stale:
        return (" STALE " + ", ".join(stale) + " ", "warn")
    return None


def _blocks(
    state: dict[str, Any],
    stats: WatchStats,
    width: int,
    color: bool,
    stale: set[str],
    text_line: Any,
) -> list[_Block]:
    """The tables of the screen, in screen order, each with all its rows."""
    blocks: list[_Block] = []

    markets = _section(state, "market_data")
    if markets:
        table = _Table(
            [
                ("MARKET", -12),
                ("last", 13),
                ("bid", 13),
                ("ask", 13),
                ("chg%", 8),
                ("volume 24h", 14),
            ],
            width,
            color,
            numeric=frozenset({1, 2, 3, 5}),
        )
        dim = "dim" if "market_data" in stale else None
        for symbol, md in markets.items():
            if not isinstance(md, dict):
                continue
            pct = md.get("change_pct_24h")
            table.add(
                [
                    (symbol, dim),
                    (_num(md.get("last_price")), dim),
                    (_num(_get(md, "bid", "bid_price"), md.get("last_price")), dim),
                    (_num(_get(md, "ask", "ask_price"), md.get("last_price")), dim),
                    (
                        f"{pct:+.2f}%" if isinstance(pct, int | float) else "-",
                        dim or _sign_color(pct),
                    ),
                    (_compact(md.get("volume_24h")), dim),
                ]
            )
        blocks.append(_Block([table.header()], table, len(table.rows), "market", table.lines()))

    positions = _section(state, "positions")
    table = _Table(
        [("symbol", -12), ("side", -6), ("qty", 12), ("entry", 13), ("mark", 13), ("uPnL", 13)],
        width,
        color,
        numeric=frozenset({2, 3, 4, 5}),
    )
    dim = "dim" if "positions" in stale else None
    for symbol, pos in positions.items():
        if not isinstance(pos, dict):
            continue
        upnl = pos.get("unrealized_pnl")
        mark = position_mark(pos, markets.get(symbol))
        table.add(
            [
                (symbol, dim),
                (position_side(pos), dim),
                (_num(pos.get("quantity")), dim),
                (_num(pos.get("entry_price"), mark), dim),
                (_num(mark), dim),
                (_money(upnl), dim or _sign_color(upnl)),
            ]
        )
    heading = [text_line((f"POSITIONS ({len(positions)})", "bold"))]
    if table.rows:
        heading.append(table.header())
    blocks.append(_Block(heading, table, len(table.rows), "positions", table.lines()))

    orders = _section(state, "orders")
    working = [o for o in orders.values() if isinstance(o, dict) and order_status(o) in WORKING]
    table = _Table(
        [
            ("id", -9),
            ("symbol", -12),
            ("side", -5),
            ("type", -7),
            ("price", 13),
            ("qty", 12),
            ("filled", 12),
            ("status", -17),
        ],
        width,
        color,
        numeric=frozenset({4, 5, 6}),
    )
    dim = "dim" if "orders" in stale else None
    for order in working:
        side = str(order.get("side", "-")).lower()
        table.add(
            [
                (str(_get(order, "id", "order_id") or "-"), dim),
                (str(order.get("symbol", "-")), dim),
                (side, dim or ("green" if side == "buy" else "red")),
                (str(order.get("type", "-")), dim),
                (_num(order.get("price")), dim),
                (_num(order.get("quantity")), dim),
                (_num(order.get("filled_quantity"), order.get("quantity")), dim),
                (order_status(order), dim),
            ]
        )
    heading = [text_line((f"ORDERS {len(working)} open ({len(orders)} in state)", "bold"))]
    if table.rows:
        heading.append(table.header())
    blocks.append(
        _Block(heading, table, len(table.rows), "orders", table.lines(), keep_newest=True)
    )

    strategies = _section(state, "strategies")
    known_fields = ("status", "pnl", "fills", "open_orders")
    fits = any(
        isinstance(s, dict) and any(f in s for f in known_fields) for s in strategies.values()
    )
    if strategies and not fits:  # a desk's own strategy schema: show its fields
        blocks.append(
            _generic_block("strategies", strategies, width, color, "strategies" in stale, text_line)
        )
    elif strategies:
        table = _Table(
            [("STRATEGY", -16), ("status", -8), ("pnl", 13), ("fills", 8), ("open", 6)],
            width,
            color,
            numeric=frozenset({2, 3, 4}),
        )
        dim = "dim" if "strategies" in stale else None
        for name, strat in strategies.items():
            if not isinstance(strat, dict):
                continue
            status, pnl = str(_get(strat, "status", "mode") or "-"), strat.get("pnl")
            table.add(
                [
                    (name, dim),
                    (status, dim or ("green" if status == "running" else "yellow")),
                    (_money(pnl), dim or _sign_color(pnl)),
                    (_num(strat.get("fills")), dim),
                    (_num(strat.get("open_orders")), dim),
                ]
            )
        blocks.append(_Block([table.header()], table, len(table.rows), "strategies", table.lines()))

    known = {"market_data", "orderbook", "positions", "orders", "strategies", "account"}
    for name, items in state.items():
        if name in known or (name == "pnl" and "account" not in state):
            continue
        if isinstance(items, dict) and items:
            blocks.append(_generic_block(name, items, width, color, name in stale, text_line))

    if stats.events:
        body = []
        for ev in stats.events[-5:]:
            data = ev.get("data")
            if not isinstance(data, dict):
                data = {}
            summary = " ".join(f"{k}={v}" for k, v in list(data.items())[:6])
            body.append(text_line(f"{ev.get('channel', '?'):<7} {summary}"))
        blocks.append(
            _Block(
                [text_line(("EVENTS", "bold"))], None, len(body), "events", body, keep_newest=True
            )
        )
    return blocks


def watch_url(url: str) -> str:
    """The WebSocket URL to watch for what a person types: ``ws(s)://`` URLs as they are, an
    ``http(s)://`` URL of the server (its dashboard page, or any path but ``/ws``) as the
    server's ``/ws``, ``host:port`` as ``ws://host:port/ws``.

    Raises :class:`ValueError`, saying what is expected, for anything else.
    """
    text = url.strip()
    if "://" not in text:
        text = "ws://" + text
    parts = urlsplit(text)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(
            f"cannot watch {url!r}: expected the server's address, e.g. ws://127.0.0.1:8080/ws, "
            "http://127.0.0.1:8080/ (the dashboard page) or 127.0.0.1:8080"
        )
    path = parts.path
    if parts.scheme.lower() in ("http", "https") or path in ("", "/"):
        prefix = path.rsplit("/", 1)[0] if not path.endswith("/ws") else path[:-3]
        path = prefix.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def tier_interval(type: str, interval_ms: int | None) -> float:
    """Seconds between redraws: the interval the viewer subscribed with, else its tier's
    default (tui 100 ms, web 250 ms): drawing faster shows nothing new."""
    if interval_ms is not None:
        return interval_ms / 1000
    return _TIER_INTERVALS_MS.get(type, 100) / 1000


class _Rates:
    """Per-second rates over the last second or so (a frame every 100 ms would be too jumpy)."""

    def __init__(self, window: float = 1.0) -> None:
        self.window = window
        self.samples: deque[tuple[float, int, int, int]] = deque()

    def update(self, now: float, messages: int, updates: int, received: int) -> tuple[float, ...]:
        self.samples.append((now, messages, updates, received))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()
        first = self.samples[0]
        elapsed = now - first[0]
        if elapsed <= 0:
            return (0.0, 0.0, 0.0)
        return tuple(
            (a - b) / elapsed for a, b in zip(self.samples[-1][1:], first[1:], strict=True)
        )


def _screen_size(tty: bool) -> tuple[int, int | None]:
    if not tty:
        return 120, None
    size = shutil.get_terminal_size()
    return size.columns, size.lines


def _frame(screen: str, tty: bool) -> str:
    """What to write for one screen: on a terminal, home the cursor, overwrite each line and
    clear what is left (no full clear: no flicker), and no newline after the last line (the
    screen never scrolls)."""
    if not tty:
        return screen
    return "\x1b[H" + "\x1b[K\n".join(screen.rstrip("\n").split("\n")) + "\x1b[K\x1b[J"


async def run_watch(
    url: str,
    *,
    format: Literal["msgpack", "json"] = "msgpack",
    channels: list[str] | None = None,
    duration: float | None = None,
    type: Literal["tui", "web"] = "tui",
    interval_ms: int | None = None,
    refresh: float | None = None,
    out: TextIO | None = None,
    color: bool | None = None,
    token: str | None = None,
) -> None:
    """Connect to ``url`` and redraw the screen at the tier's rate (``refresh`` seconds when
    given, else :func:`tier_interval`).

    ``url`` goes through :func:`watch_url` (``http://host:port/`` works). Runs for ``duration``
    seconds, or until cancelled when ``None``. ``out`` defaults to stdout; on a terminal the
    viewer takes the alternate screen, fits each frame to the terminal's size (read again on
    every frame, and at once on SIGWINCH) and colours are on (``color`` overrides). The first
    connection's error is raised; later disconnections show as ``reconnecting``. ``token`` is
    sent as ``Authorization: Bearer`` (docs/security.md).
    """
    url = watch_url(url)
    period = refresh if refresh is not None else tier_interval(type, interval_ms)
    stream = out if out is not None else sys.stdout
    tty = stream.isatty()
    use_color = tty if color is None else color
    loop = asyncio.get_running_loop()
    stats = WatchStats(url=url)
    resized = asyncio.Event()
    winch = tty and hasattr(signal, "SIGWINCH")
    async with DashboardClient(
        url, type=type, format=format, channels=channels, token=token, interval_ms=interval_ms
    ) as client:
        if winch:
            with contextlib.suppress(ValueError, RuntimeError):  # not the main thread
                loop.add_signal_handler(signal.SIGWINCH, resized.set)
        if tty:
            stream.write("\x1b[?1049h\x1b[?25l")  # alternate screen, cursor hidden
        try:
            await _watch_loop(client, stats, stream, tty, use_color, period, duration, resized)
        finally:
            if winch:
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.remove_signal_handler(signal.SIGWINCH)
            if tty:
                stream.write("\x1b[?25h\x1b[?1049l")
                stream.flush()


async def _watch_loop(
    client: DashboardClient,
    stats: WatchStats,
    stream: TextIO,
    tty: bool,
    use_color: bool,
    period: float,
    duration: float | None,
    resized: asyncio.Event,
) -> None:
    loop = asyncio.get_running_loop()
    stop_at = None if duration is None else loop.time() + duration
    rates = _Rates()
    rates.update(loop.time(), client.messages, client.state.updates, client.bytes_received)
    next_ping = loop.time()
    pinging: asyncio.Task[None] | None = None

    async def ping() -> None:
        with contextlib.suppress(TimeoutError, ClientClosed, ConnectionError):
            stats.rtt_ms = await client.ping(timeout=5.0) * 1000.0

    try:
        while True:
            now = loop.time()
            if stop_at is not None and now >= stop_at:
                break
            if client.connected and now >= next_ping and (pinging is None or pinging.done()):
                next_ping = now + 5.0
                pinging = loop.create_task(ping())  # never holds a frame up
            wait = period if stop_at is None else min(period, stop_at - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(resized.wait(), max(0.0, wait))
            resized.clear()
            now = loop.time()
            st = client.state
            stats.messages_per_s, stats.updates_per_s, stats.bytes_per_s = rates.update(
                now, client.messages, st.updates, client.bytes_received
            )
            stats.status = "connected" if client.connected else "reconnecting"
            if client.failure is not None:
                stats.status = "closed"
            stats.seq, stats.version, stats.epoch = st.seq, st.version, st.epoch
            stats.gaps, stats.reconnects = st.gaps, client.reconnects
            stats.events = list(st.events)[-5:]
            stats.feed = getattr(client, "status", None)
            width, height = _screen_size(tty)
            screen = render(st.data, stats, width, height, color=use_color)
            stream.write(_frame(screen, tty))
            stream.flush()
            if client.failure is not None:
                raise ClientClosed(f"connection refused for good: {client.failure}")
    finally:
        if pinging is not None:
            pinging.cancel()
