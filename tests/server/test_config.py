"""Settings: precedence CLI > env > file > defaults, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_helpers import ENGINES  # noqa: F401  (imports the source tree if needed)

from dashboard_server.config import SETTINGS, Config, ConfigError, load_config, security_warnings


def test_defaults() -> None:
    config = load_config(env={})
    assert config == Config()
    assert (config.host, config.port, config.tui_interval_ms, config.web_interval_ms) == (
        "127.0.0.1",
        8080,
        100,
        250,
    )


def test_precedence(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text(
        "port: 7000\nhost: 0.0.0.0\nlog_level: debug\nsections: [a, b]\ncompression: true\n"
    )
    env = {
        "DASHBOARD_PORT": "7100",
        "DASHBOARD_LOG_LEVEL": "WARNING",
        "DASHBOARD_CONFIG": str(file),
    }
    config = load_config(env=env, cli={"port": "7200", "host": None})
    assert config.port == 7200  # CLI
    assert config.log_level == "warning"  # env over file
    assert config.host == "0.0.0.0"  # file over default
    assert config.sections == ("a", "b")
    assert config.compression is True
    assert load_config(env=env).port == 7100


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DASHBOARD_PORT": "eighty"}, "DASHBOARD_PORT"),
        ({"DASHBOARD_PORT": "70000"}, "DASHBOARD_PORT"),
        ({"DASHBOARD_LOG_LEVEL": "loud"}, "DASHBOARD_LOG_LEVEL"),
        ({"DASHBOARD_ENGINE": "turbo"}, "DASHBOARD_ENGINE"),
        ({"DASHBOARD_DEMO": "maybe"}, "DASHBOARD_DEMO"),
        ({"DASHBOARD_LAG_TIMEOUT_S": "nan"}, "DASHBOARD_LAG_TIMEOUT_S"),
        ({"DASHBOARD_SECTIONS": "a,,b"}, "DASHBOARD_SECTIONS"),
        ({"DASHBOARD_SECTIONS": "a,events"}, "DASHBOARD_SECTIONS"),
        ({"DASHBOARD_WRITE_BUFFER_LOW": "9999999"}, "DASHBOARD_WRITE_BUFFER_LOW"),
        ({"DASHBOARD_TUI_INTERVAL_MS": "0"}, "DASHBOARD_TUI_INTERVAL_MS"),
    ],
)
def test_errors_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=f"^{named}: "):
        load_config(env=env)


def test_cli_error_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--port: "):
        load_config(env={}, cli={"port": "x"})


def test_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("prot: 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load_config(env={}, config_file=bad)
    bad.write_text("port: [1]\n")
    with pytest.raises(ConfigError, match=r"^port in .*bad.yaml: "):
        load_config(env={}, config_file=bad)
    bad.write_text("port: true\n")
    with pytest.raises(ConfigError, match=r"^port in "):
        load_config(env={}, config_file=bad)
    bad.write_text("- a\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(env={}, config_file=bad)
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load_config(env={}, config_file=tmp_path / "missing.yaml")


def test_every_setting_has_env_flag_and_docs() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    fields = set(Config.__dataclass_fields__)
    assert {s.name for s in SETTINGS} == fields
    for setting in SETTINGS:
        assert setting.env in docs and setting.flag in docs, setting.name


def test_misspelt_variable_is_named_with_the_closest_setting() -> None:
    warnings: list[str] = []
    config = load_config(
        env={"DASHBOARD_REDIS_ULR": "redis://x", "DASHBOARD_CONFIG": "", "DASHBOARD_ZZZ": "1"},
        warnings=warnings,
    )
    assert config.redis_url is None  # the typo does not set anything
    assert warnings == [
        "unknown variable DASHBOARD_REDIS_ULR (did you mean DASHBOARD_REDIS_URL?)",
        "unknown variable DASHBOARD_ZZZ",
    ]
    for extra in ("DASHBOARD_TOKEN", "DASHBOARD_REQUIRE_NATIVE", "OTHER_REDIS_ULR"):
        assert load_config(env={extra: "x"}, warnings=(w := [])) == Config() and w == []


def test_strict_env_refuses_an_unknown_variable() -> None:
    env = {"DASHBOARD_STRICT_ENV": "true", "DASHBOARD_PROT": "9000"}
    with pytest.raises(ConfigError, match=r"^DASHBOARD_STRICT_ENV: .*DASHBOARD_PROT .*PORT"):
        load_config(env=env)
    assert load_config(env={"DASHBOARD_STRICT_ENV": "true"}).strict_env is True


def test_unknown_variable_is_logged_without_a_list(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="dashboard_server.config"):
        load_config(env={"DASHBOARD_WEB_INTERVAL": "100"})
    assert "DASHBOARD_WEB_INTERVAL_MS" in caplog.text


@pytest.mark.parametrize(
    ("host", "warned"),
    [("127.0.0.1", False), ("localhost", False), ("::1", False), ("0.0.0.0", True), ("::", True)],
)
def test_listening_beyond_loopback_without_auth_is_warned(host: str, warned: bool) -> None:
    assert bool(security_warnings(Config(host=host))) is warned
    assert security_warnings(Config(host=host, auth_tokens=("a" * 20,))) == []


def test_the_shipped_placeholder_token_is_refused() -> None:
    env_file = Path(__file__).resolve().parents[2] / "deploy/systemd/dashboard-server.env"
    shipped = next(
        line.partition("=")[2]
        for line in env_file.read_text().splitlines()
        if line.startswith("DASHBOARD_AUTH_TOKENS=")
    )
    with pytest.raises(ConfigError, match=r"^DASHBOARD_AUTH_TOKENS: .*placeholder") as info:
        load_config(env={"DASHBOARD_AUTH_TOKENS": shipped})
    assert shipped not in str(info.value)
    with pytest.raises(ConfigError, match=r"^DASHBOARD_JWT_SECRET: .*placeholder"):
        load_config(env={"DASHBOARD_JWT_SECRET": "change-me" + "x" * 40})


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("localhost:6379", "redis://localhost:6379/0"),
        ("redis.internal", "redis://redis.internal:6379/0"),
        ("10.0.0.5:6380/3", "redis://10.0.0.5:6380/3"),
        ("[::1]:6379", "redis://[::1]:6379/0"),
        ("redis://h:1/2", "redis://h:1/2"),
        ("rediss://user:pw@h:1/0", "rediss://user:pw@h:1/0"),
    ],
)
def test_redis_url_accepts_host_port(given: str, url: str) -> None:
    assert load_config(env={"DASHBOARD_REDIS_URL": given}).redis_url == url


def test_redis_url_without_scheme_must_be_host_port() -> None:
    with pytest.raises(ConfigError, match=r"^DASHBOARD_REDIS_URL: expected"):
        load_config(env={"DASHBOARD_REDIS_URL": "h:port:x"})


def test_trusted_proxies_and_stale_settings() -> None:
    config = load_config(
        env={
            "DASHBOARD_TRUSTED_PROXIES": "10.0.0.0/8, ::1",
            "DASHBOARD_STALE_AFTER_S": "5",
            "DASHBOARD_STALE_SECTIONS": "account=0,orders=60",
        }
    )
    assert config.trusted_proxies == ("10.0.0.0/8", "::1")
    assert config.stale_after()["account"] == 0 and config.stale_after()["orders"] == 60
    assert config.stale_after()["market_data"] == 5
    with pytest.raises(ConfigError, match=r"^DASHBOARD_TRUSTED_PROXIES: "):
        load_config(env={"DASHBOARD_TRUSTED_PROXIES": "proxy.local"})
    for bad in ("nosuch=5", "account", "account=-1", "account=x"):
        with pytest.raises(ConfigError, match=r"^DASHBOARD_STALE_SECTIONS: "):
            load_config(env={"DASHBOARD_STALE_SECTIONS": bad})
