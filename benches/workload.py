"""Seeded trading-state workloads, shared by the tests, the benchmarks and load tools.

The *standard workload* (``Workload()`` with its defaults) is the one the engine benchmarks
quote: 500 symbols (12 market-data fields and a 5-level book a side), 2,000 orders, 200
positions, 20 balances and 50 strategies: about 46k leaves (array elements counted) and 0.9 MB
as JSON. A tick changes 1% of the leaves, adds 5 orders and removes 5, and is delivered the way
Redis delivers it: one JSON merge payload per changed item (``null`` removes the item).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson

SECTIONS = ("market_data", "orderbook", "orders", "positions", "account", "strategies")
BOOK_DEPTH = 5

_MD_FIELDS = (
    "last_price",
    "bid",
    "ask",
    "bid_size",
    "ask_size",
    "volume_24h",
    "change_24h",
    "change_pct_24h",
    "high_24h",
    "low_24h",
    "open_24h",
    "updated_at",
)
_ORDER_NUMERIC = ("price", "quantity", "filled_quantity", "avg_fill_price", "updated_at")
_POSITION_NUMERIC = ("quantity", "entry_price", "mark_price", "unrealized_pnl", "realized_pnl")
_STRATEGY_NUMERIC = ("pnl", "sharpe", "win_rate", "trades", "exposure", "drawdown", "signals")


@dataclass
class Workload:
    """A deterministic generator of an initial state and of ticks against it."""

    seed: int = 1
    symbols: int = 500
    orders: int = 2000
    positions: int = 200
    balances: int = 20
    strategies: int = 50
    change_fraction: float = 0.01
    orders_added: int = 5
    orders_removed: int = 5

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._clock = 1_764_000_000_000
        self._next_order = 1
        self._symbols = [f"SYM{i:04d}USDT" for i in range(self.symbols)]
        self.state: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        rng = self._rng
        for symbol in self._symbols:
            price = round(rng.uniform(1, 50_000), 2)
            self.state["market_data"][symbol] = self._market(symbol, price)
            self.state["orderbook"][symbol] = self._book(price)
        for _ in range(self.orders):
            order = self._new_order()
            self.state["orders"][order["id"]] = order
        for symbol in self._symbols[: self.positions]:
            self.state["positions"][symbol] = self._position(symbol)
        self.state["account"]["main"] = {
            "equity": 1_000_000.0,
            "margin_used": 120_000.0,
            "balances": {
                f"ASSET{i:02d}": {"free": 1000.0 + i, "locked": 10.0, "total": 1010.0 + i}
                for i in range(self.balances)
            },
        }
        for i in range(self.strategies):
            self.state["strategies"][f"strategy-{i:02d}"] = self._strategy(i)

    # -- items -------------------------------------------------------------------------------

    def _market(self, symbol: str, price: float) -> dict[str, Any]:
        rng = self._rng
        spread = round(price * 0.0002, 4)
        return {
            "last_price": price,
            "bid": round(price - spread, 4),
            "ask": round(price + spread, 4),
            "bid_size": round(rng.uniform(0.1, 50), 3),
            "ask_size": round(rng.uniform(0.1, 50), 3),
            "volume_24h": round(rng.uniform(1e3, 1e7), 2),
            "change_24h": round(rng.uniform(-500, 500), 2),
            "change_pct_24h": round(rng.uniform(-5, 5), 3),
            "high_24h": round(price * 1.03, 2),
            "low_24h": round(price * 0.97, 2),
            "open_24h": round(price * 0.99, 2),
            "updated_at": self._clock,
        }

    def _book(self, price: float) -> dict[str, Any]:
        rng = self._rng
        return {
            "bids": [
                [round(price * (1 - 0.0005 * (i + 1)), 4), round(rng.uniform(0.1, 20), 3)]
                for i in range(BOOK_DEPTH)
            ],
            "asks": [
                [round(price * (1 + 0.0005 * (i + 1)), 4), round(rng.uniform(0.1, 20), 3)]
                for i in range(BOOK_DEPTH)
            ],
        }

    def _new_order(self) -> dict[str, Any]:
        rng = self._rng
        order_id = str(self._next_order)
        self._next_order += 1
        symbol = rng.choice(self._symbols)
        return {
            "id": order_id,
            "symbol": symbol,
            "side": rng.choice(("buy", "sell")),
            "type": rng.choice(("limit", "market", "stop")),
            "price": round(rng.uniform(1, 50_000), 2),
            "quantity": round(rng.uniform(0.01, 10), 3),
            "filled_quantity": 0.0,
            "avg_fill_price": 0.0,
            "status": "open",
            "strategy": f"strategy-{rng.randrange(max(self.strategies, 1)):02d}",
            "time_in_force": "GTC",
            "client_id": f"c-{order_id}",
            "created_at": self._clock,
            "updated_at": self._clock,
        }

    def _position(self, symbol: str) -> dict[str, Any]:
        rng = self._rng
        return {
            "symbol": symbol,
            "side": rng.choice(("long", "short")),
            "quantity": round(rng.uniform(0.1, 100), 3),
            "entry_price": round(rng.uniform(1, 50_000), 2),
            "mark_price": round(rng.uniform(1, 50_000), 2),
            "unrealized_pnl": round(rng.uniform(-1e4, 1e4), 2),
            "realized_pnl": round(rng.uniform(-1e4, 1e4), 2),
            "leverage": rng.choice((1, 2, 3, 5, 10)),
        }

    def _strategy(self, i: int) -> dict[str, Any]:
        rng = self._rng
        return {
            "name": f"strategy-{i:02d}",
            "status": "running",
            "pnl": round(rng.uniform(-1e4, 1e4), 2),
            "sharpe": round(rng.uniform(-1, 3), 3),
            "win_rate": round(rng.uniform(0.3, 0.7), 3),
            "trades": rng.randrange(0, 10_000),
            "exposure": round(rng.uniform(0, 1e6), 2),
            "drawdown": round(rng.uniform(0, 0.2), 4),
            "signals": rng.randrange(0, 1000),
        }

    # -- measuring ---------------------------------------------------------------------------

    def leaf_count(self) -> int:
        """Leaves of the current state, array elements counted one by one."""

        def count(value: Any) -> int:
            if isinstance(value, dict):
                return sum(count(v) for v in value.values())
            if isinstance(value, list):
                return sum(count(v) for v in value)
            return 1

        return count(self.state)

    # -- ticks -------------------------------------------------------------------------------

    def tick(self) -> list[tuple[str, bytes]]:
        """Advance the state by one tick; return its per-item JSON merge payloads.

        Each element is ``(path, payload)``: ``/section/id`` and a JSON merge patch for that
        item, ``b"null"`` for a removal. The workload's own ``state`` is updated to match, so it
        is always what an engine that merged every payload must hold.
        """
        rng = self._rng
        self._clock += 100
        budget = max(1, round(self.leaf_count() * self.change_fraction))
        patches: dict[str, dict[str, Any]] = {}
        md, books, orders = self.state["market_data"], self.state["orderbook"], self.state["orders"]
        order_ids = list(orders)
        while budget > 0:
            roll = rng.random()
            if roll < 0.35:
                symbol = rng.choice(self._symbols)
                field = rng.choice(_MD_FIELDS[:-1])
                patch = patches.setdefault(f"/market_data/{symbol}", {})
                patch[field] = round(md[symbol][field] * rng.uniform(0.999, 1.001), 4)
                patch["updated_at"] = self._clock
                budget -= 2
            elif roll < 0.55:
                symbol = rng.choice(self._symbols)
                side = rng.choice(("bids", "asks"))
                levels = [list(level) for level in books[symbol][side]]
                level = rng.randrange(BOOK_DEPTH)
                levels[level][1] = round(rng.uniform(0.1, 20), 3)
                patches.setdefault(f"/orderbook/{symbol}", {})[side] = levels
                budget -= 1
            elif roll < 0.9 and order_ids:
                order_id = rng.choice(order_ids)
                field = rng.choice(_ORDER_NUMERIC[:-1])
                patch = patches.setdefault(f"/orders/{order_id}", {})
                patch[field] = round(rng.uniform(0.01, 50_000), 3)
                patch["updated_at"] = self._clock
                budget -= 2
            elif roll < 0.97 and self.state["positions"]:
                symbol = rng.choice(list(self.state["positions"]))
                field = rng.choice(_POSITION_NUMERIC)
                patches.setdefault(f"/positions/{symbol}", {})[field] = round(
                    rng.uniform(-1e4, 5e4), 2
                )
                budget -= 1
            else:
                name = rng.choice(list(self.state["strategies"]))
                field = rng.choice(_STRATEGY_NUMERIC)
                patches.setdefault(f"/strategies/{name}", {})[field] = round(rng.uniform(0, 1e4), 3)
                budget -= 1
        out: list[tuple[str, bytes]] = []
        for path, patch in patches.items():
            _, section, item = path.split("/")
            self.state[section][item].update(patch)
            out.append((path, orjson.dumps(patch)))
        for order_id in rng.sample(order_ids, min(self.orders_removed, len(order_ids))):
            del orders[order_id]
            out.append((f"/orders/{order_id}", b"null"))
        for _ in range(self.orders_added):
            order = self._new_order()
            orders[order["id"]] = order
            out.append((f"/orders/{order['id']}", orjson.dumps(order)))
        return out
