"""A raw WebSocket client end for the write-path tests: a plain socket and a frame parser."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from dashboard_server.tools.loadtest.wsclient import handshake_request


@dataclass(frozen=True)
class WireFrame:
    """One frame as it came off the wire."""

    fin: bool
    rsv1: bool
    opcode: int
    payload: bytes


def parse_frames(data: bytes) -> tuple[list[WireFrame], bytes]:
    """The complete unmasked frames at the start of ``data``, and what is left over."""
    frames = []
    offset = 0
    while len(data) - offset >= 2:
        first, second = data[offset], data[offset + 1]
        assert not second & 0x80, "a server frame must not be masked"
        length, start = second & 0x7F, offset + 2
        if length == 126:
            length, start = int.from_bytes(data[start : start + 2], "big"), start + 2
        elif length == 127:
            length, start = int.from_bytes(data[start : start + 8], "big"), start + 8
        if start + length > len(data):
            break
        frames.append(
            WireFrame(
                bool(first & 0x80), bool(first & 0x40), first & 0x0F, data[start : start + length]
            )
        )
        offset = start + length
    return frames, data[offset:]


async def raw_connect(port: int, rcvbuf: int = 4096) -> socket.socket:
    """A socket with a tiny receive buffer that has completed the opening handshake."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    await loop.sock_sendall(sock, handshake_request("127.0.0.1", port, "/", key, False))
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def read_frames(sock: socket.socket, count: int, timeout: float = 10.0) -> list[WireFrame]:
    """Read until ``count`` frames arrived (fails on timeout or on a connection closed early)."""
    loop = asyncio.get_running_loop()
    data = b""
    frames: list[WireFrame] = []
    async with asyncio.timeout(timeout):
        while len(frames) < count:
            chunk = await loop.sock_recv(sock, 65536)
            assert chunk, f"connection closed after {len(frames)} frames"
            more, data = parse_frames(data + chunk)
            frames += more
    return frames
