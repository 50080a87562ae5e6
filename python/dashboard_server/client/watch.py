"""The terminal viewer: live state and update rate of a dashboard-server, using the Python client.

:func:`render` is a pure function from a state document and :class:`WatchStats` to the text of one
screen (ANSI colours optional), so it can be tested on a known state; :func:`run_watch` connects
with :class:`~dashboard_server.client.connection.DashboardClient` and redraws that screen
periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TextIO

from dashboard_server.client.connection import ClientClosed, DashboardClient

__all__ = ["WatchStats", "render", "run_watch"]

_RESET: Final = "\x1b[0m"
_COLORS: Final = {
    "green": "\x1b[32m",
    "red": "\x1b[31m",
    "yellow": "\x1b[33m",
    "bold": "\x1b[1m",
    "dim": "\x1b[2m",
}
_CLEAR: Final = "\x1b[H\x1b[2J"
_MAX_ROWS: Final = 12


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


def _paint(text: str, color: str | None, enabled: bool) -> str:
    return f"{_COLORS[color]}{text}{_RESET}" if enabled and color else text


def _sign_color(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value:
        return "green" if value > 0 else "red"
    return None


def _num(value: Any) -> str:
    """A number formatted for a table cell (``-`` when absent)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.2f}"
    if magnitude >= 1:
        return f"{value:.4f}"
    return f"{value:.6g}"


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
    """Fixed-width columns; a row keeps as many whole cells as fit in ``width``."""

    def __init__(self, columns: Sequence[tuple[str, int]], width: int, color: bool) -> None:
        self.columns = columns  # (title, width): negative width = left-aligned
        self.width = width
        self.color = color

    def row(self, cells: Sequence[tuple[str, str | None]]) -> str:
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
        return _paint(self.row([(title, None) for title, _ in self.columns]), "bold", self.color)


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def render(
    state: dict[str, Any],
    stats: WatchStats,
    width: int = 100,
    *,
    color: bool = True,
    max_rows: int = _MAX_ROWS,
) -> str:
    """The text of one screen for ``state`` (the document) and ``stats`` (the connection)."""
    width = max(40, width)
    lines: list[str] = []

    def add(*segments: str | tuple[str, str | None]) -> None:
        """Append a line of text segments (plain or ``(text, colour)``), cut to ``width``."""
        out, room = [], width
        for segment in segments:
            text, tint = segment if isinstance(segment, tuple) else (segment, None)
            text = text[:room]
            room -= len(text)
            out.append(_paint(text, tint, color) if text else "")
        lines.append("".join(out))

    status_color = {"connected": "green", "closed": "red"}.get(stats.status, "yellow")
    rtt = f"{stats.rtt_ms:.1f} ms" if stats.rtt_ms is not None else "-"
    add(("dashboard-server", "bold"), f" {stats.url}  ", (stats.status, status_color))
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

    for account_id, acc in _section(state, "account").items():
        if not isinstance(acc, dict):
            continue
        margin = acc.get("margin") if isinstance(acc.get("margin"), dict) else {}
        ratio = margin.get("ratio") if isinstance(margin, dict) else None
        upnl = acc.get("unrealized_pnl")
        add(
            f"account {account_id}: equity {_num(acc.get('equity'))} {acc.get('currency', '')}"
            "  uPnL ",
            (_money(upnl), _sign_color(upnl)),
            f"  rPnL {_money(acc.get('realized_pnl'))}"
            f"  margin {f'{ratio * 100:.1f}%' if isinstance(ratio, float) else '-'}",
        )

    markets = _section(state, "market_data")
    if markets:
        add()
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
        )
        lines.append(table.header())
        for symbol, md in list(markets.items())[:max_rows]:
            if not isinstance(md, dict):
                continue
            pct = md.get("change_pct_24h")
            lines.append(
                table.row(
                    [
                        (symbol, None),
                        (_num(md.get("last_price")), None),
                        (_num(md.get("bid")), None),
                        (_num(md.get("ask")), None),
                        (f"{pct:+.2f}%" if isinstance(pct, int | float) else "-", _sign_color(pct)),
                        (_compact(md.get("volume_24h")), None),
                    ]
                )
            )
        if len(markets) > max_rows:
            add((f"... {len(markets) - max_rows} more symbols", "dim"))

    positions = _section(state, "positions")
    add()
    add((f"POSITIONS ({len(positions)})", "bold"))
    if positions:
        table = _Table(
            [("symbol", -12), ("side", -6), ("qty", 12), ("entry", 13), ("mark", 13), ("uPnL", 13)],
            width,
            color,
        )
        lines.append(table.header())
        for symbol, pos in list(positions.items())[:max_rows]:
            if not isinstance(pos, dict):
                continue
            upnl = pos.get("unrealized_pnl")
            lines.append(
                table.row(
                    [
                        (symbol, None),
                        (str(pos.get("side", "-")), None),
                        (_num(pos.get("quantity")), None),
                        (_num(pos.get("entry_price")), None),
                        (_num(pos.get("mark_price")), None),
                        (_money(upnl), _sign_color(upnl)),
                    ]
                )
            )

    orders = _section(state, "orders")
    working = [
        o
        for o in orders.values()
        if isinstance(o, dict) and o.get("status") in ("new", "partially_filled")
    ]
    add()
    add((f"ORDERS {len(working)} open ({len(orders)} in state)", "bold"))
    if working:
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
        )
        lines.append(table.header())
        for order in working[-max_rows:]:
            side = str(order.get("side", "-"))
            lines.append(
                table.row(
                    [
                        (str(order.get("id", "-")), None),
                        (str(order.get("symbol", "-")), None),
                        (side, "green" if side == "buy" else "red"),
                        (str(order.get("type", "-")), None),
                        (_num(order.get("price")), None),
                        (_num(order.get("quantity")), None),
                        (_num(order.get("filled_quantity")), None),
                        (str(order.get("status")), None),
                    ]
                )
            )

    strategies = _section(state, "strategies")
    if strategies:
        add()
        table = _Table(
            [("STRATEGY", -16), ("status", -8), ("pnl", 13), ("fills", 8), ("open", 6)],
            width,
            color,
        )
        lines.append(table.header())
        for name, strat in list(strategies.items())[:max_rows]:
            if not isinstance(strat, dict):
                continue
            status, pnl = str(strat.get("status", "-")), strat.get("pnl")
            lines.append(
                table.row(
                    [
                        (name, None),
                        (status, "green" if status == "running" else "yellow"),
                        (_money(pnl), _sign_color(pnl)),
                        (_num(strat.get("fills")), None),
                        (_num(strat.get("open_orders")), None),
                    ]
                )
            )

    if stats.events:
        add()
        add(("EVENTS", "bold"))
        for ev in stats.events[-5:]:
            data = ev.get("data")
            if not isinstance(data, dict):
                data = {}
            summary = " ".join(f"{k}={v}" for k, v in list(data.items())[:6])
            add(f"{ev.get('channel', '?'):<7} {summary}")
    return "\n".join(lines) + "\n"


