"""HTTP responses answered before (or instead of) the WebSocket upgrade."""

from __future__ import annotations

import email.utils
import http
from typing import Any

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Response

__all__ = ["http_response"]


def http_response(status: int, body: Any, content_type: str = "application/json") -> Response:
    """An HTTP response: ``body`` as JSON, or raw bytes of type ``content_type``."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    status_enum = http.HTTPStatus(status)
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(data))),
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(status_enum.value, status_enum.phrase, headers, data)
