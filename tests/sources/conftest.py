"""Fixtures of the sources tests: the b25 samples, real redis-server and nats-server processes.

Puts this directory (``b25sim``, ``nats_helpers``), tests/redis (``redis_helpers``) and
tests/server (``server_helpers``) on the import path. A missing redis-server or nats-server skips
the tests that need it (``make system-deps`` installs both).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # b25sim, nats_helpers
sys.path.insert(0, str(HERE.parent / "redis"))  # redis_helpers
sys.path.insert(0, str(HERE.parent / "server"))  # server_helpers

from nats_helpers import NatsProcess, nats_server_binary  # noqa: E402
from redis_helpers import RedisProcess  # noqa: E402


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProcess]:
    """A started redis-server without persistence, stopped afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (make system-deps)")
    proc = RedisProcess(binary, tmp_path / "redis")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def nats_proc(tmp_path: Path) -> Iterator[NatsProcess]:
    """A started nats-server on a free loopback port, stopped afterwards."""
    binary = nats_server_binary()
    if binary is None:
        pytest.skip("nats-server is not installed (make system-deps)")
    proc = NatsProcess(binary, tmp_path / "nats")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
