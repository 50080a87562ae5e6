"""atheris harness: the engines' payload decoders and the client message parser.

    .venv/bin/python fuzz/fuzz_decoders.py -max_total_time=60 -rss_limit_mb=2048 fuzz/corpus

Each input picks an engine (native and pure), an op (``merge_bytes`` / ``replace_bytes``) and a
format (JSON / MessagePack) from its first byte and feeds the rest as the payload; the same bytes
go to the server's client message parser as a binary frame and, when they are UTF-8, as a text
frame. Allowed outcomes: success, ``ValueError`` from an engine (its message naming a place),
``MessageError`` from the parser. Anything else (another exception, a Rust panic surfacing as
``pyo3_runtime.PanicException``, a crash, a stack overflow) stops the run with the input saved by
libFuzzer. Coverage guidance covers the Python code (the pure engine, the parser); the native
decoder gets the same inputs without instrumentation.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports():
    from dashboard_server import _purediff
    from dashboard_server.core.protocol import MessageError, parse_client_message

SECTIONS = ("market_data", "orders")
ROOT = Path(__file__).resolve().parent

try:
    from dashboard_server import _fastdiff

    ENGINES: tuple[Any, ...] = (_fastdiff, _purediff)
except ImportError:  # not built: fuzz the pure engine only
    ENGINES = (_purediff,)


def _doc(module: Any) -> Any:
    doc = module.StateDoc(sections=SECTIONS, max_tombstones=1000)
    doc.merge("/orders/1", {"qty": 1.0, "tags": ["a"]})
    return doc


def test_one_input(data: bytes) -> None:
    """One fuzz input (see the module doc)."""
    if not data:
        return
    selector, payload = data[0], data[1:]
    module = ENGINES[selector % len(ENGINES)]
    op = ("merge_bytes", "replace_bytes")[(selector >> 1) & 1]
    fmt = ("json", "msgpack")[(selector >> 2) & 1]
    doc = _doc(module)
    try:
        getattr(doc, op)("/orders/1", payload, fmt)
    except ValueError as exc:
        if not str(exc).startswith("/"):
            raise AssertionError(f"unclear engine error: {exc!r}") from exc
    frames: list[str | bytes] = [payload]
    with contextlib.suppress(UnicodeDecodeError):
        frames.append(payload.decode("utf-8"))
    for frame in frames:
        with contextlib.suppress(MessageError):
            parse_client_message(frame, SECTIONS)


def main() -> None:
    """Run libFuzzer with the command line's options (``-max_total_time=N`` etc.)."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
