"""Type stub of the native engine ``dashboard_server._fastdiff`` (Rust, PyO3).

The contract (semantics, errors, message layouts) is docs/engine.md; the pure-Python twin
``dashboard_server._purediff`` has the same interface.
"""

from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal, TypeAlias, final

__version__: Final[str]
MAX_DEPTH: Final[int]
"""Containers may nest at most this many levels; a pointer may have at most this many tokens."""

JSONValue: TypeAlias = (
    bool | int | float | str | list[Any] | tuple[Any, ...] | dict[str, Any] | None
)
Format: TypeAlias = Literal["msgpack", "json"]
DiffForm: TypeAlias = Literal["changes", "json-patch"]
Payload: TypeAlias = bytes | bytearray | memoryview

@final
class StateDoc:
    """The state document: ingest ops, change tracking and snapshot encoding."""

    def __init__(
        self, sections: Iterable[str] | None = None, *, max_tombstones: int = 100_000
    ) -> None:
        """``sections`` start as empty objects (version 0); ``max_tombstones`` >= 0."""

    @property
    def version(self) -> int:
        """The number of effective ops so far."""

    @property
    def floor(self) -> int:
        """The oldest version ``changes_since`` can still answer from."""

    @property
    def max_tombstones(self) -> int: ...
    def merge(self, path: str, patch: JSONValue) -> bool:
        """RFC 7386 merge at ``path`` (``None`` at a non-root path removes); True if changed."""

    def replace(self, path: str, value: JSONValue) -> bool:
        """Make the value at ``path`` equal to ``value``; True if changed."""

    def remove(self, path: str) -> bool:
        """Remove the value at ``path``; False if there was none."""

    def merge_bytes(self, path: str, payload: Payload, fmt: Format = "json") -> bool:
        """``merge`` with a JSON or MessagePack payload decoded natively."""

    def merge_many(
        self, items: Iterable[tuple[str, Payload]], fmt: Format = "json"
    ) -> list[bool | str]:
        """``merge_bytes`` of each ``(path, payload)`` in order, each atomic on its own: per item
        its result, or the message of the ``ValueError`` it would raise (it changes nothing).
        ``TypeError`` (before anything is applied) for a wrongly shaped ``items``."""

    def replace_many(
        self, items: Iterable[tuple[str, Payload]], fmt: Format = "json"
    ) -> list[bool | str]:
        """``replace_bytes`` of each ``(path, payload)`` in order, each atomic on its own: per
        item its result, or the message of the ``ValueError`` it would raise (it changes
        nothing). ``TypeError`` (before anything is applied) for a wrongly shaped ``items``."""

    def replace_bytes(self, path: str, payload: Payload, fmt: Format = "json") -> bool:
        """``replace`` with a JSON or MessagePack payload decoded natively."""

    def get(self, path: str = "") -> Any:
        """A fresh copy of the value at ``path``; KeyError if absent."""

    def keys(self, path: str = "") -> list[str]:
        """Member names of the object at ``path`` in document order (KeyError if absent,
        ValueError if not an object)."""

    def stats(self) -> dict[str, int]:
        """``{"version", "floor", "tombstones", "nodes"}``."""

    def changes_since(self, version: int) -> ChangeSet | None:
        """Changes from ``version`` to now; None if older than ``floor``; ValueError if out of
        ``0..version``."""

    def encode_snapshot(
        self,
        fmt: Format,
        channels: Sequence[str] | None,
        seq: int,
        epoch: str,
        timestamp_ms: int,
    ) -> bytes:
        """The bytes of a ``snapshot`` message for ``channels`` (None: every section)."""

@final
class ChangeSet:
    """The changes between two versions, with values read when it was taken."""

    @property
    def from_version(self) -> int: ...
    @property
    def to_version(self) -> int: ...
    def __len__(self) -> int:
        """Entries: changes plus removals."""

    def changes(self) -> dict[str, Any]:
        """``{pointer: value}``, in walk order."""

    def removed(self) -> list[str]:
        """Removed pointers, in walk order."""

    def is_empty(self, channels: Sequence[str] | None = None) -> bool:
        """Whether nothing is there for ``channels`` (None: every section)."""

    def encode(
        self,
        fmt: Format,
        diff: DiffForm,
        channels: Sequence[str] | None,
        seq: int,
        timestamp_ms: int,
    ) -> bytes | None:
        """The bytes of an ``update`` message, or None if nothing is there for ``channels``."""

ScannerBatch: TypeAlias = tuple[
    dict[bytes, dict[bytes, bytes]],
    dict[bytes, int],
    list[tuple[bytes, bytes, bytes]],
    list[tuple[bytes, bytes, int]],
]

@final
class PubSubScanner:
    """The scanner of a Redis pub/sub connection's bytes (RESP2 and RESP3): messages on a
    ``conflate`` pattern keep only the latest payload per channel, other messages stay in order,
    payloads over ``max_payload`` bytes are skipped as they stream by (never buffered), every
    other reply is cut out whole for the caller to parse."""

    def __init__(self, conflate: Iterable[bytes], max_payload: int) -> None: ...
    def feed(self, data: Payload) -> tuple[int, list[bytes]]:
        """Scan the next bytes read: ``(messages, replies)``. ``ValueError`` (naming what was
        wrong) if the stream is not RESP or a reply is too large, and on every later call."""

    @property
    def pending_keys(self) -> int:
        """Distinct channels pending over every conflated pattern."""

    @property
    def pending_ordered(self) -> int:
        """Messages pending in order (and oversized ones)."""

    def take(self) -> ScannerBatch:
        """``(conflated, counts, ordered, oversized)``: per conflated pattern with messages its
        latest payload per channel (in first-seen order) and its message count; the other
        messages as ``(pattern, channel, payload)``; the skipped ones as
        ``(pattern, channel, size)``."""

@final
class NatsScanner:
    """The scanner of a NATS subscriber connection's bytes: ``MSG``/``HMSG`` go to the batch by
    subscription id (``conflate``: the ids, as ASCII bytes, whose latest payload per subject
    wins; headers are skipped), payloads over ``max_payload`` are skipped unbuffered, every
    other operation (``PING``, ``PONG``, ``+OK``, ``-ERR ...``, ``INFO {...}``) is handed over as
    its line without the CRLF."""

    def __init__(self, conflate: Iterable[bytes], max_payload: int) -> None: ...
    def feed(self, data: Payload) -> tuple[int, list[bytes]]:
        """``(messages, lines)``; ``ValueError`` (``NATS protocol error: ...``) if the stream is
        not NATS, and on every later call."""

    @property
    def pending_keys(self) -> int: ...
    @property
    def pending_ordered(self) -> int: ...
    def take(self) -> ScannerBatch:
        """As :meth:`PubSubScanner.take`, keyed by subscription id."""

def diff(old: JSONValue, new: JSONValue) -> list[dict[str, Any]]:
    """Stateless structural diff as an RFC 6902 op list."""

class PanicException(BaseException):
    """A panic in the engine, raised by PyO3 (``pyo3_runtime.PanicException``)."""

def _panic_for_tests(msg: str) -> None:
    """Test-only hook: panics with ``msg`` (raised as :class:`PanicException`)."""
