"""Orchestration of a load test: optional local server, worker processes, the report.

:func:`run_loadtest` starts (unless given a URL) a ``dashboard-server serve`` subprocess on a
free loopback port, spreads the clients over worker processes
(:mod:`dashboard_server.tools.loadtest.worker`), connects them (gradually, or all at once for a
reconnect storm), waits for their snapshots, measures over a window and returns a
:class:`Report`. With a local server it also measures the server's CPU over the window (from
``/proc``), its RSS before and after the clients connected, and the snapshot encodes and flushes
it counted (``/metrics``).

Latency is measured on ``update`` messages (an event's timestamp is when it happened): the
receipt wall time minus the message's ``timestamp`` (the server's flush time, RFC 3339 with
milliseconds, truncated), so each sample is between 0 and 1 ms too high, 0.5 ms on average.
Receipt is taken twice: when the kernel received the bytes on the client socket
(``SO_TIMESTAMPNS``: what the server and the network cost, ``latency_ms``) and when the load
generator's Python read them (adding its own queueing, ``read_latency_ms``). ``spread`` does not
depend on the timestamp's resolution: it is, per message, the time from its first to its last
kernel receipt among all the clients (same clock, every process).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from dashboard_server.tools.loadtest.worker import WorkerPlan, WorkerResult, worker_main

__all__ = ["LoadtestOptions", "Report", "format_report", "report_json", "run_loadtest"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class LoadtestOptions:
    """What to run (see ``dashboard-server loadtest --help``)."""

    url: str | None = None
    """``ws://host:port/ws`` of a running server; ``None``: start a local one."""
    clients: int = 1000
    processes: int = 2
    duration: float = 20.0
    warmup: float = 2.0
    types: tuple[str, ...] = ("tui",)
    formats: tuple[str, ...] = ("msgpack",)
    channels: tuple[str | None, ...] = (None,)
    """Channel sets (comma-separated lists); ``None``: every channel."""
    compression: bool = False
    storm: bool = False
    """Connect every client at the same instant (reconnect storm)."""
    concurrency: int = 100
    """Handshakes in flight per process when not a storm."""
    server_args: tuple[str, ...] = ()
    """Extra ``serve`` flags for the local server."""


@dataclass(slots=True)
class Report:
    """The measured figures (times in ms unless named otherwise)."""

    options: dict[str, Any]
    clients: int = 0
    connected: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    closes: dict[str, int] = field(default_factory=dict)
    window_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    """Update latency, flush timestamp to the kernel's receipt on the client socket."""
    read_latency_ms: dict[str, float] = field(default_factory=dict)
    """Update latency, flush timestamp to the load generator reading it (adds its queueing)."""
    spread_ms: dict[str, float] = field(default_factory=dict)
    open_ms: dict[str, float] = field(default_factory=dict)
    """From the (common) connect instant to each client's completed handshake."""
    snapshot_ms: dict[str, float] = field(default_factory=dict)
    """From the (common) connect instant to each client's first snapshot."""
    messages: int = 0
    messages_per_s: float = 0.0
    message_types: dict[str, int] = field(default_factory=dict)
    update_bytes_avg: float = 0.0
    gaps: int = 0
    generator_cpu_percent: float = 0.0
    """CPU of all the load-generator processes over the window, % of one core."""
    generator_processes: int = 0
    machine_cpu_percent: dict[str, float] = field(default_factory=dict)
    """The whole machine's CPU over the window by kind (/proc/stat), % of one core: the
    loopback's kernel work shows up in ``softirq`` and other users of the machine too."""
    server: dict[str, float] = field(default_factory=dict)


def _percentiles(values: array[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    n = len(ordered)

    def at(q: float) -> float:
        return round(ordered[min(n - 1, int(q * n))], 3)

    return {
        "count": n,
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": round(ordered[-1], 3),
    }


def _machine_ticks() -> list[int]:
    """The whole machine's CPU time so far, in ticks: user, nice, system, idle, iowait, irq,
    softirq, steal (the first line of /proc/stat)."""
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:9]]


