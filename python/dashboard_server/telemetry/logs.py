"""Structured logs: one JSON object per line on stderr.

Each record carries ``ts`` (RFC 3339 UTC, milliseconds), ``level``, ``logger``, ``msg`` and any
``extra={...}`` fields given at the call site; exceptions add ``exc``. Every line is passed
through :func:`redact`, so no token reaches the logs.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Final, TextIO

import orjson

from dashboard_server.core.timefmt import rfc3339_ms

__all__ = ["JsonFormatter", "configure_logging", "redact"]

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


_TOKEN_NAME: Final = "".join(f"(?:{c}|%{ord(c):02x}|%{ord(c.upper()):02x})" for c in "token")
"""``token`` with any of its letters percent-encoded (``%74oken`` is decoded to ``token`` by
the query parser, so it is accepted as the token: it must be redacted as well)."""

_REDACTIONS: Final = (
    # token=... in query strings (raw, inside a repr or a JSON string: \" and \\ escapes are
    # part of the value; an unescaped quote, whitespace or & ends it)
    (
        re.compile(rf"(?i)(?<![\w%])({_TOKEN_NAME}=)(?:\\.|[^&\s\"\\])+"),
        r"\1[REDACTED]",
    ),
    # Authorization: Bearer xyz / 'authorization': 'Basic xyz'
    (
        re.compile(r"(?i)(authorization[\"']?\s*[:=,]\s*[\"']?)(\w+\s+)?[^\s\"',\\]+"),
        r"\1\2[REDACTED]",
    ),
    (re.compile(r"(?i)(\bbearer[.\s]+)[^\s\"',\\]+"), r"\1[REDACTED]"),
    # anything shaped like a JWT
    (re.compile(r"\beyJ[\w-]*\.[\w-]+\.[\w-]*"), "[REDACTED-JWT]"),
)


def redact(text: str) -> str:
    """``text`` with tokens removed: ``token=`` values (the name percent-encoded or not),
    ``Authorization`` credentials, ``bearer.`` subprotocol entries and anything shaped like a
    JWT. Static tokens are restricted to characters none of these patterns stops at
    (``dashboard_server.server.auth.TOKEN_CHARS``), so a valid token is always masked whole."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text
