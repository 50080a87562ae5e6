"""The pre-framed write path (:class:`dashboard_server.fanout.writer.FrameWriter`) keeps the
invariants
that make bypassing ``websockets.broadcast()`` safe: byte order with data still buffered in the
transport, nothing written to a closing connection or inside a fragmented message, frames
identical to the library's, and permessage-deflate compressed once per message."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from server_helpers import run
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from wire import raw_connect, read_frames

from dashboard_server.fanout.writer import FrameWriter, deflate_extensions, frame_header


class Captured:
    """A bare ``websockets`` server that hands over its connections and keeps them open."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.release = asyncio.Event()

    async def handler(self, connection: ServerConnection) -> None:
        await self.connections.put(connection)
        await self.release.wait()


@contextlib.asynccontextmanager
async def bare_server(**kwargs: object) -> AsyncIterator[tuple[Server, Captured]]:
    captured = Captured()
    async with serve(captured.handler, "127.0.0.1", 0, ping_interval=None, **kwargs) as server:
        try:
            yield server, captured
        finally:
            captured.release.set()


def port_of(server: Server) -> int:
    return int(server.sockets[0].getsockname()[1])


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("text", [False, True])
def test_frame_header_matches_websockets(length: int, text: bool) -> None:
    payload = b"x" * length
    opcode = Opcode.TEXT if text else Opcode.BINARY
    expected = Frame(opcode, payload).serialize(mask=False)
    assert frame_header(length, text=text) + payload == expected


def test_shared_frame_goes_behind_bytes_still_buffered() -> None:
    """With the transport's buffer not empty, our frames and the library's stay in call order."""

    async def scenario() -> None:
        async with bare_server(compression=None) as (server, captured):
            sock = await raw_connect(port_of(server))
            connection = await captured.connections.get()
            writer = FrameWriter()
            filler = b"f" * 60_000
            sent: list[bytes] = []
            while connection.transport.get_write_buffer_size() == 0:
                sent.append(b"%06d" % len(sent) + filler)
                broadcast([connection], sent[-1])  # the library's own path
            assert len(sent) < 200
            for turn in range(6):
                sent.append(b"%06d" % len(sent))
                if turn % 2:
                    await connection.send(sent[-1])  # waits for the buffer to drain a bit
                else:
                    assert writer.write([connection], sent[-1], False) == 1
            assert writer.fast == 3 and writer.fallback == 0
            frames = await read_frames(sock, len(sent), timeout=20)
            assert [f.payload for f in frames] == sent
            assert all(f.fin and f.opcode == Opcode.BINARY for f in frames)
            sock.close()

    run(scenario())


def test_never_writes_to_a_closing_connection() -> None:
    """After the close frame (state CLOSING) nothing more goes out; an aborted transport too."""

    async def scenario() -> None:
        async with bare_server(compression=None, close_timeout=1) as (server, captured):
            sock = await raw_connect(port_of(server))
            connection = await captured.connections.get()
            writer = FrameWriter()
            assert writer.write([connection], b"before", False) == 1
            closing = asyncio.create_task(connection.close(4001, "bye"))
            await asyncio.sleep(0)  # the close frame is written; the peer never answers
            assert writer.write([connection], b"after", False) == 0
            assert writer.skipped == 1
            frames = await read_frames(sock, 2)
            assert [(f.opcode, f.payload[:2]) for f in frames] == [
                (Opcode.BINARY, b"be"),
                (Opcode.CLOSE, (4001).to_bytes(2, "big")),
            ]
            await closing
            sock.close()

            sock = await raw_connect(port_of(server))
            connection = await captured.connections.get()
            connection.transport.abort()  # lost, but the protocol does not know yet
            assert writer.write([connection], b"after abort", False) == 0
            assert writer.skipped == 2
            sock.close()

    run(scenario())


def test_never_writes_inside_a_fragmented_message() -> None:
    """A connection sending a fragmented message goes to ``broadcast()``, which skips it."""

    async def scenario() -> None:
        async with bare_server(compression=None) as (server, captured):
            sock = await raw_connect(port_of(server), rcvbuf=65536)
            connection = await captured.connections.get()
            resume = asyncio.Event()

            async def fragments() -> AsyncIterator[bytes]:
                yield b"part1"
                await resume.wait()
                yield b"part2"

            sending = asyncio.create_task(connection.send(fragments()))
            while not connection.protocol.expect_continuation_frame:
                await asyncio.sleep(0.001)
            writer = FrameWriter()
            assert writer.write([connection], b"intruder", False) == 1
            assert writer.fallback == 1 and writer.fast == 0
            resume.set()
            await sending
            assert writer.write([connection], b"after", False) == 1
            frames = await read_frames(sock, 4)
            assert [(f.opcode, f.fin, f.payload) for f in frames] == [
                (Opcode.BINARY, False, b"part1"),
                (Opcode.CONT, False, b"part2"),
                (Opcode.CONT, True, b""),
                (Opcode.BINARY, True, b"after"),
            ]
            sock.close()

    run(scenario(), timeout=30)


def test_deflate_compresses_once_per_message_for_the_whole_group() -> None:
    """With no server context takeover every member gets the same compressed frame."""

    async def scenario() -> None:
        async with bare_server(extensions=deflate_extensions()) as (server, captured):
            uri = f"ws://127.0.0.1:{port_of(server)}/"
            clients = [await connect(uri, compression="deflate") for _ in range(3)]
            connections = [await captured.connections.get() for _ in clients]
            writer = FrameWriter()
            payloads = [
                (b'{"type":"update","seq":%d,"changes":{"/market_data/BTC/last":5.0}}' % n) * 20
                for n in range(3)
            ]
            for payload in payloads:
                assert writer.write(connections, payload, True) == 3
            assert writer.deflated == 9 and writer.compressions == 3 and writer.fallback == 0
            for client in clients:
                assert [await client.recv(decode=False) for _ in payloads] == payloads
                await client.close()

    run(scenario())


def test_deflate_with_context_takeover_falls_back_to_the_library() -> None:
    """A compressor that keeps context is per connection: those go through ``broadcast()``."""

    async def scenario() -> None:
        factory = ServerPerMessageDeflateFactory()  # context takeover on both sides
        async with bare_server(extensions=[factory]) as (server, captured):
            uri = f"ws://127.0.0.1:{port_of(server)}/"
            clients = [await connect(uri, compression="deflate") for _ in range(2)]
            connections = [await captured.connections.get() for _ in clients]
            writer = FrameWriter()
            for payload in (b"a" * 500, b"b" * 500):
                assert writer.write(connections, payload, False) == 2
            assert writer.fallback == 4 and writer.compressions == 0
            for client in clients:
                assert [await client.recv() for _ in range(2)] == [b"a" * 500, b"b" * 500]
                await client.close()

    run(scenario())
