"""``dashboard-server publish-demo --sources b25``: the demo feed written the way the original
system's backends write (docs/sources.md, "b25"), into Redis and NATS.

:class:`B25Publisher` is a :class:`~dashboard_server.ingest.writer.StateSink`: it keeps every demo
item whole and, at each :meth:`B25Publisher.flush`, turns what changed into the b25 contract:

- ``market_data/{S}``: ``SET market_data:{S} ... EX 300`` + PUBLISH of the same JSON
  (``last_price, bid_price, ask_price, volume_24h, high_24h, low_24h, updated_at``);
- ``orderbook/{S}``: PUBLISH ``orderbook:{S}``, sides as objects ``{"price": size}`` in ascending
  price order, ``last_update_id``, ``timestamp`` in microseconds, ``initialized``;
- ``orders/{id}``: ``SET order:{id} ... EX 86400`` and NATS ``orders.updates.{S}``
  ``{order, update_type, timestamp}`` with the b25 states (SUBMITTED, PARTIALLY_FILLED, FILLED,
  CANCELED, REJECTED); a forgotten order's key is deleted (as if it expired);
- ``positions/{S}``: ``SET position:{S}``, decimal strings, the quantity signed (+ long, - short);
- ``account/main``: ``SET balance:{ASSET}`` per asset (decimal strings), and NATS ``risk.metrics``
  at most once a second (unix seconds);
- events: fills on NATS ``trading.fills`` (decimal strings), trades PUBLISHed on
  ``trades:{S}`` (ms), alerts on NATS ``risk.alerts.{warning,critical}`` with a ``policy_id``.

Strategies are HTTP-only in b25 (the strategy engine's API): not published. Redis writes go in one
pipeline per flush; what failed (Redis or NATS away) is sent again at the next flush, the oldest
dropped beyond :data:`MAX_PENDING`.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime
from typing import Any, Final

import nats
import orjson
from nats.aio.client import Client

from dashboard_server.core.pointer import unescape_token
from dashboard_server.ingest.feed import describe_failure
from dashboard_server.ingest.redis.connection import close_quietly, connect_redis
from dashboard_server.tools.publish import merge_patch

__all__ = ["MAX_PENDING", "B25Publisher"]

log = logging.getLogger(__name__)

MAX_PENDING: Final = 100_000
"""Redis commands (and NATS messages) kept while their server is unreachable."""
ORDER_STATES: Final = {
    "new": "SUBMITTED",
    "partially_filled": "PARTIALLY_FILLED",
    "filled": "FILLED",
    "cancelled": "CANCELED",
    "rejected": "REJECTED",
}
"""The demo's order statuses as order-execution's states."""
_POLICIES: Final = uuid.UUID("6d1c2f0e-4b8a-4e55-9a3c-2f1e0d9c8b7a")


def _dec(value: Any) -> str:
    """A number as account-monitor writes it: a decimal string (``"0.003"``, ``"-0.05"``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "0"
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _unix(text: Any) -> float:
    """An RFC 3339 time as unix seconds (now if it is not one)."""
    if isinstance(text, str):
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return time.time()


def _price_keyed(levels: Any) -> dict[str, float]:
    """``[[price, size], ...]`` as market-data's object, in ascending price order."""
    pairs = [(p, s) for p, s in levels] if isinstance(levels, list) else []
    return {_dec(p): s for p, s in sorted(pairs)}


class B25Publisher:
    """A state sink writing the demo through the b25 contract (see the module doc)."""

    def __init__(self, url: str, nats_url: str, *, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self.nats_url = nats_url if "://" in nats_url else f"nats://{nats_url}"
        self._redis = connect_redis(url, timeout)
        self._nats: Client | None = None
        self._items: dict[str, Any] = {}
        self._dirty: dict[str, None] = {}
        self._events: list[tuple[str, dict[str, Any]]] = []
        self._assets: set[str] = set()
        self._risk_due = False
        self._risk_sent = 0.0
        self._redis_pending: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._nats_pending: list[tuple[str, bytes]] = []
        self.writes = 0
        """Redis commands and NATS messages sent so far."""
        self.events = 0
        """Events published so far."""
        self.failures = 0
        """Flushes that failed (Redis or NATS unreachable)."""

    # --- StateSink -------------------------------------------------------------------------

    def merge(self, path: str, patch: Any) -> None:
        """Merge ``patch`` into the item at ``path``."""
        self._items[path] = merge_patch(self._items.get(path), patch)
        self._dirty[path] = None

    def replace(self, path: str, value: Any) -> None:
        """Make the item at ``path`` equal to ``value``."""
        self._items[path] = value
        self._dirty[path] = None

    def remove(self, path: str) -> None:
        """Forget the item at ``path``."""
        self._items.pop(path, None)
        self._dirty[path] = None

    def publish_event(self, channel: str, data: dict[str, Any]) -> None:
        """Queue a fill, trade or alert for the next flush."""
        self._events.append((channel, data))

    # --- the contract ----------------------------------------------------------------------

    def _command(self, command: str, *args: Any, **kwargs: Any) -> None:
        self._redis_pending.append((command, args, kwargs))

    def _publish(self, subject: str, value: Any) -> None:
        self._nats_pending.append((subject, orjson.dumps(value)))

    def _item(self, path: str) -> None:
        _, section, token = path.split("/", 2)
        ident = unescape_token(token)
        item = self._items.get(path)
        if section == "market_data":
            self._market_data(ident, item)
        elif section == "orderbook" and item is not None:
            self._orderbook(ident, item)
        elif section == "orders":
            self._order(ident, item)
        elif section == "positions":
            self._position(ident, item)
        elif section == "account" and item is not None:
            self._account(item)

    def _market_data(self, symbol: str, item: Any) -> None:
        key = f"market_data:{symbol}"
        if item is None:
            self._command("delete", key)
            return
        payload = orjson.dumps(
            {
                "symbol": symbol,
                "last_price": item.get("last_price", 0.0),
                "bid_price": item.get("bid", 0.0),
                "ask_price": item.get("ask", 0.0),
                "volume_24h": item.get("volume_24h", 0.0),
                "high_24h": item.get("high_24h", 0.0),
                "low_24h": item.get("low_24h", 0.0),
                "updated_at": item.get("updated_at", ""),
            }
        )
        self._command("set", key, payload, ex=300)
        self._command("publish", key, payload)

    def _orderbook(self, symbol: str, item: Any) -> None:
        book = {
            "symbol": symbol,
            "bids": _price_keyed(item.get("bids")),
            "asks": _price_keyed(item.get("asks")),
            "last_update_id": item.get("sequence", 0),
            "timestamp": round(_unix(item.get("updated_at")) * 1_000_000),
            "initialized": True,
        }
        self._command("publish", f"orderbook:{symbol}", orjson.dumps(book))

    def _order(self, oid: str, item: Any) -> None:
        key = f"order:{oid}"
        if item is None:
            self._command("delete", key)  # finished and forgotten: as if its key expired
            return
        state = ORDER_STATES.get(str(item.get("status")), "NEW")
        order: dict[str, Any] = {
            "order_id": oid,
            "client_order_id": f"{item.get('strategy', 'demo')}-{oid}",
            "symbol": item.get("symbol", ""),
            "side": str(item.get("side", "")).upper(),
            "type": str(item.get("type", "limit")).upper(),
            "state": state,
            "time_in_force": "GTC",
            "quantity": item.get("quantity", 0),
            "filled_quantity": item.get("filled_quantity", 0),
            "average_price": item.get("avg_fill_price", 0),
            "fee": 0,
            "fee_asset": "",
            "created_at": item.get("created_at", ""),
            "updated_at": item.get("updated_at", ""),
            "user_id": item.get("account", "desk-1"),
            "reduce_only": False,
            "post_only": False,
        }
        if item.get("price"):
            order["price"] = item["price"]  # omitted when 0 (a market order)
        self._command("set", key, orjson.dumps(order), ex=86400)
        self._publish(
            f"orders.updates.{order['symbol']}",
            {"order": order, "update_type": state, "timestamp": order["updated_at"]},
        )

    def _position(self, symbol: str, item: Any) -> None:
        key = f"position:{symbol}"
        if item is None:
            self._command("delete", key)
            return
        quantity = item.get("quantity", 0)
        signed = -quantity if item.get("side") == "short" else quantity
        position = {
            "symbol": symbol,
            "quantity": _dec(signed),
            "entry_price": _dec(item.get("entry_price")),
            "current_price": _dec(item.get("mark_price")),
            "realized_pnl": _dec(item.get("realized_pnl")),
            "unrealized_pnl": _dec(item.get("unrealized_pnl")),
            "total_fees": "0",
            "last_update": item.get("updated_at", ""),
            "trades": [],
        }
        self._command("set", key, orjson.dumps(position), ex=86400)

    def _account(self, item: dict[str, Any]) -> None:
        balances = item.get("balances") or {}
        for asset, balance in balances.items():
            value = {
                "asset": asset,
                "free": _dec(balance.get("free")),
                "locked": _dec(balance.get("locked")),
                "total": _dec(balance.get("total")),
                "usd_value": "0",
                "last_update": item.get("updated_at", ""),
            }
            self._command("set", f"balance:{asset}", orjson.dumps(value), ex=86400)
        for gone in self._assets - set(balances):
            self._command("delete", f"balance:{gone}")
        self._assets = set(balances)
        self._risk_due = True

    def _risk_metrics(self) -> None:
        item = self._items.get("/account/main")
        if not self._risk_due or item is None or time.monotonic() - self._risk_sent < 1.0:
            return
        self._risk_due = False
        self._risk_sent = time.monotonic()
        margin = item.get("margin") or {}
        equity = item.get("equity", 0) or 0
        self._publish(
            "risk.metrics",
            {
                "margin_ratio": margin.get("ratio", 0),
                "leverage": round(margin.get("used", 0) * 5 / equity, 4) if equity else 0,
                "drawdown_daily": 0,
                "drawdown_max": 0,
                "daily_pnl": item.get("realized_pnl", 0),
                "unrealized_pnl": item.get("unrealized_pnl", 0),
                "total_equity": equity,
                "total_margin_used": margin.get("used", 0),
                "position_concentration": {},
                "open_positions": item.get("positions", 0),
                "pending_orders": item.get("open_orders", 0),
                "timestamp": int(_unix(item.get("updated_at"))),
            },
        )

    def _event(self, channel: str, data: dict[str, Any]) -> None:
        symbol = str(data.get("symbol") or "")
        if channel == "trades":
            trade_id = str(data.get("trade_id", "0"))
            trade = {
                "symbol": symbol,
                "trade_id": int(trade_id) if trade_id.isdigit() else 0,
                "price": data.get("price", 0),
                "quantity": data.get("quantity", 0),
                "timestamp": round(_unix(data.get("timestamp")) * 1000),
                "is_buyer_maker": data.get("side") == "sell",
            }
            self._command("publish", f"trades:{symbol}", orjson.dumps(trade))
        elif channel == "fills":
            fill = {
                "id": data.get("fill_id", ""),
                "symbol": symbol,
                "side": str(data.get("side", "")).upper(),
                "quantity": _dec(data.get("quantity")),
                "price": _dec(data.get("price")),
                "fee": _dec(data.get("fee")),
                "fee_currency": data.get("fee_asset", ""),
                "timestamp": data.get("timestamp", ""),
            }
            self._publish("trading.fills", fill)
        elif channel == "alerts":
            level = "critical" if data.get("level") == "critical" else "warning"
            source = str(data.get("source", "demo"))
            alert = {
                "level": level,
                "policy_id": str(uuid.uuid5(_POLICIES, f"{source}:{symbol}")),
                "policy_name": f"{source} {symbol}".strip(),
                "policy_type": "soft",
                "metric": source,
                "metric_value": 0,
                "threshold_value": 0,
                "message": data.get("message", ""),
                "timestamp": int(_unix(data.get("timestamp"))),
            }
            self._publish(f"risk.alerts.{level}", alert)

    # --- I/O -------------------------------------------------------------------------------

    async def flush(self) -> bool:
        """Send what changed; False (kept for the next flush) if Redis or NATS failed."""
        dirty, self._dirty = self._dirty, {}
        events, self._events = self._events, []
        for path in dirty:
            self._item(path)
        for channel, data in events:
            self._event(channel, data)
        self._risk_metrics()
        self.events += len(events)
        del self._redis_pending[:-MAX_PENDING]
        del self._nats_pending[:-MAX_PENDING]
        ok = True
        if self._redis_pending:
            ok = await self._send_redis() and ok
        if self._nats_pending:
            ok = await self._send_nats() and ok
        return ok

    async def _send_redis(self) -> bool:
        commands = self._redis_pending
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for command, args, kwargs in commands:
                    getattr(pipe, command)(*args, **kwargs)
                await pipe.execute()
        except Exception as exc:
            self.failures += 1
            log.warning("redis publish failed; retrying", extra={"error": describe_failure(exc)})
            return False
        self._redis_pending = self._redis_pending[len(commands) :]
        self.writes += len(commands)
        return True

    async def _send_nats(self) -> bool:
        try:
            if self._nats is None or self._nats.is_closed:
                self._nats = await nats.connect(
                    self.nats_url,
                    connect_timeout=self.timeout,
                    max_reconnect_attempts=-1,
                    name="publish-demo",
                )
            sent = 0
            for subject, payload in self._nats_pending:
                await self._nats.publish(subject, payload)
                sent += 1
            await self._nats.flush(timeout=max(1, round(self.timeout)))
        except Exception as exc:
            self.failures += 1
            log.warning("nats publish failed; retrying", extra={"error": describe_failure(exc)})
            return False
        self._nats_pending = self._nats_pending[sent:]
        self.writes += sent
        return True

    async def close(self) -> None:
        """Close both connections."""
        if self._nats is not None and not self._nats.is_closed:
            try:
                await self._nats.drain()
            except Exception as exc:
                log.debug("nats close failed", extra={"error": describe_failure(exc)})
        await close_quietly(self._redis)
