"""Ingest cost per message of each transport of the sources (docs/sources.md).

Two measures, both printed as a table by ``make bench-sources``:

- **in-process** (pytest-benchmark): ``SourceRouter.apply_bytes`` (or, for HTTP, ``orjson.loads``
  + ``apply_value``) on the b25 samples into a native-engine state, 100 messages a round with
  prices that change, so each message really changes the item. Cases: the generic raw
  ``market_data`` (bytes to the engine, no Python objects), b25 positions (decimals,
  side_from_sign, drop), b25 orderbook (book, unix_time), a b25 NATS order update (select, field
  id), the account monitor's ``/api/account`` response (two outputs, entries, decimals);
- **end to end** (``python benches/bench_sources.py --e2e``): the same through a real broker, a
  real feed and the write side, with the publisher in another process: CPU time of this process
  and wall time per message from the first message to the last one applied. Redis pub/sub raw,
  Redis pub/sub with transforms (orderbook), Redis keys only SET (positions, keyspace
  notifications + MGET), NATS (order updates), HTTP polling (account, a poll at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "sources" / "samples"
BATCH = 100
"""Messages per benchmark round."""
SYMBOLS = [f"SYM{i}USDT" for i in range(20)]


def sample(name: str) -> Any:
    return orjson.loads((SAMPLES / f"{name}.json").read_bytes())


# --- the messages ---------------------------------------------------------------------------


def market_data_payloads(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        value = sample("redis-SET-market_data")
        symbol = SYMBOLS[i % len(SYMBOLS)]
        value.update(symbol=symbol, last_price=67421.35 + i * 0.01, bid_price=67421.3 + i * 0.01)
        out.append((symbol, orjson.dumps(value)))
    return out


def position_payloads(n: int, unique: bool = False) -> list[tuple[str, bytes]]:
    """``unique``: a key per message (keyspace events of one key coalesce into one GET)."""
    out = []
    for i in range(n):
        value = sample("http-account-account")["positions"]["ETHUSDT"]
        symbol = f"SYM{i}USDT" if unique else SYMBOLS[i % len(SYMBOLS)]
        value.update(symbol=symbol, quantity=f"{(-1) ** i * (0.05 + i * 0.001):.4f}")
        out.append((symbol, orjson.dumps(value)))
    return out


def orderbook_payloads(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        value = sample("redis-PUBLISH-orderbook")
        symbol = SYMBOLS[i % len(SYMBOLS)]
        value["symbol"] = symbol
        value["bids"] = {f"{67400 + j * 0.1 + i:.1f}": 0.1 + j for j in range(20)}
        value["asks"] = {f"{67430 + j * 0.1 + i:.1f}": 0.2 + j for j in range(20)}
        value["timestamp"] += i
        out.append((symbol, orjson.dumps(value)))
    return out


def order_update_payloads(n: int) -> list[tuple[str, bytes]]:
    out = []
    states = ("SUBMITTED", "PARTIALLY_FILLED", "FILLED")
    for i in range(n):
        value = sample("nats-orders.updates")
        value["order"]["order_id"] = f"order-{i // 3}"
        value["order"]["state"] = value["update_type"] = states[i % 3]
        value["order"]["filled_quantity"] = 0.001 * (i % 3)
        out.append((f"orders.updates.{SYMBOLS[i % 20]}", orjson.dumps(value)))
    return out


def account_payloads(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        value = sample("http-account-account")
        value["pnl"]["net_pnl"] = f"{12.4232 + i * 0.01:.4f}"
        value["balances"]["USDT"]["free"] = f"{14873.21 + i:.2f}"
        out.append(("/api/account", orjson.dumps(value)))
    return out


CASES: dict[str, tuple[str, str, Callable[[int], list[tuple[str, bytes]]]]] = {
    # name: (preset, source name, payloads)
    "redis raw (generic market_data)": ("generic", "market_data", market_data_payloads),
    "redis + transforms (b25 positions)": ("b25", "positions", position_payloads),
    "redis + transforms (b25 orderbook)": ("b25", "orderbook", orderbook_payloads),
    "nats (b25 order update)": ("b25", "order_updates", order_update_payloads),
    "http (b25 /api/account)": ("b25", "account", account_payloads),
}


def build(preset: str, engine: str = "native") -> tuple[Any, Any, dict[str, Any]]:
    """A write side on a fresh state, its router and the preset's sources by name."""
    from prometheus_client import CollectorRegistry

    from dashboard_server.core.engine import load_engine
    from dashboard_server.core.sources import generic_sources, load_preset, parse_sources
    from dashboard_server.ingest.router import SourceRouter
    from dashboard_server.ingest.writer import StateWriter
    from dashboard_server.telemetry.metrics import IngestMetrics

    sections, raw = load_preset(preset)
    if sections is None:
        sections = ("market_data", "orderbook", "orders", "positions")
        raw = generic_sources(sections)
    sources = {s.name: s for s in parse_sources(raw, sections)}

    class Events:
        def publish_event(self, channel: str, data: Any) -> None:
            pass

    doc = load_engine(engine).StateDoc(sections=sections)
    writer = StateWriter(doc, Events(), IngestMetrics(CollectorRegistry()), sections=sections)
    return writer, SourceRouter(writer), sources


