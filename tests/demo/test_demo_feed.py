"""The demo feed driven into the real engine (pure; both engines for the message round trip),
and clients rebuilding the state from the engine's own encoded messages."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any

import orjson
import pytest

from dashboard_server.client.connection import ClientState, Outcome, decode_message
from dashboard_server.core.engine import Engine, load_engine
from dashboard_server.ingest.demo import ACCOUNT_ID, STRATEGIES, DemoFeed, symbol_names
from support import canon, canon_unordered

SECTIONS = ("market_data", "orderbook", "orders", "positions", "account", "strategies")
START = 1_800_000_000.0


class EngineSink:
    """A StateSink that applies every op to a StateDoc and records ops and events."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.doc = (engine or load_engine("pure")).StateDoc(sections=SECTIONS)
        self.ops: list[tuple[str, str, Any]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.removed_orders: list[dict[str, Any]] = []

    def merge(self, path: str, patch: Any) -> None:
        self.ops.append(("merge", path, patch))
        self.doc.merge(path, patch)

    def replace(self, path: str, value: Any) -> None:
        self.ops.append(("replace", path, value))
        self.doc.replace(path, value)

    def remove(self, path: str) -> None:
        self.ops.append(("remove", path, None))
        if path.startswith("/orders/"):
            self.removed_orders.append(self.doc.get(path))
        assert self.doc.remove(path), f"removed {path}, which was not there"

    def publish_event(self, channel: str, data: dict[str, Any]) -> None:
        self.events.append((channel, data))


def run_feed(steps: int, *, seed: int = 7, symbols: int = 12) -> tuple[DemoFeed, EngineSink]:
    sink = EngineSink()
    feed = DemoFeed(sink, symbols=symbols, updates_per_second=50.0, seed=seed, start_time=START)
    for _ in range(steps):
        feed.step()
    return feed, sink


@pytest.fixture(scope="module")
def long_run() -> tuple[DemoFeed, EngineSink]:
    return run_feed(2500)


def test_every_section_is_populated(long_run: tuple[DemoFeed, EngineSink]) -> None:
    feed, sink = long_run
    doc = sink.doc.get()
    assert list(doc) == list(SECTIONS)
    assert set(doc["market_data"]) == set(feed.symbols) == set(doc["orderbook"])
    assert doc["orders"] and doc["positions"]
    assert list(doc["account"]) == [ACCOUNT_ID]
    assert list(doc["strategies"]) == list(STRATEGIES)
    ops = Counter((kind, path.split("/")[1]) for kind, path, _ in sink.ops)
    for section in SECTIONS:
        assert ops["merge", section] > 0, f"no merge into {section}"
    assert ops["remove", "orders"] > 0 and ops["remove", "positions"] > 0
    assert all(path.count("/") == 2 for _, path, _ in sink.ops), "ops are at item paths"


def test_orders_appear_progress_and_disappear(long_run: tuple[DemoFeed, EngineSink]) -> None:
    feed, sink = long_run
    assert feed.orders_created > 100 and feed.orders_removed > 50
    statuses = Counter(o["status"] for o in sink.removed_orders)
    assert set(statuses) <= {"filled", "cancelled", "rejected"}
    assert statuses["filled"] and statuses["cancelled"]
    seen = Counter(
        patch.get("status")
        for kind, path, patch in sink.ops
        if path.startswith("/orders/") and kind == "merge"
    )
    assert seen["partially_filled"] > 0
    for order in sink.doc.get("/orders").values():
        assert 0.0 <= order["filled_quantity"] <= order["quantity"]
    # A finished order is removed about two seconds (simulated) after it finished.
    assert feed.open_orders <= len(sink.doc.get("/orders"))


def test_events_are_emitted(long_run: tuple[DemoFeed, EngineSink]) -> None:
    feed, sink = long_run
    channels = Counter(channel for channel, _ in sink.events)
    assert set(channels) == {"fills", "trades", "alerts"}
    assert channels["fills"] == feed.fills
    fill = next(data for channel, data in sink.events if channel == "fills")
    assert {"order_id", "symbol", "side", "price", "quantity", "timestamp"} <= set(fill)
    for _, data in sink.events:  # events must be encodable as they are
        orjson.dumps(data)


def floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [f for item in items for f in floats(item)]


def test_market_values_are_sane(long_run: tuple[DemoFeed, EngineSink]) -> None:
    _, sink = long_run
    doc = sink.doc.get()
    values = floats(doc) + floats([data for _, data in sink.events])
    assert values and all(math.isfinite(v) for v in values)
    assert not [v for v in values if v == 0 and math.copysign(1.0, v) < 0], "-0.0 published"
    for symbol, md in doc["market_data"].items():
        assert md["bid"] < md["ask"], symbol
        assert md["low_24h"] <= md["last_price"] <= md["high_24h"]
        book = doc["orderbook"][symbol]
        bids = [level[0] for level in book["bids"]]
        asks = [level[0] for level in book["asks"]]
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
        assert bids[0] == md["bid"] and asks[0] == md["ask"]
        for price in (md["last_price"], md["bid"], md["ask"], *bids, *asks):
            assert float(f"{price:.8g}") == price, f"{symbol}: {price} is not rounded"
    account = doc["account"][ACCOUNT_ID]
    assert account["equity"] > 0 and set(account["balances"]) >= {"USDT"}
    for position in doc["positions"].values():
        assert position["side"] in ("long", "short") and position["quantity"] > 0


def test_merges_carry_only_changes(long_run: tuple[DemoFeed, EngineSink]) -> None:
    _, sink = long_run
    merges = [
        patch
        for kind, path, patch in sink.ops
        if kind == "merge" and path.startswith("/market_data/")
    ]
    assert merges and all("symbol" not in p and "open_24h" not in p for p in merges)
    strategies = [
        patch
        for kind, path, patch in sink.ops
        if kind == "merge" and path.startswith("/strategies/")
    ]
    assert all("name" not in p for p in strategies)


def test_seed_makes_it_deterministic() -> None:
    _, a = run_feed(400, seed=3)
    _, b = run_feed(400, seed=3)
    _, c = run_feed(400, seed=4)
    assert canon([list(op) for op in a.ops]) == canon([list(op) for op in b.ops])
    assert a.events == b.events
    assert a.ops != c.ops


def test_symbol_names() -> None:
    assert symbol_names(3) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    many = symbol_names(300)
    assert len(set(many)) == 300
    assert "ETHBTC" in many and many[-1] == "TKN176USDT"
    _, sink = run_feed(50, symbols=300)
    assert len(sink.doc.get("/market_data")) == 300


def test_bad_arguments() -> None:
    sink = EngineSink()
    with pytest.raises(ValueError, match="symbols"):
        DemoFeed(sink, symbols=0)
    with pytest.raises(ValueError, match="updates_per_second"):
        DemoFeed(sink, updates_per_second=0.0)
    with pytest.raises(ValueError, match="updates_per_second"):
        DemoFeed(sink, updates_per_second=math.inf)


def test_run_never_runs_ahead_of_its_rate_and_stops() -> None:
    async def scenario() -> tuple[int, float]:
        feed = DemoFeed(EngineSink(), symbols=5, updates_per_second=200.0, seed=1)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        began = loop.time()
        task = asyncio.create_task(feed.run(stop))
        await asyncio.sleep(0.5)
        stop.set()
        ran = loop.time() - began
        await asyncio.wait_for(task, 10.0)  # it stops (the timeout only bounds the wait)
        return feed.steps, ran

    steps, ran = asyncio.run(scenario())
    # Drift-free: one step at the start, then at most one per 5 ms of loop time (how far a
    # loaded machine falls behind is not asserted; the cost of a step is a benchmark:
    # benches/bench_engine.py::test_demo_feed_step)
    assert 1 <= steps <= 1 + ran * 200.0 + 1, (steps, ran)


# --- clients rebuilding the document from the engine's encoded messages ---------------------


def frame(fmt: str, data: bytes) -> bytes | str:
    """What a WebSocket client receives: binary frames for msgpack, text frames for JSON."""
    return data if fmt == "msgpack" else data.decode()


@pytest.mark.parametrize("channels", [None, ("orders", "positions", "account")])
@pytest.mark.parametrize("diff", ["changes", "json-patch"])
@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_client_state_rebuilds_the_document(
    engine: Engine, fmt: str, diff: str, channels: tuple[str, ...] | None
) -> None:
    sink = EngineSink(engine)
    doc = sink.doc
    feed = DemoFeed(sink, symbols=8, updates_per_second=50.0, seed=11, start_time=START)
    feed.step()
    client = ClientState()
    seq = 1
    snap = doc.encode_snapshot(fmt, channels, seq, "epoch-1", 1_800_000_000_000)
    assert client.apply(decode_message(frame(fmt, snap))) is Outcome.APPLIED
    cursor = doc.version
    for round_no in range(60):
        for _ in range(1 + round_no % 7):
            feed.step()
        cs = doc.changes_since(cursor)
        assert cs is not None
        cursor = doc.version
        data = cs.encode(fmt, diff, channels, seq + 1, 1_800_000_000_000 + round_no)
        if data is None:
            continue
        seq += 1
        assert client.apply(decode_message(frame(fmt, data))) is Outcome.APPLIED
        expected = {k: v for k, v in doc.get().items() if channels is None or k in channels}
        # Member order may differ: a key removed and re-created between two updates keeps its
        # old place on the client (the wire cannot say "moved"), but moves last on the server.
        assert canon_unordered(client.data) == canon_unordered(expected)
        assert client.version == doc.version
    assert client.gaps == 0 and client.updates > 30
