"""The web dashboard: static files shipped inside the package, served on ``/``.

:func:`static_response` maps a request path to one of the files of this package directory
(read with :mod:`importlib.resources`, so it works from a wheel or a zip), or to ``None`` when
the path names no file here. Only plain file names made of ``[A-Za-z0-9._-]`` with a known
extension are served, so nothing outside the directory (``..``, absolute paths, encoded
slashes, Python sources) can ever be reached.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Final
from urllib.parse import unquote, urlsplit

__all__ = ["CONTENT_TYPES", "static_files", "static_response"]

CONTENT_TYPES: Final[dict[str, str]] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}
"""The file types served, by extension (anything else in the directory is never served)."""

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_INDEX: Final = "index.html"


def _extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


_cache: dict[str, bytes] = {}


def _read(name: str) -> bytes | None:
    """The bytes of the packaged file ``name``, ``None`` if there is none.

    Found files are cached (a handful of small files); misses are not, so requests for made-up
    names cannot grow the cache.
    """
    body = _cache.get(name)
    if body is not None:
        return body
    node = resources.files(__name__).joinpath(name)
    try:
        if not node.is_file():
            return None
        body = node.read_bytes()
    except OSError:
        return None
    _cache[name] = body
    return body


def static_files() -> list[str]:
    """The names of the files that :func:`static_response` serves, sorted."""
    root = resources.files(__name__)
    return sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_file()
        and _NAME.fullmatch(entry.name)
        and _extension(entry.name) in CONTENT_TYPES
    )


def static_response(path: str) -> tuple[int, str, bytes] | None:
    """``(status, content_type, body)`` for ``/``, ``/index.html`` and the dashboard's files.

    ``path`` is the request target (a query string or fragment is ignored). Returns ``None`` for
    any path that is not one of this package's served files, including every attempt to leave
    the directory, so the caller answers 404 as for any unknown route.
    """
    try:
        target = urlsplit(path).path
    except ValueError:
        return None
    if not target.startswith("/"):
        return None
    name = unquote(target[1:]) or _INDEX
    if not _NAME.fullmatch(name) or ".." in name:
        return None
    content_type = CONTENT_TYPES.get(_extension(name))
    if content_type is None:
        return None
    body = _read(name)
    if body is None:
        return None
    return 200, content_type, body