# --- in-process (pytest-benchmark) ------------------------------------------------------------

try:
    import pytest
except ImportError:  # the --e2e run needs no pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.mark.parametrize("case", list(CASES))
    def test_router_cost(benchmark: Any, case: str) -> None:
        preset, name, make = CASES[case]
        writer, router, sources = build(preset)
        source = sources[name]
        payloads = make(BATCH * 4)
        rounds = [payloads[i : i + BATCH] for i in range(0, len(payloads), BATCH)]
        state = {"round": 0}
        benchmark.extra_info["messages"] = BATCH
        benchmark.extra_info["case"] = case

        if name == "account":

            def batch() -> None:
                chunk = rounds[state["round"] % len(rounds)]
                state["round"] += 1
                for key, body in chunk:
                    router.apply_value(source, key, orjson.loads(body))

        else:

            def batch() -> None:
                chunk = rounds[state["round"] % len(rounds)]
                state["round"] += 1
                for key, body in chunk:
                    router.apply_bytes(source, key, body)

        benchmark(batch)
        assert writer.metrics.malformed.labels(router.label(source))._value.get() == 0


def report(path: str) -> None:
    """The in-process table from a pytest-benchmark JSON file."""
    data = json.loads(Path(path).read_text())
    print(f"\nIngest cost per message, in process (native engine; {_load()})")
    print(f"  {'case':<40} {'median µs/msg':>14} {'min µs/msg':>11}")
    for bench in data["benchmarks"]:
        n = bench["extra_info"]["messages"]
        stats = bench["stats"]
        print(
            f"  {bench['extra_info']['case']:<40} {stats['median'] / n * 1e6:>14.1f} "
            f"{stats['min'] / n * 1e6:>11.1f}"
        )


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


# --- end to end through real brokers -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


async def _publish(kind: str, port: int, count: int) -> None:
    """The publisher process: ``count`` messages of ``kind`` as fast as the broker takes them."""
    if kind == "nats":
        import nats

        client = await nats.connect(f"nats://127.0.0.1:{port}")
        for subject, payload in order_update_payloads(count):
            await client.publish(subject, payload)
        await client.flush()
        await client.close()
        return
    from redis.asyncio import Redis

    redis = Redis(port=port)
    make, prefix, command = {
        "redis-raw": (market_data_payloads, "market_data:", "publish"),
        "redis-orderbook": (orderbook_payloads, "orderbook:", "publish"),
        "redis-keys": (lambda n: position_payloads(n, unique=True), "position:", "set"),
    }[kind]
    payloads = make(count)
    for start in range(0, count, 500):
        async with redis.pipeline(transaction=False) as pipe:
            for key, payload in payloads[start : start + 500]:
                getattr(pipe, command)(prefix + key, payload)
            await pipe.execute()
    await redis.aclose()


async def _e2e_case(
    label: str, kind: str, feed: Any, writer: Any, section: str, port: int, count: int
) -> tuple[str, float, float]:
    from dashboard_server.ingest.feed import FeedState

    counter = writer.metrics.messages.labels(section)
    await feed.start()
    deadline = time.monotonic() + 10
    while feed.health().state is not FeedState.OK:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{label}: feed not ok: {feed.health()}")
        await asyncio.sleep(0.02)
    before = counter._value.get()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if kind == "http":
        while counter._value.get() - before < count:
            await asyncio.sleep(0.005)
    else:
        publisher = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--publish", kind, "--port", str(port), "--count", str(count)
        )
        while counter._value.get() - before < count:
            await asyncio.sleep(0.002)
            if publisher.returncode not in (None, 0):
                raise RuntimeError(f"{label}: publisher failed")
        await publisher.wait()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await feed.stop()
    return label, cpu / count * 1e6, wall / count * 1e6


