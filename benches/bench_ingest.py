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
  the same kind of pub/sub socket (an asyncio protocol receiving into one buffer and doing
  nothing else, before and after the server's drain); a bare `hiredis.Reader` (parse only, no
  handling) is printed for reference; the **server** is `dashboard-server` (SIGSTOPped while
  the backlog fills); and the ratio of server to floor.
- **Redis, live**: per offered rate, the achieved publish rate, the server's applied rate,
  PUBLISH -> client p50/p99, how long after the end of the burst every symbol showed its latest
  value, Redis disconnects, the lag the server reports, its CPU.
- **NATS, live**: the same with a raw NATS source (`market_data.>`), plus the floor of a bare
  reader at the publisher's top rate.

Goals (exit status 1 when one is missed, everything still printed): Redis drain >= 200,000
msg/s and >= 0.5 x the floor; at every offered rate below saturation p99 <= tier interval +
50 ms, and at every rate no disconnect and the latest values visible within one flush (tier
interval + 50 ms) of the burst's end.

**fanout** (`make bench-ingest-fanout`): does the server's fan-out regress while its Redis
ingest runs at `--rate` msg/s (default 200,000: about half the rate at which this machine
saturates)? Three kinds of phase, each a whole `dashboard-server loadtest` run
(`--clients` tui clients on market_data, one load-generator process, `--duration` s measured)
against a server fed by its own fresh redis-server:

- **baseline**: only the market_data publisher (30 writes/s over 20 symbols);
- **control**: plus `--rate` msg/s of SET + PUBLISH to `control_book:{SYM}` (500 symbols), a
  prefix none of the server's default patterns match, received by a bare subscriber process
  (`subscribe`: PSUBSCRIBE, recv() and discard), so the publisher, Redis and its pub/sub
  delivery load the machine as in the ingest phase;
- **ingest**: the same rate to `orderbook:{SYM}`, which the server ingests.

