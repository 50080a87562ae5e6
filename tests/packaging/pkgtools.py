"""Helpers of the packaging tests: the repository, a server as a real process, HTTP, tools."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "python"
VENV_BIN = Path(sys.executable).parent
BUILD_PYTHON = shutil.which("python3") or sys.executable
"""The interpreter wheels are built for and the clean venv is made from: `make wheel`'s (its
PYTHON, python3 by default, which also made the project's venv), so that target/wheel's release
build stays cached between the two."""


def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def tool(name: str) -> str | None:
    """A command next to this interpreter (the project's venv) or on PATH."""
    beside = VENV_BIN / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without DASHBOARD_* settings (and without PYTHONPATH unless given)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_") and k != "PYTHONPATH"
    }
    env.update(extra)
    return env


def source_command() -> list[str]:
    """``dashboard-server`` run from the source tree with this interpreter."""
    return [sys.executable, "-m", "dashboard_server"]


def source_env(**extra: str) -> dict[str, str]:
    return clean_env(PYTHONPATH=str(SOURCE), **extra)


@dataclass
class Server:
    """A ``dashboard-server serve`` process and the port it announced in its JSON log."""

    proc: subprocess.Popen[bytes]
    port: int
    log: list[dict[str, Any]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@contextmanager
def serve(
    command: Sequence[str],
    *args: str,
    env: dict[str, str],
    cwd: Path | None = None,
    timeout: float = 30.0,
) -> Iterator[Server]:
    """Start ``command serve --port 0 *args``; yield once it logs ``listening``; stop it after.

    The caller checks the exit status with :meth:`Server.stop` (the fixture only makes sure the
    process is gone)."""
    proc = subprocess.Popen(
        [*command, "serve", "--port", "0", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    log: list[dict[str, Any]] = []
    port: list[int] = []
    ready = threading.Event()

    def read_log() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            try:
                entry = json.loads(raw)
            except ValueError:
                entry = {"msg": raw.decode(errors="replace").rstrip()}
            log.append(entry)
            if entry.get("msg") == "listening" and not port:
                port.append(int(entry["port"]))
                ready.set()
        ready.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        if not ready.wait(timeout) or not port:
            proc.kill()
            proc.wait()
            raise AssertionError(f"the server did not start listening; its log: {log}")
        yield Server(proc, port[0], log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)


def http_get(url: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``: status, headers (lower-case names), body; HTTP errors are returned too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def exercise_websocket(port: int) -> None:
    """Be a client for a moment (snapshot, updates, a ping and an invalid message), so that the
    labelled metrics have samples."""
    from websockets.sync.client import connect

    for fmt in ("json", "msgpack"):
        url = f"ws://127.0.0.1:{port}/ws?type=tui&format={fmt}"
        with connect(url, open_timeout=10, close_timeout=5) as ws:
            ws.recv(timeout=10)
            ws.recv(timeout=10)
            if fmt == "json":
                ws.send('{"type":"ping","payload":1}')
                ws.send("not json")
                ws.recv(timeout=10)


def metric_families(exposition: str) -> dict[str, str]:
    """The metric families of a Prometheus text exposition: name -> type (``_created`` gauges of
    prometheus_client left out)."""
    families = {}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            if not name.endswith("_created"):
                families[name] = kind
    return families


def sample_names(family: str, kind: str) -> set[str]:
    """The sample names a family exposes (what a PromQL expression may use)."""
    if kind == "histogram":
        return {family + suffix for suffix in ("_bucket", "_sum", "_count")}
    return {family}
