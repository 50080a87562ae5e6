"""A real Redis Cluster on loopback ports for the tests: redis-server processes in cluster mode,
joined by ``redis-cli --cluster create``."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError
from redis_helpers import RedisProcess, wait_for_ping


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too (so both are below 65536)."""
    for _ in range(200):
        port = random.randrange(20000, 30000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


class ClusterNodeProcess(RedisProcess):
    """One redis-server started with ``--cluster-enabled yes``."""

    def __init__(self, binary: str, data_dir: Path, *, node_timeout_ms: int, keyspace: str) -> None:
        super().__init__(binary, data_dir, port=cluster_port())
        self.node_timeout_ms = node_timeout_ms
        self.keyspace = keyspace

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.data_dir / "nodes.conf"),
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                "--notify-keyspace-events",
                self.keyspace,
                "--logfile",
                str(self.data_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_ping(self.port, self.proc, timeout)


class LocalCluster:
    """``primaries`` primaries with ``replicas`` replicas each, on 127.0.0.1."""

    def __init__(
        self,
        binary: str,
        data_dir: Path,
        *,
        primaries: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 1000,
        keyspace: str = "KA",
    ) -> None:
        self.nodes = [
            ClusterNodeProcess(
                binary, data_dir / f"node{i}", node_timeout_ms=node_timeout_ms, keyspace=keyspace
            )
            for i in range(primaries * (1 + replicas))
        ]
        self.replicas = replicas

    @property
    def url(self) -> str:
        """The URL of the first node (any node would do)."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self, timeout: float = 30.0) -> None:
        """Start every node, create the cluster, wait until it is ok everywhere."""
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        assert cli is not None, "redis-cli is needed for the cluster tests"
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_ok(timeout)

    def wait_ok(self, timeout: float = 30.0, *, skip: tuple[int, ...] = ()) -> None:
        """Wait until every running node says ``cluster_state:ok`` and agrees on the slots."""
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for i, node in enumerate(self.nodes):
                if i in skip or node.proc is None:
                    continue
                try:
                    info = node.client().execute_command("CLUSTER INFO")
                except RedisError:
                    states.append("down")
                    continue
                ok = (
                    str(info.get("cluster_state")) == "ok"
                    and int(info.get("cluster_slots_assigned", 0)) == 16384
                )
                states.append("ok" if ok else "fail")
            if states and all(s == "ok" for s in states) and self._replicas_synced(skip):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ok: {states}")
            time.sleep(0.1)

    def _replicas_synced(self, skip: tuple[int, ...]) -> bool:
        for i, node in enumerate(self.nodes):
            if i in skip or node.proc is None:
                continue
            try:
                info = node.client().info("replication")
            except RedisError:
                return False
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def client(self) -> RedisCluster:
        """A cluster-aware synchronous client (the "backend")."""
        return RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in self.nodes if n.proc],
            socket_timeout=5,
        )

    def primary_of(self, key: str) -> int:
        """The index in ``nodes`` of the primary that holds ``key`` now."""
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                reply: Any = node.client().execute_command("CLUSTER KEYSLOT", key)
                slots = node.client().execute_command("CLUSTER SLOTS")
            except RedisError:
                continue
            for start, end, primary, *_ in slots:
                if start <= int(reply) <= end:
                    port = int(primary[1])
                    return next(j for j, n in enumerate(self.nodes) if n.port == port)
        raise RuntimeError("no node answered")

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()
