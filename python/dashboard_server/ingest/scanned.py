"""A subscriber connection read off the socket in batches by one of the engine's scanners.

What the Redis pub/sub connection (``ingest/redis/subscriber.py``) and the NATS connection
(``ingest/nats_subscriber.py``) share: an :class:`asyncio.BufferedProtocol` receives the
socket's bytes into one reused buffer and hands each read to the engine's scanner
(``PubSubScanner`` or ``NatsScanner``, docs/engine.md), which never builds a value for a
message: on a conflated route (a raw source) only the latest payload per channel is kept, other
messages stay in order, oversized payloads are skipped unbuffered. What is not a message (the
protocol's replies) goes to the subclass.

Once connected, the reading moves to a thread of its own (:meth:`ScannedConnection.read_in_thread`;
not under TLS, whose bytes asyncio decrypts): the event loop's turns can be long (a fan-out flush to
5,000 clients takes tens of milliseconds of CPU, more on a busy machine), and a reader that waits
for them lets the server's output buffer for it grow towards the limit at which the server closes
it. The thread blocks in ``select``/``recv_into`` and in the scan (which runs without the GIL), so
the socket is drained whatever the loop is doing; what it read reaches the loop through
``call_soon_threadsafe``, and a lock serializes the scanner between the thread and the loop.

The pending :class:`Batch` is handed to ``on_batch`` at most ``max_delay`` after its first
message, at once when it holds ``MAX_KEYS`` channels or ``MAX_ORDERED`` ordered messages (memory
stays bounded), and whenever :meth:`ScannedConnection.flush` is called: the write side calls it
right before a fan-out flush reads the document (``StateWriter.apply_pending``), so holding a
batch to conflate more never delays a client. Nothing waits on the engine in between: the socket
is drained first, so the server's output buffer for this connection stays small.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import select
import socket
import threading
from collections.abc import Callable
from typing import Any, Final

from dashboard_server.core.engine import PubSubScannerEngine

__all__ = ["BUFFER_SIZE", "MAX_DELAY", "MAX_KEYS", "MAX_ORDERED", "Batch", "ScannedConnection"]

BUFFER_SIZE: Final = 1 << 20
"""Bytes read from the socket at most per read (one buffer, reused)."""
MAX_DELAY: Final = 0.05
"""No message waits longer than this (seconds) for its batch to be applied (a fan-out flush
applies the pending batch first: clients never wait for it)."""
READ_PACE: Final = 0.02
"""While bytes keep coming, the reader thread reads when ``READ_LOWAT`` bytes are waiting or
this long (seconds) after its last read, whichever is first (at most 20 ms more before a message
is read, well inside a tier's interval): a stream is read in large pieces and
each read takes the GIL a few times, instead of every small read doing so (the event loop's
thread pays for each handover). A drain is read as fast as the socket gives (the low-water mark
is met at once); after ``READ_PACE`` with nothing at all the thread waits for any byte."""
READ_LOWAT: Final = BUFFER_SIZE // 4
MAX_KEYS: Final = 20_000
"""Distinct conflated channels in one batch before it is applied anyway."""
MAX_ORDERED: Final = 5_000
"""Ordered messages in one batch before it is applied anyway."""


class Batch:
    """The messages of one batch: per conflated route (a Redis pattern, a NATS subscription id)
    the latest payload per channel and how many messages there were; the other messages as
    (route, channel, payload), in order; the skipped ones as (route, channel, size)."""

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
        """Messages whose payload was over ``max_payload``: skipped, never buffered."""


class ScannedConnection(asyncio.BufferedProtocol):
    """The shared part of a subscriber connection (see the module doc). A subclass speaks its
    protocol: :meth:`_replies` gets what the scanner handed over that is not a message."""

    closed_error: type[ConnectionError] = ConnectionError
    """What :meth:`wait_closed` raises (a subclass names its protocol)."""

    def __init__(
        self,
        on_batch: Callable[[Batch], None],
        scanner: PubSubScannerEngine,
        *,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self.on_batch = on_batch
        self.max_delay = max_delay
        self._scanner = scanner
        self._pending = False
        self._timer: asyncio.TimerHandle | None = None
        self._view = memoryview(bytearray(BUFFER_SIZE))
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._pings: collections.deque[tuple[float, asyncio.Future[float]]] = collections.deque()
        self.last_data = self._loop.time()
        """Loop time of the last bytes received."""
        self.messages = 0
        """Messages received so far."""
        self.bytes_received = 0
        self._lock = threading.Lock()
        """Serializes the scanner between the reader thread and the loop."""
        self._stop = threading.Event()
        self._reader_sock: socket.socket | None = None
        self.reader_thread: threading.Thread | None = None
        """The thread reading the socket (None: the event loop reads it)."""

    # --- for subclasses ----------------------------------------------------------------------

    def _replies(self, replies: list[bytes]) -> None:
        """Deal with the protocol's replies of one read (in order)."""
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise self.closed_error("connection closed")
        self._transport.write(data)

    def _ping_sent(self) -> asyncio.Future[float]:
        """Note a PING just written: the future is its round trip, set by :meth:`_pong`."""
        pong: asyncio.Future[float] = self._loop.create_future()
        self._pings.append((self._loop.time(), pong))
        return pong

    def _pong(self) -> None:
        if self._pings:
            sent, pong = self._pings.popleft()
            if not pong.done():
                pong.set_result(self._loop.time() - sent)

    def _fail(self, exc: ConnectionError) -> None:
        if not self._closed.done():
            self._closed.set_exception(exc)
            self._closed.exception()  # retrieved: nobody may be waiting
        self.close()

    async def _wait(self, future: asyncio.Future[Any]) -> None:
        """Wait for ``future`` or the connection's end (which raises why it ended)."""
        done, _ = await asyncio.wait([future, self._closed], return_when=asyncio.FIRST_COMPLETED)
        if future not in done:
            future.cancel()
            self._closed.result()  # raises why it closed
            raise self.closed_error("connection closed")

    # --- the connection ----------------------------------------------------------------------

    def ping(self) -> asyncio.Future[float]:
        """Send the protocol's PING; the future is its round trip (the PONG comes after every
        message queued before it: the round trip is how far behind this reader is)."""
        raise NotImplementedError

    async def watch(
        self,
        *,
        interval: float,
        stalled_after: float,
        on_lag: Callable[[float | None], None],
        stalled: type[ConnectionError],
        stop: asyncio.Event | None = None,
    ) -> None:
        """Until the connection ends (raised: why it ended) or ``stop`` is set: PING every
        ``interval`` and tell ``on_lag`` the round trip (while a PING is pending, at least its
        age); raise ``stalled`` when a PING is pending and nothing at all arrived for
        ``stalled_after`` (under a burst the PONG may take longer: data still arriving says the
        server is alive)."""
        loop = self._loop
        closed = asyncio.ensure_future(self.wait_closed())
        stopped = asyncio.ensure_future(stop.wait()) if stop is not None else None
        lag: float | None = None
        next_ping = loop.time() + interval
        pong: asyncio.Future[float] | None = None
        ping_sent = 0.0
        try:
            while not closed.done() and not (stopped is not None and stopped.done()):
                now = loop.time()
                if pong is not None and pong.done():
                    lag = pong.result()
                    pong = None
                    next_ping = now + interval
                if pong is None and now >= next_ping:
                    pong = self.ping()
                    ping_sent = now
                if pong is None:
                    wait = next_ping - now
                else:
                    silent_since = max(ping_sent, self.last_data)
                    if now - silent_since > stalled_after:
                        raise stalled(f"PING unanswered and no data for {stalled_after} s")
                    wait = min(silent_since + stalled_after - now, interval)
                    lag = max(lag or 0.0, now - ping_sent)
                on_lag(lag)
                waiting: list[asyncio.Future[Any]] = [closed]
                if stopped is not None:
                    waiting.append(stopped)
                if pong is not None:
                    waiting.append(pong)
                await asyncio.wait(waiting, timeout=max(wait, 0.001))
            if closed.done():
                await closed  # raises why the connection closed
                raise self.closed_error("connection closed")
        finally:
            closed.cancel()
            if stopped is not None:
                stopped.cancel()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._stop.set()
        if self._reader_sock is not None:
            # wakes the reader thread up at once: its recv returns 0
            with contextlib.suppress(OSError):
                self._reader_sock.shutdown(socket.SHUT_RDWR)
        if self._transport is not None:
            self._transport.close()

    def read_in_thread(self) -> bool:
        """Move the reading off the event loop to a thread of its own (see the module doc);
        False (the loop goes on reading) under TLS or without a socket."""
        transport = self._transport
        if transport is None or transport.is_closing() or self.reader_thread is not None:
            return False
        raw = transport.get_extra_info("socket")
        if raw is None or transport.get_extra_info("sslcontext") is not None:
            return False
        transport.pause_reading()  # what asyncio read is scanned; the rest waits in the kernel
        # a socket of our own on the same connection (a dup: asyncio keeps its own for writes)
        sock = socket.socket(fileno=os.dup(raw.fileno()))
        self._reader_sock = sock
        self.reader_thread = threading.Thread(
            target=self._read_forever, args=(sock,), name="subscriber-reader", daemon=True
        )
        self.reader_thread.start()
        return True

    def _read_forever(self, sock: socket.socket) -> None:
        """The reader thread: drain the socket, scan each read, hand the rest to the loop."""
        view, call = self._view, self._loop.call_soon_threadsafe
        busy = False
        try:
            while not self._stop.is_set():
                try:
                    # busy: readable at READ_LOWAT bytes, or read anyway after READ_PACE; idle:
                    # readable at the first byte (the select's timeout only checks for a stop)
                    ready, _, _ = select.select([sock], [], [], READ_PACE if busy else 0.5)
                    if not ready and not busy:
                        continue
                    nbytes = sock.recv_into(view)
                except (BlockingIOError, InterruptedError):
                    if busy:  # nothing at all for READ_PACE: wait for any byte
                        busy = False
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
                    continue
                except (OSError, ValueError) as exc:  # ValueError: the socket was closed
                    call(self._reader_ended, None if self._stop.is_set() else exc)
                    return
                if nbytes == 0:
                    call(self._reader_ended, None)
                    return
                if not busy:
                    busy = True
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, READ_LOWAT)
                with self._lock:
                    try:
                        count, replies = self._scanner.feed(view[:nbytes])
                    except ValueError as exc:
                        call(self._fail, self.closed_error(str(exc)))
                        return
                    keys, ordered = self._scanner.pending_keys, self._scanner.pending_ordered
                call(self._read_done, nbytes, count, replies, keys, ordered)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return
        finally:
            sock.close()

    def _reader_ended(self, exc: Exception | None) -> None:
        if not self._closed.done():
            reason = self.closed_error(f"connection lost: {exc}" if exc else "connection closed")
            self._closed.set_exception(reason)
            self._closed.exception()
        self.close()

    async def wait_closed(self) -> None:
        """Return (or raise :attr:`closed_error`) once the connection is closed."""
        await asyncio.shield(self._closed)

    @property
    def closed(self) -> bool:
        return self._closed.done()

    def flush(self) -> None:
        """Hand the pending batch to ``on_batch`` now (also called by the timer, and by the write
        side before a fan-out flush); nothing if nothing is pending."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        self._pending = False
        with self._lock:
            conflated, counts, ordered, oversized = self._scanner.take()
        if conflated or ordered or oversized:
            self.on_batch(Batch(conflated, counts, ordered, oversized))

    # --- asyncio protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._closed.done():
            reason = self.closed_error(f"connection lost: {exc}" if exc else "connection closed")
            self._closed.set_exception(reason)
            self._closed.exception()  # retrieved: nobody may be waiting

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        scanner = self._scanner
        with self._lock:
            try:
                count, replies = scanner.feed(self._view[:nbytes])
            except ValueError as exc:  # not the protocol, or a frame too large: the stream is lost
                self._fail(self.closed_error(str(exc)))
                return
            keys, ordered = scanner.pending_keys, scanner.pending_ordered
        self._read_done(nbytes, count, replies, keys, ordered)

    def _read_done(
        self, nbytes: int, count: int, replies: list[bytes], keys: int, ordered: int
    ) -> None:
        """What one read brought (on the loop): the protocol's replies, then the batch's state."""
        self.last_data = self._loop.time()
        self.bytes_received += nbytes
        if replies:
            self._replies(replies)
        if count == 0:
            return
        self.messages += count
        self._pending = True
        if self._closed.done():
            return  # what was read is taken by a last flush
        if ordered >= MAX_ORDERED or keys >= MAX_KEYS:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(self.max_delay, self.flush)
