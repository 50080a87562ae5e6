"""Churn: 1,000 connect/close cycles and 200 handshakes aborted midway leave nothing behind:
open file descriptors, asyncio tasks, the connections gauge and the connection slots return to
their baseline (within 2)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct

from sectools import open_ws, sample, server, ws_url
from server_helpers import run, wait_until

from dashboard_server.server.app import DashboardServer

CYCLES = 1000
ABORTED = 200
BATCH = 25
UPGRADE = (
    b"GET /ws?format=json HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _state(srv: DashboardServer) -> tuple[int, int, float, int]:
    return (
        _fds(),
        len(asyncio.all_tasks()),
        sample(srv, "dashboard_active_connections"),
        srv.gate.connections,
    )


async def _aborted(port: int, kind: int) -> None:
    """A handshake abandoned at one of four points."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    if kind == 0:  # half a request line, then close
        writer.write(UPGRADE[:20])
    elif kind == 1:  # headers without the final blank line
        writer.write(UPGRADE[:-2])
    elif kind == 2:  # a full upgrade request, gone before reading the 101
        writer.write(UPGRADE)
    else:  # a full request, then a reset (SO_LINGER 0) once the server has answered
        writer.write(UPGRADE)
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await writer.drain()
    writer.close()


async def _cycle(url: str, index: int) -> None:
    async with open_ws(url) as ws:
        if index % 2:
            await ws.recv()  # the snapshot


def test_connect_close_churn_and_aborted_handshakes_leave_nothing_behind() -> None:
    async def scenario() -> None:
        async with server(open_timeout_s=2.0) as srv:
            srv.writer.merge("/orders/1", {"qty": 1.0})
            url = ws_url(srv, "type=tui&format=json")
            async with open_ws(url):  # warm up: first-use allocations are not leaks
                pass
            await asyncio.sleep(0.2)
            fds, tasks, gauge, slots = _state(srv)
            for start in range(0, CYCLES, BATCH):
                await asyncio.gather(*(_cycle(url, i) for i in range(start, start + BATCH)))
            for start in range(0, ABORTED, BATCH):
                await asyncio.gather(
                    *(_aborted(srv.port, i % 4) for i in range(start, start + BATCH))
                )

            def settled() -> bool:
                now = _state(srv)
                return (
                    abs(now[0] - fds) <= 2
                    and abs(now[1] - tasks) <= 2
                    and now[2] == gauge
                    and now[3] == slots
                )

            # the half-sent handshakes are cut by open_timeout_s (2 s)
            await wait_until(settled, timeout=10.0)
            assert not srv._sessions
            assert srv.hub.group_count() == 0
            assert srv.gate.per_address == {}

    run(scenario(), timeout=120)
