"""Fixtures of the server tests: each engine-dependent test runs with both engines."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the tests import server_helpers

from server_helpers import ENGINES, native_available


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    """Each test that uses it runs once per engine (native skipped only if not built)."""
    name: str = request.param
    if name == "native" and not native_available():
        if os.environ.get("DASHBOARD_REQUIRE_NATIVE"):
            pytest.fail("DASHBOARD_REQUIRE_NATIVE is set but dashboard_server._fastdiff is missing")
        pytest.skip("dashboard_server._fastdiff is not built yet (make build)")
    return name


@pytest.fixture
def engine(engine_name: str) -> Any:
    """The loaded engine of the current parametrisation."""
    from dashboard_server.engine import load_engine

    return load_engine(engine_name)
