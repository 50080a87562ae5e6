"""Plain HTTP on the WebSocket port: ``/health``, ``/metrics``, ``/api/v1/history[/series]``, the
dashboard's static files and the ``/ws`` gatekeeper.

:class:`HttpFront` is the ``process_request`` hook of ``websockets.asyncio.server.serve``: it
answers the HTTP endpoints itself and checks the ``/ws`` query before the upgrade (400 with a
JSON body naming the bad parameter, 503 while shutting down). The validated parameters of an
accepted ``/ws`` request are kept for the connection handler (:meth:`HttpFront.take_params`).
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from dashboard_server.core.protocol import ConnectParams, ParamError, Query, split_query
from dashboard_server.server.gate import Gate
from dashboard_server.server.responses import http_response
from dashboard_server.telemetry.logs import redact

__all__ = ["HISTORY_PATHS", "HttpFront"]

HISTORY_PATHS: Final = ("/api/v1/history", "/api/v1/history/series")
"""The history endpoints (server/history.py); both take the ``/api/`` credentials."""


class HttpFront:
    """Routes a request before the WebSocket handshake (see the module doc)."""

    def __init__(
        self,
        *,
        parse_params: Callable[[Query], ConnectParams],
        health: Callable[[], tuple[int, dict[str, Any]]],
        metrics: Callable[[], bytes],
        accepting: Callable[[], bool],
        static: Callable[[str], tuple[int, str, bytes] | None] | None = None,
        gate: Gate | None = None,
        history: Callable[[str, str], Awaitable[tuple[int, dict[str, Any]]]] | None = None,
    ) -> None:
        self._parse_params = parse_params
        self._health = health
        self._metrics = metrics
        self._accepting = accepting
        self._static = static
        self._gate = gate
        self._history = history
        # weak: a request that passed here but failed the upgrade leaves nothing behind
        self._params: weakref.WeakKeyDictionary[ServerConnection, ConnectParams] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(
        self, connection: ServerConnection, request: Request
    ) -> Response | Awaitable[Response] | None:
        """The ``process_request`` hook: a response (awaitable for the history, which may read
        Redis), or ``None`` to go on with the upgrade."""
        url = urlsplit(request.path)
        query = split_query(url.query)  # once: the gate and the parameters read the same pairs
        if self._gate is not None:  # origin and credentials (docs/security.md)
            refused = self._gate.check(connection, request, url.path, query)
            if refused is not None:
                return refused
        if url.path == "/health":
            status, body = self._health()
            return http_response(status, body)
        if url.path == "/metrics":
            return http_response(200, self._metrics(), "text/plain; version=0.0.4; charset=utf-8")
        if url.path in HISTORY_PATHS and self._history is not None:
            return self._history_response(url.path, url.query)
        if url.path != "/ws":
            found = self._static(request.path) if self._static is not None else None
            if found is not None:
                page_status, content_type, page = found
                return http_response(page_status, page, content_type)
            return http_response(404, {"error": "not_found", "message": f"no route {url.path}"})
        if not self._accepting():
            return http_response(
                503, {"error": "shutting_down", "message": "server is shutting down"}
            )
        try:
            params = self._parse_params(query)
        except ParamError as exc:
            return http_response(
                400,
                {"error": "bad_parameter", "parameter": exc.parameter, "message": redact(str(exc))},
            )
        if self._gate is not None:  # allowed channels, connection limits
            admitted = self._gate.admit(connection, params)
            if isinstance(admitted, Response):
                return admitted
            params = admitted
        self._params[connection] = params
        return None

    async def _history_response(self, path: str, query: str) -> Response:
        assert self._history is not None
        status, body = await self._history(path, query)
        return http_response(status, body)

    def take_params(self, connection: ServerConnection) -> ConnectParams | None:
        """The parameters validated for ``connection`` (once), ``None`` if there are none."""
        return self._params.pop(connection, None)
