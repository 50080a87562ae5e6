"""Who may connect: static bearer tokens and HS256 JWTs, checked before the WebSocket upgrade.

Authentication is off until tokens or a JWT secret are configured (docs/security.md). A request
carries its token in one of three places, looked up in this order:

1. ``Authorization: Bearer <token>`` (non-browser clients, Prometheus, ``curl``);
2. a ``Sec-WebSocket-Protocol`` entry ``bearer.<token>`` offered together with
   :data:`SUBPROTOCOL` (browsers: ``new WebSocket(url, ["dashboard.v1", "bearer." + token])``);
   the server then selects ``dashboard.v1``;
3. the ``token`` query parameter (browsers; redacted from every log line).

A static token grants everything. A JWT is verified by PyJWT: it must be signed with HS256 (any
other ``alg``, ``none`` included, is refused, and so is a ``crit`` header), in canonical base64url;
it must carry a numeric ``exp`` and, if present, a numeric ``nbf`` and ``iat`` (``iat`` not in the
future), all checked against :attr:`Authenticator.now` with ``jwt_leeway_s`` of tolerance; ``sub``,
if present, must be a string; a token carrying ``aud`` is refused (no audience is configured).
Two optional claims narrow what it grants:

- ``channels``: a list of channel names (sections and/or ``events``) the holder may receive;
- ``scope``: a space-separated string (or a list) of :data:`SCOPE_READ` (``/ws`` and ``/api/``)
  and :data:`SCOPE_METRICS` (``/metrics`` when it is protected).

Signatures and static tokens are compared in constant time. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import jwt
from jwt.exceptions import (
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidSignatureError,
    InvalidSubjectError,
    MissingRequiredClaimError,
    PyJWTError,
)
from jwt.types import Options
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.typing import Subprotocol

from dashboard_server.core.protocol import Query

__all__ = [
    "ANONYMOUS",
    "BEARER_PREFIX",
    "MAX_TOKEN_LENGTH",
    "SCOPE_METRICS",
    "SCOPE_READ",
    "SUBPROTOCOL",
    "TOKEN_CHARS",
    "AuthError",
    "Authenticator",
    "Principal",
    "find_token",
    "select_subprotocol",
    "sign_jwt",
]

SUBPROTOCOL: Final = "dashboard.v1"
"""The subprotocol a browser offers with its ``bearer.<token>`` entry; the server selects it."""
BEARER_PREFIX: Final = "bearer."
"""Prefix of the ``Sec-WebSocket-Protocol`` entry that carries a token."""
SCOPE_READ: Final = "read"
"""Scope needed for ``/ws`` and ``/api/`` paths."""
SCOPE_METRICS: Final = "metrics"
"""Scope needed for ``/metrics`` when ``metrics_auth`` is on."""
MAX_TOKEN_LENGTH: Final = 4096
"""Longer tokens are refused without being decoded."""
TOKEN_CHARS: Final = re.compile(r"[A-Za-z0-9._~+/-]+=*")
"""What a static token may be made of: RFC 6750's ``b64token`` (no quote, backslash, comma,
space or ``&``, so a log line can never hold part of one unmasked)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request authenticated as, and what it may do.

    ``channels``/``scopes`` are ``None`` when unrestricted; ``expires_at`` (Unix seconds, the
    leeway included) is ``None`` for credentials that do not expire.
    """

    subject: str
    channels: frozenset[str] | None = None
    scopes: frozenset[str] | None = None
    expires_at: float | None = None

    def has_scope(self, scope: str) -> bool:
        """Whether the credentials grant ``scope``."""
        return self.scopes is None or scope in self.scopes

    def forbidden_channels(self, channels: Iterable[str]) -> list[str]:
        """The channels of ``channels`` this principal may not receive, sorted."""
        if self.channels is None:
            return []
        return sorted(set(channels) - self.channels)


ANONYMOUS: Final = Principal("anonymous")
"""The principal of every request while authentication is off."""


class AuthError(Exception):
    """A request's credentials are refused: ``status`` 401 (``reason`` ``missing_token``,
    ``invalid_token``, ``expired_token``) or 403 (``forbidden``)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def sign_jwt(claims: Mapping[str, Any], secret: str) -> str:
    """An HS256 JWT of ``claims`` signed with ``secret`` (for operators' scripts and tests)."""
    return jwt.encode(dict(claims), secret, algorithm="HS256")


