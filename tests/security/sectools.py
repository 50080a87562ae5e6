"""Helpers of the security tests: a test server, real WebSocket clients, refusals, metrics."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from server_helpers import DashboardServer, native_available, running_server
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from dashboard_server.server.auth import sign_jwt

__all__ = [
    "ENGINE",
    "SECRET",
    "TOKEN",
    "forge_jwt",
    "jwt",
    "open_ws",
    "refusal",
    "refusals",
    "sample",
    "server",
    "ws_url",
]

ENGINE = "native" if native_available() else "pure"
TOKEN = "static-token-0123456789"
SECRET = "jwt-secret-0123456789abcdef0123456789"


def jwt(**claims: Any) -> str:
    """A JWT signed with :data:`SECRET`; ``exp`` defaults to one hour from now."""
    claims.setdefault("exp", time.time() + 3600)
    return sign_jwt(claims, SECRET)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge_jwt(claims: object, secret: str = SECRET, header: object = None) -> str:
    """A JWT built by hand: any JSON ``claims`` and ``header`` (default HS256), HMAC-SHA256 signed
    with ``secret`` whatever the header says (what a library refuses to produce)."""
    head = _b64(orjson.dumps(header if header is not None else {"alg": "HS256", "typ": "JWT"}))
    body = _b64(orjson.dumps(claims))
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


@asynccontextmanager
async def server(**overrides: Any) -> AsyncIterator[DashboardServer]:
    """A started test server with ``overrides`` (no demo feed)."""
    async with running_server(ENGINE, **overrides) as srv:
        yield srv


def ws_url(srv: DashboardServer, query: str = "") -> str:
    """The ``/ws`` URL of ``srv`` with ``query``."""
    return f"ws://127.0.0.1:{srv.port}/ws" + (f"?{query}" if query else "")


@asynccontextmanager
async def open_ws(url: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    """A connected WebSocket client (fails the test if the handshake is refused)."""
    kwargs.setdefault("open_timeout", 5)
    async with connect(url, **kwargs) as ws:
        yield ws


async def refusal(url: str, **kwargs: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Connect expecting a refusal: the HTTP status, the JSON body and the headers."""
    kwargs.setdefault("open_timeout", 5)
    try:
        async with connect(url, **kwargs):
            pass
    except InvalidStatus as exc:
        response = exc.response
        body = orjson.loads(response.body) if response.body else {}
        return response.status_code, body, {k.lower(): v for k, v in response.headers.raw_items()}
    raise AssertionError(f"{url}: the handshake was accepted")


def sample(srv: DashboardServer, name: str, **labels: str) -> float:
    """The value of one metric sample (0 when it has none yet)."""
    value = srv.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def refusals(srv: DashboardServer, reason: str) -> float:
    """``dashboard_security_refusals_total{reason=...}``."""
    return sample(srv, "dashboard_security_refusals_total", reason=reason)
