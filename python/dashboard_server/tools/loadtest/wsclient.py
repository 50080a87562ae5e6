"""A minimal WebSocket client for load generation: a raw socket, read by the event loop.

The ``websockets`` client spends far more CPU per message than the server it measures (at 3,000
connections in one process it saturated a core and its own p99 was ~700 ms), so a load generator
built on it measures itself. :class:`LoadClient` does only what a measuring client needs: the
opening handshake (checking ``Sec-WebSocket-Accept``), unmasked server frames (with
permessage-deflate when negotiated), masked ``pong`` and ``close`` replies, and for each data
message the three fields that matter: ``type``, ``seq`` and ``timestamp``.

Every member of a group receives byte-identical messages, so :class:`Inspector` decodes those
fields from a message's first bytes once per distinct prefix and shares the result between the
connections of a process (the fields are a function of the prefix alone, so this is exact).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import struct
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgpack
import orjson

__all__ = ["ClientStats", "Inspector", "LoadClient", "MessageInfo", "handshake_request"]

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_PREFIX: Final = 160
"""Bytes of a message enough to hold ``type``, ``seq`` and ``timestamp`` (they come first)."""
_READ_SIZE: Final = 262_144
_SO_TIMESTAMPNS: Final = 35
"""Linux's ``SO_TIMESTAMPNS`` (Python 3.11's socket module does not name it)."""
_TIMESTAMPS: Final = sys.platform == "linux"
_TIMESPEC: Final = struct.Struct("@qq")
_CMSG_SIZE: Final = socket.CMSG_SPACE(_TIMESPEC.size)
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0, 1, 2, 8, 9, 10


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """What the load generator needs from a server message."""

    type: str
    seq: int | None
    timestamp_ms: int | None


class Inspector:
    """Decodes :class:`MessageInfo` from message prefixes, memoised (see the module doc)."""

    def __init__(self, limit: int = 4096) -> None:
        self._cache: dict[bytes, MessageInfo] = {}
        self._limit = limit
        self.decodes = 0
        """Messages actually decoded (the memo's misses)."""

    def inspect(self, payload: bytes, text: bool) -> MessageInfo:
        """The ``type``, ``seq`` and ``timestamp`` of one server message."""
        prefix = payload[:_PREFIX]
        info = self._cache.get(prefix)
        if info is None:
            self.decodes += 1
            info = _decode_json(payload) if text else _decode_msgpack(payload)
            if len(self._cache) >= self._limit:
                self._cache.clear()
            self._cache[prefix] = info
        return info


def _info(fields: dict[str, Any]) -> MessageInfo:
    seq = fields.get("seq")
    stamp = fields.get("timestamp")
    return MessageInfo(
        str(fields.get("type")),
        seq if isinstance(seq, int) else None,
        _parse_timestamp(stamp) if isinstance(stamp, str) else None,
    )


def _decode_json(payload: bytes) -> MessageInfo:
    message = orjson.loads(payload)
    return _info(message if isinstance(message, dict) else {})


def _decode_msgpack(payload: bytes) -> MessageInfo:
    """Read the leading keys of the message map up to the first bulky field, else decode all."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(payload[:_PREFIX])
    fields: dict[str, Any] = {}
    try:
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if key in ("data", "changes", "patch", "events", "payload", "removed"):
                break
            fields[key] = unpacker.unpack()
        else:
            return _info(fields)
        if "type" in fields and "timestamp" in fields:
            return _info(fields)
    except (msgpack.OutOfData, ValueError):
        pass
    message = msgpack.unpackb(payload, raw=False)
    return _info(message if isinstance(message, dict) else {})


def _parse_timestamp(text: str) -> int | None:
    try:
        return round(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        return None


def handshake_request(host: str, port: int, target: str, key: str, deflate: bool) -> bytes:
    """The HTTP/1.1 upgrade request of the opening handshake."""
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(slots=True)
class ClientStats:
    """What one connection saw."""

    started: float = 0.0
    """Wall time the connection attempt started."""
    opened_at: float | None = None
    """Wall time the handshake completed."""
    snapshot_at: float | None = None
    """Wall time the first snapshot arrived."""
    gaps: int = 0
    last_seq: int | None = None
    close_code: int | None = None
    error: str | None = None


Sample = Callable[[MessageInfo, float, float | None, bytes, int], None]


class LoadClient:
    """One measuring WebSocket connection (see the module doc).

    It reads its socket itself (``loop.add_reader`` + ``recvmsg``) rather than through an
    asyncio transport, to get the kernel's receive timestamp of the data (``SO_TIMESTAMPNS``,
    Linux): the time the bytes reached this host, which the load generator's own queueing does
    not inflate. ``on_message(info, read_time, kernel_time, prefix, size)`` is called for every
    data message (``kernel_time`` is ``None`` where not available); seq gaps are counted per the
    protocol's sequence rule (a snapshot resets the expected seq).
    """

    def __init__(
        self,
        host: str,
        port: int,
        target: str,
        inspector: Inspector,
        on_message: Sample,
        *,
        deflate: bool = False,
    ) -> None:
        self.host, self.port, self.target = host, port, target
        self.inspector = inspector
        self.on_message = on_message
        self.deflate_offered = deflate
        self.stats = ClientStats(started=time.time())
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sock: socket.socket | None = None
        self._key = base64.b64encode(os.urandom(16)).decode()
        self._buffer = bytearray()
        self._upgraded = False
        self._inflate = False
        self._reset_inflate = False
        self._decompressor = zlib.decompressobj(-15)
        self._fragments: list[bytes] = []
        self._fragment_op = 0
        self._fragment_rsv1 = False

    async def connect(self) -> None:
        """Open the TCP connection and complete the opening handshake (raises on failure)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if _TIMESTAMPS:
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self._sock = sock
        try:
            await loop.sock_connect(sock, (self.host, self.port))
            request = handshake_request(
                self.host, self.port, self.target, self._key, self.deflate_offered
            )
            await loop.sock_sendall(sock, request)
        except OSError as exc:
            self._lost(exc)
            self.opened.exception()  # retrieved: the caller gets ``exc`` itself
            raise
        loop.add_reader(sock.fileno(), self._readable)
        await self.opened

    def close(self, code: int = 1000) -> None:
        """Send a close frame (once open) and close the TCP connection."""
        if self._sock is None:
            return
        if self._upgraded:
            self._send(_OP_CLOSE, code.to_bytes(2, "big"))
        self._lost(None)

    # --- reading ---------------------------------------------------------------------------

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data, ancillary, _flags, _address = self._sock.recvmsg(_READ_SIZE, _CMSG_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not data:
            self._lost(None)
            return
        now = time.time()
        kernel = None
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(value) >= 16:
                seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                kernel = seconds + nanoseconds / 1e9
        self._buffer += data
        if not self._upgraded and not self._read_response():
            return
        self._read_frames(now, kernel)

    def _lost(self, exc: Exception | None) -> None:
        """Forget the socket and settle the futures (idempotent)."""
        if exc is not None and self.stats.error is None:
            self.stats.error = f"{type(exc).__name__}: {exc}"
        sock, self._sock = self._sock, None
        if sock is not None:
            if sock.fileno() >= 0:
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(self.stats.error or "connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _send(self, opcode: int, payload: bytes) -> None:
        """Write one small masked control frame (best effort: never blocks)."""
        assert len(payload) < 126
        if self._sock is None:
            return
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        with contextlib.suppress(OSError):
            self._sock.send(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)

    def _read_response(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(self._key.encode() + _GUID).digest()).decode()
        status = head[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101" or headers.get("sec-websocket-accept") != accept:
            self.stats.error = f"handshake refused: {head[0]}"
            self._lost(None)
            return False
        extensions = headers.get("sec-websocket-extensions", "")
        self._inflate = "permessage-deflate" in extensions
        self._reset_inflate = "server_no_context_takeover" in extensions
        self._upgraded = True
        self.stats.opened_at = time.time()
        self.opened.set_result(None)
        return True

    def _read_frames(self, now: float, kernel: float | None) -> None:
        buffer = self._buffer
        offset = 0
        size = len(buffer)
        while size - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            length = second & 0x7F
            start = offset + 2
            if length == 126:
                if size - offset < 4:
                    break
                length = int.from_bytes(buffer[start : start + 2], "big")
                start += 2
            elif length == 127:
                if size - offset < 10:
                    break
                length = int.from_bytes(buffer[start : start + 8], "big")
                start += 8
            end = start + length
            if end > size:
                break
            self._frame(first, bytes(buffer[start:end]), now, kernel)
            offset = end
        if offset:
            del buffer[:offset]

    def _frame(self, first: int, payload: bytes, now: float, kernel: float | None) -> None:
        opcode = first & 0x0F
        if opcode >= _OP_CLOSE:
            if opcode == _OP_PING:
                self._send(_OP_PONG, payload)
            elif opcode == _OP_CLOSE:
                self.stats.close_code = int.from_bytes(payload[:2], "big") if payload else 1005
                self.close(self.stats.close_code if self.stats.close_code < 5000 else 1000)
            return
        if opcode != _OP_CONT:
            self._fragment_op, self._fragment_rsv1 = opcode, bool(first & 0x40)
        if not first & 0x80:
            self._fragments.append(payload)
            return
        if self._fragments:
            payload = b"".join([*self._fragments, payload])
            self._fragments.clear()
        if self._fragment_rsv1 and self._inflate:
            if self._reset_inflate:
                self._decompressor = zlib.decompressobj(-15)
            payload = self._decompressor.decompress(payload + b"\x00\x00\xff\xff")
        self._message(payload, self._fragment_op == _OP_TEXT, now, kernel)

    def _message(self, payload: bytes, text: bool, now: float, kernel: float | None) -> None:
        stats = self.stats
        info = self.inspector.inspect(payload, text)
        if info.type == "snapshot":
            if stats.snapshot_at is None:
                stats.snapshot_at = now
            stats.last_seq = info.seq
        elif info.seq is not None:
            if stats.last_seq is None:
                stats.last_seq = info.seq  # first group message: a resume catch-up
            else:
                if info.seq != stats.last_seq + 1:
                    stats.gaps += 1
                stats.last_seq = info.seq
        self.on_message(info, now, kernel, payload[:_PREFIX], len(payload))
