"""What protects the server from its clients: the handshake gate and per-connection limits.

:class:`Gate` is consulted by :class:`~dashboard_server.server.http.HttpFront` before any upgrade:

- :meth:`Gate.check` (every request): ``/ws`` needs an allowed ``Origin`` (403) and credentials
  with the ``read`` scope (401/403); any ``/api/`` path needs the same credentials; ``/metrics``
  needs the ``metrics`` scope when ``metrics_auth`` is on. ``/health`` and the dashboard's static
  files stay open.
- :meth:`Gate.admit` (``/ws`` with valid parameters): the requested channels must be allowed by
  the credentials (403), then a connection slot is taken: at most ``max_connections`` in all (503)
  and ``max_connections_per_address`` per client address (429). The slot is given back when the
  TCP connection is lost, whatever happened in between.

The client address (per-address limit, logs) is the TCP peer's, unless that peer is one of
``trusted_proxies`` (:class:`ProxyPolicy`): then it is taken from the forwarding headers.

Every refusal increments ``dashboard_security_refusals_total{reason}`` and answers a JSON body.
:class:`TokenBucket` is the per-connection inbound message rate limit used by the session, and
:func:`connection_class` makes the connections count handshakes cut by ``open_timeout_s``.
docs/security.md lists every limit, default, status and close code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import re
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import HeaderLineTooLong, RequestLineTooLong, TooManyHeaders
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from dashboard_server.core.protocol import ConnectParams, Query
from dashboard_server.core.ratelimit import LogLimiter
from dashboard_server.server.auth import (
    ANONYMOUS,
    SCOPE_METRICS,
    SCOPE_READ,
    Authenticator,
    AuthError,
    Principal,
    find_token,
)
from dashboard_server.server.responses import http_response
from dashboard_server.telemetry.metrics import ServerMetrics

__all__ = ["Gate", "GuardedConnection", "OriginPolicy", "ProxyPolicy", "connection_class"]

log = logging.getLogger(__name__)

REFUSAL_LOG_BURST: Final = 10
"""``refused`` log lines per second at most (every refusal is still counted)."""
READ_SIZE: Final = 4096
"""Bytes a connection's transport reads from its socket at once (see
:meth:`GuardedConnection.connection_made`)."""
_HEAD_TOO_LARGE: Final = (RequestLineTooLong, HeaderLineTooLong, TooManyHeaders)
_WS_PATH: Final = "/ws"
_API_PREFIX: Final = "/api/"


class OriginPolicy:
    """Exact ``Origin`` allow-list for ``/ws`` (browsers always send ``Origin`` on a WebSocket
    handshake; clients that are not browsers usually send none).

    With no list configured every origin is allowed. With a list, a request is allowed when it
    has no ``Origin`` header (not a browser: cross-site WebSocket hijacking is a browser attack)
    or when its single ``Origin`` is exactly one of the list (no case folding, no suffix or
    substring matching). ``null`` (sandboxed frames, ``file://`` pages) is allowed only if the
    list contains ``null`` literally.
    """

    def __init__(self, allowed: Sequence[str]) -> None:
        self._allowed = frozenset(allowed)

    def allows(self, origins: Sequence[str]) -> bool:
        """Whether a request with these ``Origin`` header values may open a WebSocket."""
        if not self._allowed or not origins:
            return True
        return len(origins) == 1 and origins[0] in self._allowed


class GuardedConnection(ServerConnection):
    """A :class:`ServerConnection` whose answers to WebSocket pings can be refused.

    The library answers every ping frame with a pong on its own, whatever the write buffer
    holds. While :attr:`ping_guard` is set (the session sets it), it is asked first and the pong
    is not written when it returns ``False``: pings then count against the session's message
    rate, and pongs against its write-buffer cap.
    """

    ping_guard: Callable[[], bool] | None = None

    def __init__(self, protocol: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(protocol, *args, **kwargs)
        send_frame = protocol.send_frame
        me = weakref.ref(self)  # no reference cycle through the protocol

        def guarded_send_frame(frame: Frame) -> None:
            connection = me()
            guard = None if connection is None else connection.ping_guard
            if frame.opcode is Opcode.PONG and guard is not None and not guard():
                return
            send_frame(frame)

        protocol.send_frame = guarded_send_frame

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Read at most :data:`READ_SIZE` bytes at a time (asyncio reads 256 KiB): every frame
        of one read is parsed before the library can pause reading, so a read of 256 KiB of
        empty fragments would queue ~43,000 frame objects (11 MB) before the fragment limit
        (4096) is even looked at."""
        super().connection_made(transport)
        if isinstance(getattr(transport, "max_size", None), int):
            transport.max_size = READ_SIZE  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the guard (a session's bound method: no reference cycle outlives the TCP
        connection); until then pongs stay guarded, while closing too."""
        self.ping_guard = None
        super().connection_lost(exc)

    def send_data(self) -> None:
        """Once the server has half-closed the TCP connection (after a close frame it sent or
        answered), read again even if the library paused reading for a full queue: the parser
        discards everything from then on, and the peer's FIN ends the connection at once
        instead of after ``close_timeout`` (a client closed for too many fragments would
        otherwise keep thousands of queued frames alive that long)."""
        super().send_data()
        if self.protocol.eof_sent and not self.transport.is_closing():
            self.transport.resume_reading()


def connection_class(
    on_handshake_timeout: Callable[[], None],
    on_oversized_head: Callable[[], None] | None = None,
) -> type[ServerConnection]:
    """A :class:`GuardedConnection` subclass that calls ``on_handshake_timeout`` when its opening
    handshake is cancelled (``open_timeout`` expired: slowloris, a stalled client), and
    ``on_oversized_head`` when the library refused a request head over its limits (414/431)."""

    class TimedConnection(GuardedConnection):
        async def handshake(self, *args: Any, **kwargs: Any) -> None:
            try:
                await super().handshake(*args, **kwargs)
            except asyncio.CancelledError:
                on_handshake_timeout()
                raise
            finally:
                if on_oversized_head is not None and isinstance(
                    self.protocol.handshake_exc, _HEAD_TOO_LARGE
                ):
                    on_oversized_head()

    return TimedConnection


def _refusal(status: int, error: str, message: str, **headers: str) -> Response:
    response = http_response(status, {"error": error, "message": message})
    for name, value in headers.items():
        response.headers[name.replace("_", "-")] = value
    return response


def _peer(connection: ServerConnection) -> str:
    peer = connection.remote_address
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_FORWARDED_FOR: Final = re.compile(r'(?:^|[;,\s])for\s*=\s*("[^"]*"|[^;,\s]*)', re.I)


def _ip(text: str) -> _IP | None:
    """The address of one forwarded node (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``);
    ``None`` for ``unknown``, an obfuscated identifier or garbage."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ProxyPolicy:
    """Which client address to believe: the TCP peer's, or, when the peer is a trusted proxy,
    the forwarding headers' (``X-Forwarded-For`` when present, else RFC 7239 ``Forwarded:
    for=``).

    The forwarded chain is read from the right (the hop the trusted proxy added last) and the
    first address that is not itself a trusted proxy is the client: entries further left were
    written by the client or by proxies we do not know and could be forged. When every entry is
    trusted the leftmost is taken; an entry that is no address (``unknown``, garbage) stops the
    walk at the last trusted hop. With no trusted proxies the headers are never read.
    """

    def __init__(self, trusted: Sequence[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(t.strip(), strict=False) for t in trusted)

    def trusts(self, address: _IP | None) -> bool:
        """Whether ``address`` is one of the trusted proxies."""
        return address is not None and any(
            address.version == net.version and address in net for net in self.networks
        )

    def client_address(self, peer: str, headers: Headers | None) -> str:
        """The address to count and log for a request from ``peer`` with ``headers``."""
        if not self.networks or headers is None or not self.trusts(_ip(peer)):
            return peer
        chain = [part for value in headers.get_all("X-Forwarded-For") for part in value.split(",")]
        if not chain:
            chain = [
                m.group(1)
                for value in headers.get_all("Forwarded")
                for m in _FORWARDED_FOR.finditer(value)
            ]
        client = peer
        for entry in reversed(chain):
            address = _ip(entry)
            if address is None:
                break
            client = str(address)
            if not self.trusts(address):
                break
        return client


class Gate:
    """The handshake policy of one server (module doc)."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        origins: OriginPolicy,
        metrics: ServerMetrics,
        metrics_auth: bool,
        max_connections: int,
        max_connections_per_address: int,
        proxies: ProxyPolicy | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.proxies = proxies or ProxyPolicy(())
        self.origins = origins
        self.metrics = metrics
        self.metrics_auth = metrics_auth
        self.max_connections = max_connections
        self.max_connections_per_address = max_connections_per_address
        self.connections = 0
        self.per_address: Counter[str] = Counter()
        self._log_limiter = LogLimiter(REFUSAL_LOG_BURST)
        self._principals: weakref.WeakKeyDictionary[ServerConnection, Principal] = (
            weakref.WeakKeyDictionary()
        )
        self._addresses: weakref.WeakKeyDictionary[ServerConnection, str] = (
            weakref.WeakKeyDictionary()
        )

    def address(self, connection: ServerConnection) -> str:
        """The client's address (module doc), worked out once per connection."""
        address = self._addresses.get(connection)
        if address is None:
            request = getattr(connection, "request", None)
            address = self.proxies.client_address(
                _peer(connection), request.headers if request is not None else None
            )
            self._addresses[connection] = address
        return address

    def refuse(self, reason: str, connection: ServerConnection, path: str) -> None:
        """Count and log a refusal (never the query string: it may hold a token); at most
        :data:`REFUSAL_LOG_BURST` lines a second, the next one saying how many were held."""
        self.metrics.security_refusals.labels(reason).inc()
        allowed, held = self._log_limiter.allow()
        if allowed:
            log.info(
                "refused",
                extra={
                    "reason": reason,
                    "remote": self.address(connection),
                    "path": path,
                    "suppressed": held,
                },
            )

    def check(
        self, connection: ServerConnection, request: Request, path: str, query: Query
    ) -> Response | None:
        """Origin and credentials for ``path``: a refusal, or ``None`` to go on."""
        if path == _WS_PATH:
            if not self.origins.allows(request.headers.get_all("Origin")):
                self.refuse("origin", connection, path)
                return _refusal(403, "origin_not_allowed", "origin not allowed")
            scope: str | None = SCOPE_READ
        elif path.startswith(_API_PREFIX):
            scope = SCOPE_READ
        elif path == "/metrics" and self.metrics_auth:
            scope = SCOPE_METRICS
        else:
            scope = None
        if scope is None or not self.authenticator.enabled:
            return None
        try:
            principal = self.authenticator.authenticate(find_token(request.headers, query))
            if not principal.has_scope(scope):
                raise AuthError(403, "forbidden", f"credentials lack the {scope!r} scope")
        except AuthError as exc:
            self.refuse(exc.reason, connection, path)
            if exc.status == 401:
                return _refusal(
                    401,
                    "unauthorized",
                    exc.message,
                    WWW_Authenticate=f'Bearer realm="dashboard", error="{exc.reason}"',
                )
            return _refusal(exc.status, "forbidden", exc.message)
        self._principals[connection] = principal
        return None

    def admit(
        self, connection: ServerConnection, params: ConnectParams
    ) -> ConnectParams | Response:
        """Authorise the channels of a ``/ws`` request and take a connection slot.

        Without a ``channels`` parameter a restricted principal gets the channels it may see;
        naming a channel it may not see is refused (403).
        """
        principal = self._principals.get(connection, ANONYMOUS)
        if principal.channels is not None:
            named = params.channels_named
            forbidden = principal.forbidden_channels(params.channels) if named else []
            allowed = params.channels & principal.channels
            if forbidden or not allowed:
                self.refuse("forbidden", connection, _WS_PATH)
                what = f"channel {forbidden[0]!r}" if forbidden else "none of the channels"
                return _refusal(403, "forbidden", f"{what} not allowed for these credentials")
            params = dataclasses.replace(params, channels=allowed)
        address = self.address(connection)
        if self.connections >= self.max_connections:
            self.refuse("max_connections", connection, _WS_PATH)
            return _refusal(503, "too_many_connections", "server is full", Retry_After="5")
        if self.per_address[address] >= self.max_connections_per_address:
            self.refuse("max_connections_per_address", connection, _WS_PATH)
            return _refusal(
                429,
                "too_many_connections_from_address",
                "too many connections from this address",
                Retry_After="5",
            )
        self.connections += 1
        self.per_address[address] += 1
        connection.connection_lost_waiter.add_done_callback(lambda _lost: self._release(address))
        return params

    def _release(self, address: str) -> None:
        self.connections -= 1
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]

    def principal(self, connection: ServerConnection) -> Principal:
        """Who ``connection`` authenticated as (:data:`ANONYMOUS` with auth off)."""
        return self._principals.get(connection, ANONYMOUS)

    def watch_expiry(
        self, principal: Principal, close: Callable[[], None]
    ) -> asyncio.TimerHandle | None:
        """Call ``close`` when ``principal``'s credentials expire (``None``: they never do).

        One timer per connection; the caller cancels it when the connection ends.
        """
        if principal.expires_at is None:
            return None

        def expire() -> None:
            self.metrics.security_refusals.labels("session_expired").inc()
            close()

        delay = max(0.0, principal.expires_at - self.authenticator.now())
        return asyncio.get_running_loop().call_later(delay, expire)

    def handshake_timeout(self) -> None:
        """Count a handshake cut by ``open_timeout_s``."""
        self.metrics.security_refusals.labels("handshake_timeout").inc()

    def oversized_head(self) -> None:
        """Count a request head refused by the library (414 line too long, 431 headers)."""
        self.metrics.security_refusals.labels("request_head").inc()
