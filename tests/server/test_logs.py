"""Structured logs: one JSON object per line with the call's extra fields."""

from __future__ import annotations

import io
import logging

import orjson
from server_helpers import ENGINES  # noqa: F401  (imports the source tree if needed)

from dashboard_server.telemetry.logs import configure_logging


def test_json_lines_with_extra_fields_and_exceptions() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("info", stream)
        log = logging.getLogger("dashboard_server.test")
        log.debug("hidden")
        log.info("listening on %s", "here", extra={"port": 8080})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [x["msg"] for x in lines] == ["listening on here", "failed"]
    first = lines[0]
    assert first["level"] == "info" and first["logger"] == "dashboard_server.test"
    assert first["port"] == 8080 and first["ts"].endswith("Z")
    assert "RuntimeError: boom" in lines[1]["exc"]
    assert logging.getLogger("websockets").level == logging.WARNING
