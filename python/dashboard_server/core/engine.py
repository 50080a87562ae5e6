"""Engine selection, and the engine's interface as typed Protocols.

Two modules implement one interface and one semantics (docs/engine.md): the native
``dashboard_server._fastdiff`` (Rust, PyO3) and its pure-Python twin ``dashboard_server._purediff``.
:class:`EngineModule`, :class:`StateDocEngine` and :class:`ChangeSetEngine` say what that interface
is; mypy --strict checks both modules against them (at the end of ``_purediff``, which may import
this module: this module imports neither engine, it loads one by name).

Nothing is loaded at import: :func:`load_engine` loads one when asked. Which one the server runs is
a setting (``engine``, env ``DASHBOARD_ENGINE``) read by ``dashboard_server.config`` — the one
place the environment is read — and handed to :func:`load_engine`. Without a name, the native
engine is preferred and the pure one is the fallback (with a warning).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

from dashboard_server.core.protocol import Diff, Format

__all__ = [
    "ENGINE_NAMES",
    "ChangeSetEngine",
    "Engine",
    "EngineModule",
    "EnginePanic",
    "EngineUnavailable",
    "PubSubScannerEngine",
    "PubSubScannerFactory",
    "ScannerBatch",
    "StateDocEngine",
    "engine_panics",
    "is_recoverable",
    "load_engine",
]

ENGINE_NAMES: Final = ("native", "pure")
_MODULES: Final = {"native": "dashboard_server._fastdiff", "pure": "dashboard_server._purediff"}


class ChangeSetEngine(Protocol):
    """The changes between two versions (``StateDoc.changes_since``)."""

    @property
    def from_version(self) -> int: ...
    @property
    def to_version(self) -> int: ...
    def __len__(self) -> int: ...
    def changes(self) -> dict[str, Any]: ...
    def removed(self) -> list[str]: ...
    def is_empty(self, channels: Sequence[str] | None = None) -> bool: ...
    def encode(
        self,
        fmt: Format,
        diff: Diff,
        channels: Sequence[str] | None,
        seq: int,
        timestamp_ms: int,
    ) -> bytes | None: ...


class StateDocEngine(Protocol):
    """The state document: ingest ops, change tracking, snapshot encoding."""

    @property
    def version(self) -> int: ...
    @property
    def floor(self) -> int: ...
    def merge(self, path: str, patch: Any) -> bool: ...
    def replace(self, path: str, value: Any) -> bool: ...
    def remove(self, path: str) -> bool: ...
    def merge_bytes(self, path: str, payload: bytes, fmt: Format = "json") -> bool: ...
    def merge_many(
        self, items: Iterable[tuple[str, bytes]], fmt: Format = "json"
    ) -> list[bool | str]: ...
    def replace_many(
        self, items: Iterable[tuple[str, bytes]], fmt: Format = "json"
    ) -> list[bool | str]: ...
    def replace_bytes(self, path: str, payload: bytes, fmt: Format = "json") -> bool: ...
    def get(self, path: str = "") -> Any: ...
    def keys(self, path: str = "") -> list[str]: ...
    def stats(self) -> dict[str, int]: ...
    def changes_since(self, version: int) -> ChangeSetEngine | None: ...
    def encode_snapshot(
        self,
        fmt: Format,
        channels: Sequence[str] | None,
        seq: int,
        epoch: str,
        timestamp_ms: int,
    ) -> bytes: ...


class StateDocFactory(Protocol):
    """The ``StateDoc`` class of an engine."""

    def __call__(
        self, sections: Iterable[str] = ..., *, max_tombstones: int = ...
    ) -> StateDocEngine: ...


ScannerBatch = tuple[
    dict[bytes, dict[bytes, bytes]],
    dict[bytes, int],
    list[tuple[bytes, bytes, bytes]],
    list[tuple[bytes, bytes, int]],
]
"""``PubSubScanner.take()``: (conflated latest payload per channel per pattern, message counts
per pattern, ordered messages, oversized messages as (pattern, channel, size))."""


class PubSubScannerEngine(Protocol):
    """The scanner of a Redis pub/sub connection's bytes (docs/engine.md, "The pub/sub
    scanner")."""

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[int, list[bytes]]: ...
    @property
    def pending_keys(self) -> int: ...
    @property
    def pending_ordered(self) -> int: ...
    def take(self) -> ScannerBatch: ...


