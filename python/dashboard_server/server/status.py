"""What the server tells its clients about its feed: the body of the ``status`` message.

:class:`StatusBoard` is sans-I/O: it is given a way to read each source's health and each
section's age, and :meth:`StatusBoard.current` returns the status body (docs/protocol.md,
"``status``"): ``feed``, the overall ``state``, every source's ``state``/``error``/``since`` and the
``stale`` sections (and a source's ``lag_s`` while it is 0.5 s or more behind); ``feed`` is what
feeds the state (``demo``, the sources' preset, ...). The
body is the same object for as long as nothing in it changes, so the hub
can tell a change by identity and encode a ``status`` message only once per change and format.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dashboard_server.core.timefmt import rfc3339_ms

__all__ = ["SourceHealth", "StatusBoard"]

LIVE: Final = "ok"
"""The source state that means live data."""
LAG_SHOWN_S: Final = 0.5
"""A source this far behind (or more) shows its lag, in steps of this size (so the body changes
a few times a second at most under overload, and not at all while the feed keeps up)."""


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """One source as the status board sees it."""

    name: str
    state: str
    """``connecting``, ``ok``, ``down``, ``stalled``, ``stopped``."""
    since_s: float
    """Seconds it has been in ``state``."""
    error: str | None = None
    lag_s: float | None = None
    """How far behind its source the feed is, when it knows."""


class StatusBoard:
    """The current ``status`` body (see the module doc)."""

    def __init__(
        self,
        *,
        feed: Callable[[], str],
        sources: Callable[[], Iterable[SourceHealth]],
        section_ages: Callable[[], Mapping[str, float | None]],
        stale_after: Mapping[str, float],
        sections: Sequence[str],
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._feed = feed
        self._sources = sources
        self._section_ages = section_ages
        self._stale_after = dict(stale_after)
        self._sections = tuple(sections)
        self._wall_ms = wall_ms
        self._monotonic = monotonic
        self._started = monotonic()
        self._since: dict[str, tuple[str, str | None, int]] = {}
        self._body: dict[str, Any] | None = None
        self._key: tuple[Any, ...] | None = None

    def stale_sections(self) -> list[str]:
        """The sections without an update for longer than their limit (in configured order); a
        section never updated counts from the server's start."""
        ages = self._section_ages()
        uptime = self._monotonic() - self._started
        stale = []
        for section in self._sections:
            limit = self._stale_after.get(section, 0.0)
            if limit <= 0:
                continue
            age = ages.get(section)
            if (uptime if age is None else age) > limit:
                stale.append(section)
        return stale

    def current(self) -> dict[str, Any]:
        """The status body (without ``type`` and ``timestamp``); the same object until a field
        changes."""
        sources = list(self._sources())
        now_ms = self._wall_ms()
        rows = []
        for source in sources:
            since = self._since.get(source.name)
            if since is None or since[:2] != (source.state, source.error):
                since = (source.state, source.error, now_ms - round(source.since_s * 1000))
                self._since[source.name] = since
            lag = source.lag_s
            shown = (
                None
                if lag is None or lag < LAG_SHOWN_S
                else round(lag // LAG_SHOWN_S * LAG_SHOWN_S, 1)
            )
            rows.append((source.name, source.state, source.error, since[2], shown))
        stale = self.stale_sections()
        live = [r for r in rows if r[1] == LIVE]
        if rows and not live:
            state = "down"
        elif len(live) < len(rows) or stale:
            state = "degraded"
        else:
            state = "ok"
        feed = self._feed()
        key = (feed, state, tuple(rows), tuple(stale))
        if key != self._key or self._body is None:
            self._key = key
            self._body = {
                "feed": feed,
                "state": state,
                "sources": [
                    {
                        "name": name,
                        "state": st,
                        "error": error,
                        "since": rfc3339_ms(since_ms),
                        **({} if lag is None else {"lag_s": lag}),
                    }
                    for name, st, error, since_ms, lag in rows
                ],
                "stale": stale,
            }
        return self._body
