"""Short garbage-collection pauses with thousands of connections open.

Each WebSocket connection owns some seventy Python objects that live as long as it does. CPython
3.11 runs a full (generation 2) collection whenever the long-lived objects have grown by a
quarter, and a full collection walks every one of them: with 5,000 connections that is ~500,000
objects and a 200-400 ms pause of the event loop, i.e. several missed flushes and the whole p99
of the fan-out (docs/performance.md measures it).

:class:`GcPolicy` freezes (:func:`gc.freeze`) the survivors of each full collection, so later
full collections only walk what was allocated since: ~15 ms instead of ~300 ms at 5,000
connections. Frozen objects are never examined, so reference cycles that become garbage among them
(a closed connection leaves some) would never be freed; every ``unfreeze_interval`` seconds the
policy unfreezes everything instead, and the next full collection reclaims them. The leak is thus
bounded by what closes within one interval, at the price of one long pause per interval.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

__all__ = ["GcPolicy"]


class GcPolicy:
    """Freeze after each full collection, unfreeze every ``unfreeze_interval`` seconds.

    Process-wide: :meth:`install` and :meth:`uninstall` are counted, so several servers in one
    process (the tests) share one policy, which is removed (and everything unfrozen) with the
    last of them.
    """

    _installed = 0
    _active: GcPolicy | None = None

    def __init__(
        self, unfreeze_interval: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.unfreeze_interval = unfreeze_interval
        self.clock = clock
        self.freezes = 0
        self.unfreezes = 0
        self._last_unfreeze = clock()

    def install(self) -> None:
        """Start applying the policy in this process (once for all installers)."""
        cls = type(self)
        if cls._installed == 0:
            cls._active = self
            gc.callbacks.append(self.on_collect)
        cls._installed += 1

    def uninstall(self) -> None:
        """Undo one :meth:`install`; the last one removes the policy and unfreezes everything."""
        cls = type(self)
        if cls._installed == 0:
            return
        cls._installed -= 1
        if cls._installed == 0 and cls._active is not None:
            gc.callbacks.remove(cls._active.on_collect)
            cls._active = None
            gc.unfreeze()

    def on_collect(self, phase: str, info: dict[str, Any]) -> None:
        """The :data:`gc.callbacks` hook: act at the end of every full collection."""
        if phase != "stop" or info["generation"] != 2:
            return
        now = self.clock()
        if now - self._last_unfreeze >= self.unfreeze_interval:
            gc.unfreeze()  # the next full collection walks everything once, reclaiming cycles
            self._last_unfreeze = now
            self.unfreezes += 1
        else:
            gc.freeze()
            self.freezes += 1
