"""Fan-out cost per connection: the raw-send floor, ``websockets.broadcast()`` and our path.

One run, one set of N loopback WebSocket connections (the receiving ends live in a separate
process that reads and discards), the same pre-built 1 KiB binary message, and per round each
method once, in rotating order:

* ``floor``: ``sock.send(frame)`` of the already-framed bytes on each raw socket (no checks, no
  transport, nothing a server could ship as is: it would reorder bytes behind a buffered
  transport);
* ``broadcast``: ``websockets.asyncio.server.broadcast(connections, payload)``;
* ``ours``: :meth:`dashboard_server.fanout.writer.FrameWriter.write` (what the server runs);
* ``floor-2threads``: the floor split over two threads (the GIL is released in ``send``): what
  spreading the writes over both cores could win at best, in wall time.

CPU is the sending thread's (threads') CPU time (user + system, which includes most of the
receiver's kernel work on loopback) divided by N; wall is the time of one whole fan-out. The
medians over the rounds are printed, with each method's CPU per connection relative to the
floor. ``make bench-fanout`` runs it; ``--clients``, ``--rounds``, ``--size`` change the shape.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve

from dashboard_server.fanout.writer import (
    LISTEN_BACKLOG,
    FrameWriter,
    deflate_extensions,
    frame_header,
)
from dashboard_server.tools.loadtest.wsclient import handshake_request


class _Drain(asyncio.Protocol):
    """A receiving end: sends the upgrade request, then discards everything."""

    def __init__(self, port: int, done: asyncio.Future[None], deflate: bool) -> None:
        self.port = port
        self.done = done
        self.deflate = deflate
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        transport.write(handshake_request("127.0.0.1", self.port, "/", key, self.deflate))

    def data_received(self, data: bytes) -> None:
        self.received += len(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _drain_main(port: int, clients: int, deflate: bool) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    limit = asyncio.Semaphore(50)

    async def connect() -> None:
        async with limit:
            await loop.create_connection(lambda: _Drain(port, done, deflate), "127.0.0.1", port)

    await asyncio.gather(*(connect() for _ in range(clients)))
    await done  # the server closes everything at the end


def _update_like(size: int) -> bytes:
    """A JSON ``update`` of about ``size`` bytes with random prices (compresses like one)."""
    rng = random.Random(1)
    changes: dict[str, float] = {}
    while len(orjson.dumps(changes)) < size - 80:
        symbol = f"SYM{len(changes):03d}USDT"
        changes[f"/market_data/{symbol}/last"] = round(rng.uniform(10, 60000), 2)
    return orjson.dumps(
        {"type": "update", "seq": 1, "timestamp": "2026-11-27T10:30:00.100Z", "changes": changes}
    )


async def _bench(clients: int, rounds: int, size: int, deflate: bool) -> None:
    connections: list[ServerConnection] = []
    all_in = asyncio.Event()
    finish = asyncio.Event()

    async def handler(connection: ServerConnection) -> None:
        connections.append(connection)
        if len(connections) == clients:
            all_in.set()
        await finish.wait()

    extensions = deflate_extensions() if deflate else None
    async with serve(
        handler,
        "127.0.0.1",
        0,
        compression=None,
        extensions=extensions,
        ping_interval=None,
        backlog=LISTEN_BACKLOG,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        command = [sys.executable, __file__, "--drain", str(port), str(clients)]
        drain = subprocess.Popen([*command, *(["--deflate"] if deflate else [])])
        await asyncio.wait_for(all_in.wait(), 120)
        payload = _update_like(size) if deflate else os.urandom(size)
        writer = FrameWriter()
        frame = frame_header(len(payload), text=deflate) + payload
        if deflate:  # the floor sends what every member gets: the compressed frame
            assert writer.write(connections[:1], payload, True) == 1
            frame = writer.last_compressed
        socks = [c.transport._sock for c in connections]  # type: ignore[attr-defined]
        halves = (socks[::2], socks[1::2])
        pool = ThreadPoolExecutor(1)

        def send_all(part: list[Any]) -> float:
            started = time.thread_time()
            for sock in part:
                sock.send(frame)
            return time.thread_time() - started

        def floor() -> float:
            return send_all(socks)

        def floor_2threads() -> float:
            other = pool.submit(send_all, halves[1])
            return send_all(halves[0]) + other.result()

        def plain_broadcast() -> float:
            started = time.thread_time()
            broadcast(connections, payload, text=deflate)
            return time.thread_time() - started

        def ours() -> float:
            started = time.thread_time()
            writer.write(connections, payload, deflate)
            return time.thread_time() - started

        methods: dict[str, Callable[[], float]] = {
            "floor": floor,
            "broadcast": plain_broadcast,
            "ours": ours,
            "floor-2threads": floor_2threads,
        }
        cpu: dict[str, list[float]] = {name: [] for name in methods}
        wall: dict[str, list[float]] = {name: [] for name in methods}
        names = list(methods)
        for round_ in range(rounds):
            for offset in range(len(names)):
                name = names[(round_ + offset) % len(names)]
                await _settle(connections)
                started = time.perf_counter()
                cpu[name].append(methods[name]())
                wall[name].append(time.perf_counter() - started)
        pool.shutdown()
        finish.set()
        floor_us = statistics.median(cpu["floor"]) / clients * 1e6
        kind = (
            f"{len(payload)}-byte JSON text, deflated to {len(frame)}"
            if deflate
            else (f"{size}-byte binary")
        )
        print(
            f"fan-out of one {kind} message to {clients} loopback WebSocket connections, "
            f"median of {rounds} rounds ({os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.2f})"
        )
        print(f"{'method':<16}{'CPU us/conn':>12}{'x floor':>9}{'wall ms':>9}")
        for name in names:
            us = statistics.median(cpu[name]) / clients * 1e6
            print(
                f"{name:<16}{us:>12.2f}{us / floor_us:>9.2f}"
                f"{statistics.median(wall[name]) * 1e3:>9.2f}"
            )
        ours_us = statistics.median(cpu["ours"]) / clients * 1e6
        print(f"ours/floor per connection: {ours_us / floor_us:.2f}")
        assert writer.fallback == 0 and writer.skipped == 0
    drain.wait(30)


async def _settle(connections: list[ServerConnection]) -> None:
    """Wait until every transport's buffer is empty and the receivers had time to read."""
    await asyncio.sleep(0.02)
    while any(c.transport.get_write_buffer_size() for c in connections):
        await asyncio.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="permessage-deflate (no context takeover) on every connection, JSON payload",
    )
    parser.add_argument("--drain", nargs=2, type=int, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drain:
        asyncio.run(_drain_main(*args.drain, args.deflate))
    else:
        asyncio.run(_bench(args.clients, args.rounds, args.size, args.deflate))


if __name__ == "__main__":
    main()