E2E_REDIS = (
    ("redis pub/sub raw (market_data)", "generic", "market_data", "redis-raw", "market_data"),
    ("redis pub/sub + book (orderbook)", "b25", "orderbook", "redis-orderbook", "orderbook"),
    ("redis keys + keyspace (positions)", "b25", "positions", "redis-keys", "positions"),
)
"""(label, preset, source, publisher kind, section)"""


async def _e2e(count: int) -> None:
    from prometheus_client import CollectorRegistry

    from dashboard_server.ingest.http_poll import HttpPollFeed
    from dashboard_server.ingest.nats_feed import NatsFeed
    from dashboard_server.ingest.redis.feed import RedisFeed
    from dashboard_server.telemetry.metrics import RedisMetrics

    redis_bin = shutil.which("redis-server")
    nats_bin = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if redis_bin is None or not os.access(nats_bin, os.X_OK):
        print("redis-server and nats-server are needed for --e2e")
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-sources-"))
    redis_port, nats_port = _free_port(), _free_port()
    procs = [
        subprocess.Popen(
            [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp), "--notify-keyspace-events", "KA"],
            stdout=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [nats_bin, "-a", "127.0.0.1", "-p", str(nats_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
    ]  # fmt: skip
    www = tmp / "www"
    (www / "api").mkdir(parents=True)
    (www / "api" / "account").write_bytes(account_payloads(1)[0][1])
    http_port = _free_port()
    http_server = [sys.executable, "-m", "http.server", str(http_port), "--bind", "127.0.0.1"]
    procs.append(
        subprocess.Popen(http_server, cwd=www, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    )
    try:
        for port in (redis_port, nats_port, http_port):
            _wait_port(port)
        rows = []
        url = f"redis://127.0.0.1:{redis_port}/0"
        for label, preset, name, kind, section in E2E_REDIS:
            writer, router, sources = build(preset)
            source = sources[name]
            if preset == "generic":
                source = dataclasses.replace(source, bootstrap=False)
            metrics = RedisMetrics(CollectorRegistry(), RedisFeed.STATES)
            feed = RedisFeed(router, url=url, sources=[source], metrics=metrics, reload_interval=0)
            rows.append(await _e2e_case(label, kind, feed, writer, section, redis_port, count))
        writer, router, sources = build("b25")
        feed = NatsFeed(router, url=f"127.0.0.1:{nats_port}", sources=[sources["order_updates"]])
        rows.append(
            await _e2e_case(
                "nats (order updates)", "nats", feed, writer, "orders", nats_port, count
            )
        )
        writer, router, sources = build("b25")
        fast = dataclasses.replace(sources["account"], interval_s=0.0001)
        feed = HttpPollFeed(router, fast, base_url=f"http://127.0.0.1:{http_port}")
        polls = max(50, count // 100)
        rows.append(
            await _e2e_case("http poll (/api/account)", "http", feed, writer, "pnl", 0, polls)
        )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nIngest cost per message, end to end through the broker ({count} messages; {_load()})")
    print(f"  {'case':<40} {'CPU µs/msg':>11} {'wall µs/msg':>12}")
    for label, cpu, wall in rows:
        print(f"  {label:<40} {cpu:>11.1f} {wall:>12.1f}")
    print("  (CPU: this process only, the feed and the write side; the publisher runs apart.")
    print("   HTTP: per response, one poll at a time, the server in another process.)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--e2e", action="store_true", help="end to end through real brokers")
    parser.add_argument("--count", type=int, default=20_000, help="messages per case")
    parser.add_argument("--report", metavar="JSON", help="print the in-process table")
    parser.add_argument("--publish", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "python"))
    if args.publish:
        asyncio.run(_publish(args.publish, args.port, args.count))
    elif args.report:
        report(args.report)
    elif args.e2e:
        logging.basicConfig(level=logging.ERROR)  # the feeds' state changes at the end
        asyncio.run(_e2e(args.count))
    else:
        parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
