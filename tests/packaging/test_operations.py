"""The operations files against a real server: ``promtool check metrics`` on ``/metrics``, the
Prometheus config and alert rules (``promtool check``/``test rules``), the Grafana dashboard
covering every metric family ``/metrics`` exposes, and the systemd unit.

promtool comes from the Debian package ``prometheus`` (``make system-deps`` installs it); the
tests that need it skip, saying so, only when it cannot be found.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkgtools import (
    ROOT,
    exercise_websocket,
    http_get,
    metric_families,
    pyproject,
    sample_names,
    serve,
    source_command,
    source_env,
    tool,
    wait_for,
)

from dashboard_server.config import SETTINGS, ConfigError, load_config

DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana" / "dashboard-server.json"
UNIT = DEPLOY / "systemd" / "dashboard-server.service"
ENV_FILE = DEPLOY / "systemd" / "dashboard-server.env"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not found (Debian package prometheus; `make system-deps`)")
    return found


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def expositions() -> Iterator[dict[str, str]]:
    """``/metrics`` of a server with the demo feed and clients, and of one whose Redis is down
    (so the Redis metrics are there too)."""
    found = {}
    env = source_env()
    with serve(source_command(), "--demo-rate", "200", env=env) as server:
        exercise_websocket(server.port)
        status, headers, body = http_get(server.url("/metrics"))
        assert status == 200 and headers["content-type"].startswith("text/plain")
        found["demo"] = body.decode()
        assert server.stop() == 0
    redis_url = f"redis://127.0.0.1:{closed_port()}/0"
    with serve(source_command(), "--redis-url", redis_url, env=env) as server:
        # Past the first connection attempt (a SIGTERM during it can leave the server running:
        # reported to the Redis ingest's owner), and with the Redis metrics set.
        wait_for(
            lambda: json.loads(http_get(server.url("/health"))[2])["redis"] == "down",
            what="redis: down in /health",
        )
        status, _, body = http_get(server.url("/metrics"))
        assert status == 200
        found["redis"] = body.decode()
        assert server.stop() == 0
    yield found


def test_exposition_has_samples_of_labelled_metrics(expositions: dict[str, str]) -> None:
    demo = expositions["demo"]
    assert re.search(
        r'^dashboard_messages_sent_total\{client_type="tui",message_type="snapshot"\} [1-9]',
        demo,
        re.M,
    )
    assert re.search(r'^dashboard_message_size_bytes_bucket\{format="json",', demo, re.M)
    assert "# TYPE dashboard_redis_connected gauge" in expositions["redis"]


SEED_FAMILIES = {
    # the original service's metric families: name -> (type, labels), exactly
    "dashboard_connected_clients": ("gauge", {"client_type"}),
    "dashboard_messages_sent_total": ("counter", {"client_type", "message_type"}),
    "dashboard_messages_received_total": ("counter", {"message_type"}),
    "dashboard_broadcast_latency_seconds": ("histogram", {"client_type"}),
    "dashboard_serialization_duration_seconds": ("histogram", {"format"}),
    "dashboard_message_size_bytes": ("histogram", {"format", "message_type"}),
    "dashboard_client_subscriptions": ("gauge", {"channel"}),
    "dashboard_active_connections": ("gauge", set()),
}


def sample_labels(exposition: str, family: str) -> set[frozenset[str]]:
    """The label-name sets of a family's samples (``le`` left out)."""
    found = set()
    for m in re.finditer(rf"^{family}(?:_bucket|_sum|_count)?(?:\{{(.*?)\}})? ", exposition, re.M):
        names = {pair.split("=", 1)[0] for pair in (m.group(1) or "").split(",") if pair}
        found.add(frozenset(names - {"le"}))
    return found


def test_the_original_services_metric_families_keep_their_names_and_labels(
    expositions: dict[str, str],
) -> None:
    demo = expositions["demo"]
    families = metric_families(demo)
    for family, (kind, labels) in SEED_FAMILIES.items():
        assert families.get(family) == kind, family
        assert sample_labels(demo, family) == {frozenset(labels)}, family
    for family in (
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "python_info",
    ):
        assert re.search(rf"^{family}(\{{.*\}})? ", demo, re.M), family
    assert re.search(
        r'^dashboard_build_info\{engine="\w+",python="[\d.]+",version="[^"]+"\} 1', demo, re.M
    )
    assert "_created" not in demo


