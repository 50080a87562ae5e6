"""Ingest at market-data rates: `make bench-ingest`.

Everything runs on this machine: a redis-server (default limits, so the subscriber is dropped
at `client-output-buffer-limit pubsub 32mb 8mb 60` if the server cannot keep up), a nats-server,
one `dashboard-server serve` process, a publisher process speaking raw RESP (or the NATS text
protocol) that does the contract's SET + PUBLISH of `market_data:{SYM}` items for `--symbols`
symbols with a publish timestamp in each item, and a WebSocket client (tui tier) in this
process timing PUBLISH -> receipt from that timestamp.

It prints, in one run:

- **Redis, drain**: a backlog of `--backlog` messages pre-filled while the reader is stopped
  (the output-buffer limit lifted for that), then drained. The **raw floor** is a bare reader on
  the same kind of pub/sub socket (an asyncio protocol feeding `hiredis.Reader`, counting the
  messages and doing nothing else); the **server** is `dashboard-server` (SIGSTOPped while the
  backlog fills); and their ratio.
- **Redis, live**: per offered rate, the achieved publish rate, the server's applied rate,
  PUBLISH -> client p50/p99, how long after the end of the burst every symbol showed its latest
  value, Redis disconnects, the lag the server reports, its CPU.
- **NATS, live**: the same with a raw NATS source (`market_data.>`), plus the floor of a bare
  reader at the publisher's top rate.

Goals (exit status 1 when one is missed, everything still printed): Redis drain >= 200,000
msg/s and >= 0.5 x the floor; at every offered rate below saturation p99 <= tier interval +
50 ms, and at every rate no disconnect and the latest values visible within one flush (tier
interval + 50 ms) of the burst's end.

    python benches/bench_ingest.py [--quick] [--json FILE]
    python benches/bench_ingest.py publish ...   (the publisher process, used by the bench)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import hiredis
import msgpack
import websockets

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
TIER_MS = 100
P99_GOAL_MS = TIER_MS + 50
LATEST_GOAL_MS = TIER_MS + 50
DRAIN_GOAL = 200_000
RATIO_GOAL = 0.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- the publisher (a process of its own) -----------------------------------------------------


def item(sym: bytes, n: int, ts: int) -> bytes:
    """A market_data item of ~250 bytes; ``ts`` is the publish time (µs, 16 digits)."""
    price = 100_000 + (n * 7919) % 10_000
    return (
        b'{"symbol":"%s","last_price":%d.%02d,"bid":%d.%02d,"ask":%d.%02d,"bid_size":1.25,'
        b'"ask_size":2.5,"volume_24h":%d.5,"high_24h":110000.0,"low_24h":90000.0,'
        b'"change_24h":1.23,"exchange":"bench","seq":%d,"ts":%d}'
        % (sym, price, n % 100, price - 1, n % 100, price + 1, n % 100, 1_000_000 + n, n, ts)
    )


PREFIX = b"market_data"
"""The section the publisher writes (``--prefix``)."""


def redis_commands(sym: bytes, payload: bytes) -> bytes:
    key = PREFIX + b":" + sym
    head = b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(payload), payload)
    return b"*3\r\n$3\r\nSET\r\n" + head + b"*3\r\n$7\r\nPUBLISH\r\n" + head


def nats_commands(sym: bytes, payload: bytes) -> bytes:
    return b"PUB %s.%s %d\r\n%s\r\n" % (PREFIX, sym, len(payload), payload)


def publish(args: argparse.Namespace) -> None:
    """Publish at ``--rate`` messages/s (0: as fast as possible) for ``--duration`` s or
    ``--count`` messages, then one final round of every symbol; print a JSON summary."""
    global PREFIX
    PREFIX = args.prefix.encode()
    host, port = args.address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    build = redis_commands if args.kind == "redis" else nats_commands
    if args.kind == "nats":
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')

    def drain() -> None:  # replies (+OK, :1; NATS PINGs) are read and dropped
        while True:
            try:
                data = sock.recv(1 << 20)
            except OSError:
                return
            if not data:
                return
            if args.kind == "nats" and b"PING" in data:
                with contextlib.suppress(OSError):
                    sock.sendall(b"PONG\r\n")

    threading.Thread(target=drain, daemon=True).start()
    symbols = [b"SYM%03d" % i for i in range(args.symbols)]
    count = args.count or 1 << 62
    sent = 0
    start = time.perf_counter()
    deadline = start + args.duration if not args.count else float("inf")
    while sent < count:
        now = time.perf_counter()
        if now >= deadline:
            break
        due = count - sent if not args.rate else int((now - start) * args.rate) + 1 - sent
        due = min(due, count - sent, 2000)
        if due <= 0:
            time.sleep(0.0005)
            continue
        ts = time.time_ns() // 1000
        chunk = []
        for i in range(sent, sent + due):
            sym = symbols[i % len(symbols)]
            chunk.append(build(sym, item(sym, i, ts)))
        sock.sendall(b"".join(chunk))
        sent += due
    elapsed = time.perf_counter() - start
    final_ts = time.time_ns() // 1000
    sock.sendall(b"".join(build(s, item(s, sent, final_ts)) for s in symbols))
    if args.kind == "redis":  # wait until Redis has processed everything (a PING's reply)
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
    else:
        sock.sendall(b"PING\r\n")
    time.sleep(0.05)
    print(
        json.dumps({"sent": sent, "elapsed": elapsed, "final_ts": final_ts, "end": final_ts / 1e6}),
        flush=True,
    )
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    time.sleep(0.2)


def run_publisher(kind: str, address: str, **options: Any) -> subprocess.Popen[str]:
    args = [PY, __file__, "publish", "--kind", kind, "--address", address]
    for name, value in options.items():
        args += [f"--{name}", str(value)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def publisher_result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=300)
    return dict(json.loads(out.strip().splitlines()[-1]))


# -- processes --------------------------------------------------------------------------------


class Stack:
    """redis-server, nats-server and dashboard-server processes, stopped at the end."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs
        )
        self.procs.append(proc)
        return proc

    def redis(self) -> int:
        port = free_port()
        self.spawn(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ]
        )
        wait_port(port)
        return port

    def nats(self) -> int:
        port = free_port()
        self.spawn(["nats-server", "-a", "127.0.0.1", "-p", str(port)])
        wait_port(port)
        return port

    def server(self, config: dict[str, Any]) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        path = self.tmp / f"server-{port}.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        proc = self.spawn(
            [
                str(Path(PY).parent / "dashboard-server"),
                "serve",
                "--config",
                str(path),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ]
        )
        wait_health(port)
        return proc, port

    def close(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def http_get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return bytes(resp.read())


def wait_health(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if json.loads(http_get(port, "/health"))["status"] == "ok":
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not become healthy")
        time.sleep(0.1)


def metrics(port: int) -> dict[str, float]:
    """Every sample of /metrics, by name with labels."""
    out: dict[str, float] = {}
    for line in http_get(port, "/metrics").decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def metric(values: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in values.items() if k.startswith(prefix))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_command(port: int, *args: str) -> Any:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"".join(
                [b"*%d\r\n" % len(args)] + [b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args]
            )
        )
        reader = hiredis.Reader()
        while (reply := reader.gets()) is False:
            reader.feed(sock.recv(65536))
        return reply


# -- the latency client -----------------------------------------------------------------------


class Client:
    """One tui client: every `.../ts` value it receives, timed against its receipt."""

    def __init__(self, port: int, symbol_of: re.Pattern[str]) -> None:
        self.url = f"ws://127.0.0.1:{port}/ws?type=tui&format=msgpack&channels=market_data"
        self.symbol_of = symbol_of
        self.samples: list[float] = []
        self.latest: dict[str, tuple[int, float]] = {}
        self.recording = False
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._run(ready))
        await ready

    async def _run(self, ready: asyncio.Future[None]) -> None:
        async with websockets.connect(self.url, max_size=None) as ws:
            async for raw in ws:
                now = time.time()
                msg = msgpack.unpackb(raw)
                if msg.get("type") == "snapshot":
                    if not ready.done():
                        ready.set_result(None)
                    continue
                for pointer, value in (msg.get("changes") or {}).items():
                    if pointer.endswith("/ts"):
                        self._seen(pointer, value, now)
                    elif isinstance(value, dict) and "ts" in value:
                        self._seen(pointer + "/ts", value["ts"], now)

    def _seen(self, pointer: str, ts: int, now: float) -> None:
        found = self.symbol_of.search(pointer)
        if found is None:
            return
        self.latest[found.group(1)] = (ts, now)
        if self.recording:
            self.samples.append(now - ts / 1e6)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task

    async def wait_latest(self, symbols: int, final_ts: int, timeout: float) -> float | None:
        """Wall time at which every symbol showed ``final_ts`` (None: not within timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [v for v in self.latest.values() if v[0] == final_ts]
            if len(done) >= symbols:
                return max(t for _, t in done)
            await asyncio.sleep(0.02)
        return None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the bare readers (the floors) ------------------------------------------------------------


class BareRedisReader(asyncio.BufferedProtocol):
    """A pub/sub socket drained by hiredis.Reader, counting messages, doing nothing else."""

    def __init__(self) -> None:
        self.buffer = memoryview(bytearray(1 << 20))
        self.reader = hiredis.Reader()
        self.count = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.reader.feed(self.buffer, 0, nbytes)
        gets = self.reader.gets
        n = 0
        while gets() is not False:
            n += 1
        self.count += n


class BareNatsReader(asyncio.BufferedProtocol):
    """A NATS socket read with a minimal parser (MSG header line, skip the payload), counting."""

    def __init__(self) -> None:
        self.buffer = memoryview(bytearray(1 << 20))
        self.pending = b""
        self.count = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b'CONNECT {"verbose":false}\r\nSUB market_data.> 1\r\n')

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        # counts "MSG " at the start of a line (the bench's payloads never contain it)
        data = self.pending + bytes(self.buffer[:nbytes])
        self.count += data.count(b"\nMSG ") + data.startswith(b"MSG ")
        if b"PING\r\n" in data and self.transport is not None:
            self.transport.write(b"PONG\r\n")
        self.pending = data[-5:] if not data.endswith(b"\n") else b""
        if self.pending.startswith(b"MSG "):
            self.pending = b""


# -- scenarios ---------------------------------------------------------------------------------


async def redis_floor(redis_port: int, backlog: int, symbols: int) -> float:
    loop = asyncio.get_running_loop()
    transport, reader = await loop.create_connection(BareRedisReader, "127.0.0.1", redis_port)
    transport.write(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$13\r\nmarket_data:*\r\n")
    while reader.count < 1:
        await asyncio.sleep(0.01)
    reader.count = 0
    transport.pause_reading()
    proc = run_publisher(
        "redis", f"127.0.0.1:{redis_port}", count=backlog - symbols, symbols=symbols
    )
    await asyncio.to_thread(publisher_result, proc)
    started = time.perf_counter()
    transport.resume_reading()
    while reader.count < backlog:
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    transport.close()
    return backlog / elapsed


async def redis_drain(
    stack: Stack,
    redis_port: int,
    server: subprocess.Popen[bytes],
    port: int,
    backlog: int,
    symbols: int,
) -> tuple[float, float]:
    """(applied msg/s, conflated fraction) of the server draining a pre-filled backlog."""
    before = metrics(port)
    server.send_signal(signal.SIGSTOP)
    try:
        proc = run_publisher(
            "redis", f"127.0.0.1:{redis_port}", count=backlog - symbols, symbols=symbols
        )
        await asyncio.to_thread(publisher_result, proc)
    finally:
        started = time.perf_counter()
        server.send_signal(signal.SIGCONT)
    received = 0.0
    while received < backlog:
        await asyncio.sleep(0.05)
        after = metrics(port)
        received = metric(after, "dashboard_ingest_messages_total") - metric(
            before, "dashboard_ingest_messages_total"
        )
        if time.perf_counter() - started > 120:
            raise RuntimeError(f"the server drained only {received} of {backlog}")
    elapsed = time.perf_counter() - started
    conflated = metric(after, "dashboard_ingest_conflated_total") - metric(
        before, "dashboard_ingest_conflated_total"
    )
    return backlog / elapsed, conflated / backlog


async def live(
    kind: str,
    address: str,
    server: subprocess.Popen[bytes],
    port: int,
    rate: int,
    duration: float,
    symbols: int,
    symbol_of: re.Pattern[str],
) -> dict[str, Any]:
    client = Client(port, symbol_of)
    await client.start()
    await asyncio.sleep(0.3)
    before, cpu0, t0 = metrics(port), cpu_seconds(server.pid), time.perf_counter()
    client.recording = True
    proc = run_publisher(kind, address, rate=rate, duration=duration, symbols=symbols)
    lags = []
    while proc.poll() is None:
        await asyncio.sleep(0.25)
        with contextlib.suppress(OSError):
            lag = metric(metrics(port), f'dashboard_ingest_lag_seconds{{feed="{kind}"}}')
            if lag == lag:
                lags.append(lag)
    result = await asyncio.to_thread(publisher_result, proc)
    shown = await client.wait_latest(symbols, result["final_ts"], timeout=5.0)
    client.recording = False
    after, cpu1, t1 = metrics(port), cpu_seconds(server.pid), time.perf_counter()
    await client.stop()
    received = metric(after, "dashboard_ingest_messages_total") - metric(
        before, "dashboard_ingest_messages_total"
    )
    return {
        "offered": rate,
        "published": result["sent"] / result["elapsed"],
        "applied": (received - symbols) / result["elapsed"],
        "p50_ms": percentile(client.samples, 0.5) * 1000,
        "p99_ms": percentile(client.samples, 0.99) * 1000,
        "samples": len(client.samples),
        "latest_ms": None if shown is None else (shown - result["end"]) * 1000,
        "disconnects": metric(after, "dashboard_redis_disconnects_total")
        - metric(before, "dashboard_redis_disconnects_total"),
        "lag_max_ms": max(lags, default=0.0) * 1000,
        "cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100,
    }


def print_live(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(
        f"  {'offered':>9} {'published':>10} {'applied':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'latest ms':>10} {'drops':>6} {'lag ms':>7} {'CPU %':>6}"
    )
    for r in rows:
        offered = "max" if not r["offered"] else f"{r['offered']:,}"
        latest = "never" if r["latest_ms"] is None else f"{r['latest_ms']:.0f}"
        print(
            f"  {offered:>9} {r['published']:>10,.0f} {r['applied']:>10,.0f} "
            f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {latest:>10} {r['disconnects']:>6.0f} "
            f"{r['lag_max_ms']:>7.1f} {r['cpu_pct']:>6.0f}"
        )


def check_live(rows: list[dict[str, Any]], goals: list[tuple[str, bool]], kind: str) -> None:
    for r in rows:
        name = "max" if not r["offered"] else f"{r['offered']:,}/s"
        # saturated: the publisher flat out (no rate asked), short of the rate asked (the
        # machine is full), or the server short of what was published
        saturated = (
            not r["offered"]
            or r["published"] < 0.95 * r["offered"]
            or r["applied"] < 0.95 * r["published"]
        )
        r["saturated"] = saturated
        if not saturated:  # p99: up to the saturation point
            goals.append((f"{kind} {name}: p99 <= {P99_GOAL_MS} ms", r["p99_ms"] <= P99_GOAL_MS))
        tag = " (saturated)" if saturated else ""
        goals.append((f"{kind} {name}{tag}: no disconnect", r["disconnects"] == 0))
        goals.append(
            (
                f"{kind} {name}{tag}: latest values within {LATEST_GOAL_MS} ms of the end",
                r["latest_ms"] is not None and r["latest_ms"] <= LATEST_GOAL_MS,
            )
        )


async def bench(args: argparse.Namespace) -> int:
    symbols = args.symbols
    goals: list[tuple[str, bool]] = []
    report: dict[str, Any] = {"load_average_before": load_average(), "symbols": symbols}
    print(f"Ingest bench: {symbols} symbols, tier {TIER_MS} ms; load average {load_average()}")
    stack = Stack()
    try:
        redis_port = stack.redis()
        config: dict[str, Any] = {
            "redis_url": f"redis://127.0.0.1:{redis_port}/0",
            "redis_health_timeout_s": 30,  # the drain SIGSTOPs the server
            "redis_reload_interval_s": 0,
            "demo": False,
            "history_sections": [],
        }
        server, port = stack.server(config)

        # -- Redis: the drain of a pre-filled backlog
        redis_command(redis_port, "CONFIG", "SET", "client-output-buffer-limit", "pubsub 0 0 0")
        # the floor before and after the server's drain (Redis's own write loop bounds both);
        # the ratio is taken against the faster one
        floor_before = await redis_floor(redis_port, args.backlog, symbols)
        applied, conflated = await redis_drain(
            stack, redis_port, server, port, args.backlog, symbols
        )
        floor_after = await redis_floor(redis_port, args.backlog, symbols)
        floor = max(floor_before, floor_after)
        redis_command(
            redis_port, "CONFIG", "SET", "client-output-buffer-limit", "pubsub 32mb 8mb 60"
        )
        ratio = applied / floor
        print(f"\nRedis, draining a backlog of {args.backlog:,} messages")
        print(
            f"  raw floor (bare hiredis reader)   {floor:>12,.0f} msg/s"
            f"   (before {floor_before:,.0f}, after {floor_after:,.0f})"
        )
        print(
            f"  dashboard-server applied          {applied:>12,.0f} msg/s"
            f"   ({conflated:.0%} conflated)"
        )
        print(f"  server / floor                    {ratio:>12.2f}")
        goals.append((f"Redis drain >= {DRAIN_GOAL:,} msg/s", applied >= DRAIN_GOAL))
        goals.append((f"Redis drain >= {RATIO_GOAL} x floor", ratio >= RATIO_GOAL))
        report["redis_drain"] = {
            "floor": floor,
            "floor_before": floor_before,
            "floor_after": floor_after,
            "applied": applied,
            "conflated": conflated,
            "ratio": ratio,
        }
        wait_health(port)

        # -- Redis: live rates
        pattern = re.compile(r"^/market_data/(SYM\d+)/")
        rows = []
        for rate in args.rates:
            rows.append(
                await live(
                    "redis",
                    f"127.0.0.1:{redis_port}",
                    server,
                    port,
                    rate,
                    args.duration,
                    symbols,
                    pattern,
                )
            )
        print_live("Redis, live (SET + PUBLISH per message; applied = server's messages/s)", rows)
        check_live(rows, goals, "Redis")
        report["redis_live"] = rows

        # -- NATS: live rates and the bare reader's floor at the top rate
        nats_port = stack.nats()
        nats_config = {
            "nats_url": f"127.0.0.1:{nats_port}",
            "sections": ["market_data"],
            "sources": [
                {
                    "name": "md",
                    "transport": "nats",
                    "pattern": "market_data.>",
                    "section": "market_data",
                    "id": "key",
                }
            ],
            "demo": False,
            "history_sections": [],
        }
        nserver, nport = stack.server(nats_config)
        npattern = re.compile(r"^/market_data/market_data\.(SYM\d+)/")
        nrows = []
        for rate in args.nats_rates:
            nrows.append(
                await live(
                    "nats",
                    f"127.0.0.1:{nats_port}",
                    nserver,
                    nport,
                    rate,
                    args.duration,
                    symbols,
                    npattern,
                )
            )
        loop = asyncio.get_running_loop()
        transport, bare = await loop.create_connection(BareNatsReader, "127.0.0.1", nats_port)
        await asyncio.sleep(0.2)
        proc = run_publisher(
            "nats", f"127.0.0.1:{nats_port}", rate=0, duration=args.duration, symbols=symbols
        )
        published = await asyncio.to_thread(publisher_result, proc)
        await asyncio.sleep(0.2)
        transport.close()
        nfloor = bare.count / published["elapsed"]
        print_live("NATS, live (raw source market_data.>)", nrows)
        top = max(r["applied"] for r in nrows)
        print(
            f"  bare NATS reader at the publisher's top rate: {nfloor:,.0f} msg/s "
            f"(published {published['sent'] / published['elapsed']:,.0f}); "
            f"server's best {top:,.0f}, ratio {top / nfloor:.2f}"
        )
        check_live(nrows, goals, "NATS")
        report["nats_live"] = nrows
        report["nats_floor"] = nfloor
    finally:
        stack.close()
    report["load_average_after"] = load_average()
    print(
        f"\nload average after: {load_average()} (2 shared cores: publisher, Redis/NATS, server "
        "and client on the same machine)"
    )
    missed = [name for name, ok in goals if not ok]
    print("\nGoals:")
    for name, ok in goals:
        print(f"  {'met   ' if ok else 'MISSED'} {name}")
    report["goals"] = {name: ok for name, ok in goals}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 1 if missed else 0


def fanout(args: argparse.Namespace) -> int:
    """`dashboard-server loadtest` (the README's 5,000-client profile: tui, market_data, one
    ~1 KB update per flush) against a server fed by Redis, while `--rate` messages/s of
    `orderbook:{SYM}` items (500 symbols, a section the clients do not subscribe to) are
    ingested: the fan-out figures with the ingest running next to them."""
    stack = Stack()
    try:
        redis_port = stack.redis()
        address = f"127.0.0.1:{redis_port}"
        url = f"redis://{address}/0"
        duration = args.duration + 25  # the clients' connect phase and warm-up come first
        market = run_publisher(
            "redis", address, rate=30, duration=duration, symbols=20, prefix="market_data"
        )
        ingest = run_publisher(
            "redis", address, rate=args.rate, duration=duration, symbols=500, prefix="orderbook"
        )
        command = [
            str(Path(PY).parent / "dashboard-server"),
            "loadtest",
            "--clients",
            str(args.clients),
            "--processes",
            "1",
            "--duration",
            str(args.duration),
            "--channels",
            "market_data",
            f"--server-args=--redis-url={url} --demo=false",
        ]
        if args.json:
            command += ["--json", args.json]
        print(f"load average before: {load_average()}; ingest {args.rate:,} msg/s of orderbook")
        done = subprocess.run(command, check=False)
        ingested = publisher_result(ingest)
        publisher_result(market)
        print(
            f"ingest published {ingested['sent'] / ingested['elapsed']:,.0f} msg/s; "
            f"load average after: {load_average()}"
        )
        return done.returncode
    finally:
        stack.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    pub = sub.add_parser("publish")
    pub.add_argument("--kind", choices=["redis", "nats"], required=True)
    pub.add_argument("--address", required=True)
    pub.add_argument("--rate", type=int, default=0)
    pub.add_argument("--duration", type=float, default=5.0)
    pub.add_argument("--count", type=int, default=0)
    pub.add_argument("--symbols", type=int, default=500)
    pub.add_argument("--prefix", default="market_data")
    fan = sub.add_parser("fanout", help="loadtest clients while the Redis ingest runs")
    fan.add_argument("--rate", type=int, default=100_000)
    fan.add_argument("--clients", type=int, default=5000)
    fan.add_argument("--duration", type=float, default=30.0)
    fan.add_argument("--json")
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--backlog", type=int, default=500_000)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument(
        "--rates",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[5_000, 20_000, 50_000, 100_000, 200_000, 0],
    )
    parser.add_argument(
        "--nats-rates",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[5_000, 20_000, 50_000, 100_000, 0],
    )
    parser.add_argument("--quick", action="store_true", help="short runs, fewer rates")
    parser.add_argument("--json", help="write the figures as JSON")
    args = parser.parse_args(argv)
    if args.command == "publish":
        publish(args)
        return 0
    if args.command == "fanout":
        return fanout(args)
    if args.quick:
        args.backlog, args.duration = 200_000, 2.0
        args.rates, args.nats_rates = [5_000, 50_000, 0], [5_000, 0]
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
