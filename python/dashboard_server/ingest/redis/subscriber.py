"""The pub/sub connection, read off the socket in batches by the engine's ``PubSubScanner``.

Why not redis-py's ``PubSub`` for this one connection: ``get_message()`` parses each reply in
Python (or hands it to hiredis one call at a time) and arms one ``asyncio.timeout`` per message;
measured, that alone capped the ingest at ~19,000 messages a second (46,000 with hiredis),
below what a market-data feed writes, and past that Redis closes the subscriber at its
output-buffer limit. Even ``hiredis.Reader`` fed from a socket (~2 µs a message) spends most of
its time building one Python list of four ``bytes`` per message. Here an
:class:`asyncio.BufferedProtocol` receives the socket's bytes into one buffer and hands them to
the engine's ``PubSubScanner`` (docs/engine.md; ~0.1 µs a message in the native engine), which
never builds a value for a message:

- a message on a *conflated* pattern (a raw source) only replaces the latest payload of its
  channel: within one batch, the latest payload per channel wins;
- any other message (events, keyspace notifications, sources with transforms) is kept in order;
- a payload over ``max_payload`` (the largest ``max_item_bytes``) is skipped as it streams by,
  never buffered, and reported as malformed;
- replies to our own commands (PSUBSCRIBE confirmations, PONG, HELLO) and errors are cut out
  whole and parsed by ``hiredis.Reader`` (they are rare).

Batches are handed to ``on_batch`` at most ``max_delay`` after their first message, and sooner
when asked (:meth:`Subscriber.flush`: the write side asks for pending batches right before a
fan-out flush reads the document, so a client sees everything read before its flush whatever
``max_delay`` is). Under a stream of messages each key is applied once per batch whatever the
rate (the faster they come, the more are conflated, so the engine's work stops growing with the
rate). A batch that holds ``MAX_KEYS`` channels or ``MAX_ORDERED`` ordered messages is applied at
once (memory stays bounded). Nothing waits on the engine in between: the socket is drained
first, so Redis's output buffer for this client stays small and Redis never closes it at the
``client-output-buffer-limit pubsub``.

redis-py stays the client for every command (SCAN, GET, MGET, CONFIG, streams): only this one
connection is spoken to directly, with the same URL parsing (``redis.asyncio.connection.
parse_url``): TCP, TLS (``rediss://``) or a Unix socket, AUTH with the URL's credentials, RESP2 or
RESP3 (``?protocol=3``: ``HELLO 3``, messages arrive as push replies).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Callable, Sequence
from typing import Any, Final

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url

from dashboard_server.core.engine import PubSubScannerEngine, PubSubScannerFactory, load_engine

__all__ = ["Batch", "Subscriber", "SubscriberClosed", "encode_command"]

BUFFER_SIZE: Final = 1 << 20
"""Bytes read from the socket at most per read (one buffer, reused)."""
MAX_DELAY: Final = 0.05
"""No message waits longer than this (seconds) for its batch to be applied (a fan-out flush
applies the pending batch first: clients never wait for it)."""
MAX_PAYLOAD: Final = 1 << 20
"""Payloads over this many bytes are skipped (unless told otherwise: ``max_item_bytes``)."""
MAX_KEYS: Final = 20_000
"""Distinct conflated channels in one batch before it is applied anyway."""
MAX_ORDERED: Final = 5_000
"""Ordered messages in one batch before it is applied anyway."""


class SubscriberClosed(ConnectionError):
    """The pub/sub connection was closed (by Redis, the network, or an error reply)."""


def encode_command(*args: str | bytes) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Batch:
    """The messages of one batch: per conflated pattern the latest payload per channel and how
    many messages there were; the other messages as (pattern, channel, payload), in order."""

    __slots__ = ("conflated", "counts", "ordered", "oversized")

    def __init__(
        self,
        conflated: dict[bytes, dict[bytes, bytes]],
        counts: dict[bytes, int],
        ordered: list[tuple[bytes, bytes, bytes]],
        oversized: list[tuple[bytes, bytes, int]] | None = None,
    ) -> None:
        self.conflated = conflated
        self.counts = counts
        self.ordered = ordered
        self.oversized = oversized or []
        """Messages whose payload was over ``max_payload``: (pattern, channel, size), skipped."""


class Subscriber(asyncio.BufferedProtocol):
    """One pub/sub connection (see the module doc). Made by :meth:`connect`."""

    def __init__(
        self,
        on_batch: Callable[[Batch], None],
        conflate: Sequence[bytes],
        *,
        max_delay: float = MAX_DELAY,
        max_payload: int = MAX_PAYLOAD,
        scanner: PubSubScannerFactory | None = None,
    ) -> None:
        self.on_batch = on_batch
        self.max_delay = max_delay
        factory = scanner if scanner is not None else load_engine().PubSubScanner
        self._scanner: PubSubScannerEngine = factory(conflate, max_payload)
        self._pending = False
        self._confirmations = 0
        self.resp = 2
        """The protocol version spoken (2, or 3 after ``HELLO 3``)."""
        self._timer: asyncio.TimerHandle | None = None
        self._buffer = bytearray(BUFFER_SIZE)
        self._view = memoryview(self._buffer)
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._replies: asyncio.Queue[Any] = asyncio.Queue()
        self.last_data = self._loop.time()
        """Loop time of the last bytes received."""
        self._pings: collections.deque[tuple[float, asyncio.Future[float]]] = collections.deque()
        self.messages = 0
        """Messages received so far (every pmessage/message)."""
        self.bytes_received = 0
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
    ) -> Subscriber:
        """Connect to ``url``, authenticate, say hello (RESP3 if the URL asks for it) and learn
        the connection's id; every step bounded by ``timeout``."""
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
        getter = asyncio.ensure_future(self._replies.get())
        done, _ = await asyncio.wait([getter, self._closed], return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        self._closed.result()  # raises why it closed
        raise SubscriberClosed("connection closed")

    async def psubscribe(self, patterns: Sequence[str], timeout: float) -> None:
        """PSUBSCRIBE ``patterns`` and wait until Redis has confirmed every one (messages
        arriving meanwhile are batched as usual)."""
        self._confirmations = 0
        self.send("PSUBSCRIBE", *patterns)
        async with asyncio.timeout(timeout):
            while self._confirmations < len(patterns):
                await self._next_reply()

    def send(self, *args: str | bytes) -> None:
        """Write one command (no reply awaited)."""
        if self._transport is None or self._transport.is_closing():
            raise SubscriberClosed("connection closed")
        self._transport.write(encode_command(*args))

    def ping(self) -> asyncio.Future[float]:
        """Send a PING; the future is the round trip in seconds, set when its PONG arrives (it
        comes after every message Redis queued before it: the round trip is how far behind
        this reader is)."""
        self.send("PING")
        pong: asyncio.Future[float] = self._loop.create_future()
        self._pings.append((self._loop.time(), pong))
        return pong

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        """Return (or raise :class:`SubscriberClosed`) once the connection is closed."""
        await asyncio.shield(self._closed)

    @property
    def closed(self) -> bool:
        return self._closed.done()

    # --- asyncio protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._closed.done():
            reason = SubscriberClosed(f"connection lost: {exc}" if exc else "connection closed")
            self._closed.set_exception(reason)
            self._closed.exception()  # retrieved: nobody may be waiting

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.last_data = self._loop.time()
        self.bytes_received += nbytes
        scanner = self._scanner
        try:
            count, replies = scanner.feed(self._view[:nbytes])
        except ValueError as exc:  # not RESP, or a reply too large to buffer: the stream is lost
            self._fail(SubscriberClosed(str(exc)))
            return
        if replies:
            reader = self._reader
            try:
                for reply in replies:
                    reader.feed(reply)
                    self._control(reader.gets())
            except hiredis.ProtocolError as exc:
                self._fail(SubscriberClosed(f"RESP protocol error: {exc}"))
                return
        if count == 0:
            return
        self.messages += count
        self._pending = True
        if scanner.pending_ordered >= MAX_ORDERED or scanner.pending_keys >= MAX_KEYS:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(self.max_delay, self.flush)

    def _control(self, reply: Any) -> None:
        if isinstance(reply, list) and reply:  # a RESP2 array or a RESP3 push
            kind = reply[0]
            if kind in (b"psubscribe", b"subscribe"):
                self._confirmations += 1
                self._replies.put_nowait(reply)
            elif kind == b"pong":
                self._pong()
            else:
                self._replies.put_nowait(reply)
        elif reply == b"PONG":
            self._pong()
        elif isinstance(reply, hiredis.ReplyError):
            if self._replies_wanted():
                self._replies.put_nowait(reply)
            else:
                self._fail(SubscriberClosed(f"Redis error: {reply}"))
        else:
            self._replies.put_nowait(reply)

    def _replies_wanted(self) -> bool:
        return self.client_id is None  # still in the handshake

    def _pong(self) -> None:
        if self._pings:
            sent, pong = self._pings.popleft()
            if not pong.done():
                pong.set_result(self._loop.time() - sent)

    def _fail(self, exc: SubscriberClosed) -> None:
        if not self._closed.done():
            self._closed.set_exception(exc)
            self._closed.exception()
        self.close()

    def flush(self) -> None:
        """Hand the pending batch to ``on_batch`` now (also called by the timer, and by the write
        side before a fan-out flush); nothing if nothing is pending."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        self._pending = False
        conflated, counts, ordered, oversized = self._scanner.take()
        if conflated or ordered or oversized:
            self.on_batch(Batch(conflated, counts, ordered, oversized))
