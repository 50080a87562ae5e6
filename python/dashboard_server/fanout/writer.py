"""Pre-framed writes: one WebSocket frame built once per message, written to many connections.

A server's WebSocket frames are not masked, so the frame of a message (RFC 6455 header +
payload) is the same bytes for every member of a group. :class:`FrameWriter` builds it once per
message and hands it to each member's transport with one ``transport.write()`` — instead of
:func:`websockets.asyncio.server.broadcast`, which builds a ``Frame`` and serializes it again for
every connection (docs/performance.md has the measured difference). It bypasses the
``websockets`` protocol object only where that is safe:

* the connection's state is ``OPEN`` and its transport is not closing: a connection that has
  sent or received a close frame, or lost its TCP connection, is never written to;
* the protocol has no serialized bytes waiting (``protocol.writes``) and no fragmented message in
  progress: the shared frame never lands inside or ahead of another frame. Going through
  ``transport.write()`` (never the socket itself) keeps the transport's own ordering: bytes
  still buffered in it go out first;
* the connection negotiated no extension, or exactly permessage-deflate **without server context
  takeover** (the server offers only that, see :func:`deflate_extensions`): each message is then
  compressed independently with fixed settings, so the compressed frame is also the same for
  every member and is compressed once per message (per window size), not once per connection.

Anything else (e.g. another extension) falls back to ``broadcast()`` for that connection, which
is always correct.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from typing import Any, Final

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.protocol import State

__all__ = [
    "DEFLATE_SETTINGS",
    "DEFLATE_WINDOW_BITS",
    "LISTEN_BACKLOG",
    "FrameWriter",
    "deflate_extensions",
    "frame_header",
]

_OPEN: Final = State.OPEN
_FIN: Final = 0x80
_RSV1: Final = 0x40
_OP_TEXT: Final = 0x1
_OP_BINARY: Final = 0x2
_EMPTY_BLOCK: Final = b"\x00\x00\xff\xff"

LISTEN_BACKLOG: Final = 4096
"""Accept queue of the listening socket (asyncio's default is 100): in a reconnect storm of
thousands of clients a short queue drops SYNs, and each drop costs the client a 1 s (then 3 s)
retransmission; Linux caps it at ``net.core.somaxconn``."""

DEFLATE_WINDOW_BITS: Final = 12
"""LZ77 window of the server's compressor (and the client's, requested): 4 KiB, as the
``websockets`` default, so an idle connection keeps no large zlib state."""
DEFLATE_SETTINGS: Final[dict[str, Any]] = {"memLevel": 5}
"""zlib settings of the server's compressor (the ``websockets`` default)."""


def deflate_extensions() -> list[ServerPerMessageDeflateFactory]:
    """The ``extensions`` to pass to ``serve()`` when compression is on.

    permessage-deflate with ``server_no_context_takeover`` (every message compressed on its own,
    so a group's compressed frame is byte-identical for all its members and compressed once) and
    ``client_no_context_takeover`` (no inflate window kept per connection between messages).
    The price: no dictionary carried across messages, so repetitive small updates compress less
    well than with context takeover (docs/performance.md).
    """
    return [
        ServerPerMessageDeflateFactory(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            server_max_window_bits=DEFLATE_WINDOW_BITS,
            client_max_window_bits=DEFLATE_WINDOW_BITS,
            compress_settings=DEFLATE_SETTINGS,
        )
    ]


def frame_header(length: int, *, text: bool, compressed: bool = False) -> bytes:
    """The RFC 6455 header of an unmasked, final frame carrying ``length`` payload bytes."""
    first = _FIN | (_OP_TEXT if text else _OP_BINARY) | (_RSV1 if compressed else 0)
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


class FrameWriter:
    """Writes one message, framed once, to many connections (see the module doc).

    The counters tell which path each connection took: ``fast`` (shared plain frame),
    ``deflated`` (shared compressed frame), ``fallback`` (``broadcast()``), ``skipped`` (closing:
    not written to); ``compressions`` counts compressions (one per message and window size).
    """

    def __init__(self) -> None:
        self.fast = 0
        self.deflated = 0
        self.fallback = 0
        self.skipped = 0
        self.compressions = 0
        self.last_compressed = b""
        """The last compressed frame built (benchmarks send it as the floor)."""

    def write(self, connections: Iterable[ServerConnection], payload: bytes, text: bool) -> int:
        """Write ``payload`` as one data frame to every open connection; returns how many."""
        frame = frame_header(len(payload), text=text) + payload
        others: list[ServerConnection] = []
        total = 0
        for connection in connections:
            total += 1
            protocol = connection.protocol
            transport = connection.transport
            if (
                protocol.state is _OPEN
                and not protocol.writes
                and not protocol.expect_continuation_frame
                and not protocol.extensions
                and not transport.is_closing()
            ):
                transport.write(frame)  # the common case, kept as short as it can be
            else:
                others.append(connection)
        self.fast += total - len(others)
        if not others:
            return total
        return total - len(others) + self._write_others(others, payload, text)

    def _write_others(self, connections: list[ServerConnection], payload: bytes, text: bool) -> int:
        """The connections that cannot take the plain frame: closing ones are skipped, those
        with our permessage-deflate get the shared compressed frame, the rest ``broadcast()``."""
        compressed: dict[int, bytes] = {}
        slow: list[ServerConnection] = []
        deflated = 0
        for connection in connections:
            protocol = connection.protocol
            transport = connection.transport
            if protocol.state is not _OPEN or transport.is_closing():
                self.skipped += 1
                continue
            window_bits = None
            if not (protocol.writes or protocol.expect_continuation_frame):
                window_bits = _shared_deflate(protocol.extensions)
            if window_bits is None:
                slow.append(connection)
                continue
            data = compressed.get(window_bits)
            if data is None:
                data = compressed[window_bits] = self._compress(payload, text, window_bits)
            transport.write(data)
            deflated += 1
        if slow:
            broadcast(slow, payload, text=text)
        self.deflated += deflated
        self.fallback += len(slow)
        return deflated + len(slow)

    def _compress(self, payload: bytes, text: bool, window_bits: int) -> bytes:
        """The compressed frame exactly as ``websockets`` would build it for one connection."""
        encoder = zlib.compressobj(wbits=-window_bits, **DEFLATE_SETTINGS)
        data = encoder.compress(payload) + encoder.flush(zlib.Z_SYNC_FLUSH)
        if data.endswith(_EMPTY_BLOCK):
            data = data[:-4]
        self.compressions += 1
        self.last_compressed = frame_header(len(data), text=text, compressed=True) + data
        return self.last_compressed


def _shared_deflate(extensions: list[Any]) -> int | None:
    """The window bits if ``extensions`` is exactly one permessage-deflate whose server side
    compresses every message on its own with :data:`DEFLATE_SETTINGS` (the very object
    :func:`deflate_extensions` hands to the library, which passes it on), else ``None``."""
    if len(extensions) != 1:
        return None
    ext = extensions[0]
    if (
        type(ext) is PerMessageDeflate
        and ext.local_no_context_takeover
        and ext.compress_settings is DEFLATE_SETTINGS
    ):
        return int(ext.local_max_window_bits)
    return None
