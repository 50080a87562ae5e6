"""A simulator of the original system's backends (docs/sources.md, "b25"): the shapes they really
emit, over a real redis-server, a real nats-server and local HTTP servers.

:class:`B25Sim` plays market-data, order-execution, account-monitor, strategy-engine and
risk-manager, starting from the samples in ``samples/``. Every emission also records what a
dashboard must show for it, computed here on its own (not with the server's mapping code):
:attr:`B25Sim.expected` is the state document, :attr:`B25Sim.events` the events in order.

:class:`HttpBackend` is one backend's HTTP API: ``http.server`` in a thread, JSON by path.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import nats
import orjson
from b25_samples import sample
from nats.aio.client import Client as NatsClient
from redis.asyncio import Redis

__all__ = ["B25_SECTIONS", "B25Sim", "HttpBackend", "rfc3339"]

B25_SECTIONS: Final = (
    "market_data",
    "orderbook",
    "orders",
    "positions",
    "balances",
    "pnl",
    "strategies",
    "strategy_engine",
    "risk",
)
DEPTH: Final = 20
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(ms: int) -> str:
    """Unix milliseconds as the server writes them: ``2025-01-15T10:30:00.123Z``."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _levels(side: Mapping[str, float], descending: bool) -> list[list[float]]:
    pairs = sorted(((float(p), float(s)) for p, s in side.items()), reverse=descending)
    return [[p, s] for p, s in pairs[:DEPTH]]


def _side(quantity: str) -> str:
    q = float(quantity)
    return "LONG" if q > 0 else "SHORT" if q < 0 else "FLAT"


_POSITION_DECIMALS: Final = (
    "quantity",
    "entry_price",
    "current_price",
    "realized_pnl",
    "unrealized_pnl",
    "total_fees",
)
_BALANCE_DECIMALS: Final = ("free", "locked", "total", "usd_value")


