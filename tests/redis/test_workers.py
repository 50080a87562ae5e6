"""``serve --workers 2``: two processes on one port (SO_REUSEPORT), one version space, one
ingest writer; a resume lands on either worker and is a catch-up; SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
from redis_helpers import RedisProcess, free_port
from server_helpers import decode, http_get, run
from websockets.asyncio.client import connect


def test_two_workers_share_the_port_the_version_space_and_one_writer(
    redis_proc: RedisProcess, tmp_path: Path
) -> None:
    port = free_port()
    log = (tmp_path / "workers.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashboard_server", "serve", "--workers", "2", "--port", str(port),
         "--replication-role", "writer", "--demo-rate", "100", "--tui-interval-ms", "50"],
        env={**os.environ, "DASHBOARD_REPLICATION_URL": redis_proc.url,
             "DASHBOARD_HISTORY_SECTIONS": "", "DASHBOARD_REPLICATION_LEASE_MS": "1000"},
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    async def scenario() -> None:
        seen: dict[bool, str] = {}  # active -> epoch, over many requests to the one port
        async with asyncio.timeout(60):
            while len(seen) < 2:
                try:
                    status, _, body = await http_get(port, "/health")
                except OSError:
                    await asyncio.sleep(0.1)
                    continue
                health = orjson.loads(body)
                if status == 200 and health["status"] == "ok":
                    seen[health["replication"]["active"]] = health["epoch"]
                await asyncio.sleep(0.02)
        assert seen[True] == seen[False]  # one writer, one standby, one epoch
        url = f"ws://127.0.0.1:{port}/ws?type=tui&format=json"
        async with connect(url) as ws:
            snapshot = decode(await ws.recv())
            assert snapshot["type"] == "snapshot" and snapshot["epoch"] == seen[True]
        await asyncio.sleep(0.3)
        for _ in range(8):  # each lands on one worker or the other: all catch up
            resume = f"{url}&since={snapshot['version']}&epoch={snapshot['epoch']}"
            async with connect(resume) as ws:
                first = decode(await ws.recv())
                assert first["type"] == "update", first
                assert first["version"] > snapshot["version"]

    try:
        run(scenario(), timeout=90)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