@pytest.mark.parametrize("which", ["demo", "redis"])
def test_promtool_check_metrics_passes(
    promtool: str, expositions: dict[str, str], which: str
) -> None:
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=expositions[which],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def promtool_ok(promtool: str, *args: str) -> str:
    result = subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False, cwd=PROMETHEUS
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_prometheus_config_and_alert_rules_are_valid(promtool: str) -> None:
    assert "SUCCESS" in promtool_ok(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS" in promtool_ok(promtool, "check", "rules", "alerts.yml")


def test_alert_rules_unit_tests_pass(promtool: str) -> None:
    assert "SUCCESS" in promtool_ok(promtool, "test", "rules", "alerts.test.yml")


METRIC_NAME = re.compile(r"\b((?:dashboard|process)_[a-z0-9_]+)\b")
CHARTED = ("dashboard_", "process_")
"""The families the Grafana dashboard must chart (``python_*``: platform and GC details)."""


def exposed_samples(expositions: dict[str, str]) -> dict[str, set[str]]:
    """Every metric family of every exposition -> the sample names it allows in PromQL."""
    families: dict[str, set[str]] = {}
    for text in expositions.values():
        for family, kind in metric_families(text).items():
            families[family] = sample_names(family, kind)
    return families


def grafana_expressions() -> list[str]:
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    exprs = []
    ids = []
    for panel in dashboard["panels"]:
        ids.append(panel["id"])
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    return exprs


def test_grafana_dashboard_charts_every_metric_family(expositions: dict[str, str]) -> None:
    families = exposed_samples(expositions)
    used = {name for expr in grafana_expressions() for name in METRIC_NAME.findall(expr)}
    allowed = set().union(*families.values())
    unknown = used - allowed
    assert not unknown, f"the Grafana dashboard uses metrics /metrics does not expose: {unknown}"
    uncharted = {
        f for f, samples in families.items() if f.startswith(CHARTED) and not samples & used
    }
    assert not uncharted, (
        f"metric families without a panel in {GRAFANA.relative_to(ROOT)}: {sorted(uncharted)}"
    )


def test_alert_rules_use_only_exposed_metrics(expositions: dict[str, str]) -> None:
    allowed = set().union(*exposed_samples(expositions).values())
    text = (PROMETHEUS / "alerts.yml").read_text()
    exprs = re.findall(r"^\s+expr: (?:>\n)?((?:.*\n)+?)(?=\s+(?:for|labels):)", text, re.M)
    assert len(exprs) == text.count("- alert:")
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert used and not used - allowed, used - allowed


def test_systemd_unit_verifies_and_its_environment_file_names_real_settings(
    tmp_path: Path,
) -> None:
    settings = {s.env for s in SETTINGS} | {"DASHBOARD_CONFIG"}
    values = dict(
        line.split("=", 1)
        for line in ENV_FILE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert values and not set(values) - settings, set(values) - settings
    with pytest.raises(ConfigError, match="placeholder"):  # refused until it is replaced
        load_config(env=values)
    load_config(env=values | {"DASHBOARD_AUTH_TOKENS": "x" * 32})  # every other value is valid
    unit = UNIT.read_text()
    assert re.search(r"^ExecStart=\S+/dashboard-server serve$", unit, re.M)
    analyze = shutil.which("systemd-analyze")
    script = tool("dashboard-server")
    if analyze is None or script is None:
        pytest.skip("systemd-analyze or an installed dashboard-server script is missing")
    # Verify a copy that points at this machine's script and environment file.
    local = tmp_path / "dashboard-server.service"
    local.write_text(
        re.sub(r"^ExecStart=\S+", f"ExecStart={script}", unit, flags=re.M).replace(
            "EnvironmentFile=/etc/dashboard-server/dashboard-server.env",
            f"EnvironmentFile={ENV_FILE}",
        )
    )
    result = subprocess.run(
        [analyze, "verify", str(local)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stdout + result.stderr


def test_changelog_has_an_entry_for_the_package_version() -> None:
    version = pyproject()["project"]["version"]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(version)}\]", changelog, re.M), version


def test_operations_doc_refers_to_files_that_exist() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    paths = set(re.findall(r"`((?:deploy|docs|tests/packaging)/[\w./-]+)`", text))
    paths |= {"docs/" + p for p in re.findall(r"\b([a-z]+\.md)\b", text) if p != "operations.md"}
    paths.discard("docs/CHANGELOG.md")
    assert len(paths) > 5
    for name in sorted(paths):
        if name == "docs/performance.md" and not (ROOT / name).exists():
            continue  # written by the load-test issue; referenced ahead of it
        assert (ROOT / name).exists(), f"docs/operations.md refers to {name}, which is missing"
    for deployed in DEPLOY.rglob("*"):
        if deployed.is_file():
            assert deployed.name in text, f"docs/operations.md does not mention {deployed.name}"
