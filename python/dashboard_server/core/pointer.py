"""RFC 6901 JSON Pointers: the one place Python code escapes, unescapes and joins their tokens.

The Rust engine has its own (``rust/pointer.rs``); the page's is in ``dashboard-protocol.js``.
"""

from __future__ import annotations

__all__ = ["escape_token", "join", "parse_pointer", "unescape_token"]


def escape_token(token: str) -> str:
    """One reference token, escaped (``~`` -> ``~0``, ``/`` -> ``~1``)."""
    if "~" in token or "/" in token:
        return token.replace("~", "~0").replace("/", "~1")
    return token


def unescape_token(token: str) -> str:
    """One reference token, unescaped; raises :class:`ValueError` for a ``~`` not followed by
    ``0`` or ``1``."""
    if "~" not in token:
        return token
    if "~" in token.replace("~0", "").replace("~1", ""):
        raise ValueError(f"invalid JSON pointer token {token!r}: '~' must be followed by 0 or 1")
    return token.replace("~1", "/").replace("~0", "~")


def join(*tokens: str) -> str:
    """The pointer of unescaped ``tokens``: ``join("orders", "a/b")`` is ``/orders/a~1b``."""
    return "".join("/" + escape_token(t) for t in tokens)


def parse_pointer(pointer: str) -> list[str]:
    """Split a pointer into unescaped tokens (``""`` is the root: no tokens).

    Raises :class:`ValueError` naming the pointer when it does not start with ``/`` or has a bad
    ``~`` escape.
    """
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ValueError(f"invalid JSON pointer {pointer!r}: must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    if "~" not in pointer:
        return tokens
    try:
        return [unescape_token(t) for t in tokens]
    except ValueError:
        raise ValueError(
            f"invalid JSON pointer {pointer!r}: '~' must be followed by '0' or '1'"
        ) from None
