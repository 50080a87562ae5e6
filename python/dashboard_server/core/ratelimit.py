"""Rate limits, without I/O: the one home of every limiter the server uses.

- :class:`TokenBucket`: a steady rate with a burst (client messages, log lines);
- :class:`StrikeCounter`: too many bad things within a sliding window (bad client messages);
- :class:`LogLimiter`: at most so many log lines a second, counting those held back.

Each takes the time as an argument (seconds on any monotonic clock), so tests drive them with
plain numbers.
"""

from __future__ import annotations

import time
from collections import deque

__all__ = ["LogLimiter", "StrikeCounter", "TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up (starts full)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last: float | None = None

    def take(self, now: float) -> bool:
        """Spend one token at time ``now``; ``False`` if there is none."""
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class StrikeCounter:
    """Counts strikes in a sliding window: ``strike(now)`` records one and returns ``True`` when
    more than ``limit`` happened within the last ``window`` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()

    def strike(self, now: float) -> bool:
        """Record a strike; ``True`` means over the limit."""
        self._times.append(now)
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        return len(self._times) > self.limit


class LogLimiter:
    """At most ``per_second`` lines a second (with that as the burst); counts the ones held back,
    so the next line logged can say how many were."""

    def __init__(self, per_second: int) -> None:
        self._bucket = TokenBucket(per_second, per_second)
        self.suppressed = 0

    def allow(self, now: float | None = None) -> tuple[bool, int]:
        """Whether to log now, and how many lines were held back since the last one logged."""
        if not self._bucket.take(time.monotonic() if now is None else now):
            self.suppressed += 1
            return False, 0
        held, self.suppressed = self.suppressed, 0
        return True, held
