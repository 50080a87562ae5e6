"""One WebSocket connection: reads client messages, answers them, joins the hub.

A :class:`Session` is the hub member of one connection. Its reader loop handles ``subscribe``,
``unsubscribe``, ``refresh`` and ``ping``; anything else gets an ``error`` reply, and a client
that keeps sending unusable messages is closed with :data:`~dashboard_server.core.protocol.
CLOSE_BAD_MESSAGES`. Replies are written without awaiting and dropped while the connection's
write buffer is over the cap, so a client can never make the server buffer without bound.
Closing never awaits a peer that does not read: after ``close_timeout`` the transport is aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from dashboard_server.config import Config
from dashboard_server.core.engine import engine_panics
from dashboard_server.core.messages import error_message, pong_message
from dashboard_server.core.protocol import (
    CLOSE_BAD_MESSAGES,
    CLOSE_LAGGING,
    CLOSE_RATE_LIMITED,
    CLOSE_TOKEN_EXPIRED,
    ConnectParams,
    ControlLimits,
    MessageError,
    Ping,
    Refresh,
    Subscribe,
    Unsubscribe,
    parse_client_message,
)
from dashboard_server.core.ratelimit import StrikeCounter, TokenBucket
from dashboard_server.fanout.hub import Clock, Hub
from dashboard_server.fanout.scheduler import Peer
from dashboard_server.server.gate import GuardedConnection
from dashboard_server.telemetry.metrics import ServerMetrics

__all__ = ["Session", "close_within"]

log = logging.getLogger(__name__)


async def close_within(
    connection: ServerConnection, code: int, reason: str, timeout: float, drain: float = 0.0
) -> None:
    """Close ``connection`` with ``code``; abort the transport if that takes over ``timeout``.

    ``ServerConnection.close`` waits for the write buffer to drain, which never happens with a
    peer that does not read, so it is bounded here. With ``drain`` > 0 the transport is first
    closed gracefully (what is buffered, the close frame last, then FIN: a peer that reads
    again still gets the close code rather than a reset) and aborted only if that has not
    finished ``drain`` seconds later; nothing is added to the buffer meanwhile.
    """
    try:
        await asyncio.wait_for(connection.close(code, reason), timeout)
    except (TimeoutError, OSError):
        if drain > 0 and not connection.transport.is_closing():
            connection.transport.close()
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(asyncio.shield(connection.connection_lost_waiter), drain)
        if not connection.connection_lost_waiter.done():
            connection.transport.abort()


class Session:
    """The hub member and message handler of one connection (see the module doc)."""

    def __init__(
        self,
        connection: ServerConnection,
        params: ConnectParams,
        *,
        hub: Hub[Peer],
        metrics: ServerMetrics,
        config: Config,
        clock: Clock,
        allowed_channels: frozenset[str] | None = None,
        remote: str | None = None,
    ) -> None:
        self._connection = connection
        self.remote = remote if remote is not None else str(connection.remote_address)
        """The client's address for the logs (behind a trusted proxy, the forwarded one)."""
        self.params = params
        self.hub = hub
        self.metrics = metrics
        self.config = config
        self.clock = clock
        self.strikes = StrikeCounter(config.max_bad_messages, config.bad_message_window_s)
        self.allowed_channels = allowed_channels
        """The channels the client's credentials allow (``None``: all)."""
        self.rate = TokenBucket(config.max_message_rate, config.message_burst)
        self.limits = ControlLimits(
            config.max_control_message_size,
            config.max_control_elements,
            config.max_control_depth,
        )
        self._closing: asyncio.Task[None] | None = None

    @property
    def connection(self) -> ServerConnection:
        """The WebSocket connection."""
        return self._connection

    def buffered(self) -> int:
        """Bytes waiting in the transport's write buffer."""
        return self._connection.transport.get_write_buffer_size()

    async def run(self) -> None:
        """Join the hub, handle client messages until the connection closes, then leave."""
        self.hub.add(self, self.params)
        self.metrics.active_connections.inc()
        if isinstance(self._connection, GuardedConnection):
            self._connection.ping_guard = self.answer_ping
        try:
            async for message in self._connection:
                try:
                    self.handle(message)
                except engine_panics() as exc:
                    self.metrics.engine_panic("session", exc)
                except Exception:  # a bug must not take the connection (or server) down
                    log.exception("failed to handle a client message")
                # recv() returns at once while messages are queued: let flushes, /health and
                # the other connections run between two messages of this one
                await asyncio.sleep(0)
        except ConnectionClosed:
            pass
        finally:
            sent = self._connection.protocol.close_sent
            if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
                self.metrics.security_refusals.labels("message_size").inc()
            self.metrics.active_connections.dec()
            self.hub.remove(self)
            if self._closing is not None:
                await self._closing

    def handle(self, data: str | bytes) -> None:
        """Act on one client message (never raises, never awaits)."""
        if not self.rate.take(self.clock.monotonic()):
            self._over_rate()
            return
        try:
            message = parse_client_message(
                data, self.config.sections, self.limits, max_symbols=self.config.max_symbols
            )
        except MessageError as exc:
            self.reject(exc)
            return
        if self not in self.hub and not isinstance(message, Ping):
            return  # being closed (lagged out): nothing to subscribe or refresh any more
        if isinstance(message, Subscribe):
            if self.allowed_channels is not None and not message.channels <= self.allowed_channels:
                forbidden = sorted(message.channels - self.allowed_channels)[0]
                self.reject(MessageError("forbidden_channel", f"channel {forbidden!r} not allowed"))
                return
            symbols = self.hub.symbols_of(self)
            if message.symbols is not None:
                # no filter yet: the first subscribe narrows "every symbol" to these
                symbols = message.symbols if symbols is None else symbols | message.symbols
                if len(symbols) > self.config.max_symbols:
                    self.reject(
                        MessageError(
                            "bad_symbols",
                            f"subscribe: at most {self.config.max_symbols} symbols in all",
                        )
                    )
                    return
            self.metrics.messages_received.labels("subscribe").inc()
            self.hub.set_subscription(self, self.hub.channels_of(self) | message.channels, symbols)
        elif isinstance(message, Unsubscribe):
            symbols = self.hub.symbols_of(self)
            if message.symbols is not None:
                if symbols is None:
                    self.reject(
                        MessageError(
                            "bad_symbols", "unsubscribe: no symbol filter to remove symbols from"
                        )
                    )
                    return
                symbols = symbols - message.symbols
                if not symbols:
                    self.reject(
                        MessageError(
                            "bad_symbols",
                            "unsubscribe: would leave no symbol (reconnect without symbols "
                            "for every symbol)",
                        )
                    )
                    return
            self.metrics.messages_received.labels("unsubscribe").inc()
            self.hub.set_subscription(self, self.hub.channels_of(self) - message.channels, symbols)
        elif isinstance(message, Refresh):
            self.metrics.messages_received.labels("refresh").inc()
            self.hub.refresh(self)
        elif isinstance(message, Ping):
            try:
                pong = pong_message(self.params.fmt, message.payload, self.clock.wall_ms())
            except (TypeError, ValueError) as exc:
                self.reject(
                    MessageError(
                        "bad_message", f"ping payload cannot be echoed in {self.params.fmt}: {exc}"
                    )
                )
                return
            self.metrics.messages_received.labels("ping").inc()
            self.reply("pong", pong)

    def answer_ping(self) -> bool:
        """Whether to answer a WebSocket ping frame (the connection's ping guard).

        A ping counts against the message rate like a message (beyond it: close 4029), and its
        pong is not written while the write buffer is over the cap, like any direct reply.
        """
        if not self.rate.take(self.clock.monotonic()):
            self._over_rate()
            return False
        if self.buffered() > self.config.write_buffer_high:
            self.metrics.security_refusals.labels("pong_dropped").inc()
            return False
        return True

    def _over_rate(self) -> None:
        if self._closing is None:
            self.metrics.security_refusals.labels("rate_limit").inc()
            log.info(
                "closing a client that sends too fast",
                extra={"remote": self.remote},
            )
            self.close_soon(CLOSE_RATE_LIMITED, "message rate limit exceeded")

    def reject(self, problem: MessageError) -> None:
        """Answer an unusable message with ``error``; close a client that keeps doing it."""
        self.metrics.messages_received.labels("invalid").inc()
        self.reply("error", error_message(self.params.fmt, problem.code, problem.message))
        if self.strikes.strike(self.clock.monotonic()):
            self.metrics.bad_message_closes.inc()
            log.info(
                "closing a client that keeps sending bad messages",
                extra={"remote": self.remote},
            )
            self.close_soon(CLOSE_BAD_MESSAGES, "too many bad messages")

    def reply(self, kind: str, payload: bytes) -> None:
        """Write a direct reply (``pong``/``error``) unless the write buffer is over the cap."""
        if self.buffered() > self.config.write_buffer_high:
            return
        broadcast([self._connection], payload, text=self.params.fmt == "json")
        self.metrics.sent(self.params.tier, kind).inc()

    def close_lagging(self) -> None:
        """Close with :data:`CLOSE_LAGGING` (the hub has already dropped this member)."""
        log.info(
            "closing a client that stayed lagging",
            extra={"remote": self.remote},
        )
        # it may read again: let its buffer drain (it no longer grows) so that it finds 4001
        self.close_soon(CLOSE_LAGGING, "lagging: not reading", drain=self.config.lag_timeout_s)

    def close_expired(self) -> None:
        """Close with :data:`CLOSE_TOKEN_EXPIRED`: the client's credentials just expired."""
        log.info(
            "closing a client whose credentials expired",
            extra={"remote": self.remote},
        )
        self.close_soon(CLOSE_TOKEN_EXPIRED, "token expired")

    def close_soon(self, code: int, reason: str, drain: float = 0.0) -> None:
        """Start closing with ``code`` in the background (once); ``drain``: see
        :func:`close_within`."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(
                close_within(self._connection, code, reason, self.config.close_timeout_s, drain)
            )
