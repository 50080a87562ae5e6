"""The NATS connection of the NATS feed, read off the socket in batches by the engine's
``NatsScanner``.

Why not nats-py for this connection: its protocol parser is pure Python (a regular expression,
a buffer copy, a message object and an awaited callback per message); measured, it capped the
feed near 200,000 msg/s at a full core, and past that the lag grew without bound. The feed only
subscribes, so the client side it needs is small and lives here: the connection is a
:class:`~dashboard_server.ingest.scanned.ScannedConnection` (the batching of
``ingest/scanned.py``); ``INFO``, ``CONNECT`` (user and password, or a token, from the URL),
TLS (``tls://`` or when the server requires it), ``SUB``, answering the server's ``PING`` and
timing our own (the feed's lag) are done here. ``-ERR`` closes the connection (nats-server
closes it too, for all but permission errors, which are logged). Headers (``HMSG``) are
skipped by the scanner: the feed reads payloads only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, Final

from dashboard_server import __version__
from dashboard_server.core.engine import PubSubScannerFactory, load_engine
from dashboard_server.ingest.scanned import MAX_DELAY, Batch, ScannedConnection

__all__ = ["NatsClosed", "NatsSubscriber"]

log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 4222
MAX_PAYLOAD: Final = 1 << 20
"""Payloads over this many bytes are skipped (unless told otherwise: ``max_item_bytes``)."""


class NatsClosed(ConnectionError):
    """The NATS connection was closed (by the server, the network, or an ``-ERR``)."""


class NatsSubscriber(ScannedConnection):
    """One NATS connection that subscribes (see the module doc). Made by :meth:`connect`."""

    closed_error = NatsClosed

    def __init__(
        self,
        on_batch: Callable[[Batch], None],
        conflate: Sequence[bytes],
        *,
        max_delay: float = MAX_DELAY,
        max_payload: int = MAX_PAYLOAD,
        scanner: PubSubScannerFactory | None = None,
    ) -> None:
        factory = scanner if scanner is not None else load_engine().NatsScanner
        super().__init__(on_batch, factory(conflate, max_payload), max_delay=max_delay)
        self.info: dict[str, Any] | None = None
        """The server's first ``INFO``."""
        self._info_seen: asyncio.Future[None] = self._loop.create_future()

    @classmethod
    async def connect(
        cls,
        url: str,
        on_batch: Callable[[Batch], None],
        conflate: Sequence[bytes],
        *,
        timeout: float,
        name: str = "dashboard-server",
        max_delay: float = MAX_DELAY,
        max_payload: int = MAX_PAYLOAD,
        scanner: PubSubScannerFactory | None = None,
        threaded: bool = True,
    ) -> NatsSubscriber:
        """Connect to ``url`` (``nats://[user:password@|token@]host[:port]`` or ``tls://...``),
        read ``INFO``, upgrade to TLS if asked, send ``CONNECT`` and wait for the ``PONG`` of a
        ``PING`` (an ``-ERR`` instead, e.g. a refused authorization, raises
        :class:`NatsClosed`); every step bounded by ``timeout``. ``threaded``: then read the
        socket in a thread of its own (not under TLS; see ``ingest/scanned.py``)."""
        parts = urllib.parse.urlsplit(url if "://" in url else f"nats://{url}")
        if parts.scheme not in ("nats", "tls"):
            raise ValueError(f"NATS URL {url!r}: expected nats:// or tls://")
        host = parts.hostname or "localhost"
        port = parts.port or DEFAULT_PORT
        loop = asyncio.get_running_loop()

        def factory() -> NatsSubscriber:
            return cls(
                on_batch, conflate, max_delay=max_delay, max_payload=max_payload, scanner=scanner
            )

        async with asyncio.timeout(timeout):
            transport, sub = await loop.create_connection(factory, host, port)
            try:
                await sub._wait(sub._info_seen)
                info = sub.info or {}
                tls = parts.scheme == "tls" or bool(info.get("tls_required"))
                if tls:
                    upgraded = await loop.start_tls(
                        transport, sub, ssl.create_default_context(), server_hostname=host
                    )
                    assert upgraded is not None
                    sub._transport = upgraded
                options: dict[str, Any] = {
                    "verbose": False,
                    "pedantic": False,
                    "tls_required": tls,
                    "name": name,
                    "lang": "python",
                    "version": __version__,
                    "protocol": 1,
                    "headers": True,
                    "no_responders": True,
                }
                if parts.username is not None and parts.password is not None:
                    options["user"] = urllib.parse.unquote(parts.username)
                    options["pass"] = urllib.parse.unquote(parts.password)
                elif parts.username is not None:
                    options["auth_token"] = urllib.parse.unquote(parts.username)
                sub._write(b"CONNECT " + json.dumps(options).encode() + b"\r\n")
                await sub._wait(sub.ping())
            except BaseException:
                sub.close()
                raise
        if threaded:
            sub.read_in_thread()
        return sub

    def subscribe(self, subject: str, sid: int) -> None:
        """``SUB subject sid`` (its messages reach the batch by ``sid``)."""
        self._write(f"SUB {subject} {sid}\r\n".encode())

    def ping(self) -> asyncio.Future[float]:
        """Send a PING; the future is the round trip in seconds, set when its PONG arrives (it
        comes after every message the server queued before it)."""
        self._write(b"PING\r\n")
        return self._ping_sent()

    def _replies(self, replies: list[bytes]) -> None:
        for line in replies:
            op = line[:4].upper()
            if op == b"PING":
                self._write(b"PONG\r\n")
            elif op == b"PONG":
                self._pong()
            elif op == b"INFO":
                if self.info is None:
                    try:
                        self.info = json.loads(line[4:])
                    except ValueError as exc:
                        self._fail(NatsClosed(f"NATS INFO is not JSON: {exc}"))
                        return
                if not self._info_seen.done():
                    self._info_seen.set_result(None)
            elif op == b"-ERR":
                message = line[4:].strip().strip(b"'").decode("utf-8", "replace")
                if message.lower().startswith("permissions violation"):
                    log.warning("nats permissions violation", extra={"error": message})
                    continue
                self._fail(NatsClosed(f"NATS error: {message}"))
                return
            # +OK: nothing to do (verbose is off)
