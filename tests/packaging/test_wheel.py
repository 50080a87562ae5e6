"""The release wheel and the sdist: what they contain, and the wheel installed into a fresh venv
with nothing else, then run as an operator would (``--version``, ``serve``, ``/``, ``/health``,
``/metrics``, a WebSocket client, SIGTERM).

The wheel is built here by maturin, like ``make wheel`` does, with the release build cached in
``target/wheel`` (apart from ``make build``'s ``target/``). The clean install needs PyPI for the
runtime dependencies; it is skipped, saying so, only when PyPI cannot be reached.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from pkgtools import BUILD_PYTHON, ROOT, clean_env, http_get, pyproject, serve, tool

pytestmark = pytest.mark.slow

WHEEL_TARGET = ROOT / "target" / "wheel"
SDIST_TARGET = ROOT / "target" / "sdist"
PROJECT = pyproject()["project"]
VERSION = PROJECT["version"]


def maturin() -> str:
    found = tool("maturin")
    if found is None:
        pytest.fail("maturin is missing: `make venv` installs it")
    return found


def run(cmd: list[str], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    assert result.returncode == 0, (
        f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run(
        [
            maturin(),
            "build",
            "--release",
            "--interpreter",
            BUILD_PYTHON,
            "--out",
            str(out),
            "--target-dir",
            str(WHEEL_TARGET),
        ],
        timeout=900,
        cwd=ROOT,
    )
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    run([maturin(), "sdist", "--out", str(out)], timeout=300, cwd=ROOT)
    (built,) = out.glob("*.tar.gz")
    return built


def wheel_names(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as whl:
        return set(whl.namelist())


def test_wheel_holds_the_package_the_extension_and_the_web_files(wheel: Path) -> None:
    # Tag: CPython >= 3.11 (abi3) or the version of the interpreter that built it.
    assert re.fullmatch(
        rf"dashboard_server-{re.escape(VERSION)}-cp3\d+-(abi3|cp3\d+)-"
        r"(manylinux|musllinux|linux)_\w+\.whl",
        wheel.name,
    ), wheel.name
    names = wheel_names(wheel)
    extensions = [n for n in names if n.endswith((".so", ".pyd"))]
    assert len(extensions) == 1 and extensions[0].startswith("dashboard_server/_fastdiff."), (
        extensions
    )
    package = {n for n in names if n.startswith("dashboard_server/")}
    sources = {
        "dashboard_server/" + p.relative_to(ROOT / "python" / "dashboard_server").as_posix()
        for p in (ROOT / "python" / "dashboard_server").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".so", ".pyc")
    }
    assert sources <= package, f"missing from the wheel: {sorted(sources - package)}"
    for required in ("__init__.py", "cli.py", "py.typed", "server/web/index.html"):
        assert "dashboard_server/" + required in names
    assert not [n for n in names if n.startswith(("tests/", "benches/", "rust/"))]
    with zipfile.ZipFile(wheel) as whl:
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(whl.read(metadata_name).decode())
        (entry_points_name,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = whl.read(entry_points_name).decode()
    assert metadata["Name"] == "dashboard-server" and metadata["Version"] == VERSION
    assert metadata["Requires-Python"] == PROJECT["requires-python"]
    requires = metadata.get_all("Requires-Dist") or []
    for dependency in PROJECT["dependencies"]:
        name = re.split(r"[<>=!~ \[;]", dependency)[0].lower()
        assert any(r.lower().startswith(name) and "extra ==" not in r for r in requires), name
    assert "dashboard-server=dashboard_server.cli:main" in entry_points.replace(" ", "")


def test_sdist_builds_a_wheel_with_the_same_files(sdist: Path, wheel: Path, tmp_path: Path) -> None:
    assert sdist.name == f"dashboard_server-{VERSION}.tar.gz"
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
        for required in ("pyproject.toml", "Cargo.toml", "Cargo.lock", "rust/lib.rs", "README.md"):
            assert required in members, f"{required} is missing from the sdist"
        tar.extractall(tmp_path, filter="data")
    (unpacked,) = tmp_path.iterdir()
    out = tmp_path / "out"
    # A debug build is enough to show that the sdist is complete (and much faster).
    run(
        [
            maturin(),
            "build",
            "--interpreter",
            BUILD_PYTHON,
            "--out",
            str(out),
            "--target-dir",
            str(SDIST_TARGET),
        ],
        timeout=900,
        cwd=unpacked,
    )
    (rebuilt,) = out.glob("*.whl")
    assert wheel_names(rebuilt) == wheel_names(wheel)


def pypi_reachable(python: Path, scratch: Path) -> str | None:
    """None if pip can download from the package index, else why not."""
    probe = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--timeout",
            "15",
            "--retries",
            "1",
            "--dest",
            str(scratch),
            "six",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if probe.returncode == 0:
        return None
    return (probe.stderr.strip().splitlines() or ["pip download failed"])[-1]


def test_wheel_installs_into_a_clean_venv_and_serves(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run([BUILD_PYTHON, "-m", "venv", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    why = pypi_reachable(python, tmp_path / "probe")
    if why is not None:
        pytest.skip(f"no network access to the package index (pip download failed: {why})")
    run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", str(wheel)],
        timeout=600,
        env=clean_env(),
    )
    script = venv / "bin" / "dashboard-server"
    elsewhere = tmp_path / "cwd"  # not the source tree: nothing may come from it
    elsewhere.mkdir()
    env = clean_env()

    result = run([str(script), "--version"], timeout=60, env=env, cwd=elsewhere)
    assert result.stdout.strip() == f"dashboard-server {VERSION}"
    result = run(
        [
            str(python),
            "-c",
            "import dashboard_server, dashboard_server._fastdiff as f; "
            "print(dashboard_server.__file__); print(f.__file__)",
        ],
        timeout=60,
        env=env,
        cwd=elsewhere,
    )
    for line in result.stdout.split():
        assert Path(line).is_relative_to(venv), f"imported from outside the venv: {line}"

    with serve([str(script)], env=env, cwd=elsewhere) as server:
        status, headers, body = http_get(server.url("/"))
        assert status == 200 and headers["content-type"].startswith("text/html")
        assets = re.findall(rb'(?:src|href)="/?([\w./-]+\.(?:js|css))"', body)
        assert assets, "the page references no script or style sheet"
        for asset in assets:
            status, _, content = http_get(server.url("/" + asset.decode()))
            assert status == 200 and content, asset
        status, headers, body = http_get(server.url("/health"))
        assert status == 200 and headers["content-type"].startswith("application/json")
        health = json.loads(body)
        assert health["status"] == "ok" and health["engine"] == "native"
        assert health["feed"] == "demo"
        status, headers, body = http_get(server.url("/metrics"))
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert b"# TYPE dashboard_connected_clients gauge" in body
        # A client of the installed package receives the snapshot and live updates.
        client = run(
            [
                str(python),
                "-c",
                "import asyncio, sys\n"
                "from dashboard_server.client.connection import DashboardClient\n"
                "async def main():\n"
                "    async with DashboardClient(sys.argv[1], reconnect=False) as c:\n"
                "        await c.wait_for(lambda c: c.state.updates >= 2, timeout=15)\n"
                "        print(sorted(c.data))\n"
                "asyncio.run(main())\n",
                f"ws://127.0.0.1:{server.port}/ws",
            ],
            timeout=60,
            env=env,
            cwd=elsewhere,
        )
        assert "market_data" in client.stdout
        assert server.stop() == 0
    assert any(entry.get("msg") == "listening" for entry in server.log)
