"""Settings: precedence CLI > env > file > defaults, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_helpers import ENGINES  # noqa: F401  (imports the source tree if needed)

from dashboard_server.config import SETTINGS, Config, ConfigError, load_config


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
