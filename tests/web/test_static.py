"""``dashboard_server.server.web.static_response``: the packaged files, content types, and nothing
else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import webtools  # noqa: F401 - puts the source tree on sys.path when the package is not installed

from dashboard_server.server.web import CONTENT_TYPES, static_files, static_response

WEB = Path(__file__).resolve().parents[2] / "python" / "dashboard_server" / "server" / "web"


def test_index_and_files() -> None:
    index = static_response("/")
    assert index is not None
    assert index[:2] == (200, "text/html; charset=utf-8")
    assert index == static_response("/index.html") == static_response("/?ws=ws://x/ws")
    assert b'<script type="module" src="app.js">' in index[2]
    expected = {
        "index.html",
        "app.js",
        "charts.js",
        "tables.js",
        "dashboard-protocol.js",
        "msgpack.js",
        "style.css",
    }
    assert expected <= set(static_files())
    for name in static_files():
        found = static_response(f"/{name}")
        assert found is not None, name
        status, ctype, body = found
        assert status == 200 and body == (WEB / name).read_bytes()
        assert ctype == CONTENT_TYPES[Path(name).suffix]
    assert static_response("/app.js")[1] == "text/javascript; charset=utf-8"  # type: ignore[index]
    assert static_response("/style.css")[1] == "text/css; charset=utf-8"  # type: ignore[index]


@pytest.mark.parametrize(
    "path",
    [
        "/nope.js", "/__init__.py", "/../__init__.py", "/..%2f__init__.py", "/%2e%2e/cli.py",
        "/..", "/.hidden.js", "//etc/passwd", "/web/app.js", "/app.js/", "/APP.JS/../x",
        "/index.html%00.js", "/..\\__init__.py", "relative.js", "", "/ws", "/health",
        "/__pycache__/x.js", "/app.js%2f..%2f..%2fserver.py",
    ],
)  # fmt: skip
def test_unknown_or_hostile_paths_are_none(path: str) -> None:
    assert static_response(path) is None


def test_only_local_resources() -> None:
    """No CDN, no network: every URL the page loads is a relative file that is served."""
    for name in static_files():
        text = (WEB / name).read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']https?:""", text), name
        assert not re.search(r"""import[^;]*from\s*["']https?:""", text), name
        assert "@import" not in text and "url(http" not in text, name
    html = (WEB / "index.html").read_text()
    for ref in re.findall(r"""(?:src|href)="([^"]+)\"""", html):
        if not ref.startswith("data:"):
            assert static_response(f"/{ref}") is not None, ref
    for js in ("app.js", "charts.js", "tables.js", "dashboard-protocol.js"):
        for ref in re.findall(r"""from\s+"\./([^"]+)\"""", (WEB / js).read_text()):
            assert static_response(f"/{ref}") is not None, ref
