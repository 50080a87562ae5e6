"""The Redis ingest and history settings: parsed from every source, validated with the setting
named, and a configured Redis no longer refused."""

from __future__ import annotations

import pytest
from server_helpers import make_config, run

from dashboard_server.config import ConfigError, load_config
from dashboard_server.server.app import DashboardServer


def test_settings_from_env_and_cli() -> None:
    env = {
        "DASHBOARD_REDIS_URL": "redis://127.0.0.1:1/0",
        "DASHBOARD_REDIS_RELOAD_INTERVAL_S": "0",
        "DASHBOARD_REDIS_HEALTH_INTERVAL_S": "0.5",
        "DASHBOARD_HISTORY_SECTIONS": "market_data,orders",
        "DASHBOARD_EVENTS_KEPT": "0",
    }
    config = load_config(env=env, cli={"history_size": "5_000", "redis_backoff_max_s": "9"})
    assert config.redis_reload_interval_s == 0.0
    assert config.redis_health_interval_s == 0.5
    assert config.history_sections == ("market_data", "orders")
    assert config.events_kept == 0
    assert config.history_size == 5000 and config.redis_backoff_max_s == 9.0
    assert load_config(env={"DASHBOARD_HISTORY_SECTIONS": ""}).history_sections == ()
    # the default history section is simply not recorded when it is not a section
    assert load_config(env={"DASHBOARD_SECTIONS": "a,b"}).history_sections == (
        "market_data",
        "account",
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DASHBOARD_REDIS_HEALTH_TIMEOUT_S": "0"}, "DASHBOARD_REDIS_HEALTH_TIMEOUT_S"),
        ({"DASHBOARD_REDIS_RELOAD_INTERVAL_S": "-1"}, "DASHBOARD_REDIS_RELOAD_INTERVAL_S"),
        ({"DASHBOARD_REDIS_BACKOFF_INITIAL_S": "10"}, "DASHBOARD_REDIS_BACKOFF_INITIAL_S"),
        ({"DASHBOARD_HISTORY_SECTIONS": "nope"}, "DASHBOARD_HISTORY_SECTIONS"),
        ({"DASHBOARD_HISTORY_INTERVAL_S": "0"}, "DASHBOARD_HISTORY_INTERVAL_S"),
        ({"DASHBOARD_HISTORY_SIZE": "0"}, "DASHBOARD_HISTORY_SIZE"),
        ({"DASHBOARD_EVENTS_KEPT": "-1"}, "DASHBOARD_EVENTS_KEPT"),
    ],
)
def test_errors_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=f"^{named}: "):
        load_config(env=env)


def test_unreachable_redis_does_not_stop_the_start() -> None:
    async def scenario() -> None:
        server = DashboardServer(make_config("pure", redis_url="redis://127.0.0.1:1/0"))
        await server.start()
        try:
            status, body = server.health()
            assert status == 200 and body["status"] == "degraded" and body["feed"] == "generic"
        finally:
            await server.shutdown()

    run(scenario())
