"""What the server assumes about ``websockets`` beyond its public API, checked so that an upgrade
that breaks an assumption fails here, loudly, instead of silently in production.

- the installed version is inside the range ``pyproject.toml`` declares, and that range starts
  at 17.4 (the first release that limits the fragments of one message);
- the internals :class:`~dashboard_server.fanout.writer.FrameWriter` reads on every write
  (``protocol.state``, ``writes``, ``expect_continuation_frame``, ``extensions``, the
  permessage-deflate attributes) exist and mean what it takes them to mean;
- the hooks the server's connection class relies on (``protocol.send_frame`` answering pings,
  ``handshake_exc`` for oversized request heads, ``MAX_FRAGMENTS``) are still there.
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from pathlib import Path

import websockets
from server_helpers import run
from websockets.asyncio import messages as asyncio_messages
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import (
    HeaderLineTooLong,
    RequestLineTooLong,
    SecurityError,
    TooManyFragments,
    TooManyHeaders,
)
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State
from websockets.server import ServerProtocol

from dashboard_server.fanout.writer import DEFLATE_SETTINGS, deflate_extensions, frame_header

ROOT = Path(__file__).resolve().parents[2]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _declared_range() -> tuple[tuple[int, ...], tuple[int, ...]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (spec,) = [d for d in project["dependencies"] if d.startswith("websockets")]
    low = re.search(r">=\s*([\d.]+)", spec)
    high = re.search(r"<\s*([\d.]+)", spec)
    assert low and high, f"websockets must be pinned to a range with both bounds: {spec!r}"
    return _version(low.group(1)), _version(high.group(1))


def test_installed_websockets_is_in_the_declared_range() -> None:
    low, high = _declared_range()
    assert low >= (17, 4), "websockets < 17.4 does not limit fragments (a memory DoS)"
    installed = _version(websockets.version.version)
    assert low <= installed < high, (installed, low, high)


def test_fragment_limit_exists_and_is_bounded() -> None:
    assert 0 < asyncio_messages.MAX_FRAGMENTS <= 65536
    assert issubclass(TooManyFragments, Exception)


def test_request_head_errors_are_security_errors() -> None:
    for exc in (RequestLineTooLong, HeaderLineTooLong, TooManyHeaders):
        assert issubclass(exc, SecurityError)
    assert hasattr(ServerProtocol(), "handshake_exc")


def test_pings_are_answered_through_send_frame() -> None:
    protocol = Protocol(Side.SERVER, state=State.OPEN)
    sent: list[Frame] = []
    original = protocol.send_frame

    def spy(frame: Frame) -> None:
        sent.append(frame)
        original(frame)

    protocol.send_frame = spy  # type: ignore[method-assign]
    mask = b"\x00\x00\x00\x00"
    protocol.receive_data(bytes([0x89, 0x80 | 3]) + mask + b"abc")  # masked ping "abc"
    assert [(f.opcode, f.data) for f in sent] == [(Opcode.PONG, b"abc")]
    assert protocol.data_to_send() == [bytes([0x8A, 3]) + b"abc"]


def test_frame_writer_internals_exist_and_behave() -> None:
    async def scenario() -> None:
        seen: list[ServerConnection] = []
        release = asyncio.Event()

        async def handler(connection: ServerConnection) -> None:
            seen.append(connection)
            await release.wait()

        async with serve(
            handler, "127.0.0.1", 0, ping_interval=None, extensions=deflate_extensions()
        ) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}", ping_interval=None) as client:
                while not seen:
                    await asyncio.sleep(0.01)
                connection = seen[0]
                protocol = connection.protocol
                assert protocol.state is State.OPEN
                assert isinstance(protocol.writes, list) and not protocol.writes
                assert protocol.expect_continuation_frame is False
                (ext,) = protocol.extensions
                assert type(ext) is PerMessageDeflate
                assert ext.local_no_context_takeover is True
                assert ext.compress_settings is DEFLATE_SETTINGS
                assert isinstance(ext.local_max_window_bits, int)
                # writes: bytes serialized by the protocol and not yet handed to the transport
                protocol.send_binary(b"x", fin=False)
                assert protocol.writes and protocol.expect_continuation_frame is True
                protocol.send_continuation(b"y", fin=True)
                assert protocol.expect_continuation_frame is False
                connection.send_data()
                assert not protocol.writes
                assert await client.recv() == b"xy"
                assert connection.transport.get_write_buffer_size() >= 0
                release.set()
            assert protocol.state is not State.OPEN

    run(scenario())


def test_shared_frame_header_is_the_librarys() -> None:
    for length in (0, 125, 126, 65535, 65536):
        payload = b"p" * length
        frame = Frame(Opcode.BINARY, payload).serialize(mask=False, extensions=[])
        assert frame_header(length, text=False) + payload == frame


def test_connection_class_hooks_exist() -> None:
    """GuardedConnection bounds each socket read through the selector transport's ``max_size``
    and reads again once ``protocol.eof_sent``."""
    from asyncio import selector_events

    assert isinstance(selector_events._SelectorSocketTransport.max_size, int)
    assert hasattr(Protocol(Side.SERVER), "eof_sent")
    assert callable(ServerConnection.send_data) and callable(ServerConnection.connection_made)
