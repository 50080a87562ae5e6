"""The write side of the state: what a feed (demo, Redis ingest) writes into.

A :class:`StateSink` is the narrow interface a producer of state needs: JSON Pointer ingest ops on
the state document and never-conflated events. The server implements it on top of the engine's
``StateDoc`` plus its event queue; tests may implement it with a plain recorder.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["StateSink"]


class StateSink(Protocol):
    """Where state changes and events go."""

    def merge(self, path: str, patch: Any) -> None:
        """RFC 7386 JSON Merge Patch of the value at the JSON Pointer ``path`` with ``patch``."""
        ...

    def replace(self, path: str, value: Any) -> None:
        """Make the value at ``path`` equal to ``value`` (absent members are removed)."""
        ...

    def remove(self, path: str) -> None:
        """Remove the value at ``path`` (absent: nothing happens)."""
        ...

    def publish_event(self, channel: str, data: dict[str, Any]) -> None:
        """Queue a never-conflated event on ``channel`` (``fills``, ``alerts`` or ``trades``)."""
        ...
