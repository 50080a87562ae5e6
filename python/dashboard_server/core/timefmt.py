"""Timestamps on the wire and in logs: RFC 3339 UTC with milliseconds, the one Python home.

The Rust engine formats the same way (``rust/encode.rs``); tests compare the two.
"""

from __future__ import annotations

import time

__all__ = ["now_ms", "rfc3339_ms"]


def rfc3339_ms(timestamp_ms: int) -> str:
    """Unix milliseconds as ``2026-11-27T10:30:00.100Z``; raises :class:`ValueError` for anything
    but a non-negative int."""
    if not isinstance(timestamp_ms, int) or isinstance(timestamp_ms, bool) or timestamp_ms < 0:
        raise ValueError(f"timestamp_ms must be a non-negative int, not {timestamp_ms!r}")
    seconds, millis = divmod(timestamp_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def now_ms() -> int:
    """The wall clock in Unix milliseconds."""
    return time.time_ns() // 1_000_000
