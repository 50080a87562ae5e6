"""``serve --workers N``: N server processes on one port, in one shared version space.

Each worker is a whole instance (:class:`~dashboard_server.server.app.DashboardServer`) bound
with ``SO_REUSEPORT``, so the kernel spreads new connections over them; all of them are edges of
the same stream (``replication_url`` is required), so a client that reconnects to another worker
resumes by catch-up, and with ``replication_role: writer`` all of them are writer candidates of
which one holds the lease: one ingest writer per host, a standby in every other worker.

The parent only supervises: it starts the workers (``spawn``: nothing of the parent is shared),
restarts one that dies unexpectedly (after a second, so a crash loop does not spin), forwards
SIGTERM/SIGINT to all of them and waits for their graceful shutdown; it exits 2 if a worker
exits 2 (an invalid setting), else 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from dashboard_server.config import Config
from dashboard_server.telemetry.logs import configure_logging

__all__ = ["run_workers", "worker_main"]

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0


def worker_main(config: Config, index: int) -> None:
    """One worker: serve until SIGTERM/SIGINT (the entry point of the spawned process)."""
    configure_logging(config.log_level)
    from dashboard_server.server.app import DashboardServer

    async def serve() -> None:
        server = DashboardServer(config)
        await server.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.request_shutdown)
        log.info("worker started", extra={"worker": index, "port": server.port})
        await server.wait_stopped()

    asyncio.run(serve())


def run_workers(config: Config) -> int:
    """Run ``config.workers`` workers until SIGTERM/SIGINT; returns the exit status."""
    count = config.workers
    child = config.replace(workers=1, reuse_port=True)
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start(index: int) -> BaseProcess:
        process = context.Process(
            target=worker_main, args=(child, index), name=f"dashboard-worker-{index}"
        )
        process.start()
        return process

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in workers:
            if process.is_alive() and process.pid is not None:
                with_signal(process.pid, signal.SIGTERM)

    workers = [start(i) for i in range(count)]
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    log.info("workers started", extra={"workers": count, "port": config.port})
    status = 0
    try:
        while True:
            alive = False
            for i, process in enumerate(workers):
                if process.is_alive():
                    alive = True
                    continue
                if stopping:
                    continue
                if process.exitcode == 2:
                    status = 2
                    on_signal(signal.SIGTERM, None)
                    continue
                log.warning(
                    "worker exited; restarting", extra={"worker": i, "code": process.exitcode}
                )
                time.sleep(RESTART_DELAY_S)
                workers[i] = start(i)
                alive = True
            if not alive:
                break
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for process in workers:
            process.join(30)
    return status


def with_signal(pid: int, signum: int) -> None:
    """Send ``signum`` to ``pid`` (gone already: nothing)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