async def run_watch(
    url: str,
    *,
    format: Literal["msgpack", "json"] = "msgpack",
    channels: list[str] | None = None,
    duration: float | None = None,
    type: Literal["tui", "web"] = "tui",
    refresh: float = 0.5,
    out: TextIO | None = None,
    color: bool | None = None,
    token: str | None = None,
) -> None:
    """Connect to ``url`` and redraw the screen every ``refresh`` seconds.

    Runs for ``duration`` seconds, or until cancelled when ``None``. ``out`` defaults to stdout;
    on a terminal the screen is cleared between frames and colours are on (``color`` overrides).
    The first connection's error is raised; later disconnections show as ``reconnecting``.
    ``token`` is sent as ``Authorization: Bearer`` (docs/security.md).
    """
    stream = out if out is not None else sys.stdout
    tty = stream.isatty()
    use_color = tty if color is None else color
    loop = asyncio.get_running_loop()
    stats = WatchStats(url=url)
    async with DashboardClient(
        url, type=type, format=format, channels=channels, token=token
    ) as client:
        stop_at = None if duration is None else loop.time() + duration
        last = (loop.time(), client.messages, client.state.updates, client.bytes_received)
        next_ping = loop.time()
        while True:
            now = loop.time()
            if stop_at is not None and now >= stop_at:
                break
            if client.connected and now >= next_ping:
                next_ping = now + 5.0
                with contextlib.suppress(TimeoutError, ClientClosed, ConnectionError):
                    stats.rtt_ms = await client.ping(timeout=refresh) * 1000.0
            await asyncio.sleep(refresh if stop_at is None else min(refresh, stop_at - now))
            now = loop.time()
            elapsed = max(now - last[0], 1e-9)
            st = client.state
            stats.messages_per_s = (client.messages - last[1]) / elapsed
            stats.updates_per_s = (st.updates - last[2]) / elapsed
            stats.bytes_per_s = (client.bytes_received - last[3]) / elapsed
            last = (now, client.messages, st.updates, client.bytes_received)
            stats.status = "connected" if client.connected else "reconnecting"
            if client.failure is not None:
                stats.status = "closed"
            stats.seq, stats.version, stats.epoch = st.seq, st.version, st.epoch
            stats.gaps, stats.reconnects = st.gaps, client.reconnects
            stats.events = list(st.events)[-5:]
            width = shutil.get_terminal_size().columns if tty else 120
            screen = render(st.data, stats, width, color=use_color)
            stream.write((_CLEAR if tty else "") + screen)
            stream.flush()
            if client.failure is not None:
                raise ClientClosed(f"connection refused for good: {client.failure}")