def _machine_percent(before: list[int], after: list[int], window: float) -> dict[str, float]:
    """Machine CPU over a window, % of one core, by kind."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return {
        name: round(100 * (b - a) / _CLK_TCK / window, 1)
        for name, a, b in zip(names, before, after, strict=True)
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _queries(options: LoadtestOptions) -> list[str]:
    """The query string of each client: tiers, formats and channel sets round-robin."""
    queries = []
    nt, nf = len(options.types), len(options.formats)
    for i in range(options.clients):
        query = f"type={options.types[i % nt]}&format={options.formats[(i // nt) % nf]}"
        channels = options.channels[(i // (nt * nf)) % len(options.channels)]
        if channels is not None:
            query += f"&channels={channels}"
        queries.append(query)
    return queries


class _Server:
    """A local ``dashboard-server serve`` subprocess and what /proc says about it."""

    def __init__(self, port: int, options: LoadtestOptions) -> None:
        limit = str(options.clients + 100)
        args = [
            sys.executable,
            "-m",
            "dashboard_server",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--max-connections",
            limit,
            "--max-connections-per-address",
            limit,
            "--compression",
            "true" if options.compression else "false",
            *options.server_args,
        ]
        self.base = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=1):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the local server did not start") from None
                time.sleep(0.1)

    def cpu_s(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def rss(self) -> int:
        with open(f"/proc/{self.process.pid}/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE

    def metrics(self) -> dict[str, float]:
        """The unlabelled counters and sums of ``/metrics`` this report uses."""
        with urllib.request.urlopen(self.base + "/metrics", timeout=10) as response:
            text = response.read().decode()
        wanted = {}
        for name in (
            "dashboard_snapshot_encodes_total",
            "dashboard_snapshot_encodes_per_flush_count",
            "dashboard_groups",
        ):
            match = re.search(rf"^{name} (\S+)$", text, re.M)
            wanted[name] = float(match.group(1)) if match else 0.0
        flushes = re.findall(r"^dashboard_flushes_total\{[^}]*\} (\S+)$", text, re.M)
        wanted["dashboard_flushes_total"] = sum(float(v) for v in flushes)
        return wanted

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def _local_server(options: LoadtestOptions) -> Iterator[tuple[str, _Server | None]]:
    if options.url is not None:
        yield options.url, None
        return
    port = _free_port()
    server = _Server(port, options)
    try:
        yield f"ws://127.0.0.1:{port}/ws", server
    finally:
        server.stop()


def _expect(pipe: Connection, what: str, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise RuntimeError(f"a load-generator process did not answer {what!r} in time")
    message = pipe.recv()
    if message[0] != what:
        raise RuntimeError(f"unexpected message from a worker: {message[0]!r}")
    return message[1] if len(message) > 1 else None


def run_loadtest(options: LoadtestOptions) -> Report:
    """Run one load test (see the module doc)."""
    if options.clients < 1 or options.processes < 1 or options.duration <= 0:
        raise ValueError("clients, processes and duration must be positive")
    report = Report(options=asdict(options), clients=options.clients)
    context = multiprocessing.get_context("spawn")
    with _local_server(options) as (url, server):
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        targets = [f"{parts.path or '/ws'}?{query}" for query in _queries(options)]
        if server is not None:
            rss_base = server.rss()
            before = server.metrics()
        processes = min(options.processes, options.clients)
        pipes: list[Connection] = []
        workers = []
        for index in range(processes):
            mine = tuple(targets[index::processes])
            parent, child = context.Pipe()
            plan = WorkerPlan(host, port, mine, deflate=options.compression)
            worker = context.Process(target=worker_main, args=(plan, child), daemon=True)
            worker.start()
            pipes.append(parent)
            workers.append(worker)
        try:
            for pipe in pipes:
                _expect(pipe, "hello", 60)
            connect_at = time.time() + 0.3
            for pipe in pipes:
                pipe.send(("connect", connect_at, 0 if options.storm else options.concurrency))
            for pipe in pipes:
                _expect(pipe, "ready", 120 + options.clients / 50)
            if server is not None:
                rss_connected = server.rss()
                connected = server.metrics()
            t0 = time.time() + options.warmup
            t1 = t0 + options.duration
            for pipe in pipes:
                pipe.send(("measure", t0, t1))
            time.sleep(max(0.0, t0 - time.time()))
            machine0 = _machine_ticks()
            cpu0 = server.cpu_s() if server is not None else 0.0
            time.sleep(max(0.0, t1 - time.time()))
            machine1 = _machine_ticks()
            cpu1 = server.cpu_s() if server is not None else 0.0
            results: list[WorkerResult] = [
                _expect(pipe, "result", options.duration + options.warmup + 60) for pipe in pipes
            ]
            if server is not None:
                after = server.metrics()
        finally:
            for worker in workers:
                worker.join(10)
                if worker.is_alive():
                    worker.kill()
        _summarise(report, results, options.duration)
        report.machine_cpu_percent = _machine_percent(machine0, machine1, options.duration)
        report.generator_processes = processes
        if server is not None:
            encodes_connect = (
                connected["dashboard_snapshot_encodes_total"]
                - before["dashboard_snapshot_encodes_total"]
            )
            report.server = {
                "cpu_percent": round(100 * (cpu1 - cpu0) / options.duration, 1),
                "rss_base_mib": round(rss_base / 2**20, 1),
                "rss_connected_mib": round(rss_connected / 2**20, 1),
                "rss_per_connection_kib": round(
                    (rss_connected - rss_base) / max(1, report.connected) / 1024, 1
                ),
                "groups": connected["dashboard_groups"],
                "snapshot_encodes_while_connecting": encodes_connect,
                "flushes_while_connecting": connected["dashboard_flushes_total"]
                - before["dashboard_flushes_total"],
                "snapshot_encodes_total": after["dashboard_snapshot_encodes_total"],
                "flushes_total": after["dashboard_flushes_total"],
            }
    return report


def _summarise(report: Report, results: Sequence[WorkerResult], window: float) -> None:
    latencies: array[float] = array("d")
    read_latencies: array[float] = array("d")
    snapshots: array[float] = array("d")
    opens: array[float] = array("d")
    first_last: dict[bytes, tuple[float, float]] = {}
    cpu = 0.0
    update_bytes = 0
    for result in results:
        report.connected += result.connected
        report.failed += result.failed
        for kind, count in result.errors.items():
            report.errors[kind] = report.errors.get(kind, 0) + count
        for code, count in result.closes.items():
            report.closes[str(code)] = report.closes.get(str(code), 0) + count
        latencies.frombytes(result.latencies)
        read_latencies.frombytes(result.read_latencies)
        snapshots.frombytes(result.snapshot_latencies)
        opens.frombytes(result.open_latencies)
        report.messages += result.messages
        for kind, count in result.types.items():
            report.message_types[kind] = report.message_types.get(kind, 0) + count
        update_bytes += result.update_bytes
        report.gaps += result.gaps
        cpu += result.cpu_s
        for key, (first, last) in result.first_last.items():
            seen = first_last.get(key)
            first_last[key] = (
                (first, last) if seen is None else (min(seen[0], first), max(seen[1], last))
            )
    report.window_s = window
    report.latency_ms = _percentiles(latencies)
    report.read_latency_ms = _percentiles(read_latencies)
    report.snapshot_ms = _percentiles(snapshots)
    report.open_ms = _percentiles(opens)
    report.spread_ms = _percentiles(array("d", ((b - a) * 1000 for a, b in first_last.values())))
    report.messages_per_s = round(report.messages / window, 1)
    report.update_bytes_avg = round(update_bytes / max(1, report.message_types.get("update", 0)))
    report.generator_cpu_percent = round(100 * cpu / window, 1)


def format_report(report: Report) -> str:
    """A human-readable summary of ``report``."""
    o = report.options
    lines = [
        f"clients {report.clients} over {report.generator_processes} processes, "
        f"types {','.join(o['types'])}, formats {','.join(o['formats'])}, "
        f"{'storm' if o['storm'] else 'gradual connect'}, window {report.window_s:g} s",
        f"connected (snapshot received) {report.connected}, failed {report.failed}"
        + (f", errors {report.errors}" if report.errors else "")
        + (f", closes {report.closes}" if report.closes else ""),
        f"connect -> handshake done ms {_fmt(report.open_ms)}",
        f"connect -> snapshot ms {_fmt(report.snapshot_ms)}",
        f"update latency ms, flush timestamp -> kernel receipt {_fmt(report.latency_ms)}",
        f"update latency ms, flush timestamp -> generator read {_fmt(report.read_latency_ms)}",
        f"spread ms (first -> last receipt of a message) {_fmt(report.spread_ms)}",
        f"messages/s {report.messages_per_s:g} {report.message_types}, "
        f"update size {report.update_bytes_avg:g} B, seq gaps {report.gaps}",
        f"load generator CPU {report.generator_cpu_percent:g}% of a core",
        "machine CPU % of a core: "
        + ", ".join(f"{k} {v:g}" for k, v in report.machine_cpu_percent.items() if v),
    ]
    if report.server:
        s = report.server
        lines += [
            f"server CPU {s['cpu_percent']:g}% of a core, RSS {s['rss_base_mib']:g} -> "
            f"{s['rss_connected_mib']:g} MiB ({s['rss_per_connection_kib']:g} KiB/connection)",
            f"groups {s['groups']:g}; while connecting: snapshot encodes "
            f"{s['snapshot_encodes_while_connecting']:g} in {s['flushes_while_connecting']:g} "
            "flushes",
        ]
    return "\n".join(lines)


def _fmt(stats: dict[str, float]) -> str:
    if not stats.get("count"):
        return "(none)"
    return " ".join(f"{k} {v:g}" for k, v in stats.items() if k != "count") + (
        f" (n={stats['count']:g})"
    )


def report_json(report: Report) -> str:
    """``report`` as JSON."""
    return json.dumps(asdict(report), indent=2)
