"""The backends' Redis load with 1 and with N instances: every instance on the backends (each
one its own island) vs one ingest writer + edges on a shared stream.

    python benches/bench_backend_load.py --instances 1,4 --seconds 12

Starts a backend redis-server and a stream redis-server on free loopback ports, drives the
backend with `publish-demo` (SET + PUBLISH, the generic contract), then for each instance count
and each mode runs `dashboard-server serve` processes, lets them settle, and measures over
``--seconds`` on the *backend* Redis: commands/s (``INFO stats`` ``total_commands_processed``
delta), the commands by name (``INFO commandstats``), and output bytes/s
(``total_net_output_bytes``, which counts the pub/sub fan-out too). The publisher's own share is
measured alone first and reported apart. ``--reload-s`` shortens the instances' safety-net reload
(default 30 s in production) so that its cost shows within the window.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis import Redis

PUBLISHER_COMMANDS = frozenset({"set", "publish", "del", "info"})
"""What publish-demo (and this script) send; the rest comes from the instances."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(data: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    data.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(data)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc, port
        except Exception:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def sample(r: Redis) -> dict[str, Any]:
    stats: Any = r.info("stats")
    commands: Any = r.info("commandstats")
    return {
        "t": time.monotonic(),
        "commands": int(stats["total_commands_processed"]),
        "out": int(stats["total_net_output_bytes"]),
        "by_name": {k[len("cmdstat_") :]: int(v["calls"]) for k, v in commands.items()},
    }


def measure(r: Redis, seconds: float) -> dict[str, Any]:
    a = sample(r)
    time.sleep(seconds)
    b = sample(r)
    dt = b["t"] - a["t"]
    by_name = {
        k: round((v - a["by_name"].get(k, 0)) / dt, 1)
        for k, v in b["by_name"].items()
        if v - a["by_name"].get(k, 0) > 0
    }
    return {
        "commands_per_s": round((b["commands"] - a["commands"] - 2) / dt, 1),  # minus our INFOs
        "out_kib_per_s": round((b["out"] - a["out"]) / dt / 1024, 1),
        "by_name": dict(sorted(by_name.items(), key=lambda kv: -kv[1])),
    }


def serve(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dashboard_server", "serve"],
        env={**os.environ, **env, "DASHBOARD_PORT": str(free_port())},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", default="1,4", help="instance counts (%(default)s)")
    parser.add_argument("--seconds", type=float, default=12.0, help="measured window")
    parser.add_argument("--settle", type=float, default=4.0, help="seconds before measuring")
    parser.add_argument("--rate", type=float, default=100.0, help="publish-demo steps/s")
    parser.add_argument("--symbols", type=int, default=50, help="publish-demo symbols")
    parser.add_argument("--reload-s", type=float, default=5.0, help="instances' reload period")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="backend-load-"))
    backend, backend_port = start_redis(tmp / "backend")
    stream, stream_port = start_redis(tmp / "stream")
    r = Redis(port=backend_port)
    backend_url = f"redis://127.0.0.1:{backend_port}/0"
    publisher = subprocess.Popen(
        [sys.executable, "-m", "dashboard_server", "publish-demo", "--redis-url", backend_url,
         "--rate", str(args.rate), "--symbols", str(args.symbols), "--seed", "7"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = {
        "DASHBOARD_REDIS_URL": backend_url,
        "DASHBOARD_REDIS_RELOAD_INTERVAL_S": str(args.reload_s),
        "DASHBOARD_HISTORY_SECTIONS": "",
        "DASHBOARD_LOG_LEVEL": "warning",
    }
    results: list[dict[str, Any]] = []
    try:
        time.sleep(args.settle)
        alone = measure(r, args.seconds)
        print(f"publisher alone: {alone['commands_per_s']} commands/s", flush=True)
        for n in [int(x) for x in args.instances.split(",")]:
            for mode in ("islands", "shared"):
                procs = []
                if mode == "islands":
                    procs = [serve(base) for _ in range(n)]
                else:
                    Redis(port=stream_port).flushall()
                    shared = {
                        **base,
                        "DASHBOARD_REPLICATION_URL": f"redis://127.0.0.1:{stream_port}/0",
                    }
                    procs = [serve({**shared, "DASHBOARD_REPLICATION_ROLE": "writer"})]
                    edge = {k: v for k, v in shared.items() if k != "DASHBOARD_REDIS_URL"}
                    procs += [serve(edge) for _ in range(n - 1)]
                time.sleep(args.settle)
                m = measure(r, args.seconds)
                load = os.getloadavg()
                # what the instances sent: every command but the publisher's and our INFOs
                by_instances = round(
                    sum(v for k, v in m["by_name"].items() if k not in PUBLISHER_COMMANDS), 1
                )
                row = {"instances": n, "mode": mode, **m, "by_instances": by_instances,
                       "loadavg": [round(x, 2) for x in load]}  # fmt: skip
                results.append(row)
                print(
                    f"{n} instance(s), {mode:7}: {m['commands_per_s']:8.1f} commands/s "
                    f"({by_instances:.1f} from the instances), {m['out_kib_per_s']:8.1f} KiB/s out;"
                    f" load {row['loadavg']}; top {list(m['by_name'].items())[:5]}",
                    flush=True,
                )
                for p in procs:
                    p.terminate()
                for p in procs:
                    try:
                        p.wait(30)
                    except subprocess.TimeoutExpired:
                        print(f"an instance did not stop in 30 s; killed (pid {p.pid})")
                        p.kill()
                        p.wait(10)
                time.sleep(1.0)
    finally:
        publisher.terminate()
        publisher.wait(10)
        for p in (backend, stream):
            p.terminate()
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
