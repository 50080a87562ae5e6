"""Handshake refusals seen from headless Chromium, against a real server process with auth and an
Origin allow-list on.

A browser cannot read the status of a refused WebSocket handshake: it reports a close with code
1006. So each attempt is checked on both sides: the page sees 1006 (or an open socket), and the
server's ``dashboard_security_refusals_total`` names the reason (401 ``invalid_token``, 403
``origin``). The accepted attempts show the two browser token sources: the ``bearer.<token>``
subprotocol entry (the server selects ``dashboard.v1``) and the ``token`` query parameter.

Skipped, with the reason, only when Playwright or a Chromium executable is missing.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from webtools import ServerProcess, browser_unavailable, chromium, http_get

pytestmark = pytest.mark.skipif(
    browser_unavailable() is not None, reason=browser_unavailable() or ""
)

TOKEN = "browser-token-0123456789"

ATTEMPT = """async ([url, protocols]) => await new Promise((resolve) => {
    const ws = protocols ? new WebSocket(url, protocols) : new WebSocket(url);
    ws.onopen = () => {
        const protocol = ws.protocol;
        ws.close(1000);
        resolve({open: true, protocol});
    };
    ws.onclose = (event) => resolve({open: false, code: event.code});
})"""


def _refusals(server: ServerProcess) -> dict[str, float]:
    _, _, body = http_get(server.http_url + "/metrics")
    found = re.findall(
        r'^dashboard_security_refusals_total\{reason="(\w+)"\} (\S+)$', body.decode(), re.M
    )
    return {reason: float(value) for reason, value in found}


def test_browser_refusals_and_token_sources() -> None:
    server = ServerProcess(symbols=5, rate=10.0)
    own_origin = f"http://127.0.0.1:{server.port}"
    server.args += ["--auth-tokens", TOKEN, "--allowed-origins", own_origin]
    server.start()
    try:
        with chromium() as page:
            page.goto(server.http_url + "/health")  # a page of the allowed origin
            ws = server.ws_url
            results: list[Any] = [
                page.evaluate(ATTEMPT, [f"{ws}?token=wrong-token-0123456789", None]),
                page.evaluate(ATTEMPT, [ws, ["dashboard.v1", f"bearer.{TOKEN}"]]),
                page.evaluate(ATTEMPT, [f"{ws}?format=json&token={TOKEN}", None]),
            ]
            assert results == [
                {"open": False, "code": 1006},
                {"open": True, "protocol": "dashboard.v1"},
                {"open": True, "protocol": ""},
            ]
            assert _refusals(server) == {"invalid_token": 1.0}
            page.goto(f"http://localhost:{server.port}/health")  # another origin
            result = page.evaluate(ATTEMPT, [f"{ws}?token={TOKEN}", None])
            assert result == {"open": False, "code": 1006}
            assert _refusals(server) == {"invalid_token": 1.0, "origin": 1.0}
    finally:
        server.stop()
