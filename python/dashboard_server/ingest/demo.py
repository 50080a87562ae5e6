"""The embedded demo feed: a simulated trading desk that writes through a :class:`StateSink`.

:class:`DemoFeed` is a :class:`~dashboard_server.ingest.feed.Feed` (the server starts and stops
it like any other); ``publish-demo`` runs the same simulation into Redis instead.

It gives ``dashboard-server`` something live to show without Redis, and it exercises every
section of the state document:

- ``market_data/{symbol}``: a mean-reverting random walk per symbol (last, bid/ask and sizes,
  24h open/high/low/change/volume);
- ``orderbook/{symbol}``: ten price levels a side around the touch, with a ``sequence``;
- ``orders/{id}``: strategies place limit and market orders that get partially filled, filled,
  cancelled or rejected, and are removed a short while after they finish;
- ``positions/{symbol}``: built by fills (average entry price, realised PnL), marked to the market
  on every tick, removed when flat;
- ``account/main``: wallet, equity, margin, PnL and balances by asset;
- ``strategies/{name}``: PnL, fills, volume, open orders, hit rate and a few live metrics;
- events: ``fills`` for every fill, ``trades`` for public prints, ``alerts`` for large moves,
  rejected orders and strategy pauses.

Every write is at an item's path (``/{section}/{id}``) and a merge carries only the fields that
changed, as a real backend would publish. One :meth:`DemoFeed.step` is one simulated market tick of
one symbol; :meth:`DemoFeed.run` calls it ``updates_per_second`` times a second on a drift-free
schedule (the steps of one wake-up are written as one batch when the sink can batch, as
``StateWriter.batch`` does). The simulation has its own clock (``start_time`` plus
``steps / updates_per_second``), so a seeded feed with a fixed ``start_time`` writes exactly
the same sequence every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Final

from dashboard_server.core.ticker import periodic
from dashboard_server.core.timefmt import rfc3339_ms
from dashboard_server.ingest.feed import TaskFeed
from dashboard_server.ingest.writer import StateSink

__all__ = ["ACCOUNT_ID", "STRATEGIES", "DemoFeed", "symbol_names"]

_BASES: Final[tuple[tuple[str, float], ...]] = (
    ("BTC", 67_000.0),
    ("ETH", 3_500.0),
    ("SOL", 150.0),
    ("BNB", 580.0),
    ("XRP", 0.52),
    ("ADA", 0.45),
    ("DOGE", 0.16),
    ("AVAX", 35.0),
    ("DOT", 7.0),
    ("LINK", 15.0),
    ("LTC", 80.0),
    ("TRX", 0.12),
    ("ATOM", 8.5),
    ("UNI", 9.0),
    ("XLM", 0.11),
    ("NEAR", 6.0),
    ("APT", 9.0),
    ("ARB", 1.0),
    ("OP", 2.2),
    ("FIL", 5.5),
    ("ETC", 26.0),
    ("INJ", 25.0),
    ("SUI", 1.1),
    ("AAVE", 95.0),
    ("MKR", 2_500.0),
)
"""Base assets and a plausible starting price in USD."""

_QUOTES: Final[tuple[tuple[str, float], ...]] = (
    ("USDT", 1.0),
    ("USDC", 1.0),
    ("FDUSD", 1.0),
    ("EUR", 1.08),
    ("BTC", 67_000.0),
)
"""Quote assets and their value in USD (BTC follows the simulated BTCUSDT when it exists)."""

STRATEGIES: Final = ("market_maker", "momentum", "mean_reversion", "stat_arb", "twap_exec")
"""The simulated strategies; each symbol is traded by one of them."""

ACCOUNT_ID: Final = "main"
"""The one simulated trading account (``/account/main``)."""

_BOOK_LEVELS: Final = 10
_SIGMA: Final = 0.0008  # log-return standard deviation of one tick
_REVERSION: Final = 0.002  # pull of the log price towards its anchor, per tick
_ORDER_LINGER: Final = 2.0  # seconds a finished order stays visible before removal
_ACCOUNT_PERIOD: Final = 0.25  # seconds between account updates
_STRATEGY_PERIOD: Final = 0.5  # seconds between strategy metric updates
_FEE_RATE: Final = 0.0004
_LEVERAGE: Final = 5
_START_WALLET: Final = 1_000_000.0
_MISSING: Final = object()


def _round(value: float, digits: int) -> float:
    """``round`` that never gives ``-0.0`` (a different value from ``0.0`` for the engine)."""
    return round(value, digits) + 0.0


def symbol_names(count: int) -> list[str]:
    """``count`` realistic symbol names: BTCUSDT, ETHUSDT, ..., other quotes, then TKN<n>USDT."""
    names = [b + q for q, _ in _QUOTES for b, _ in _BASES if b != q]
    names += [f"TKN{i}USDT" for i in range(1, count - len(names) + 1)]
    return names[:count]


def _initial_price(symbol: str) -> tuple[str, float]:
    """(quote asset, starting price in quote units) of a name made by :func:`symbol_names`."""
    for quote, quote_usd in _QUOTES:
        if symbol.endswith(quote):
            base = symbol[: -len(quote)]
            for name, usd in _BASES:
                if name == base:
                    return quote, usd / quote_usd
    index = int(symbol[3:-4])
    return "USDT", round(0.5 + (index * 7.919) % 40.0, 2)


class _Market:
    """The simulated state of one symbol."""

    __slots__ = (
        "anchor",
        "ask",
        "bid",
        "book_seq",
        "high",
        "last",
        "low",
        "move_bucket",
        "open",
        "price",
        "price_dp",
        "qty_dp",
        "quote",
        "spacing",
        "strategy",
        "symbol",
        "tick",
        "volume",
    )

    def __init__(self, symbol: str, strategy: str, rng: random.Random) -> None:
        self.symbol = symbol
        self.strategy = strategy
        self.quote, start = _initial_price(symbol)
        start *= math.exp(rng.gauss(0.0, 0.02))
        # Six significant digits for prices; quantities sized so one step is worth ~0.1-1 USD.
        self.price_dp = max(2, 5 - math.floor(math.log10(start)))
        self.qty_dp = max(0, min(8, math.floor(math.log10(start * _quote_usd(self.quote))) + 1))
        self.tick = 10.0**-self.price_dp
        self.spacing = max(1, round(start * 0.0001 / self.tick)) * self.tick
        self.anchor = math.log(start)
        self.price = start
        self.open = round(start * math.exp(rng.gauss(0.0, 0.02)), self.price_dp)
        self.last = round(start, self.price_dp)
        self.bid = self.ask = self.last
        self.high = max(self.open, self.last)
        self.low = min(self.open, self.last)
        self.volume = round(rng.uniform(5e6, 5e8) / (start * _quote_usd(self.quote)), self.qty_dp)
        self.book_seq = 0
        self.move_bucket = 0


def _quote_usd(quote: str) -> float:
    for name, usd in _QUOTES:
        if name == quote:
            return usd
    return 1.0


class _Order:
    """One simulated order."""

    __slots__ = (
        "created_at",
        "filled",
        "id",
        "notional_fill",
        "price",
        "quantity",
        "side",
        "status",
        "strategy",
        "symbol",
        "type",
    )

    def __init__(
        self,
        oid: str,
        market: _Market,
        side: str,
        kind: str,
        price: float,
        quantity: float,
        created_at: str,
    ) -> None:
        self.id = oid
        self.symbol = market.symbol
        self.strategy = market.strategy
        self.side = side
        self.type = kind
        self.price = price
        self.quantity = quantity
        self.filled = 0.0
        self.notional_fill = 0.0
        self.status = "new"
        self.created_at = created_at


class _Position:
    """A net position in one symbol (signed quantity, average entry price)."""

    __slots__ = ("entry", "qty", "realized")

    def __init__(self, qty: float, entry: float) -> None:
        self.qty = qty
        self.entry = entry
        self.realized = 0.0


class _StrategyStats:
    """Running metrics of one strategy."""

    __slots__ = (
        "fills",
        "latency",
        "paused_until",
        "realized",
        "sharpe",
        "signal",
        "volume",
        "wins",
    )

    def __init__(self, rng: random.Random) -> None:
        self.fills = 0
        self.wins = 0
        self.volume = 0.0
        self.realized = 0.0
        self.sharpe = rng.uniform(0.8, 2.5)
        self.signal = 0.0
        self.latency = rng.uniform(0.2, 2.0)
        self.paused_until = 0.0


class DemoFeed(TaskFeed):
    """A simulated market writing its state and events through ``sink``.

    ``symbols`` is how many symbols to simulate (names from :func:`symbol_names`),
    ``updates_per_second`` how many :meth:`step` calls :meth:`run` makes per second, ``seed``
    makes the simulation reproducible, and ``start_time`` (Unix seconds, default: now) is the
    simulated clock at the first step.
    """

    name = "demo"

    def __init__(
        self,
        sink: StateSink,
        *,
        symbols: int = 20,
        updates_per_second: float = 50.0,
        seed: int | None = None,
        start_time: float | None = None,
    ) -> None:
        if isinstance(symbols, bool) or not isinstance(symbols, int) or symbols < 1:
            raise ValueError(f"symbols must be a positive integer, not {symbols!r}")
        if not (math.isfinite(updates_per_second) and updates_per_second > 0):
            raise ValueError(f"updates_per_second must be > 0, not {updates_per_second!r}")
        super().__init__()
        self.sink = sink
        self.updates_per_second = float(updates_per_second)
        self.rng = random.Random(seed)
        self.steps = 0
        """Steps taken so far."""
        self.fills = 0
        """Fills so far (one ``fills`` event each)."""
        self.orders_created = 0
        self.orders_removed = 0
        self._t0 = time.time() if start_time is None else float(start_time)
        self._now = self._t0
        self._stamp_ms = -1
        self._stamp = ""
        self._markets = [
            _Market(name, STRATEGIES[i % len(STRATEGIES)], self.rng)
            for i, name in enumerate(symbol_names(symbols))
        ]
        self._by_symbol = {m.symbol: m for m in self._markets}
        self._orders: dict[str, _Order] = {}
        self._open: dict[str, dict[str, _Order]] = {m.symbol: {} for m in self._markets}
        self._working = 0  # orders in self._open
        self._finished: deque[tuple[float, str]] = deque()
        self._positions: dict[str, _Position] = {}
        self._strategies = {name: _StrategyStats(self.rng) for name in STRATEGIES}
        self._published: dict[str, dict[str, Any]] = {}
        self._wallet = _START_WALLET
        self._fees_paid = 0.0
        self._next_account = 0.0
        self._next_strategies = 0.0
        self._ids = 100_000
        self._target_open = min(200, 2 * symbols + 10)

    # -- public ----------------------------------------------------------------------------

    @property
    def symbols(self) -> list[str]:
        """The simulated symbols, in order."""
        return [m.symbol for m in self._markets]

    @property
    def now(self) -> float:
        """The simulated clock, in Unix seconds."""
        return self._now

    @property
    def open_orders(self) -> int:
        """Orders currently working (new or partially filled)."""
        return self._working

    def step(self) -> None:
        """One simulated tick: the first publishes the whole initial state."""
        self._now = self._t0 + self.steps / self.updates_per_second
        if self.steps == 0:
            self._publish_initial()
        else:
            self._tick()
        self.steps += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Call :meth:`step` ``updates_per_second`` times a second until ``stop`` is set.

        The schedule is drift-free: step ``n`` is due at ``start + n / updates_per_second`` on the
        loop clock, and the loop wakes at most 100 times a second, taking every step that is due.
        After a stall longer than a second the backlog is skipped (the simulated clock jumps)
        instead of being replayed in a burst.
        """
        loop = asyncio.get_running_loop()
        rate = self.updates_per_second
        start = loop.time()
        done = 0
        batch: Callable[[], AbstractContextManager[None]] | None = getattr(self.sink, "batch", None)
        batched = batch if batch is not None else contextlib.nullcontext

        def take_due_steps() -> None:
            nonlocal start, done
            due = int((loop.time() - start) * rate) + 1
            if due - done > rate:
                skipped = due - done - 1
                self._t0 += skipped / rate
                start += skipped / rate
                due -= skipped
                done = due - 1
            with batched():  # the steps' many small merges: a few engine calls
                while done < due:
                    self.step()
                    done += 1

        take_due_steps()
        async with contextlib.aclosing(periodic(max(1.0 / rate, 0.01), stop)) as wakes:
            async for _ in wakes:
                take_due_steps()

    # -- helpers ---------------------------------------------------------------------------

    def _stamp_now(self) -> str:
        """The simulated time as RFC 3339 UTC with milliseconds (cached per millisecond)."""
        ms = int(self._now * 1000)
        if ms != self._stamp_ms:
            self._stamp_ms = ms
            self._stamp = rfc3339_ms(ms)
        return self._stamp

    def _next_id(self) -> str:
        self._ids += 1
        return str(self._ids)

    def _merge_changed(self, section: str, key: str, fields: dict[str, Any]) -> None:
        """Merge into ``/{section}/{key}`` only the fields that differ from what was published."""
        cache_key = f"{section}/{key}"
        published = self._published.get(cache_key)
        if published is None:
            self._published[cache_key] = dict(fields)
            self.sink.replace(f"/{cache_key}", fields)
            return
        patch = {k: v for k, v in fields.items() if published.get(k, _MISSING) != v}
        if len(patch) > 1 or (patch and "updated_at" not in patch):
            published.update(patch)
            self.sink.merge(f"/{cache_key}", patch)

    def _remove_item(self, section: str, key: str) -> None:
        self._published.pop(f"{section}/{key}", None)
        self.sink.remove(f"/{section}/{key}")

    def _usd(self, market: _Market) -> float:
        """The USD value of one unit of ``market``'s quote asset."""
        if market.quote == "BTC" and "BTCUSDT" in self._by_symbol:
            return self._by_symbol["BTCUSDT"].last
        return _quote_usd(market.quote)

    # -- simulation ------------------------------------------------------------------------

    def _publish_initial(self) -> None:
        rng = self.rng
        for m in self._markets:
            self._move_price(m)
            self._publish_market(m)
        for m in self._markets[::3]:
            qty = round(
                rng.choice((-1, 1)) * rng.uniform(2e4, 2e5) / (m.last * self._usd(m)), m.qty_dp
            )
            if qty:
                entry = round(m.last * math.exp(rng.gauss(0.0, 0.01)), m.price_dp)
                self._positions[m.symbol] = _Position(qty, entry)
                self._publish_position(m)
        for _ in range(self._target_open // 2):
            self._new_order(rng.choice(self._markets))
        self._publish_strategies()
        self._publish_account()

    def _tick(self) -> None:
        rng = self.rng
        m = self._markets[rng.randrange(len(self._markets))]
        self._move_price(m)
        if rng.random() < 0.3:
            self._public_trade(m)
        self._publish_market(m)
        self._match(m)
        if m.symbol in self._positions:
            self._publish_position(m)
        if rng.random() < 0.25 * (1.0 - self.open_orders / self._target_open) + 0.02:
            self._new_order(rng.choice(self._markets))
        if rng.random() < 0.04:
            self._cancel_random()
        self._expire_finished()
        if self._now >= self._next_account:
            self._publish_account()
        if self._now >= self._next_strategies:
            self._publish_strategies()

    def _move_price(self, m: _Market) -> None:
        rng = self.rng
        log_price = math.log(m.price)
        log_price += rng.gauss(0.0, _SIGMA) + _REVERSION * (m.anchor - log_price)
        m.price = math.exp(log_price)
        half = max(m.tick, m.price * 0.00005 * (1.0 + rng.random()))
        dp = m.price_dp
        m.bid = round(m.price - half, dp)
        m.ask = round(m.price + half, dp)
        if m.ask <= m.bid:
            m.ask = round(m.bid + m.tick, dp)
        m.last = m.bid if rng.random() < 0.5 else m.ask
        m.high = max(m.high, m.last)
        m.low = min(m.low, m.last)
        # Alert each time the 24h move crosses another 2% step; re-arm a step once the move has
        # come back 1% inside it, so a price hovering at a threshold does not flood alerts.
        change_pct = (m.last - m.open) / m.open * 100.0
        bucket = int(change_pct / 2.0)
        if abs(bucket) > abs(m.move_bucket) or bucket * m.move_bucket < 0:
            m.move_bucket = bucket
            level = "warning" if abs(bucket) >= 2 else "info"
            self._alert(
                level, "market_data", f"{m.symbol} moved {change_pct:+.2f}% in 24h", m.symbol
            )
        elif m.move_bucket and abs(change_pct) < abs(m.move_bucket) * 2.0 - 1.0:
            m.move_bucket -= 1 if m.move_bucket > 0 else -1

    def _public_trade(self, m: _Market) -> None:
        qty = round(self._lot(m) * self.rng.uniform(0.1, 3.0), m.qty_dp)
        if qty <= 0:
            return
        m.volume = round(m.volume + qty, m.qty_dp)
        self._ids += 1
        self.sink.publish_event(
            "trades",
            {
                "trade_id": str(self._ids),
                "symbol": m.symbol,
                "price": m.last,
                "quantity": qty,
                "side": "buy" if m.last == m.ask else "sell",
                "timestamp": self._stamp_now(),
            },
        )

    def _lot(self, m: _Market) -> float:
        """A typical order quantity: about 5,000 USD."""
        return 5_000.0 / (m.last * self._usd(m))

    def _publish_market(self, m: _Market) -> None:
        rng = self.rng
        dp, qdp, lot = m.price_dp, m.qty_dp, self._lot(m)
        bids = [
            [round(m.bid - i * m.spacing, dp), round(lot * (0.2 + rng.random() * (1 + i)), qdp)]
            for i in range(_BOOK_LEVELS)
        ]
        asks = [
            [round(m.ask + i * m.spacing, dp), round(lot * (0.2 + rng.random() * (1 + i)), qdp)]
            for i in range(_BOOK_LEVELS)
        ]
        m.book_seq += 1
        stamp = self._stamp_now()
        change = _round(m.last - m.open, dp)
        self._merge_changed(
            "market_data",
            m.symbol,
            {
                "symbol": m.symbol,
                "last_price": m.last,
                "bid": m.bid,
                "ask": m.ask,
                "bid_size": bids[0][1],
                "ask_size": asks[0][1],
                "open_24h": m.open,
                "high_24h": m.high,
                "low_24h": m.low,
                "volume_24h": m.volume,
                "change_24h": change,
                "change_pct_24h": _round(change / m.open * 100.0, 3),
                "updated_at": stamp,
            },
        )
        self._merge_changed(
            "orderbook",
            m.symbol,
            {
                "symbol": m.symbol,
                "bids": bids,
                "asks": asks,
                "sequence": m.book_seq,
                "updated_at": stamp,
            },
        )

    # -- orders ----------------------------------------------------------------------------

    def _new_order(self, m: _Market) -> None:
        rng = self.rng
        pos = self._positions.get(m.symbol)
        if pos is not None and rng.random() < 0.2:
            side = "sell" if pos.qty > 0 else "buy"  # close the position
            qty = abs(pos.qty)
        else:
            side = "buy" if rng.random() < 0.5 else "sell"
            qty = round(self._lot(m) * rng.uniform(0.2, 2.0), m.qty_dp)
        if qty <= 0:
            return
        kind = "market" if rng.random() < 0.12 else "limit"
        if kind == "market":
            price = m.ask if side == "buy" else m.bid
        else:
            # Mostly passive, sometimes crossing the spread (filled on the next tick).
            offset = rng.choice((-1, 0, 0, 1, 1, 2, 3, 5)) * m.spacing
            price = round(m.bid - offset if side == "buy" else m.ask + offset, m.price_dp)
        order = _Order(self._next_id(), m, side, kind, price, qty, self._stamp_now())
        self.orders_created += 1
        self._orders[order.id] = order
        if self._strategies[m.strategy].paused_until > self._now or rng.random() < 0.01:
            order.status = "rejected"
            self._publish_order(
                order,
                reason="risk limit: strategy paused"
                if self._strategies[m.strategy].paused_until > self._now
                else "insufficient margin",
            )
            self._alert("warning", m.strategy, f"order {order.id} on {m.symbol} rejected", m.symbol)
            self._finish(order)
            return
        self._open[m.symbol][order.id] = order
        self._working += 1
        self._publish_order(order)
        if kind == "market":
            self._fill(order, m, order.quantity, liquidity="taker")

    def _publish_order(self, order: _Order, reason: str | None = None) -> None:
        m = self._by_symbol[order.symbol]
        fields: dict[str, Any] = {
            "id": order.id,
            "symbol": order.symbol,
            "side": order.side,
            "type": order.type,
            "price": order.price,
            "quantity": order.quantity,
            "filled_quantity": round(order.filled, m.qty_dp),
            "status": order.status,
            "strategy": order.strategy,
            "account": ACCOUNT_ID,
            "created_at": order.created_at,
            "updated_at": self._stamp_now(),
        }
        if order.filled > 0:
            fields["avg_fill_price"] = round(order.notional_fill / order.filled, m.price_dp)
        if reason is not None:
            fields["reason"] = reason
        self._merge_changed("orders", order.id, fields)

    def _match(self, m: _Market) -> None:
        """Fill the working orders of ``m`` that the market crossed, or that sit at the touch."""
        rng = self.rng
        for order in list(self._open[m.symbol].values()):
            crossed = order.price >= m.ask if order.side == "buy" else order.price <= m.bid
            at_touch = order.price == (m.bid if order.side == "buy" else m.ask)
            if crossed or (at_touch and rng.random() < 0.3):
                remaining = order.quantity - order.filled
                qty = remaining if rng.random() < 0.6 else remaining * rng.uniform(0.2, 0.8)
                qty = round(qty, m.qty_dp)
                if qty > 0:
                    self._fill(order, m, min(qty, remaining), "taker" if crossed else "maker")

    def _fill(self, order: _Order, m: _Market, qty: float, liquidity: str) -> None:
        price = (
            order.price
            if order.type == "limit" and liquidity == "maker"
            else (m.ask if order.side == "buy" else m.bid)
        )
        order.filled = round(order.filled + qty, m.qty_dp)
        order.notional_fill += qty * price
        usd = self._usd(m)
        fee = round(qty * price * usd * _FEE_RATE, 4)
        self._wallet -= fee
        self._fees_paid += fee
        m.volume = round(m.volume + qty, m.qty_dp)
        self.fills += 1
        stats = self._strategies[order.strategy]
        stats.fills += 1
        stats.volume += qty * price * usd
        realized = self._apply_to_position(m, qty if order.side == "buy" else -qty, price) * usd
        if realized:
            self._wallet += realized
            stats.realized += realized
            stats.wins += realized > 0
        self._ids += 1
        self.sink.publish_event(
            "fills",
            {
                "fill_id": str(self._ids),
                "order_id": order.id,
                "symbol": m.symbol,
                "side": order.side,
                "price": price,
                "quantity": qty,
                "fee": fee,
                "fee_asset": "USDT",
                "liquidity": liquidity,
                "strategy": order.strategy,
                "realized_pnl": _round(realized, 2),
                "timestamp": self._stamp_now(),
            },
        )
        if order.quantity - order.filled <= 10.0**-m.qty_dp / 2:
            order.status = "filled"
            del self._open[m.symbol][order.id]
            self._working -= 1
            self._publish_order(order)
            self._finish(order)
        else:
            order.status = "partially_filled"
            self._publish_order(order)

    def _apply_to_position(self, m: _Market, delta: float, price: float) -> float:
        """Book a fill of signed ``delta`` at ``price``; return the realised PnL (quote units)."""
        pos = self._positions.get(m.symbol)
        if pos is None:
            pos = self._positions[m.symbol] = _Position(0.0, price)
        realized = 0.0
        new_qty = round(pos.qty + delta, m.qty_dp)
        if pos.qty == 0 or (pos.qty > 0) == (delta > 0):
            pos.entry = (pos.entry * abs(pos.qty) + price * abs(delta)) / abs(new_qty)
        else:
            closed = min(abs(delta), abs(pos.qty))
            realized = closed * (price - pos.entry) * (1 if pos.qty > 0 else -1)
            if new_qty and (new_qty > 0) != (pos.qty > 0):
                pos.entry = price  # flipped: the remainder opens at the fill price
        pos.qty = new_qty
        pos.realized += realized
        if new_qty == 0:
            del self._positions[m.symbol]
            self._remove_item("positions", m.symbol)
        else:
            self._publish_position(m)
        return realized

    def _publish_position(self, m: _Market) -> None:
        pos = self._positions[m.symbol]
        usd = self._usd(m)
        notional = abs(pos.qty) * m.last * usd
        self._merge_changed(
            "positions",
            m.symbol,
            {
                "symbol": m.symbol,
                "side": "long" if pos.qty > 0 else "short",
                "quantity": abs(pos.qty),
                "entry_price": round(pos.entry, m.price_dp),
                "mark_price": m.last,
                "notional": round(notional, 2),
                "unrealized_pnl": _round(pos.qty * (m.last - pos.entry) * usd, 2),
                "realized_pnl": _round(pos.realized * usd, 2),
                "leverage": _LEVERAGE,
                "margin": round(notional / _LEVERAGE, 2),
                "strategy": m.strategy,
                "updated_at": self._stamp_now(),
            },
        )

    def _cancel_random(self) -> None:
        if not self._working:
            return
        working = [o for o in self._orders.values() if o.status in ("new", "partially_filled")]
        order = self.rng.choice(working)
        order.status = "cancelled"
        del self._open[order.symbol][order.id]
        self._working -= 1
        self._publish_order(order)
        self._finish(order)

    def _finish(self, order: _Order) -> None:
        """Schedule the removal of a finished order."""
        self._finished.append((self._now + _ORDER_LINGER, order.id))

    def _expire_finished(self) -> None:
        while self._finished and self._finished[0][0] <= self._now:
            _, oid = self._finished.popleft()
            del self._orders[oid]
            self._remove_item("orders", oid)
            self.orders_removed += 1

    # -- account, strategies, alerts -------------------------------------------------------

    def _publish_account(self) -> None:
        self._next_account = self._now + _ACCOUNT_PERIOD
        upnl = 0.0
        margin_used = 0.0
        for symbol, pos in self._positions.items():
            m = self._by_symbol[symbol]
            usd = self._usd(m)
            upnl += pos.qty * (m.last - pos.entry) * usd
            margin_used += abs(pos.qty) * m.last * usd / _LEVERAGE
        locked = 0.0
        for order in self._orders.values():
            if order.status in ("new", "partially_filled"):
                m = self._by_symbol[order.symbol]
                locked += (order.quantity - order.filled) * order.price * self._usd(m) / _LEVERAGE
        equity = self._wallet + upnl
        realized = self._wallet - _START_WALLET + self._fees_paid
        self._merge_changed(
            "account",
            ACCOUNT_ID,
            {
                "account_id": ACCOUNT_ID,
                "currency": "USDT",
                "equity": round(equity, 2),
                "wallet_balance": round(self._wallet, 2),
                "unrealized_pnl": _round(upnl, 2),
                "realized_pnl": _round(realized, 2),
                "fees_paid": round(self._fees_paid, 2),
                "margin": {
                    "used": round(margin_used, 2),
                    "locked": round(locked, 2),
                    "available": round(max(0.0, equity - margin_used - locked), 2),
                    "ratio": round(margin_used / equity if equity > 0 else 0.0, 4),
                },
                "balances": {
                    "USDT": {
                        "total": round(self._wallet, 2),
                        "locked": round(locked, 2),
                        "free": round(self._wallet - locked, 2),
                    },
                    "BTC": {"total": 1.5, "locked": 0.0, "free": 1.5},
                    "BNB": {"total": 42.0, "locked": 0.0, "free": 42.0},
                },
                "open_orders": self.open_orders,
                "positions": len(self._positions),
                "updated_at": self._stamp_now(),
            },
        )

    def _publish_strategies(self) -> None:
        self._next_strategies = self._now + _STRATEGY_PERIOD
        rng = self.rng
        upnl = dict.fromkeys(STRATEGIES, 0.0)
        open_orders = dict.fromkeys(STRATEGIES, 0)
        for symbol, pos in self._positions.items():
            m = self._by_symbol[symbol]
            upnl[m.strategy] += pos.qty * (m.last - pos.entry) * self._usd(m)
        for m in self._markets:
            open_orders[m.strategy] += len(self._open[m.symbol])
        for name, st in self._strategies.items():
            st.signal = max(-1.0, min(1.0, st.signal * 0.9 + rng.gauss(0.0, 0.2)))
            st.sharpe = max(-3.0, min(5.0, st.sharpe + rng.gauss(0.0, 0.02)))
            st.latency = max(0.05, st.latency * 0.8 + rng.uniform(0.1, 2.0) * 0.2)
            paused = st.paused_until > self._now
            if not paused and rng.random() < 0.002:
                st.paused_until = self._now + 5.0
                paused = True
                self._alert("critical", name, f"strategy {name} paused: drawdown limit hit", None)
            self._merge_changed(
                "strategies",
                name,
                {
                    "name": name,
                    "status": "paused" if paused else "running",
                    "pnl": _round(st.realized + upnl[name], 2),
                    "realized_pnl": _round(st.realized, 2),
                    "unrealized_pnl": _round(upnl[name], 2),
                    "open_orders": open_orders[name],
                    "fills": st.fills,
                    "volume": round(st.volume, 2),
                    "hit_rate": round(st.wins / st.fills, 4) if st.fills else 0.0,
                    "sharpe": round(st.sharpe, 2),
                    "signal": round(st.signal, 3),
                    "latency_ms": round(st.latency, 2),
                    "updated_at": self._stamp_now(),
                },
            )

    def _alert(self, level: str, source: str, message: str, symbol: str | None) -> None:
        self._ids += 1
        data: dict[str, Any] = {
            "alert_id": str(self._ids),
            "level": level,
            "source": source,
            "message": message,
            "timestamp": self._stamp_now(),
        }
        if symbol is not None:
            data["symbol"] = symbol
        self.sink.publish_event("alerts", data)
