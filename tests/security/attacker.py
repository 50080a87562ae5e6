"""Hostile load, run in a process of its own so that its CPU and memory are not the server's.

    python attacker.py MODE PORT SECONDS [key=value ...]

Prints one JSON line: ``codes`` (the close code of every connection that was closed, ``null``
for a connection lost without a close frame), ``sent`` (attack messages or frames written),
``replies`` (messages received) and ``connections`` (connections opened). Modes:

- ``pings``: ``conns`` connections, each sending ``rate`` MessagePack ``ping`` messages per
  second whose payload is ``elements`` empty arrays; a closed connection reconnects.
- ``fragments``: one connection at a time sends one message in ``count`` empty fragments (raw
  frames), then reads until it is closed; repeated.
- ``ping_flood``: one connection with a tiny receive buffer writes WebSocket ping frames of
  ``size`` bytes as fast as it can, for the whole run, reading everything (``read=1``) or
  nothing until the end (``read=0``); then it reads until closed.
- ``intervals``: ``conns`` connections, connection ``i`` asking for ``interval_ms`` =
  ``first + i``; each reads everything it gets until the end.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from typing import Any

import msgpack
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

MASK = b"\x00\x00\x00\x00"  # a zero mask: the payload goes out as it is


def masked_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A client frame (masked, as RFC 6455 requires) with a zero masking key."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        head = bytes((first, 0x80 | length))
    elif length < 65536:
        head = bytes((first, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + length.to_bytes(8, "big")
    return head + MASK + payload


class Tally:
    def __init__(self) -> None:
        self.codes: list[int | None] = []
        self.sent = 0
        self.replies = 0
        self.connections = 0
        self.refused: list[int] = []

    def closed(self, exc: ConnectionClosed) -> None:
        self.codes.append(exc.rcvd.code if exc.rcvd is not None else None)


async def _drain(ws: ClientConnection, tally: Tally) -> None:
    try:
        async for _ in ws:
            tally.replies += 1
    except ConnectionClosed as exc:
        tally.closed(exc)
        return
    # closed normally: the iterator ends
    tally.codes.append(ws.close_code)


async def pings(port: int, until: float, tally: Tally, opts: dict[str, str]) -> None:
    rate = float(opts.get("rate", "19"))
    elements = int(opts.get("elements", "65000"))
    message = msgpack.packb({"type": "ping", "payload": [[] for _ in range(elements)]})

    async def one() -> None:
        while time.monotonic() < until:
            try:
                async with connect(
                    f"ws://127.0.0.1:{port}/ws?format=msgpack&channels=account",
                    close_timeout=1,
                    max_size=None,
                ) as ws:
                    tally.connections += 1
                    reader = asyncio.create_task(_drain(ws, tally))
                    next_at = time.monotonic()
                    while time.monotonic() < until and not reader.done():
                        try:
                            await ws.send(message)
                        except ConnectionClosed:
                            break
                        tally.sent += 1
                        next_at += 1 / rate
                        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                    if not reader.done():
                        await ws.close()
                    await reader
            except InvalidStatus as exc:
                tally.refused.append(exc.response.status_code)
                await asyncio.sleep(0.2)
            except OSError:
                await asyncio.sleep(0.2)

    await asyncio.gather(*(one() for _ in range(int(opts.get("conns", "4")))))


async def fragments(port: int, until: float, tally: Tally, opts: dict[str, str]) -> None:
    count = int(opts.get("count", "100000"))
    first = masked_frame(0x2, b"", fin=False)
    middle = masked_frame(0x0, b"", fin=False)
    chunk = middle * 1000
    while time.monotonic() < until:
        async with connect(
            f"ws://127.0.0.1:{port}/ws?format=msgpack&channels=account", close_timeout=1
        ) as ws:
            tally.connections += 1
            ws.transport.write(first)
            sent = 1
            while sent < count and not ws.transport.is_closing():
                ws.transport.write(chunk)
                sent += 1000
                if sent % 20000 < 1000:
                    await asyncio.sleep(0)  # let the transport flush
            tally.sent += sent
            await _drain(ws, tally)


async def ping_flood(port: int, until: float, tally: Tally, opts: dict[str, str]) -> None:
    size = int(opts.get("size", "125"))
    frames = masked_frame(0x9, b"p" * size) * 100
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    async with connect(
        f"ws://127.0.0.1:{port}/ws?format=msgpack", sock=sock, close_timeout=1, max_size=None
    ) as ws:
        tally.connections += 1
        reading = opts.get("read", "0") == "1"
        reader = asyncio.create_task(_drain(ws, tally)) if reading else None
        if not reading:
            ws.transport.pause_reading()  # never read: pongs (and updates) pile up
        while time.monotonic() < until and not ws.transport.is_closing():
            if ws.transport.get_write_buffer_size() < 1 << 20:
                ws.transport.write(frames)
                tally.sent += 100
            await asyncio.sleep(0.001)
        if reader is None:
            ws.transport.resume_reading()
            reader = asyncio.create_task(_drain(ws, tally))
        try:
            async with asyncio.timeout(10):
                await reader
        except TimeoutError:
            tally.codes.append(-1)  # still open


async def intervals(port: int, until: float, tally: Tally, opts: dict[str, str]) -> None:
    first = int(opts.get("first", "20"))

    async def one(index: int) -> None:
        url = f"ws://127.0.0.1:{port}/ws?format=json&channels=account&interval_ms={first + index}"
        try:
            async with connect(url, close_timeout=1, open_timeout=20) as ws:
                tally.connections += 1
                try:
                    async with asyncio.timeout(max(0.0, until - time.monotonic())):
                        async for _ in ws:
                            tally.replies += 1
                except TimeoutError:
                    pass
                except ConnectionClosed as exc:
                    tally.closed(exc)
        except InvalidStatus as exc:
            tally.refused.append(exc.response.status_code)

    await asyncio.gather(*(one(i) for i in range(int(opts.get("conns", "300")))))


MODES: dict[str, Any] = {
    "pings": pings,
    "fragments": fragments,
    "ping_flood": ping_flood,
    "intervals": intervals,
}


async def main(argv: list[str]) -> None:
    mode, port, seconds = argv[0], int(argv[1]), float(argv[2])
    opts = dict(arg.split("=", 1) for arg in argv[3:])
    tally = Tally()
    print("start", flush=True)
    await MODES[mode](port, time.monotonic() + seconds, tally, opts)
    print(orjson.dumps(vars(tally)).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
