"""The pub/sub connection, read off the socket in batches by the engine's ``PubSubScanner``.

Why not redis-py's ``PubSub`` for this one connection: ``get_message()`` parses each reply in
Python (or hands it to hiredis one call at a time) and arms one ``asyncio.timeout`` per message;
measured, that alone capped the ingest at ~19,000 messages a second (46,000 with hiredis),
below what a market-data feed writes, and past that Redis closes the subscriber at its
output-buffer limit. Even ``hiredis.Reader`` fed from a socket (~2 µs a message) spends most of
its time building one Python list of four ``bytes`` per message. Here the
connection is a :class:`~dashboard_server.ingest.scanned.ScannedConnection`: each read goes to
the engine's ``PubSubScanner`` (docs/engine.md; ~0.1 µs a message in the native engine), which
never builds a value for a message (raw sources' messages are conflated per channel, others kept
in order, oversized payloads skipped unbuffered); the replies to our own commands (PSUBSCRIBE
confirmations, PONG, HELLO) and errors are cut out whole and parsed by ``hiredis.Reader`` (they
are rare). Batches are held and applied as ``ingest/scanned.py`` says.

redis-py stays the client for every command (SCAN, GET, MGET, CONFIG, streams): only this one
connection is spoken to directly, with the same URL parsing (``redis.asyncio.connection.
parse_url``): TCP, TLS (``rediss://``) or a Unix socket, AUTH with the URL's credentials, RESP2 or
RESP3 (``?protocol=3``: ``HELLO 3``, messages arrive as push replies).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from typing import Any, Final

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url

from dashboard_server.core.engine import PubSubScannerFactory, load_engine
from dashboard_server.ingest.scanned import MAX_DELAY, Batch, ScannedConnection

__all__ = ["Batch", "Subscriber", "SubscriberClosed", "encode_command"]

MAX_PAYLOAD: Final = 1 << 20
"""Payloads over this many bytes are skipped (unless told otherwise: ``max_item_bytes``)."""


class SubscriberClosed(ConnectionError):
    """The pub/sub connection was closed (by Redis, the network, or an error reply)."""


def encode_command(*args: str | bytes) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Subscriber(ScannedConnection):
    """One pub/sub connection (see the module doc). Made by :meth:`connect`."""

    closed_error = SubscriberClosed

    def __init__(
        self,
        on_batch: Callable[[Batch], None],
        conflate: Sequence[bytes],
        *,
        max_delay: float = MAX_DELAY,
        max_payload: int = MAX_PAYLOAD,
        scanner: PubSubScannerFactory | None = None,
    ) -> None:
        factory = scanner if scanner is not None else load_engine().PubSubScanner
        super().__init__(on_batch, factory(conflate, max_payload), max_delay=max_delay)
        self._confirmations = 0
        self.resp = 2
        """The protocol version spoken (2, or 3 after ``HELLO 3``)."""
        self._reader = hiredis.Reader()
        self._replies_read: asyncio.Queue[Any] = asyncio.Queue()
        self.client_id: int | None = None
        """Redis's id of this connection (``CLIENT ID``), for its ``CLIENT LIST`` entry."""

    # --- connecting ------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str,
        on_batch: Callable[[Batch], None],
        conflate: Sequence[bytes],
        *,
        timeout: float,
        max_delay: float = MAX_DELAY,
        max_payload: int = MAX_PAYLOAD,
        scanner: PubSubScannerFactory | None = None,
        threaded: bool = True,
    ) -> Subscriber:
        """Connect to ``url``, authenticate, say hello (RESP3 if the URL asks for it) and learn
        the connection's id; every step bounded by ``timeout``. ``threaded``: then read the
        socket in a thread of its own (not under TLS; see ``ingest/scanned.py``)."""
        options = parse_url(url)
        loop = asyncio.get_running_loop()

        def factory() -> Subscriber:
            return cls(
                on_batch, conflate, max_delay=max_delay, max_payload=max_payload, scanner=scanner
            )

        async with asyncio.timeout(timeout):
            if "path" in options:
                _, sub = await loop.create_unix_connection(factory, str(options["path"]))
            else:
                tls = None
                if options.get("connection_class") is SSLConnection:
                    tls = ssl.create_default_context()
                _, sub = await loop.create_connection(
                    factory,
                    str(options.get("host", "localhost")),
                    int(options.get("port", 6379)),
                    ssl=tls,
                )
            try:
                await sub._handshake(dict(options))
            except BaseException:
                sub.close()
                raise
        if threaded:
            sub.read_in_thread()
        return sub

    async def _handshake(self, options: dict[str, Any]) -> None:
        user, password = options.get("username"), options.get("password")
        protocol = int(options.get("protocol") or 2)
        if protocol == 3:
            args: list[str] = ["HELLO", "3"]
            if password is not None:
                args += ["AUTH", str(user or "default"), str(password)]
            await self.command(*args)
        elif password is not None:
            await self.command("AUTH", *([str(user)] if user else []), str(password))
        self.resp = protocol
        client_id = await self.command("CLIENT", "ID")
        self.client_id = client_id if isinstance(client_id, int) else None

    async def command(self, *args: str | bytes) -> Any:
        """Send one command and wait for its reply (only before subscribing: afterwards the
        replies are read by the batch loop). An error reply raises :class:`SubscriberClosed`."""
        self.send(*args)
        reply = await self._next_reply()
        if isinstance(reply, hiredis.ReplyError):
            raise SubscriberClosed(f"{args[0]!s}: {reply}")
        return reply

    async def _next_reply(self) -> Any:
        getter = asyncio.ensure_future(self._replies_read.get())
        await self._wait(getter)
        return getter.result()

    async def psubscribe(self, patterns: Sequence[str], timeout: float) -> None:
        """PSUBSCRIBE ``patterns`` and wait until Redis has confirmed every one (messages
        arriving meanwhile are batched as usual)."""
        await self._subscribe("PSUBSCRIBE", patterns, timeout)

    async def ssubscribe(self, channel: str, timeout: float) -> None:
        """SSUBSCRIBE one sharded channel (Redis Cluster: on its slot's primary) and wait for the
        confirmation; its messages (``smessage``) are kept in order, as ``(b"", channel,
        payload)``."""
        await self._subscribe("SSUBSCRIBE", [channel], timeout)

    async def _subscribe(self, command: str, names: Sequence[str], timeout: float) -> None:
        self._confirmations = 0
        self.send(command, *names)
        async with asyncio.timeout(timeout):
            while self._confirmations < len(names):
                await self._next_reply()

    def send(self, *args: str | bytes) -> None:
        """Write one command (no reply awaited)."""
        self._write(encode_command(*args))

    def ping(self) -> asyncio.Future[float]:
        """Send a PING; the future is the round trip in seconds, set when its PONG arrives (it
        comes after every message Redis queued before it: the round trip is how far behind
        this reader is)."""
        self.send("PING")
        return self._ping_sent()

    # --- replies ---------------------------------------------------------------------------

    def _replies(self, replies: list[bytes]) -> None:
        reader = self._reader
        try:
            for reply in replies:
                reader.feed(reply)
                self._control(reader.gets())
        except hiredis.ProtocolError as exc:
            self._fail(SubscriberClosed(f"RESP protocol error: {exc}"))

    def _control(self, reply: Any) -> None:
        if isinstance(reply, list) and reply:  # a RESP2 array or a RESP3 push
            kind = reply[0]
            if kind in (b"psubscribe", b"subscribe", b"ssubscribe"):
                self._confirmations += 1
                self._replies_read.put_nowait(reply)
            elif kind == b"pong":
                self._pong()
            else:
                self._replies_read.put_nowait(reply)
        elif reply == b"PONG":
            self._pong()
        elif isinstance(reply, hiredis.ReplyError):
            if self._replies_wanted():
                self._replies_read.put_nowait(reply)
            else:
                self._fail(SubscriberClosed(f"Redis error: {reply}"))
        else:
            self._replies_read.put_nowait(reply)

    def _replies_wanted(self) -> bool:
        return self.client_id is None  # still in the handshake
