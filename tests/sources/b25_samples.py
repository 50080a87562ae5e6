"""The b25 samples (/work/shared/b25-samples, copied into tests/sources/samples): one realistic
payload per row of the contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

SAMPLES = Path(__file__).resolve().parent / "samples"


def sample(name: str) -> Any:
    """A sample, decoded (a new object each call)."""
    return orjson.loads((SAMPLES / f"{name}.json").read_bytes())


def sample_bytes(name: str) -> bytes:
    """A sample as compact JSON bytes, as a backend sends it."""
    return orjson.dumps(sample(name))
