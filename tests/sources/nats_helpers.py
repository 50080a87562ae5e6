"""A real nats-server process for the tests: started, killed and restarted on the same port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["NatsProcess", "nats_server_binary"]


def nats_server_binary() -> str | None:
    """nats-server from PATH, or Debian's (``/usr/sbin`` is not on every PATH)."""
    found = shutil.which("nats-server")
    if found:
        return found
    debian = "/usr/sbin/nats-server"
    return debian if os.access(debian, os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    """Whether a NATS server greets on ``port`` (it sends ``INFO {...}`` first)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            return sock.recv(5) == b"INFO "
    except OSError:
        return False


class NatsProcess:
    """One ``nats-server -a 127.0.0.1 -p PORT``; the port stays the same across restarts."""

    def __init__(
        self,
        binary: str,
        log_dir: Path,
        *,
        port: int | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.binary = binary
        self.args = list(args or [])
        """More command-line arguments (``--user``, ``-c CONFIG`` ...)."""
        self.log_dir = log_dir
        self.port = port or _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The nats:// URL of this server."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start nats-server and wait until it greets a client."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-l",
                str(self.log_dir / "nats.log"),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not _answers(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start on {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        """``kill -9`` and reap: every connection drops, nothing is delivered any more."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        """Start again on the same port (after :meth:`kill` or :meth:`stop`)."""
        self.start()

    def stop(self) -> None:
        """Stop gracefully, if running."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
