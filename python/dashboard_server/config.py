"""Server configuration: defaults < YAML file < environment (``DASHBOARD_*``) < CLI flags.

Every setting is declared once in :data:`SETTINGS` (name, type, default, help); the environment
variable is ``DASHBOARD_`` + the upper-cased name, the CLI flag ``--`` + the name with dashes, the
YAML key the name itself. :func:`load_config` merges the sources and validates the result; any
bad value raises :class:`ConfigError` naming the setting and where it came from.
docs/configuration.md lists them all.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from dashboard_server.core.sources import (
    Source,
    SourceError,
    generic_sources,
    load_preset,
    parse_sources,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_SECTIONS",
    "ENV_PREFIX",
    "EXTRA_ENV",
    "PLACEHOLDER_TOKEN",
    "SETTINGS",
    "Config",
    "ConfigError",
    "Setting",
    "load_config",
    "security_warnings",
    "unknown_env",
]

log = logging.getLogger(__name__)

ENV_PREFIX: Final = "DASHBOARD_"
CONFIG_ENV: Final = "DASHBOARD_CONFIG"
"""Environment variable naming the YAML file (the ``--config`` flag wins over it)."""
DEFAULT_SECTIONS: Final = (
    "market_data",
    "orderbook",
    "orders",
    "positions",
    "account",
    "strategies",
)
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
DEFAULT_SYMBOL_FIELDS: Final[tuple[tuple[str, str | None], ...]] = (
    ("market_data", None),
    ("orderbook", None),
    ("positions", None),
    ("orders", "symbol"),
    ("fills", "symbol"),
    ("trades", "symbol"),
    ("alerts", "symbol"),
)
"""Where the symbol is, per section or event channel (``None``: the item id is the symbol)."""
EXTRA_ENV: Final = frozenset(
    {CONFIG_ENV, "DASHBOARD_TOKEN", "DASHBOARD_REQUIRE_NATIVE", "DASHBOARD_TEST_FEED_SECONDS"}
)
"""``DASHBOARD_*`` variables that are not settings but are read elsewhere (the YAML file, the
``watch`` command's token, the test suite): never reported as unknown."""
PLACEHOLDER_TOKEN: Final = "change-me"
"""Prefix of the placeholder secrets shipped in deploy/ (refused as real credentials)."""


class ConfigError(ValueError):
    """A setting has an invalid value; the message names it and its source."""


@dataclass(frozen=True, slots=True)
class Config:
    """The validated settings of one server (see docs/configuration.md for each)."""

    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "info"
    engine: str | None = None
    redis_url: str | None = None
    sources: str | tuple[Any, ...] | None = None
    nats_url: str | None = None
    account_monitor_url: str | None = None
    strategy_engine_url: str | None = None
    redis_reload_interval_s: float = 30.0
    redis_health_interval_s: float = 1.0
    redis_health_timeout_s: float = 2.0
    redis_backoff_initial_s: float = 0.1
    redis_backoff_max_s: float = 5.0
    max_item_bytes: int = 65_536
    max_id_bytes: int = 256
    history_sections: tuple[str, ...] = ("market_data", "account")
    history_interval_s: float = 1.0
    history_size: int = 1000
    history_downsample_s: float = 60.0
    history_downsampled_size: int = 1440
    events_kept: int = 100
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    demo: bool = True
    demo_symbols: int = 20
    demo_rate: float = 50.0
    demo_seed: int | None = None
    tui_interval_ms: int = 100
    web_interval_ms: int = 250
    min_interval_ms: int = 20
    max_interval_ms: int = 10_000
    interval_steps_ms: tuple[int, ...] = (20, 50, 100, 250, 500, 1000, 2000, 5000, 10_000)
    max_message_size: int = 65_536
    max_control_message_size: int = 4096
    max_control_elements: int = 256
    max_control_depth: int = 16
    write_buffer_high: int = 1_048_576
    write_buffer_low: int = 262_144
    lag_timeout_s: float = 10.0
    max_bad_messages: int = 10
    bad_message_window_s: float = 10.0
    ping_interval_s: float = 30.0
    ping_timeout_s: float = 30.0
    close_timeout_s: float = 5.0
    shutdown_grace_s: float = 0.0
    max_tombstones: int = 100_000
    max_pending_events: int = 10_000
    compression: bool = False
    auth_tokens: tuple[str, ...] = field(default=(), repr=False)
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_leeway_s: float = 30.0
    metrics_auth: bool = False
    allowed_origins: tuple[str, ...] = ()
    max_connections: int = 10_000
    max_connections_per_address: int = 1_000
    max_message_rate: float = 20.0
    message_burst: int = 40
    open_timeout_s: float = 10.0
    redis_cluster: str = "auto"
    redis_sharded_channels: tuple[str, ...] = ()
    replication_url: str | None = None
    replication_role: str = "edge"
    replication_partition: str = "main"
    replication_flush_ms: int = 20
    replication_lease_ms: int = 3000
    replication_checkpoint_s: float = 10.0
    workers: int = 1
    reuse_port: bool = False
    symbol_fields: tuple[tuple[str, str | None], ...] = DEFAULT_SYMBOL_FIELDS
    max_symbols: int = 100
    trusted_proxies: tuple[str, ...] = ()
    stale_after_s: float = 30.0
    stale_sections: tuple[str, ...] = ()
    strict_env: bool = False

    def stale_after(self) -> dict[str, float]:
        """Each section's staleness threshold (s): ``stale_after_s`` unless overridden in
        ``stale_sections`` (``section=seconds``; 0: never stale)."""
        limits = dict.fromkeys(self.sections, self.stale_after_s)
        for item in self.stale_sections:
            section, _, seconds = item.partition("=")
            limits[section.strip()] = float(seconds)
        return limits

    def tier_intervals(self) -> dict[str, int]:
        """The default interval of each tier, in milliseconds."""
        return {"tui": self.tui_interval_ms, "web": self.web_interval_ms}

    def allowed_intervals(self) -> tuple[int, ...]:
        """The intervals a client's ``interval_ms`` is rounded to: ``interval_steps_ms`` within
        [``min_interval_ms``, ``max_interval_ms``] and the tiers' intervals, sorted."""
        steps = {
            s for s in self.interval_steps_ms if self.min_interval_ms <= s <= self.max_interval_ms
        }
        return tuple(sorted(steps | {self.tui_interval_ms, self.web_interval_ms}))

    def replace(self, **changes: Any) -> Config:
        """A copy with some settings changed, validated again."""
        return _validate(dataclasses.replace(self, **changes), {k: "argument" for k in changes})


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its name, how a string turns into its value, and its help text."""

    name: str
    parse: Callable[[str], Any]
    help: str
    metavar: str

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        """The CLI flag that sets it."""
        return "--" + self.name.replace("_", "-")


def _int(text: str) -> int:
    return int(text.strip().replace("_", ""))


def _float(text: str) -> float:
    value = float(text.strip())
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true/false")


def _opt_str(text: str) -> str | None:
    return text.strip() or None


def _opt_int(text: str) -> int | None:
    return _int(text) if text.strip() else None


def _sections(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(","))


def _list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(_int(part) for part in text.split(",") if part.strip())


def _str(text: str) -> str:
    return text.strip()


def _auto_bool(text: str) -> str:
    lowered = text.strip().lower()
    return "auto" if lowered == "auto" else "true" if _bool(lowered) else "false"


SCALE_SETTINGS: Final[tuple[Setting, ...]] = (
    Setting(
        "redis_cluster",
        _auto_bool,
        "Redis Cluster client for redis_url: auto (detected at connect), true or false.",
        "AUTO|BOOL",
    ),
    Setting(
        "redis_sharded_channels",
        _list,
        "Comma-separated sharded pub/sub channels (SPUBLISH) to SSUBSCRIBE in cluster mode.",
        "LIST",
    ),
    Setting(
        "replication_url",
        _opt_str,
        "Redis holding the shared version space (stream, checkpoints, writer lease); unset: "
        "this instance is on its own.",
        "URL",
    ),
    Setting(
        "replication_role",
        _str,
        "With replication_url: edge (serves from the stream) or writer (also an ingest "
        "candidate: the lease holder reads the backends and writes the stream).",
        "ROLE",
    ),
    Setting(
        "replication_partition",
        _str,
        "Name of the shared version space (its Redis keys); instances with the same name share it.",
        "NAME",
    ),
    Setting("replication_flush_ms", _int, "The writer appends its changes this often (ms).", "MS"),
    Setting(
        "replication_lease_ms",
        _int,
        "Writer lease time to live (ms): a standby takes over at most about this long after "
        "the writer stops renewing it.",
        "MS",
    ),
    Setting(
        "replication_checkpoint_s",
        _float,
        "The writer stores a full checkpoint this often (s); the stream keeps the entries since "
        "the checkpoint before.",
        "S",
    ),
    Setting(
        "workers",
        _int,
        "serve: processes sharing the port (SO_REUSEPORT); above 1 needs replication_url.",
        "N",
    ),
    Setting("reuse_port", _bool, "Bind the port with SO_REUSEPORT (set by --workers).", "BOOL"),
)


def _symbol_fields(text: str) -> tuple[tuple[str, str | None], ...]:
    """``market_data,orders:symbol``: a bare name is keyed by symbol, ``name:field`` filtered
    by that field of its items (or events)."""
    out: list[tuple[str, str | None]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, fld = part.partition(":")
        if not name.strip() or (sep and not fld.strip()):
            raise ValueError(f"expected section or section:field, got {part!r}")
        out.append((name.strip(), fld.strip() if sep else None))
    return tuple(out)


SETTINGS: Final[tuple[Setting, ...]] = (
    Setting("host", _str, "Address to listen on.", "ADDR"),
    Setting("port", _int, "TCP port (0: any free port).", "PORT"),
    Setting("log_level", _str, f"Log level: {', '.join(LOG_LEVELS)}.", "LEVEL"),
    Setting(
        "engine", _opt_str, "Diff engine: native or pure (default native, pure fallback).", "NAME"
    ),
    Setting("redis_url", _opt_str, "Redis URL; unset: run the built-in demo feed.", "URL"),
    Setting(
        "sources",
        _opt_str,
        "Which backends feed the state: a preset (generic, b25) or, in the YAML file, a list of "
        "sources (docs/sources.md). Default: generic when redis_url is set.",
        "PRESET",
    ),
    Setting(
        "nats_url", _opt_str, "NATS server for the sources on NATS (unset: they are off).", "URL"
    ),
    Setting(
        "account_monitor_url",
        _opt_str,
        "Base URL of the account monitor's HTTP API (unset: its sources are off).",
        "URL",
    ),
    Setting(
        "strategy_engine_url",
        _opt_str,
        "Base URL of the strategy engine's HTTP API (unset: its sources are off).",
        "URL",
    ),
    Setting(
        "redis_reload_interval_s",
        _float,
        "Period of the safety-net reload of the state from Redis (0: only on reconnect).",
        "S",
    ),
    Setting("redis_health_interval_s", _float, "PING Redis this often (s).", "S"),
    Setting(
        "redis_health_timeout_s",
        _float,
        "A PING pending with nothing received (or any Redis socket operation) this long: stalled.",
        "S",
    ),
    Setting("redis_backoff_initial_s", _float, "First reconnect delay to Redis (s).", "S"),
    Setting("redis_backoff_max_s", _float, "Longest reconnect delay to Redis (s).", "S"),
    Setting(
        "max_item_bytes",
        _int,
        "Largest payload taken from a source (a source may set its own); larger: malformed.",
        "BYTES",
    ),
    Setting(
        "max_id_bytes",
        _int,
        "Longest key (item id, subject, URL) taken from a source (a source may set its own).",
        "BYTES",
    ),
    Setting(
        "history_sections",
        _list,
        "Comma-separated sections whose items' numeric fields are recorded (empty: none).",
        "LIST",
    ),
    Setting("history_interval_s", _float, "History sampling interval (s).", "S"),
    Setting("history_size", _int, "History points kept per series at the sampling interval.", "N"),
    Setting(
        "history_downsample_s",
        _float,
        "Bucket of the downsampled history tier: its first sample is kept (s).",
        "S",
    ),
    Setting(
        "history_downsampled_size",
        _int,
        "Downsampled points kept per series, older than the others (0: no such tier).",
        "N",
    ),
    Setting("events_kept", _int, "Recent events sent to a joining client (0: none).", "N"),
    Setting("sections", _sections, "Comma-separated state sections (the channels).", "LIST"),
    Setting("demo", _bool, "Run the demo feed when no Redis URL is set.", "BOOL"),
    Setting("demo_symbols", _int, "Symbols simulated by the demo feed.", "N"),
    Setting("demo_rate", _float, "Demo feed steps per second.", "N"),
    Setting("demo_seed", _opt_int, "Seed of the demo feed (unset: random).", "N"),
    Setting("tui_interval_ms", _int, "Flush interval of the tui tier (ms).", "MS"),
    Setting("web_interval_ms", _int, "Flush interval of the web tier (ms).", "MS"),
    Setting("min_interval_ms", _int, "Smallest interval_ms a client may ask for.", "MS"),
    Setting("max_interval_ms", _int, "Largest interval_ms a client may ask for.", "MS"),
    Setting(
        "interval_steps_ms",
        _int_list,
        "Comma-separated intervals a client's interval_ms is rounded to (with the tiers').",
        "LIST",
    ),
    Setting("max_message_size", _int, "Largest client message accepted (bytes).", "BYTES"),
    Setting(
        "max_control_message_size",
        _int,
        "Largest client control message decoded (bytes); larger: error message_too_large.",
        "BYTES",
    ),
    Setting(
        "max_control_elements",
        _int,
        "Most values (containers, keys, scalars) in one client message; more: error.",
        "N",
    ),
    Setting("max_control_depth", _int, "Deepest container nesting in one client message.", "N"),
    Setting(
        "write_buffer_high",
        _int,
        "Write-buffer high-water mark per connection: above it a client is skipped.",
        "BYTES",
    ),
    Setting(
        "write_buffer_low",
        _int,
        "Low-water mark: a skipped client at or below it rejoins with a snapshot.",
        "BYTES",
    ),
    Setting("lag_timeout_s", _float, "A client skipped this long is closed (code 4001).", "S"),
    Setting(
        "max_bad_messages",
        _int,
        "Unusable client messages tolerated per window before closing (code 4002).",
        "N",
    ),
    Setting("bad_message_window_s", _float, "Window for max_bad_messages (s).", "S"),
    Setting("ping_interval_s", _float, "WebSocket keepalive ping interval (0: off).", "S"),
    Setting("ping_timeout_s", _float, "Close a peer that does not answer a ping in time.", "S"),
    Setting("close_timeout_s", _float, "Wait this long for a closing handshake, then abort.", "S"),
    Setting(
        "shutdown_grace_s",
        _float,
        "On SIGTERM, answer health 503 this long before closing clients.",
        "S",
    ),
    Setting("max_tombstones", _int, "Removals remembered for resume (the horizon).", "N"),
    Setting("max_pending_events", _int, "Events kept between flushes before dropping.", "N"),
    Setting(
        "compression",
        _bool,
        "permessage-deflate, without context takeover: one compression per group and message.",
        "BOOL",
    ),
    Setting(
        "auth_tokens",
        _list,
        "Comma-separated static bearer tokens (16+ characters); with jwt_secret, setting "
        "either turns authentication on.",
        "LIST",
    ),
    Setting("jwt_secret", _opt_str, "HS256 secret of accepted JWTs (32+ bytes).", "SECRET"),
    Setting("jwt_leeway_s", _float, "Clock skew tolerated on JWT exp/nbf (s).", "S"),
    Setting("metrics_auth", _bool, "Require a token with the metrics scope on /metrics.", "BOOL"),
    Setting(
        "allowed_origins",
        _list,
        "Comma-separated exact Origin allow-list for /ws (unset: any origin).",
        "LIST",
    ),
    Setting("max_connections", _int, "WebSocket connections in all (more: 503).", "N"),
    Setting(
        "max_connections_per_address",
        _int,
        "WebSocket connections per client address (more: 429).",
        "N",
    ),
    Setting(
        "max_message_rate",
        _float,
        "Client messages per second per connection, sustained (faster: close 4029).",
        "N",
    ),
    Setting("message_burst", _int, "Client messages a connection may send at once.", "N"),
    Setting("open_timeout_s", _float, "Time allowed for a whole opening handshake (s).", "S"),
    *SCALE_SETTINGS,
    Setting(
        "symbol_fields",
        _symbol_fields,
        "Where a symbol filter looks, comma-separated: a section keyed by symbol (market_data), "
        "or section:field / event channel:field (orders:symbol); others are not filtered.",
        "LIST",
    ),
    Setting("max_symbols", _int, "Symbols a client's filter may hold (symbols=).", "N"),
    Setting(
        "trusted_proxies",
        _list,
        "Comma-separated proxy addresses or CIDR networks whose X-Forwarded-For / Forwarded "
        "headers give the client's address (unset: none trusted).",
        "LIST",
    ),
    Setting(
        "stale_after_s",
        _float,
        "A section with no update for this long is reported stale to clients (0: never).",
        "S",
    ),
    Setting(
        "stale_sections",
        _list,
        "Comma-separated per-section overrides of stale_after_s, as section=seconds.",
        "LIST",
    ),
    Setting(
        "strict_env",
        _bool,
        "Refuse to start when a DASHBOARD_* variable is not a setting (default: warn).",
        "BOOL",
    ),
)
_BY_NAME: Final = {s.name: s for s in SETTINGS}
_BY_ENV: Final = {s.env: s for s in SETTINGS}


def unknown_env(env: Mapping[str, str]) -> list[str]:
    """One message per ``DASHBOARD_*`` variable of ``env`` that is no setting, naming the
    closest setting's variable when there is a likely one (a typo)."""
    known = [s.env for s in SETTINGS]
    messages = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in _BY_ENV or name in EXTRA_ENV:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        messages.append(f"unknown variable {name}{hint}")
    return messages


def security_warnings(config: Config) -> list[str]:
    """What an operator should hear about at start: a listener beyond loopback without auth."""
    warnings = []
    if not (config.auth_tokens or config.jwt_secret) and not _is_loopback(config.host):
        warnings.append(
            f"listening on {config.host} with authentication off: anyone who can reach the "
            "port reads the state (set auth_tokens or jwt_secret, docs/security.md)"
        )
    return warnings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_config(
    *,
    cli: Mapping[str, str | None] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
    warnings: list[str] | None = None,
) -> Config:
    """Merge defaults, the YAML file, the environment and CLI values, then validate.

    ``cli`` maps setting names to the strings given as flags (``None``: not given); ``env``
    defaults to ``os.environ``; ``config_file`` defaults to ``$DASHBOARD_CONFIG``.
    ``DASHBOARD_*`` variables that are no setting are reported: appended to ``warnings`` when
    given, else logged; with ``strict_env`` on they raise :class:`ConfigError` instead.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    path = config_file if config_file is not None else env.get(CONFIG_ENV) or None
    if path is not None:
        for name, raw in _read_file(Path(path)).items():
            values[name] = _from_file(name, raw, path)
            sources[name] = f"{name} in {path}"
    for setting in SETTINGS:
        if setting.env in env:
            values[setting.name] = _parse(setting, env[setting.env], setting.env)
            sources[setting.name] = setting.env
    for name, text in (cli or {}).items():
        if text is None:
            continue
        setting = _BY_NAME[name]
        values[name] = _parse(setting, text, setting.flag)
        sources[name] = setting.flag
    config = _validate(Config(**values), sources)
    unknown = unknown_env(env)
    if unknown and config.strict_env:
        where = sources.get("strict_env", "strict_env")
        raise ConfigError(f"{where}: refusing to start: {'; '.join(unknown)}")
    if warnings is not None:
        warnings.extend(unknown)
    else:
        for message in unknown:
            log.warning("%s: ignored", message)
    return config


def _read_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: invalid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings")
    for key in loaded:
        if key not in _BY_NAME:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
    return loaded


def _from_file(name: str, raw: Any, path: str | Path) -> Any:
    where = f"{name} in {path}"
    if name == "sources" and isinstance(raw, list):
        return tuple(raw)  # a list of source definitions: validated with the other settings
    if name in (
        "sections",
        "auth_tokens",
        "allowed_origins",
        "history_sections",
        "redis_sharded_channels",
        "trusted_proxies",
        "stale_sections",
    ) and isinstance(raw, list):
        if not all(isinstance(item, str) for item in raw):
            raise ConfigError(f"{where}: expected a list of strings")
        return tuple(raw)
    if _BY_NAME[name].parse is _int_list and isinstance(raw, list):
        if not all(isinstance(item, int) and not isinstance(item, bool) for item in raw):
            raise ConfigError(f"{where}: expected a list of integers")
        return tuple(raw)
    if name == "symbol_fields" and isinstance(raw, dict):
        pairs: list[tuple[str, str | None]] = []
        for key, value in raw.items():
            if not isinstance(key, str) or not (value is None or isinstance(value, str)):
                raise ConfigError(f"{where}: expected a mapping of names to a field name or null")
            pairs.append((key, value or None))
        return tuple(pairs)
    if raw is None:
        return None
    if isinstance(raw, bool) and _BY_NAME[name].parse is not _bool:
        raise ConfigError(f"{where}: invalid value {raw!r}")
    return _parse(_BY_NAME[name], str(raw).lower() if isinstance(raw, bool) else str(raw), where)


def _parse(setting: Setting, text: str, where: str) -> Any:
    try:
        return setting.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: invalid value {text!r} ({exc})") from None


def _validate_redis_and_history(
    config: Config, history_given: bool, fail: Callable[[str, str], ConfigError]
) -> None:
    """The rules of the Redis ingest and history settings (the default ``history_sections``
    may name a section that is not configured: it is then just not recorded)."""
    for name in (
        "redis_health_interval_s",
        "redis_health_timeout_s",
        "redis_backoff_initial_s",
        "redis_backoff_max_s",
        "max_item_bytes",
        "max_id_bytes",
        "history_size",
    ):
        if getattr(config, name) <= 0:
            raise fail(name, f"must be > 0, got {getattr(config, name)}")
    for name in (
        "redis_reload_interval_s",
        "events_kept",
        "stale_after_s",
        "history_downsampled_size",
    ):
        if getattr(config, name) < 0:
            raise fail(name, f"must be >= 0, got {getattr(config, name)}")
    if config.history_interval_s < 0.001:
        raise fail("history_interval_s", f"must be >= 0.001, got {config.history_interval_s}")
    if config.history_downsample_s < config.history_interval_s:
        raise fail("history_downsample_s", "must not be below history_interval_s")
    url = config.redis_url
    if url is not None and "://" not in url and not _HOST_PORT.fullmatch(url):
        raise fail(
            "redis_url", "expected redis://host:port/db, rediss://..., unix://... or host:port"
        )
    if config.redis_backoff_initial_s > config.redis_backoff_max_s:
        raise fail("redis_backoff_initial_s", "must not exceed redis_backoff_max_s")
    for section in config.history_sections if history_given else ():
        if section not in config.sections:
            raise fail("history_sections", f"{section!r} is not one of the sections")


def _validate(config: Config, sources: Mapping[str, str]) -> Config:
    def fail(name: str, problem: str) -> ConfigError:
        return ConfigError(f"{sources.get(name, name)}: {problem}")

    for setting in SETTINGS:
        value = getattr(config, setting.name)
        if value is None and setting.parse not in (_opt_str, _opt_int):
            raise fail(setting.name, "must be set")
    if not 0 <= config.port <= 65535:
        raise fail("port", f"must be between 0 and 65535, got {config.port}")
    if not config.host:
        raise fail("host", "must not be empty")
    if config.log_level.lower() not in LOG_LEVELS:
        raise fail(
            "log_level", f"expected one of {', '.join(LOG_LEVELS)}, got {config.log_level!r}"
        )
    if config.engine is not None and config.engine not in ("native", "pure"):
        raise fail("engine", f"expected native or pure, got {config.engine!r}")
    if not config.sections:
        raise fail("sections", "must name at least one section")
    for section in config.sections:
        if not section or "/" in section or "~" in section or "," in section:
            raise fail("sections", f"invalid section name {section!r}")
        if section == "events":
            raise fail("sections", "'events' is reserved for the events channel")
    if len(set(config.sections)) != len(config.sections):
        raise fail("sections", "duplicate section name")
    positive = (
        "demo_symbols",
        "tui_interval_ms",
        "web_interval_ms",
        "min_interval_ms",
        "max_interval_ms",
        "max_message_size",
        "max_control_message_size",
        "max_control_elements",
        "max_control_depth",
        "write_buffer_high",
        "max_bad_messages",
        "max_tombstones",
        "max_pending_events",
        "max_connections",
        "max_connections_per_address",
        "message_burst",
        "max_symbols",
    )
    for name in positive:
        if getattr(config, name) <= 0:
            raise fail(name, f"must be > 0, got {getattr(config, name)}")
    for name in (
        "demo_rate",
        "lag_timeout_s",
        "bad_message_window_s",
        "close_timeout_s",
        "max_message_rate",
        "open_timeout_s",
    ):
        if getattr(config, name) <= 0:
            raise fail(name, f"must be > 0, got {getattr(config, name)}")
    for name in (
        "ping_interval_s",
        "ping_timeout_s",
        "shutdown_grace_s",
        "write_buffer_low",
        "jwt_leeway_s",
    ):
        if getattr(config, name) < 0:
            raise fail(name, f"must be >= 0, got {getattr(config, name)}")
    _validate_redis_and_history(config, "history_sections" in sources, fail)
    if config.min_interval_ms > config.max_interval_ms:
        raise fail("min_interval_ms", "must not exceed max_interval_ms")
    if not config.interval_steps_ms or min(config.interval_steps_ms) <= 0:
        raise fail("interval_steps_ms", "must list at least one interval, each > 0")
    if config.write_buffer_low >= config.write_buffer_high:
        raise fail("write_buffer_low", "must be below write_buffer_high")
    _validate_security(config, fail)
    _validate_scale(config, fail)
    config = dataclasses.replace(config, redis_url=_redis_url(config.redis_url))
    config = _resolve_sources(config, "sections" in sources, fail)
    names = [name for name, _ in config.symbol_fields]
    if len(set(names)) != len(names):
        raise fail("symbol_fields", "a name is given more than once")
    for name, fld in config.symbol_fields:
        if fld is None and name not in config.sections and "symbol_fields" in sources:
            raise fail("symbol_fields", f"{name!r} is keyed by symbol but is not a section")
    _validate_staleness(config, fail)
    return dataclasses.replace(config, log_level=config.log_level.lower())


_TOKEN_CHARS: Final = re.compile(r"[A-Za-z0-9._~+/-]+=*")
"""RFC 6750 ``b64token``: the same as ``dashboard_server.server.auth.TOKEN_CHARS``."""


def _validate_staleness(config: Config, fail: Callable[[str, str], ConfigError]) -> None:
    """``stale_sections``: ``section=seconds`` for sections of the final list (a preset's)."""
    for item in config.stale_sections:
        section, eq, seconds = item.partition("=")
        try:
            ok = bool(eq) and section.strip() in config.sections and _float(seconds) >= 0
        except ValueError:
            ok = False
        if not ok:
            raise fail(
                "stale_sections",
                f"expected section=seconds with a configured section, got {item!r}",
            )


_HOST_PORT: Final = re.compile(
    r"(?P<host>\[[0-9a-fA-F:.]+\]|[^:/\s\[\]]+)(?::(?P<port>\d{1,5}))?(?:/(?P<db>\d+))?"
)


def _redis_url(url: str | None) -> str | None:
    """``host:port`` (the form of the original service), ``host`` or ``host:port/db`` as a
    ``redis://`` URL (database 0 unless given); a URL with a scheme is kept as it is."""
    if url is None or "://" in url:
        return url
    match = _HOST_PORT.fullmatch(url)
    assert match is not None  # checked by _validate_redis_and_history
    return f"redis://{match['host']}:{match['port'] or 6379}/{match['db'] or 0}"


def _resolve_sources(
    config: Config, sections_given: bool, fail: Callable[[str, str], ConfigError]
) -> Config:
    """Validate ``sources``; a preset brings its own sections unless ``sections`` was given."""
    if isinstance(config.sources, str) and not sections_given:
        try:
            preset_sections, _ = load_preset(config.sources)
        except SourceError as exc:
            raise fail("sources", str(exc)) from None
        if preset_sections is not None:
            config = dataclasses.replace(config, sections=preset_sections)
    try:
        source_specs(config)
    except SourceError as exc:
        raise fail("sources", str(exc)) from None
    return config


def source_specs(config: Config) -> tuple[Source, ...]:
    """The sources of a validated config: its list, or its preset's (``generic`` when only
    ``redis_url`` is set); none when the demo feed runs."""
    chosen = config.sources
    if chosen is None and config.redis_url is None:
        return ()
    if isinstance(chosen, tuple):
        raw = list(chosen)
    else:
        _, raw = load_preset(chosen or "generic")
        raw = raw or generic_sources(config.sections)
    return parse_sources(raw, config.sections)


def endpoint_url(config: Config, endpoint: str) -> str | None:
    """The URL of a source's endpoint (``redis``, ``nats``, ...) from the settings."""
    url: str | None = getattr(config, f"{endpoint}_url")
    return url


_PARTITION: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _validate_scale(config: Config, fail: Callable[[str, str], ConfigError]) -> None:
    """The rules of the cluster, replication and worker settings."""
    if config.replication_role not in ("edge", "writer"):
        raise fail("replication_role", f"expected edge or writer, got {config.replication_role!r}")
    if not _PARTITION.fullmatch(config.replication_partition):
        raise fail("replication_partition", "expected 1-64 of A-Z a-z 0-9 _ . -")
    for name in ("replication_flush_ms", "replication_lease_ms", "workers"):
        if getattr(config, name) <= 0:
            raise fail(name, f"must be > 0, got {getattr(config, name)}")
    if config.replication_checkpoint_s <= 0:
        raise fail(
            "replication_checkpoint_s", f"must be > 0, got {config.replication_checkpoint_s}"
        )
    if config.workers > 1 and config.replication_url is None:
        raise fail("workers", "more than 1 needs replication_url (one version space)")
    if config.workers > 1 and config.port == 0:
        raise fail("workers", "more than 1 needs a fixed port")


_ORIGIN: Final = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s?#]+")


def _validate_security(config: Config, fail: Callable[[str, str], ConfigError]) -> None:
    """The rules of the auth, origin and limit settings (never echoing a secret)."""
    for name, secrets in (
        ("auth_tokens", config.auth_tokens),
        ("jwt_secret", (config.jwt_secret,)),
    ):
        if any(s is not None and s.lower().startswith(PLACEHOLDER_TOKEN) for s in secrets):
            raise fail(
                name,
                f"still the placeholder shipped in deploy/ ({PLACEHOLDER_TOKEN}...): replace it "
                "with a long random secret, e.g. `python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`",
            )
    for token in config.auth_tokens:
        if len(token) < 16 or not _TOKEN_CHARS.fullmatch(token):
            raise fail(
                "auth_tokens",
                "each token needs 16+ characters among A-Z a-z 0-9 - . _ ~ + / "
                "(then optional = padding)",
            )
    if config.jwt_secret is not None and len(config.jwt_secret.encode()) < 32:
        raise fail("jwt_secret", "must be at least 32 bytes (HS256 key size)")
    if config.metrics_auth and not (config.auth_tokens or config.jwt_secret):
        raise fail("metrics_auth", "needs auth_tokens or jwt_secret")
    for origin in config.allowed_origins:
        if origin != "null" and not _ORIGIN.fullmatch(origin):
            raise fail(
                "allowed_origins",
                f"expected scheme://host[:port] (no path, no trailing slash) or null, "
                f"got {origin!r}",
            )
    for proxy in config.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise fail(
                "trusted_proxies", f"expected an IP address or CIDR network, got {proxy!r}"
            ) from None
