"""The feed interface: what every source of state implements, so the server only wires.

A :class:`Feed` writes into the write side (:class:`~dashboard_server.ingest.writer.StateWriter`)
from the moment :meth:`Feed.start` returns until :meth:`Feed.stop` has returned, and says at any
time how it is doing (:meth:`Feed.health`). The demo feed and the Redis feed implement it; the
next ones (NATS, HTTP polling, Redis Cluster) implement it too, without a change to the server.

:class:`TaskFeed` is the common shape: one asyncio task running :meth:`TaskFeed.run` until a stop
event is set. It catches what the task raises (a bug, or a panic of the native engine, which is
a ``BaseException``), logs it and reports the feed ``down`` with the reason, instead of letting
the state go silently stale while ``/health`` says ok.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import enum
import logging
import time
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ConnectedFeed", "Feed", "FeedHealth", "FeedState", "TaskFeed", "describe_failure"]

log = logging.getLogger(__name__)


class FeedState(enum.StrEnum):
    """How a feed is doing, as ``/health`` reports it."""

    CONNECTING = "connecting"
    """Not connected yet, or (re)subscribed and reloading: the state may be stale."""
    OK = "ok"
    """Live: what the state holds is what the source holds."""
    DOWN = "down"
    """The source failed or was lost (retrying), or the feed itself failed."""
    STALLED = "stalled"
    """Connected, but the source stopped answering; reconnecting."""
    STOPPED = "stopped"
    """Not running (never started, or stopped)."""


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """One feed's state, for how long it has been in it, and the last error (if any)."""

    state: FeedState
    since_s: float
    error: str | None = None
    lag_s: float | None = None
    """How far behind its source the feed is (a PING's round trip through the message stream),
    when the feed knows."""


class Feed(Protocol):
    """A source of state (see the module doc)."""

    @property
    def name(self) -> str:
        """A short name for ``/health`` and the logs (``demo``, ``redis``, ...)."""
        ...

    async def start(self) -> None:
        """Start writing into the write side (returns at once; connecting goes on)."""
        ...

    async def stop(self) -> None:
        """Stop and wait until nothing more is written (the state stays as it is)."""
        ...

    def health(self) -> FeedHealth:
        """How the feed is doing now."""
        ...


def describe_failure(exc: BaseException) -> str:
    """A one-line description of a failure (the first one of an exception group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class TaskFeed(abc.ABC):
    """A :class:`Feed` that is one task running :meth:`run` (see the module doc)."""

    name = "feed"

    def __init__(self) -> None:
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: str | None = None
        self._changed_at = time.monotonic()

    @abc.abstractmethod
    async def run(self, stop: asyncio.Event) -> None:
        """Write into the state until ``stop`` is set."""

    async def start(self) -> None:
        """Run :meth:`run` in a task of its own."""
        if self._task is not None:
            raise RuntimeError(f"feed {self.name!r} already started")
        self._stop = asyncio.Event()
        self._failure = None
        self._changed_at = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._guarded(), name=self.name)

    async def stop(self) -> None:
        """Set the stop event and wait for :meth:`run` to return."""
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._changed_at = time.monotonic()

    @property
    def running(self) -> bool:
        """Whether the task is running."""
        return self._task is not None and not self._task.done()

    def health(self) -> FeedHealth:
        """``ok`` while running, ``down`` with the reason once :meth:`run` failed, else
        ``stopped``; feeds with a connection of their own say more."""
        age = time.monotonic() - self._changed_at
        if self._failure is not None:
            return FeedHealth(FeedState.DOWN, age, self._failure)
        return FeedHealth(FeedState.OK if self.running else FeedState.STOPPED, age)

    async def _guarded(self) -> None:
        try:
            await self.run(self._stop)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            self._failure = describe_failure(exc)
            self._changed_at = time.monotonic()
            log.exception("feed failed", extra={"feed": self.name})


class ConnectedFeed(TaskFeed):
    """A :class:`TaskFeed` with a connection of its own to report: its state (``connecting``
    at first), since when, the last error and the lag. A failure of the task itself wins."""

    def __init__(self) -> None:
        super().__init__()
        self.last_error: str | None = None
        """Why the last connection ended or the last attempt failed."""
        self.lag_s: float | None = None
        """How far behind the source the feed is (None: not measured)."""
        self._state = FeedState.CONNECTING
        self._state_since = time.monotonic()

    @property
    def state(self) -> FeedState:
        """The current connection state."""
        return self._state

    @property
    def state_age(self) -> float:
        """Seconds spent in the current state."""
        return time.monotonic() - self._state_since

    def health(self) -> FeedHealth:
        """The connection state, its age, the last error and the lag."""
        failed = super().health()
        if failed.state is FeedState.DOWN:
            return failed
        return FeedHealth(self._state, self.state_age, self.last_error, self.lag_s)

    def _set_state(self, state: FeedState) -> None:
        """Move to ``state``, logged as ``{name} state changed`` (a warning unless ok)."""
        if state is self._state:
            return
        log.log(
            logging.INFO if state is FeedState.OK else logging.WARNING,
            f"{self.name} state changed",
            extra={"from": self._state.value, "to": state.value, "error": self.last_error},
        )
        self._state_changed(self._state, state)
        self._state = state
        self._state_since = time.monotonic()

    def _state_changed(self, old: FeedState, new: FeedState) -> None:
        """A hook for feeds that export their state as metrics."""