_TIME_CLAIMS: Final = ("exp", "nbf", "iat")
# PyJWT's own time checks read the wall clock (not :attr:`Authenticator.now`) and accept numeric
# strings and booleans, so the time claims are checked here; PyJWT does everything else.
_DECODE_OPTIONS: Final[Options] = {
    "require": ["exp"],
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
}


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(401, "invalid_token", f"token claim {name!r} is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise AuthError(401, "invalid_token", f"token claim {name!r} is not a finite number")
    return number


def _string_set(claims: Mapping[str, Any], name: str, *, split: bool) -> frozenset[str] | None:
    value = claims.get(name)
    if value is None:
        return None
    if split and isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise AuthError(401, "invalid_token", f"token claim {name!r} has the wrong type")


class Authenticator:
    """Checks a token against the configured static tokens and JWT secret (module doc)."""

    def __init__(
        self,
        *,
        tokens: Sequence[str] = (),
        jwt_secret: str | None = None,
        leeway_s: float = 30.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._digests = tuple(_digest(t) for t in tokens)
        self._secret = jwt_secret.encode() if jwt_secret else None
        self._leeway = leeway_s
        self.now = now
        """The wall clock (Unix seconds) that ``exp``/``nbf`` are checked against."""

    @property
    def enabled(self) -> bool:
        """Whether any credentials are configured (otherwise everyone is :data:`ANONYMOUS`)."""
        return bool(self._digests) or self._secret is not None

    def authenticate(self, token: str | None) -> Principal:
        """The principal ``token`` stands for; raises :class:`AuthError` (401) if it is refused."""
        if not self.enabled:
            return ANONYMOUS
        if token is None or not token:
            raise AuthError(401, "missing_token", "credentials required")
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthError(401, "invalid_token", "token too long")
        if self._digests:
            digest = _digest(token)
            # no early exit: the time taken does not depend on which token matched
            matched = False
            for known in self._digests:
                matched |= hmac.compare_digest(digest, known)
            if matched:
                return Principal("static-token")
        if self._secret is not None and token.count(".") == 2:
            return self._verify_jwt(token, self._secret)
        raise AuthError(401, "invalid_token", "invalid token")

    def _verify_jwt(self, token: str, secret: bytes) -> Principal:
        try:
            decoded = jwt.decode_complete(
                token, secret, algorithms=["HS256"], options=_DECODE_OPTIONS
            )
        except InvalidSignatureError:
            raise AuthError(401, "invalid_token", "bad token signature") from None
        except InvalidAlgorithmError:
            raise AuthError(401, "invalid_token", "token algorithm must be HS256") from None
        except InvalidAudienceError:
            raise AuthError(401, "invalid_token", "token has an 'aud' claim") from None
        except InvalidSubjectError:
            raise AuthError(401, "invalid_token", "token claim 'sub' is not a string") from None
        except MissingRequiredClaimError as exc:
            raise AuthError(401, "invalid_token", f"token has no {exc.claim!r} claim") from None
        except (PyJWTError, ValueError, TypeError):
            raise AuthError(401, "invalid_token", "malformed token") from None
        if "crit" in decoded["header"]:
            raise AuthError(401, "invalid_token", "token has a 'crit' header")
        claims: dict[str, Any] = decoded["payload"]
        if "aud" in claims:  # PyJWT lets an empty one through
            raise AuthError(401, "invalid_token", "token has an 'aud' claim")
        exp, nbf, iat = (_number(claims, name) for name in _TIME_CLAIMS)
        now = self.now()
        if exp is None:
            raise AuthError(401, "invalid_token", "token has no 'exp' claim")
        if now > exp + self._leeway:
            raise AuthError(401, "expired_token", "token expired")
        if nbf is not None and now < nbf - self._leeway:
            raise AuthError(401, "invalid_token", "token not valid yet")
        if iat is not None and now < iat - self._leeway:
            raise AuthError(401, "invalid_token", "token issued in the future")
        subject: str = claims.get("sub", "jwt")  # PyJWT refuses a 'sub' that is not a string
        return Principal(
            subject,
            channels=_string_set(claims, "channels", split=False),
            scopes=_string_set(claims, "scope", split=True),
            expires_at=exp + self._leeway,
        )


def _subprotocols(headers: Headers) -> list[str]:
    return [
        item.strip()
        for value in headers.get_all("Sec-WebSocket-Protocol")
        for item in value.split(",")
        if item.strip()
    ]


def find_token(headers: Headers, query: Query) -> str | None:
    """The token a request carries (module doc for the order), ``None`` if it carries none.

    Raises :class:`AuthError` (401 ``invalid_token``) when a source is ambiguous: several
    ``Authorization`` headers, ``bearer.`` entries or ``token`` parameters, or a ``bearer.``
    entry offered without :data:`SUBPROTOCOL`.
    """
    authorization = headers.get_all("Authorization")
    if len(authorization) > 1:
        raise AuthError(401, "invalid_token", "more than one Authorization header")
    if authorization:
        scheme, _, credentials = authorization[0].strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    offered = _subprotocols(headers)
    bearer = [p[len(BEARER_PREFIX) :] for p in offered if p.lower().startswith(BEARER_PREFIX)]
    if len(bearer) > 1:
        raise AuthError(401, "invalid_token", "more than one bearer subprotocol entry")
    if bearer:
        if SUBPROTOCOL not in offered:
            raise AuthError(
                401, "invalid_token", f"offer {SUBPROTOCOL!r} with the bearer subprotocol entry"
            )
        return bearer[0]
    tokens = [v for k, v in query if k == "token"]
    if len(tokens) > 1:
        raise AuthError(401, "invalid_token", "token given more than once")
    return tokens[0] if tokens else None


def select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """The ``select_subprotocol`` hook: :data:`SUBPROTOCOL` when offered, else none at all."""
    return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in offered else None
