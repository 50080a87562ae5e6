"""Drift-free periodic schedules: the pure :class:`Ticker` and its asyncio loop :func:`periodic`.

A :class:`Ticker` gives the deadlines ``start + k * period``. Time spent in a tick's work never
pushes later deadlines back; ticks that are already past when the previous one finishes are
skipped (one run per overdue stretch, no burst), because a flush always sends the latest state
anyway. Tests drive a :class:`Ticker` with any number; :func:`periodic` sleeps until each deadline
on the event loop's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator

__all__ = ["Ticker", "periodic"]


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


async def periodic(
    period: float, stop: asyncio.Event | None = None, *, start: float | None = None
) -> AsyncGenerator[float, None]:
    """Yield each deadline of the grid ``start + k * period`` on the running loop's clock, right
    after it passes, until ``stop`` is set: the one periodic loop of the package (flushes, the
    demo feed, history samples, the demo publisher).

    Drift-free as :class:`Ticker`: time spent by the caller between two yields never pushes later
    deadlines back, and deadlines already past when the caller comes back are skipped.
    ``start`` defaults to now, so the first deadline is one period away.
    """
    loop = asyncio.get_running_loop()
    ticker = Ticker(period, loop.time() if start is None else start)
    while stop is None or not stop.is_set():
        delay = max(0.0, ticker.deadline() - loop.time())
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
            if stop.is_set():
                return
        yield ticker.deadline()
        ticker.advance(loop.time())