class PubSubScannerFactory(Protocol):
    """The ``PubSubScanner`` class of an engine."""

    def __call__(self, conflate: Iterable[bytes], max_payload: int) -> PubSubScannerEngine: ...


class EngineModule(Protocol):
    """What an engine module exports."""

    @property
    def StateDoc(self) -> StateDocFactory: ...
    @property
    def PubSubScanner(self) -> PubSubScannerFactory: ...
    @property
    def NatsScanner(self) -> PubSubScannerFactory: ...
    @property
    def MAX_DEPTH(self) -> int: ...
    def diff(self, old: Any, new: Any) -> list[dict[str, Any]]: ...
    @property
    def PanicException(self) -> type[BaseException]: ...
    def _panic_for_tests(self, msg: str) -> None: ...


class EngineUnavailable(ImportError):
    """The engine that was asked for cannot be loaded."""


@dataclass(frozen=True)
class Engine:
    """One loaded engine: its name and its module."""

    name: str
    module: EngineModule

    @property
    def StateDoc(self) -> StateDocFactory:
        return self.module.StateDoc

    @property
    def PubSubScanner(self) -> PubSubScannerFactory:
        return self.module.PubSubScanner

    @property
    def NatsScanner(self) -> PubSubScannerFactory:
        """The scanner of a NATS connection: same interface, routes are subscription ids."""
        return self.module.NatsScanner

    @property
    def diff(self) -> Any:
        return self.module.diff

    @property
    def MAX_DEPTH(self) -> int:
        return int(self.module.MAX_DEPTH)

    @property
    def PanicException(self) -> type[BaseException]:
        """What a panic inside the engine is raised as (a ``BaseException``)."""
        return self.module.PanicException


class EnginePanic(RuntimeError):
    """An engine panic, caught and reported, raised on as an ordinary exception (the
    document may be inconsistent: ``/health`` says degraded until a restart)."""


_PANICS: list[type[BaseException]] = []


def engine_panics() -> tuple[type[BaseException], ...]:
    """The panic exception types of the engines loaded so far (catch these next to
    ``Exception`` where an engine call may run: PyO3's ``PanicException`` is a
    ``BaseException``). Evaluated in an ``except`` clause only when something is raised."""
    return tuple(_PANICS)


def _loaded(engine: Engine) -> Engine:
    if engine.PanicException not in _PANICS:
        _PANICS.append(engine.PanicException)
    return engine


def is_recoverable(exc: BaseException) -> bool:
    """Whether a failure may be caught and survived: an :class:`Exception` or an engine
    panic, or a group of only those (never ``CancelledError``, ``KeyboardInterrupt`` or
    ``SystemExit``)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_recoverable(e) for e in exc.exceptions)
    return isinstance(exc, (Exception, *engine_panics()))


def _import(name: str) -> EngineModule:
    return cast(EngineModule, importlib.import_module(_MODULES[name]))


def load_engine(name: str | None = None) -> Engine:
    """Load the engine called ``name`` (``native`` or ``pure``).

    ``None``: native if it is built, else pure with a :class:`RuntimeWarning`. An explicit name
    whose engine cannot be loaded raises :class:`EngineUnavailable`; an unknown name raises
    :class:`ValueError`.
    """
    if name is not None:
        chosen = name.strip().lower()
        if chosen not in _MODULES:
            raise ValueError(f"engine {chosen!r}: expected one of {', '.join(ENGINE_NAMES)}")
        try:
            return _loaded(Engine(chosen, _import(chosen)))
        except ImportError as exc:
            raise EngineUnavailable(
                f"engine {chosen!r} is not available ({exc}); build it with `make build`"
            ) from exc
    try:
        return _loaded(Engine("native", _import("native")))
    except ImportError:
        warnings.warn(
            "native engine dashboard_server._fastdiff is not built; using the pure-Python engine "
            "(build it with `make build`)",
            RuntimeWarning,
            stacklevel=2,
        )
    return _loaded(Engine("pure", _import("pure")))