class HttpBackend:
    """A backend's HTTP API on 127.0.0.1 (see the module doc); :meth:`set` what a path answers."""

    def __init__(self) -> None:
        self._routes: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        """GETs answered so far, by path."""
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with backend._lock:
                    status, body = backend._routes.get(path, (404, b'{"error":"not found"}'))
                    backend.requests[path] += 1
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The base URL (``http://127.0.0.1:PORT``)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def set(self, path: str, value: Any) -> None:
        """Answer ``path`` with ``value`` as JSON."""
        self.set_raw(path, orjson.dumps(value))

    def set_raw(self, path: str, body: bytes, status: int = 200) -> None:
        """Answer ``path`` with these bytes and status."""
        with self._lock:
            self._routes[path] = (status, body)

    def count(self, path: str) -> int:
        """GETs of ``path`` answered so far."""
        with self._lock:
            return self.requests[path]

    async def polled(self, path: str, times: int = 2, timeout: float = 20.0) -> None:
        """Wait until ``path`` has been fetched ``times`` more times (so a poll that started
        before a :meth:`set` has ended and one after it happened too)."""
        target = self.count(path) + times
        async with asyncio.timeout(timeout):
            while self.count(path) < target:
                await asyncio.sleep(0.02)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class B25Sim:
    """The b25 backends (see the module doc). ``await start()`` before use, ``close()`` after."""

    def __init__(
        self,
        redis_port: int,
        nats_url: str,
        account_monitor: HttpBackend,
        strategy_engine: HttpBackend,
    ) -> None:
        self.redis = Redis(port=redis_port, socket_timeout=5)
        self.nats_url = nats_url
        self.nats: NatsClient | None = None
        self.account_monitor = account_monitor
        self.strategy_engine = strategy_engine
        self.expected: dict[str, dict[str, Any]] = {s: {} for s in B25_SECTIONS}
        """The state document a dashboard must show for what was emitted."""
        self.events: list[tuple[str, dict[str, Any]]] = []
        """The events it must show, ``(channel, data)``, in the order they were emitted."""
        self.lost = 0
        """NATS messages published while NATS was away (lost: core NATS is at-most-once)."""
        self._balances: dict[str, dict[str, Any]] = {}
        self._positions: dict[str, dict[str, Any]] = {}
        self._pnl: dict[str, Any] = sample("http-account-pnl")
        self._service_info: dict[str, Any] = sample("http-strategy-service-info")
        self._status: dict[str, Any] = sample("http-strategy-status")
        self._risk: dict[str, Any] = sample("nats-risk.metrics")
        self._alerts_seen: set[tuple[str, str]] = set()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to NATS and serve the HTTP documents."""
        await self.connect_nats()
        self._publish_account()
        self._publish_strategy_engine()

    async def connect_nats(self) -> None:
        """(Re)connect to NATS; no reconnect of its own, so what is published while the server
        is down is lost, as core NATS loses it."""
        self.nats = await nats.connect(self.nats_url, allow_reconnect=False, connect_timeout=2)

    async def close(self) -> None:
        """Close the connections (the HTTP backends are closed by their owner)."""
        if self.nats is not None and not self.nats.is_closed:
            await self.nats.close()
        await self.redis.aclose()

    async def enable_keyspace_notifications(self) -> None:
        """``CONFIG SET notify-keyspace-events KA`` on this test's own Redis (the dashboard
        server never changes it)."""
        await self.redis.config_set("notify-keyspace-events", "KA")

    async def publish_nats(self, subject: str, value: Any) -> bool:
        """Publish on NATS and flush; False (the message is lost) when NATS is away."""
        payload = value if isinstance(value, bytes) else orjson.dumps(value)
        try:
            assert self.nats is not None
            await self.nats.publish(subject, payload)
            await self.nats.flush(timeout=2)
        except Exception:
            self.lost += 1
            return False
        return True

    # --- market-data (Rust) --------------------------------------------------------------------

    async def market_data(self, symbol: str, bid: float, ask: float) -> None:
        """``SET market_data:{SYMBOL} ... EX 300`` + PUBLISH of the same JSON."""
        value = sample("redis-SET-market_data")
        value.update(
            symbol=symbol,
            bid_price=bid,
            ask_price=ask,
            last_price=round((bid + ask) / 2, 8),
            updated_at=datetime.now(UTC).isoformat(),
        )
        payload = orjson.dumps(value)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(f"market_data:{symbol}", payload, ex=300)
            pipe.publish(f"market_data:{symbol}", payload)
            await pipe.execute()
        self.expected["market_data"][symbol] = value

    async def orderbook(
        self, symbol: str, bids: Mapping[str, float], asks: Mapping[str, float], ts_us: int
    ) -> None:
        """PUBLISH ``orderbook:{SYMBOL}``: the whole book, price-keyed sides in ascending price
        order, timestamp in microseconds."""
        value = sample("redis-PUBLISH-orderbook")
        value.update(
            symbol=symbol,
            bids=dict(sorted(bids.items(), key=lambda kv: float(kv[0]))),
            asks=dict(sorted(asks.items(), key=lambda kv: float(kv[0]))),
            timestamp=ts_us,
        )
        value["last_update_id"] += 1
        await self.redis.publish(f"orderbook:{symbol}", orjson.dumps(value))
        expected = copy.deepcopy(value)
        expected["bids"] = _levels(bids, descending=True)
        expected["asks"] = _levels(asks, descending=False)
        expected["timestamp"] = rfc3339(ts_us // 1000)
        self.expected["orderbook"][symbol] = expected

    async def trade(self, symbol: str, trade_id: int, price: float, ts_ms: int) -> None:
        """PUBLISH ``trades:{SYMBOL}``, one per exchange trade (ms timestamp)."""
        value = sample("redis-PUBLISH-trades")
        value.update(symbol=symbol, trade_id=trade_id, price=price, timestamp=ts_ms)
        await self.redis.publish(f"trades:{symbol}", orjson.dumps(value))
        self.events.append(("trades", {**value, "timestamp": rfc3339(ts_ms)}))

    # --- order-execution (Go) ------------------------------------------------------------------

    def new_order(self, order_id: str, symbol: str, **fields: Any) -> dict[str, Any]:
        """An order shaped like the sample."""
        order: dict[str, Any] = sample("redis-SET-order")
        order.update({"order_id": order_id, "symbol": symbol, "state": "NEW", **fields})
        return order

    async def order_key(self, order: dict[str, Any]) -> None:
        """``SET order:{id} ... EX 86400`` (no PUBLISH)."""
        await self.redis.set(f"order:{order['order_id']}", orjson.dumps(order), ex=86400)
        self.expected["orders"][order["order_id"]] = copy.deepcopy(order)

    async def order_update(self, order: dict[str, Any], update_type: str) -> bool:
        """The key, then NATS ``orders.updates.{SYMBOL}`` ``{order, update_type, timestamp}``;
        False if the NATS message was lost."""
        await self.order_key(order)
        message = sample("nats-orders.updates")
        message.update(
            order=order, update_type=update_type, timestamp=datetime.now(UTC).isoformat()
        )
        return await self.publish_nats(f"orders.updates.{order['symbol']}", message)

    async def order_lifecycle(self, order: dict[str, Any]) -> None:
        """SUBMITTED -> PARTIALLY_FILLED -> FILLED, a key write and a NATS update each."""
        quantity = float(order["quantity"])
        for state, filled in (
            ("SUBMITTED", 0.0),
            ("PARTIALLY_FILLED", quantity / 2),
            ("FILLED", quantity),
        ):
            order = {**order, "state": state, "filled_quantity": filled}
            order["updated_at"] = datetime.now(UTC).isoformat()
            if filled:
                order["average_price"] = order.get("price", 0)
            await self.order_update(order, state)

    # --- account-monitor (Go) ------------------------------------------------------------------

    async def position(
        self, symbol: str, quantity: str, *, ttl: float = 86400, **fields: str
    ) -> None:
        """``SET position:{SYMBOL}``: decimal strings, a signed quantity, a growing ``trades``;
        ``ttl`` in seconds (a short one expires and must remove the item)."""
        value: dict[str, Any] = sample("redis-SET-position")
        value.update(symbol=symbol, quantity=quantity, **fields)
        value["last_update"] = datetime.now(UTC).isoformat()
        value["trades"] = [{"id": f"fill-{symbol}-{len(self._positions)}", "quantity": quantity}]
        await self.redis.set(f"position:{symbol}", orjson.dumps(value), px=round(ttl * 1000))
        self._positions[symbol] = value
        expected = {k: v for k, v in value.items() if k != "trades"}
        for name in _POSITION_DECIMALS:
            expected[name] = float(expected[name])
        expected["side"] = _side(quantity)
        self.expected["positions"][symbol] = expected
        self._publish_account()

    def position_expired(self, symbol: str) -> None:
        """What a dashboard must show once the key of ``symbol`` expired: no item."""
        self._positions.pop(symbol, None)
        self.expected["positions"].pop(symbol, None)
        self._publish_account()

    async def balance(self, asset: str, free: str, locked: str = "0") -> None:
        """``SET balance:{ASSET}`` (decimal strings) and the same in ``/api/account``."""
        value: dict[str, Any] = sample("redis-SET-balance")
        total = str(float(free) + float(locked))
        value.update(asset=asset, free=free, locked=locked, total=total)
        value["last_update"] = datetime.now(UTC).isoformat()
        await self.redis.set(f"balance:{asset}", orjson.dumps(value), ex=86400)
        self._balances[asset] = value
        expected = dict(value)
        for name in _BALANCE_DECIMALS:
            expected[name] = float(expected[name])
        self.expected["balances"][asset] = expected
        self._publish_account()

    def pnl(self, **fields: str) -> None:
        """Change the P&L that ``/api/account`` reports."""
        self._pnl.update(fields)
        self._publish_account()

    def _publish_account(self) -> None:
        document = {
            "balances": self._balances,
            "positions": self._positions,
            "pnl": self._pnl,
            "timestamp": datetime.now(UTC).isoformat(),
        }
        self.account_monitor.set("/api/account", document)
        self.account_monitor.set("/api/pnl", self._pnl)
        expected: dict[str, Any] = {}
        for name, value in self._pnl.items():
            try:
                expected[name] = float(value) if isinstance(value, str) else value
            except ValueError:
                expected[name] = value  # the timestamp
        self.expected["pnl"]["account"] = expected

    async def trading_alert(self, **fields: Any) -> bool:
        """NATS ``trading.alerts`` (decimal strings ``value``/``threshold``)."""
        value = sample("nats-trading.alerts")
        value.update(fields)
        self.events.append(
            (
                "alerts",
                {**value, "value": float(value["value"]), "threshold": float(value["threshold"])},
            )
        )
        return await self.publish_nats("trading.alerts", value)

    # --- strategy-engine (Go) ------------------------------------------------------------------

    def strategy(self, name: str, **params: Any) -> None:
        """Change (or add) a strategy in ``/api/service-info``."""
        self._service_info["strategies"].setdefault(name, {}).update(params)
        self._publish_strategy_engine()

    def engine_status(self, **fields: Any) -> None:
        """Change ``/status``."""
        self._status.update(fields)
        self._publish_strategy_engine()

    def _publish_strategy_engine(self) -> None:
        self.strategy_engine.set("/api/service-info", self._service_info)
        self.strategy_engine.set("/status", self._status)
        self.expected["strategies"] = copy.deepcopy(self._service_info["strategies"])
        self.expected["strategy_engine"] = {"status": dict(self._status)}

    # --- risk-manager (Go) ---------------------------------------------------------------------

    async def risk_metrics(self, ts_s: int, **fields: Any) -> bool:
        """NATS ``risk.metrics`` (unix seconds), as every second."""
        self._risk.update(fields, timestamp=ts_s)
        self.expected["risk"]["metrics"] = {**self._risk, "timestamp": rfc3339(ts_s * 1000)}
        return await self.publish_nats("risk.metrics", self._risk)

    async def risk_alert(self, level: str, policy_id: str, metric_value: float, ts_s: int) -> bool:
        """NATS ``risk.alerts.{level}``; the risk manager repeats it while the policy is
        violated: a dashboard shows it once per policy and level."""
        value = sample("nats-risk.alerts.critical")
        value.update(level=level, policy_id=policy_id, metric_value=metric_value, timestamp=ts_s)
        if (policy_id, level) not in self._alerts_seen:
            self._alerts_seen.add((policy_id, level))
            self.events.append(("alerts", {**value, "timestamp": rfc3339(ts_s * 1000)}))
        return await self.publish_nats(f"risk.alerts.{level}", value)

    async def emergency(self, reason: str, ts_s: int) -> bool:
        """NATS ``risk.alerts.emergency`` (no policy_id: never deduplicated)."""
        value = sample("nats-risk.alerts.emergency")
        value.update(reason=reason, timestamp=ts_s)
        self.events.append(("alerts", {**value, "timestamp": rfc3339(ts_s * 1000)}))
        return await self.publish_nats("risk.alerts.emergency", value)

    # --- fills (two schemas on trading.fills) --------------------------------------------------

    async def fill(self, fill_id: str, side: str, price: str, quantity: str) -> bool:
        """``{id, symbol, side BUY/SELL, quantity, price, fee, timestamp}``, decimal strings."""
        value = sample("nats-trading.fills")
        value.update(id=fill_id, side=side, price=price, quantity=quantity)
        expected = {
            **value,
            "price": float(price),
            "quantity": float(quantity),
            "fee": float(value["fee"]),
        }
        self.events.append(("fills", expected))
        return await self.publish_nats("trading.fills", value)

    async def fill_v2(self, fill_id: str, order_id: str, side: str, price: float) -> bool:
        """``{fill_id, order_id, symbol, side buy/sell, price, quantity, fee, timestamp,
        strategy}``, numbers."""
        value = {
            "fill_id": fill_id,
            "order_id": order_id,
            "symbol": "ETHUSDT",
            "side": side,
            "price": price,
            "quantity": 0.5,
            "fee": 0.01,
            "timestamp": datetime.now(UTC).isoformat(),
            "strategy": "momentum",
        }
        expected = {k: v for k, v in value.items() if k != "fill_id"}
        expected.update(id=fill_id, side=side.upper())
        self.events.append(("fills", expected))
        return await self.publish_nats("trading.fills", value)