One table (flushes/s per client, p50/p99, server, generator, Redis and publisher CPU, gaps,
load average), what the server read (its /metrics, found from the serve process loadtest
starts) and Redis's view of the pub/sub connections. Goals: ingest vs control (the server's own
ingest cost on the same busy machine) flushes/s >= 0.95 x and p99 <= 1.15 x + 10 ms, and no
Redis disconnect of the server's subscriber; ingest vs baseline (the whole machine's contention)
is printed for information. `--phases` says which phases run in which order; a phase may repeat
and its runs are averaged: the default, `baseline,control,ingest,ingest,control`, interleaves
control and ingest so a load that drifts during the run weighs on both alike.

    python benches/bench_ingest.py [--quick] [--json FILE]
    python benches/bench_ingest.py fanout [--rate N] [--clients N] [--duration S]
        [--phases baseline,control,ingest,ingest,control] [--json FILE]
    python benches/bench_ingest.py publish ...   (the publisher process, used by the bench)
    python benches/bench_ingest.py subscribe ... (fanout's bare subscriber)
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
    stopped = threading.Event()  # SIGTERM: stop early, still send the final round and summary
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
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
        if now >= deadline or stopped.is_set():
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
                msg = msgpack.unpackb(raw)  # type: ignore[arg-type]  # binary frames
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


class BareRecvReader(asyncio.BufferedProtocol):
    """The raw floor: a pub/sub socket drained into one buffer, doing nothing else (messages
    are counted by their ``$8\r\npmessage\r\n`` marker with ``bytes.count``, a C loop, for
    the bench to know when the backlog is through; the bench's payloads never contain it)."""

    MARKER = b"$8\r\npmessage\r\n"

    def __init__(self) -> None:
        self.buffer = bytearray(1 << 20)
        self.view = memoryview(self.buffer)
        self.tail = b""
        self.count = 0
        self.received = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.received += nbytes
        keep = len(self.MARKER) - 1
        head = self.tail + bytes(self.view[: min(nbytes, keep)])
        self.count += head.count(self.MARKER) + self.buffer.count(self.MARKER, 0, nbytes)
        self.tail = bytes(self.view[max(0, nbytes - keep) : nbytes])


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
        self.reader.feed(self.buffer, 0, nbytes)  # type: ignore[arg-type]  # takes buffers
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


async def redis_floor(
    redis_port: int,
    backlog: int,
    symbols: int,
    reader_class: type[BareRecvReader | BareRedisReader] = BareRecvReader,
) -> float:
    """Messages/s of a bare reader draining a pre-filled backlog of ``backlog`` messages."""
    loop = asyncio.get_running_loop()
    reader: BareRecvReader | BareRedisReader
    transport, reader = await loop.create_connection(reader_class, "127.0.0.1", redis_port)
    transport.write(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$13\r\nmarket_data:*\r\n")
    # the confirmation: a reply the recv-only reader does not count, only receives
    while (reader.received if isinstance(reader, BareRecvReader) else reader.count) < 1:
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
        # each scrape costs the server a few ms: often enough to time a drain of a second or
        # more to a few per cent, not so often that the scrapes slow the drain
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
        hiredis_rate = await redis_floor(redis_port, args.backlog, symbols, BareRedisReader)
        redis_command(
            redis_port, "CONFIG", "SET", "client-output-buffer-limit", "pubsub 32mb 8mb 60"
        )
        ratio = applied / floor
        print(f"\nRedis, draining a backlog of {args.backlog:,} messages")
        print(
            f"  raw floor (bare reader, recv only){floor:>12,.0f} msg/s"
            f"   (before {floor_before:,.0f}, after {floor_after:,.0f})"
        )
        print(f"  bare hiredis.Reader (parse only)  {hiredis_rate:>12,.0f} msg/s")
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
            "hiredis": hiredis_rate,
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


# -- fan-out while the ingest runs (the `fanout` subcommand) ----------------------------------

FANOUT_PHASES = ("baseline", "control", "ingest")
MARKET_RATE = 30
"""The `market_data` publisher every phase runs: 30 writes/s over 20 symbols (what the clients
subscribe to and see as one update per flush)."""
MARKET_SYMBOLS = 20
BULK_SYMBOLS = 500
INGEST_PREFIX = "orderbook"
"""The ingest phase's bulk prefix: a section of the server's default config, ingested, which the
clients (channels=market_data) do not subscribe to."""
CONTROL_PREFIX = "control_book"
"""The control phase's bulk prefix: matched by none of the server's default patterns
(``{section}:*`` for ``config.DEFAULT_SECTIONS`` and ``{fills,alerts,trades}:*``), so Redis
delivers it to the bare subscriber only."""
SINK_NAME = "bench-sink"
"""The bare subscriber's CLIENT SETNAME, telling it from the server's pub/sub connection."""
LOADTEST_WARMUP_S = 2.0
"""loadtest's default ``--warmup``: from every client connected to the measured window."""
FLUSH_RATIO_GOAL = 0.95
P99_FACTOR_GOAL = 1.15
P99_SLACK_GOAL_MS = 10.0


class _Stop(Exception):
    pass


def _raise_stop(*_: object) -> None:
    raise _Stop


def subscribe(args: argparse.Namespace) -> None:
    """The control's bare subscriber: PSUBSCRIBE ``--pattern``, recv() into a buffer and discard
    (no parsing) until SIGTERM; print the bytes received and whether Redis closed the socket."""
    signal.signal(signal.SIGTERM, _raise_stop)
    host, port = args.address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    name, pattern = SINK_NAME.encode(), args.pattern.encode()
    sock.sendall(
        b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$%d\r\n%s\r\n" % (len(name), name)
        + b"*2\r\n$10\r\nPSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(pattern), pattern)
    )
    buffer = bytearray(1 << 20)
    received = 0
    closed = False
    try:
        while n := sock.recv_into(buffer):
            received += n
        closed = True
    except _Stop:
        pass
    except OSError:
        closed = True
    print(json.dumps({"bytes": received, "closed_by_redis": closed}), flush=True)


def loadtest_server(loadtest_pid: int) -> tuple[int, int] | None:
    """(pid, port) of the ``serve`` process a ``dashboard-server loadtest`` started (its child
    with ``serve ... --port N`` on the command line), found in /proc; None: not (yet) there."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != loadtest_pid:
                continue
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError, IndexError):
            continue
        if "serve" in argv and "--port" in argv:
            return int(entry.name), int(argv[argv.index("--port") + 1])
    return None


def pubsub_clients(redis_port: int) -> dict[str, dict[str, str]]:
    """Redis's pub/sub connections (CLIENT LIST TYPE pubsub), by client id."""
    reply = redis_command(redis_port, "CLIENT", "LIST", "TYPE", "pubsub")
    out = {}
    for line in bytes(reply).decode().splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        out[fields["id"]] = fields
    return out


def redis_info(redis_port: int, section: str) -> dict[str, str]:
    reply = bytes(redis_command(redis_port, "INFO", section)).decode()
    return dict(line.split(":", 1) for line in reply.splitlines() if ":" in line)


class PhaseSampler(threading.Thread):
    """Once a second during a phase: the 1-minute load average, the CPU time of the phase's
    processes, Redis's pub/sub clients and (once found in /proc) the loadtest server's /metrics.
    Every phase is sampled the same way, so the scrapes cost the server the same in each."""

    def __init__(self, redis_port: int, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.redis_port = redis_port
        self.pids = dict(pids)
        self.loadtest_pid: int | None = None
        self.server_port: int | None = None
        self.samples: list[dict[str, Any]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            self.samples.append(self.sample())
            if self.done.wait(1.0):
                return

    def sample(self) -> dict[str, Any]:
        if self.server_port is None and self.loadtest_pid is not None:
            found = loadtest_server(self.loadtest_pid)
            if found is not None:
                self.pids["server"], self.server_port = found
        sample: dict[str, Any] = {
            "t": time.monotonic(),
            "load1": float(load_average().split()[0]),
            "cpu": {},
        }
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError, ValueError, IndexError):
                sample["cpu"][name] = cpu_seconds(pid)
        if self.server_port is not None:
            with contextlib.suppress(OSError, ValueError):
                sample["metrics"] = metrics(self.server_port)
        with contextlib.suppress(OSError, ValueError, KeyError):
            sample["pubsub"] = pubsub_clients(self.redis_port)
        return sample

    def stop(self) -> None:
        self.done.set()
        self.join(15)


def measured_window(
    samples: list[dict[str, Any]], duration: float
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The samples bounding loadtest's measured window, estimated from the server's /metrics:
    it starts ``LOADTEST_WARMUP_S`` after the connected clients first reach their peak (the
    clients are all connected) and lasts ``duration``. None: no usable samples."""
    scraped = [s for s in samples if "metrics" in s]
    if not scraped:
        return None
    connected = [metric(s["metrics"], "dashboard_connected_clients") for s in scraped]
    ready = scraped[connected.index(max(connected))]["t"]
    start, end = ready + LOADTEST_WARMUP_S, ready + LOADTEST_WARMUP_S + duration
    inside = [s for s in scraped if start - 0.5 <= s["t"] <= end + 0.5]
    if len(inside) < 2:
        inside = scraped
    if len(inside) < 2:
        return None
    return inside[0], inside[-1]


def phase_figures(
    name: str,
    loadtest: dict[str, Any] | None,
    samples: list[dict[str, Any]],
    duration: float,
) -> dict[str, Any]:
    """A phase's row: loadtest's figures plus what the sampler saw over the measured window."""
    row: dict[str, Any] = {"phase": name, "ok": loadtest is not None}
    if loadtest is not None:
        window = loadtest["window_s"] or duration
        connected = max(1, loadtest["connected"])
        machine = loadtest["machine_cpu_percent"]
        row.update(
            {
                "connected": loadtest["connected"],
                "failed": loadtest["failed"],
                "closes": loadtest["closes"],
                "updates_per_s_per_client": loadtest["message_types"].get("update", 0)
                / window
                / connected,
                "messages_per_s": loadtest["messages_per_s"],
                "p50_ms": loadtest["latency_ms"].get("p50", float("nan")),
                "p99_ms": loadtest["latency_ms"].get("p99", float("nan")),
                "read_p99_ms": loadtest["read_latency_ms"].get("p99", float("nan")),
                "server_cpu_pct": loadtest["server"].get("cpu_percent", float("nan")),
                "generator_cpu_pct": loadtest["generator_cpu_percent"],
                "box_busy_pct": sum(machine.values())
                - machine.get("idle", 0.0)
                - machine.get("iowait", 0.0),
                "gaps": loadtest["gaps"],
            }
        )
    bounds = measured_window(samples, duration)
    if bounds is None:
        row["window"] = None
        return row
    a, b = bounds
    dt: float = b["t"] - a["t"]
    row["window"] = {"sampled_s": dt, "estimated": True}
    row["cpu_pct"] = {k: (b["cpu"][k] - a["cpu"][k]) / dt * 100 for k in b["cpu"] if k in a["cpu"]}
    inside = [s for s in samples if a["t"] <= s["t"] <= b["t"]]
    loads = [s["load1"] for s in inside]
    row["load1"] = {"end": b["load1"], "min": min(loads), "max": max(loads)}
    ma: dict[str, float] = a["metrics"]
    mb: dict[str, float] = b["metrics"]

    def rate(prefix: str) -> float:
        return (metric(mb, prefix) - metric(ma, prefix)) / dt

    scraped = [s["metrics"] for s in samples if "metrics" in s]
    lags = [
        metric(m, "dashboard_ingest_lag_seconds")
        for m in (s["metrics"] for s in inside if "metrics" in s)
    ]
    row["server"] = {
        "port_found": True,
        "read_per_s": {
            section: rate(f'dashboard_ingest_messages_total{{section="{section}"}}')
            for section in ("market_data", INGEST_PREFIX)
        },
        "conflated_per_s": rate(f'dashboard_ingest_conflated_total{{section="{INGEST_PREFIX}"}}'),
        "lag_max_ms": max((x for x in lags if x == x), default=0.0) * 1000,
        # over the whole phase, not only the window
        "redis_disconnects": metric(scraped[-1], "dashboard_redis_disconnects_total")
        - metric(scraped[0], "dashboard_redis_disconnects_total"),
        "lag_closes": metric(scraped[-1], "dashboard_lag_closes_total")
        - metric(scraped[0], "dashboard_lag_closes_total"),
    }
    return row


def redis_side(samples: list[dict[str, Any]], info: dict[str, str]) -> dict[str, Any]:
    """What Redis saw of the pub/sub connections over the phase: each kind's connection ids
    (more than one: it was dropped and reconnected) and largest output buffer."""
    kinds: dict[str, dict[str, Any]] = {}
    for s in samples:
        for cid, fields in s.get("pubsub", {}).items():
            kind = "sink" if fields.get("name") == SINK_NAME else "server"
            seen = kinds.setdefault(kind, {"ids": set(), "omem_max": 0})
            seen["ids"].add(cid)
            seen["omem_max"] = max(seen["omem_max"], int(fields.get("omem", 0)))
    out: dict[str, Any] = {
        kind: {"connections": len(v["ids"]), "omem_max_mib": v["omem_max"] / 2**20}
        for kind, v in kinds.items()
    }
    # Redis 7.2+ counts these; older ones (7.0) do not: then the connection ids above tell
    out["client_output_buffer_limit_disconnections"] = info.get(
        "client_output_buffer_limit_disconnections"
    )
    out["evicted_clients"] = info.get("evicted_clients")
    return out


def run_phase(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One phase: a fresh redis-server, its publishers (and the control's bare subscriber), one
    whole `dashboard-server loadtest` run; its figures."""
    stack = Stack()
    helpers: list[subprocess.Popen[str]] = []
    loadtest: subprocess.Popen[bytes] | None = None
    load_before = load_average()
    try:
        redis_port = stack.redis()
        address = f"127.0.0.1:{redis_port}"
        url = f"redis://{address}/0"
        # the publishers run until the loadtest is over (SIGTERM); this is only a backstop
        backstop = args.duration + 600
        sink = None
        if name == "control":
            sink = subprocess.Popen(
                [
                    PY,
                    __file__,
                    "subscribe",
                    "--address",
                    address,
                    "--pattern",
                    f"{CONTROL_PREFIX}:*",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            helpers.append(sink)
        market = run_publisher(
            "redis",
            address,
            rate=MARKET_RATE,
            duration=backstop,
            symbols=MARKET_SYMBOLS,
            prefix="market_data",
        )
        helpers.append(market)
        bulk = None
        prefix = CONTROL_PREFIX if name == "control" else INGEST_PREFIX
        if name != "baseline":
            bulk = run_publisher(
                "redis",
                address,
                rate=args.rate,
                duration=backstop,
                symbols=BULK_SYMBOLS,
                prefix=prefix,
            )
            helpers.append(bulk)
        pids = {"redis": stack.procs[0].pid, "market": market.pid}
        if bulk is not None:
            pids["bulk"] = bulk.pid
        if sink is not None:
            pids["sink"] = sink.pid
        sampler = PhaseSampler(redis_port, pids)
        sampler.start()
        out = stack.tmp / f"loadtest-{name}.json"
        log = stack.tmp / f"loadtest-{name}.log"
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
            "--json",
            str(out),
        ]
        started = time.monotonic()
        with log.open("wb") as log_file:
            loadtest = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
            sampler.loadtest_pid = loadtest.pid
            rc = loadtest.wait()
        sampler.stop()
        elapsed = time.monotonic() - started
        for proc in helpers:
            proc.send_signal(signal.SIGTERM)
        market_result = publisher_result(market)
        bulk_result = publisher_result(bulk) if bulk is not None else None
        sink_result = publisher_result(sink) if sink is not None else None
        info = redis_info(redis_port, "stats")
        output = log.read_text(errors="replace")
        report = json.loads(out.read_text()) if out.exists() else None
        row = phase_figures(name, report, sampler.samples, args.duration)
        if sampler.server_port is None:
            row["server"] = {"port_found": False}
        row.update(
            {
                "loadtest_rc": rc,
                "elapsed_s": elapsed,
                "load_average_before": load_before,
                "market_published_per_s": market_result["sent"] / market_result["elapsed"],
                "bulk_prefix": None if bulk is None else prefix,
                "bulk_published_per_s": None
                if bulk_result is None
                else bulk_result["sent"] / bulk_result["elapsed"],
                "sink": sink_result,
                "redis": redis_side(sampler.samples, info),
                "loadtest": report,
                "loadtest_output": output[-4000:],
            }
        )
        if report is None:
            print(f"  {name}: loadtest exited {rc} without figures; its output ends:")
            print("    " + "\n    ".join(output.strip().splitlines()[-15:]))
        return row
    finally:
        if loadtest is not None and loadtest.poll() is None:
            loadtest.terminate()
            loadtest.wait(30)
        for proc in helpers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stack.close()


def _num(value: Any, spec: str, width: int) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return f"{'-':>{width}}"
    return f"{value:>{width}{spec}}"


MEAN_FIELDS = (
    "updates_per_s_per_client",
    "p50_ms",
    "p99_ms",
    "server_cpu_pct",
    "generator_cpu_pct",
    "box_busy_pct",
)


def mean_phase(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs of one phase as one row: the mean of each figure, the sum of the gaps."""
    if len(runs) == 1:
        return runs[0]
    ok = [r for r in runs if r["ok"]]
    row: dict[str, Any] = {"phase": runs[0]["phase"], "ok": len(ok) == len(runs), "runs": len(runs)}
    row["loadtest_rc"] = next((r["loadtest_rc"] for r in runs if not r["ok"]), 0)
    if not row["ok"]:
        return row
    for field in MEAN_FIELDS:
        values = [r[field] for r in ok if r.get(field) is not None]
        row[field] = sum(values) / len(values) if values else None
    row["gaps"] = sum(r["gaps"] for r in ok)
    cpus = [r.get("cpu_pct", {}) for r in ok]
    row["cpu_pct"] = {
        k: sum(c[k] for c in cpus if c.get(k) is not None) / len(cpus)
        for k in ("redis", "bulk")
        if any(c.get(k) is not None for c in cpus)
    }
    loads = [r["load1"] for r in ok if r.get("load1")]
    row["load1"] = (
        {
            "min": min(x["min"] for x in loads),
            "max": max(x["max"] for x in loads),
            "end": loads[-1]["end"],
        }
        if loads
        else None
    )
    published = [r["bulk_published_per_s"] for r in ok if r.get("bulk_published_per_s") is not None]
    row["bulk_published_per_s"] = min(published) if published else None
    row["sink"] = next((r["sink"] for r in ok if r["sink"] is not None), None)
    return row


def print_fanout(rows: list[dict[str, Any]], *, header: bool = True) -> None:
    if not header:
        _print_fanout_rows(rows)
        return
    print(
        f"\n  {'phase':<9} {'flushes/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'server':>7} "
        f"{'generator':>9} {'Redis':>6} {'bulk pub':>8} {'box busy':>8} {'gaps':>5} "
        f"{'load 1m':>7}  {'(load 1m min-max)':<17}"
    )
    print(
        f"  {'':<9} {'/client':>9} {'':>7} {'':>7} {'CPU %':>7} {'CPU %':>9} {'CPU %':>6} "
        f"{'CPU %':>8} {'CPU %':>8}"
    )
    _print_fanout_rows(rows)


def _print_fanout_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if not r["ok"]:
            print(f"  {r['phase']:<9} (loadtest failed, exit status {r['loadtest_rc']})")
            continue
        cpu = r.get("cpu_pct", {})
        load = r.get("load1")
        span = "" if load is None else f"({load['min']:.2f}-{load['max']:.2f})"
        print(
            f"  {r['phase']:<9} {_num(r['updates_per_s_per_client'], '.2f', 9)} "
            f"{_num(r['p50_ms'], '.1f', 7)} {_num(r['p99_ms'], '.1f', 7)} "
            f"{_num(r['server_cpu_pct'], '.0f', 7)} {_num(r['generator_cpu_pct'], '.0f', 9)} "
            f"{_num(cpu.get('redis'), '.0f', 6)} {_num(cpu.get('bulk'), '.0f', 8)} "
            f"{_num(r['box_busy_pct'], '.0f', 8)} {r['gaps']:>5} "
            f"{_num(None if load is None else load['end'], '.2f', 7)}  {span}"
        )


def print_ingest(r: dict[str, Any], rate: int) -> None:
    """The bulk traffic of a control or ingest phase: what was published, what the server read
    (ingest) or the bare subscriber received (control), and the Redis side."""
    redis = r["redis"]
    server = r.get("server", {})
    line = f"  {r['phase']}: bulk {r['bulk_prefix']}:* published "
    line += f"{r['bulk_published_per_s']:,.0f} msg/s (asked {rate:,})"
    if r["phase"] == "ingest" and server.get("port_found") and "read_per_s" in server:
        read = server["read_per_s"][INGEST_PREFIX]
        line += (
            f"; server read {read:,.0f} msg/s of {INGEST_PREFIX} over the window "
            f"({server['conflated_per_s']:,.0f}/s conflated), lag max "
            f"{server['lag_max_ms']:.0f} ms, dashboard_redis_disconnects_total "
            f"+{server['redis_disconnects']:.0f}"
        )
    elif r["phase"] == "ingest":
        line += "; the server's /metrics were not reachable"
    if r["sink"] is not None:
        received = r["sink"]["bytes"] / 2**20
        line += (
            f"; bare subscriber received {received:,.0f} MiB, "
            f"closed by Redis: {'YES' if r['sink']['closed_by_redis'] else 'no'}"
        )
    print(line)
    parts = []
    for kind in ("server", "sink"):
        if kind in redis:
            k = redis[kind]
            parts.append(
                f"{kind} pub/sub connections {k['connections']}, largest output buffer "
                f"{k['omem_max_mib']:.1f} MiB"
            )
    limit = redis["client_output_buffer_limit_disconnections"]
    parts.append(
        "client_output_buffer_limit_disconnections "
        + ("n/a (this Redis does not count them)" if limit is None else limit)
    )
    print("    Redis: " + "; ".join(parts))


def server_disconnected(r: dict[str, Any]) -> bool:
    """Whether the server's Redis subscriber was dropped during the phase: its own counter if
    its /metrics were reachable, and Redis's view (a second pub/sub connection id, a counted
    output-buffer disconnection)."""
    server = r.get("server", {})
    redis = r["redis"]
    dropped = server.get("redis_disconnects", 0) > 0
    dropped |= redis.get("server", {}).get("connections", 1) > 1
    dropped |= int(redis["client_output_buffer_limit_disconnections"] or 0) > 0
    return bool(dropped)


def fanout(args: argparse.Namespace) -> int:
    """`dashboard-server loadtest` (the README's 5,000-client profile: tui, market_data, one
    ~1 KB update per flush) against a server fed by Redis, in up to three phases (each a whole
    loadtest run with its own redis-server): baseline (only the market_data publisher), control
    (plus `--rate` msg/s of SET + PUBLISH to `control_book:{SYM}`, which the server does not
    subscribe to, drained by a bare subscriber) and ingest (the same rate to `orderbook:{SYM}`,
    which the server ingests). Goals compare ingest with control: the server's own ingest cost."""
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in FANOUT_PHASES]
    if unknown or not phases:
        print(f"--phases: unknown {unknown}; choose from {','.join(FANOUT_PHASES)}")
        return 2
    report: dict[str, Any] = {
        "rate": args.rate,
        "clients": args.clients,
        "duration": args.duration,
        "phases_run": phases,
        "load_average_before": load_average(),
        "phases": {},
    }
    print(
        f"Fan-out while the Redis ingest runs: {args.clients:,} clients (tui, market_data), "
        f"{args.duration:g} s windows, bulk {args.rate:,} msg/s x {BULK_SYMBOLS} symbols; "
        f"phases {','.join(phases)}; load average {load_average()}"
    )
    runs: list[dict[str, Any]] = []
    for name in phases:
        print(f"  {name}: running (load average {load_average()}) ...", flush=True)
        runs.append(run_phase(name, args))
    report["runs"] = runs
    # a phase run more than once (the default interleaves control and ingest, so a load that
    # drifts during the run weighs on both alike): the mean of its runs
    rows = {name: mean_phase([r for r in runs if r["phase"] == name]) for name in set(phases)}
    report["phases"] = rows
    print(
        "\nPer phase (loadtest's measured window; flushes/s = updates per client per second; "
        "p50/p99 = flush timestamp -> kernel receipt; server CPU from loadtest's /proc of its "
        "serve process; Redis and bulk publisher CPU sampled each second; % of one core)"
    )
    print_fanout(runs)
    if len(runs) > len(rows):
        print("  mean of the runs of each phase:")
        print_fanout([rows[name] for name in FANOUT_PHASES if name in rows], header=False)
    print()
    for r in runs:
        if r["phase"] in ("control", "ingest") and r["ok"]:
            print_ingest(r, args.rate)

    goals: list[tuple[str, bool]] = []
    b, c, a = rows.get("control"), rows.get("ingest"), rows.get("baseline")
    if b is not None and c is not None:
        if b["ok"] and c["ok"]:
            floor = FLUSH_RATIO_GOAL * b["updates_per_s_per_client"]
            limit = b["p99_ms"] * P99_FACTOR_GOAL + P99_SLACK_GOAL_MS
            flushes_ok = c["updates_per_s_per_client"] >= floor
            p99_ok = c["p99_ms"] <= limit
            flushes_text = f"{c['updates_per_s_per_client']:.2f}, floor {floor:.2f}"
            p99_text = f"{c['p99_ms']:.1f} ms, limit {limit:.1f}"
        else:
            flushes_ok = p99_ok = False
            flushes_text = p99_text = "a loadtest failed"
        goals.append(
            (
                f"ingest vs control: flushes/s >= {FLUSH_RATIO_GOAL} x control's ({flushes_text})",
                flushes_ok,
            )
        )
        goals.append(
            (
                f"ingest vs control: p99 <= control's x {P99_FACTOR_GOAL} + "
                f"{P99_SLACK_GOAL_MS:g} ms ({p99_text})",
                p99_ok,
            )
        )
        for r in (b, c):
            if r["ok"] and r["bulk_published_per_s"] < 0.95 * args.rate:
                print(
                    f"  note: {r['phase']}'s bulk publisher reached only "
                    f"{r['bulk_published_per_s']:,.0f} of {args.rate:,} msg/s (the box is full)"
                )
        if b["sink"] is not None and b["sink"]["closed_by_redis"]:
            print("  note: Redis dropped the control's bare subscriber: the control is weaker")
    else:
        print("  (the ingest vs control goals need both phases: not run)")
    for r in runs:
        if r["phase"] == "ingest":
            ok = r["ok"] and not server_disconnected(r)
            tag = "" if r["ok"] else " (its loadtest failed)"
            goals.append((f"ingest: no Redis disconnect of the server's subscriber{tag}", ok))
    if a is not None and c is not None and a["ok"] and c["ok"]:
        ratio = c["updates_per_s_per_client"] / a["updates_per_s_per_client"]
        report["ingest_vs_baseline"] = {
            "flushes_ratio": ratio,
            "p99_delta_ms": c["p99_ms"] - a["p99_ms"],
            "server_cpu_delta_pct": c["server_cpu_pct"] - a["server_cpu_pct"],
        }
        print(
            f"  ingest vs baseline (the whole box's contention; information, not a goal): "
            f"flushes/s x {ratio:.3f}, p99 {c['p99_ms'] - a['p99_ms']:+.1f} ms, server CPU "
            f"{c['server_cpu_pct'] - a['server_cpu_pct']:+.0f} points, gaps {c['gaps']} vs "
            f"{a['gaps']}"
        )
    report["load_average_after"] = load_average()
    print(
        f"\nload average after: {load_average()} (2 shared cores: publishers, redis-server, "
        "server and load generator on the same machine)"
    )
    print("\nGoals:")
    for name, ok in goals:
        print(f"  {'met   ' if ok else 'MISSED'} {name}")
    report["goals"] = {name: ok for name, ok in goals}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 1 if any(not ok for _, ok in goals) else 0


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
    fan.add_argument("--rate", type=int, default=200_000)
    fan.add_argument("--clients", type=int, default=5000)
    fan.add_argument("--duration", type=float, default=30.0)
    fan.add_argument(
        "--phases",
        default="baseline,control,ingest,ingest,control",
        help="phases in the order to run them (a phase may repeat: its runs are averaged); "
        "default %(default)s",
    )
    fan.add_argument("--json", help="write every phase's figures, the goals, load averages")
    sink = sub.add_parser("subscribe", help="the control's bare subscriber")
    sink.add_argument("--address", required=True)
    sink.add_argument("--pattern", default=f"{CONTROL_PREFIX}:*")
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--backlog", type=int, default=5_000_000)
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
    if args.command == "subscribe":
        subscribe(args)
        return 0
    if args.command == "fanout":
        return fanout(args)
    if args.quick:
        args.backlog, args.duration = 200_000, 2.0
        args.rates, args.nats_rates = [5_000, 50_000, 0], [5_000, 0]
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
