"""Engine selection: the native `_fastdiff` extension or its pure-Python twin `_purediff`.

Both modules expose the same interface (see docs/engine.md): ``StateDoc``, ``ChangeSet``,
``diff`` and ``MAX_DEPTH``. Pick one with ``DASHBOARD_ENGINE=native|pure`` or
:func:`load_engine`. Importing this module never fails because of the default choice: when the
native extension is not built and nobody asked for it explicitly, the pure engine is used and a
warning says so.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

ENGINE_ENV: Final = "DASHBOARD_ENGINE"
ENGINE_NAMES: Final = ("native", "pure")
_MODULES: Final = {"native": "dashboard_server._fastdiff", "pure": "dashboard_server._purediff"}


class EngineUnavailable(ImportError):
    """The engine that was asked for cannot be loaded."""


@dataclass(frozen=True)
class Engine:
    """One loaded engine: its name and its module's public objects."""

    name: str
    module: ModuleType

    @property
    def StateDoc(self) -> Any:
        return self.module.StateDoc

    @property
    def ChangeSet(self) -> Any:
        return self.module.ChangeSet

    @property
    def diff(self) -> Any:
        return self.module.diff

    @property
    def MAX_DEPTH(self) -> int:
        return int(self.module.MAX_DEPTH)

    @property
    def PanicException(self) -> type[BaseException]:
        """What a panic inside the engine is raised as (a ``BaseException``)."""
        panic: type[BaseException] = self.module.PanicException
        return panic


class EnginePanic(RuntimeError):
    """An engine panic, caught and reported, raised on as an ordinary exception (the
    document may be inconsistent: ``/health`` says degraded until a restart)."""


def _panic_types() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for module in _MODULES.values():
        with contextlib.suppress(ImportError, AttributeError):
            found.append(importlib.import_module(module).PanicException)
    return tuple(found)


def is_recoverable(exc: BaseException) -> bool:
    """Whether a failure may be caught and survived: an :class:`Exception` or an engine
    panic, or a group of only those (never ``CancelledError``, ``KeyboardInterrupt`` or
    ``SystemExit``)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_recoverable(e) for e in exc.exceptions)
    return isinstance(exc, (Exception, *ENGINE_PANICS))


def load_engine(name: str | None = None) -> Engine:
    """Load the engine called ``name`` (``native`` or ``pure``).

    ``None`` reads ``DASHBOARD_ENGINE``; when that is unset too, ``native`` is preferred and the
    pure engine is the fallback. An explicit request for an engine that cannot be loaded raises
    :class:`EngineUnavailable`; an unknown name raises :class:`ValueError`.
    """
    explicit = name if name is not None else os.environ.get(ENGINE_ENV) or None
    chosen = (explicit or "native").strip().lower()
    if chosen not in _MODULES:
        source = "engine name" if name is not None else ENGINE_ENV
        raise ValueError(f"{source}={chosen!r}: expected one of {', '.join(ENGINE_NAMES)}")
    try:
        return Engine(chosen, importlib.import_module(_MODULES[chosen]))
    except ImportError as exc:
        if explicit is not None:
            raise EngineUnavailable(
                f"engine {chosen!r} is not available ({exc}); build it with `make build`"
            ) from exc
    warnings.warn(
        "native engine dashboard_server._fastdiff is not built; using the pure-Python engine "
        "(build it with `make build`)",
        RuntimeWarning,
        stacklevel=2,
    )
    return Engine("pure", importlib.import_module(_MODULES["pure"]))


ENGINE: Final[Engine] = load_engine()

ENGINE_PANICS: Final[tuple[type[BaseException], ...]] = _panic_types()
"""The panic exception types of the engines that can be loaded (catch these next to
``Exception`` where an engine call may run: PyO3's ``PanicException`` is a ``BaseException``)."""
