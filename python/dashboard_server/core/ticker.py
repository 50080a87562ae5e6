"""Drift-free tick schedules, without I/O.

A :class:`Ticker` yields the deadlines ``start + k * period``. Time spent flushing never pushes
later deadlines back; ticks that are already past when the previous one finishes are skipped
(one flush per overdue stretch, no burst), because a flush always sends the latest state anyway.
The asyncio shell (``fanout``) sleeps until :meth:`Ticker.deadline` and calls
:meth:`Ticker.advance` with the clock after each flush; tests drive it with any number.
"""

from __future__ import annotations

import math

__all__ = ["Ticker"]


class Ticker:
    """Deadlines on the fixed grid ``start + k * period`` (seconds, any monotonic clock)."""

    def __init__(self, period: float, start: float) -> None:
        if not period > 0:
            raise ValueError(f"period must be > 0, got {period}")
        self.period = period
        self.start = start
        self._k = 1
        self.skipped = 0
        """Ticks skipped so far because a flush ran past them."""

    def deadline(self) -> float:
        """When the next tick is due."""
        return self.start + self._k * self.period

    def advance(self, now: float) -> float:
        """Move to the first grid point after ``now`` and return it.

        Called once a tick's work is done. If ``now`` is already past some later deadlines,
        they are skipped (counted in :attr:`skipped`).
        """
        due = self._k
        k = max(due + 1, math.floor((now - self.start) / self.period) + 1)
        self.skipped += k - due - 1
        self._k = k
        return self.deadline()
