"""Fixtures of the Redis tests: a real ``redis-server`` on a free port, and both engines.

redis-server is taken from PATH; when it is missing and we are root with apt-get, it is installed
(as ``make system-deps`` does); only if that is impossible are the tests skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # redis_helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))  # server_helpers

from redis_helpers import RedisProcess

_install_tried = False


def redis_server_binary() -> str | None:
    """The redis-server executable, installed with apt-get if missing and possible."""
    global _install_tried
    found = shutil.which("redis-server")
    if found or _install_tried:
        return found
    _install_tried = True
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "redis-server"],
    ):
        if subprocess.run(command, env=env, capture_output=True, timeout=600).returncode != 0:
            return None
    return shutil.which("redis-server")


@pytest.fixture
def redis_binary() -> str:
    """The path of redis-server (the test is skipped if there is none and none can be had)."""
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("redis-server is not installed and cannot be installed (make system-deps)")
    return binary


@pytest.fixture
def redis_proc(redis_binary: str, tmp_path: Path) -> Iterator[RedisProcess]:
    """A started redis-server without persistence, stopped afterwards."""
    proc = RedisProcess(redis_binary, tmp_path / "redis")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def make_redis(redis_binary: str) -> Iterator[Callable[..., RedisProcess]]:
    """A factory of (not yet started) redis-server processes: ``make_redis(data_dir, port=...,
    persistent=...)``; every one is stopped afterwards."""
    created: list[RedisProcess] = []

    def make(data_dir: Path, *, port: int | None = None, persistent: bool = False) -> RedisProcess:
        proc = RedisProcess(redis_binary, data_dir, port=port, persistent=persistent)
        created.append(proc)
        return proc

    try:
        yield make
    finally:
        for proc in created:
            proc.stop()
