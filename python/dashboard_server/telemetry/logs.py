"""Structured logs: one JSON object per line on stderr.

Each record carries ``ts`` (RFC 3339 UTC, milliseconds), ``level``, ``logger``, ``msg`` and any
``extra={...}`` fields given at the call site; exceptions add ``exc``. Every line is passed
through :func:`dashboard_server.server.auth.redact`, so no token reaches the logs.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Final, TextIO

import orjson

from dashboard_server.core.protocol import rfc3339_ms
from dashboard_server.server.auth import redact

__all__ = ["JsonFormatter", "LogLimiter", "configure_logging"]

_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as a single JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line for ``record``."""
        entry: dict[str, Any] = {
            "ts": rfc3339_ms(int(record.created * 1000)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(entry, default=str).decode())


def configure_logging(level: str, stream: TextIO | None = None) -> None:
    """Send every log record, as JSON lines, to ``stream`` (stderr) at ``level``.

    The ``websockets`` library's own loggers are kept at WARNING unless ``level`` is debug.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("websockets").setLevel(
        logging.DEBUG if level.lower() == "debug" else logging.WARNING
    )


class LogLimiter:
    """At most ``burst`` log lines per second of one kind; the rest are counted, and the next
    line logged says how many were held back (``suppressed``). For lines a client can cause
    at will (refusals), so that a flood of bad requests cannot flood the logs."""

    def __init__(self, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.clock = clock
        self._second = -1
        self._logged = 0
        self._held = 0

    def allow(self) -> tuple[bool, int]:
        """Whether to log now, and how many lines were held back since the last one logged."""
        second = int(self.clock())
        if second != self._second:
            self._second, self._logged = second, 0
        if self._logged >= self.burst:
            self._held += 1
            return False, 0
        self._logged += 1
        held, self._held = self._held, 0
        return True, held
