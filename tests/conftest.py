"""Fixtures shared by every test suite: the two engines and hypothesis profiles."""

from __future__ import annotations

import importlib
import os

import pytest
from hypothesis import HealthCheck, settings

from dashboard_server.core.engine import Engine, load_engine

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    max_examples=100,
)
settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    max_examples=200,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

ENGINE_NAMES = ("native", "pure")


def native_available() -> bool:
    try:
        importlib.import_module("dashboard_server._fastdiff")
    except ImportError:
        return False
    return True


def engine_or_skip(name: str) -> Engine:
    """Load an engine; without the native build, skip (or fail when it is required)."""
    if name == "native" and not native_available():
        message = "native engine dashboard_server._fastdiff is not built (run `make build`)"
        if os.environ.get("DASHBOARD_REQUIRE_NATIVE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return load_engine(name)


@pytest.fixture(params=ENGINE_NAMES)
def engine_name(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs once per engine name: native and pure."""
    name: str = request.param
    engine_or_skip(name)
    return name


@pytest.fixture
def engine(engine_name: str) -> Engine:
    """The engine of the current parametrisation (see :func:`engine_name`)."""
    return load_engine(engine_name)


@pytest.fixture
def both_engines() -> tuple[Engine, Engine]:
    """The native and the pure engine together, for tests that compare them."""
    return engine_or_skip("native"), engine_or_skip("pure")
