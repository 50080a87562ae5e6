"""Authentication and authorisation through real WebSocket clients and real HTTP requests.

Every refusal path of docs/security.md with its exact status (before the upgrade) or close code
(during the session), and the metric each one increments.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time

import orjson
import pytest
from sectools import SECRET, TOKEN, forge_jwt, jwt, open_ws, refusal, refusals, server, ws_url
from server_helpers import decode, http_get, recv_data, run, wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from dashboard_server.client.watch import run_watch
from dashboard_server.config import ConfigError, load_config
from dashboard_server.server.auth import Authenticator, AuthError, sign_jwt
from dashboard_server.telemetry.logs import configure_logging, redact

AUTH = {"auth_tokens": (TOKEN,), "jwt_secret": SECRET, "jwt_leeway_s": 0.0}
BEARER = {"Authorization": f"Bearer {TOKEN}"}
WRONG = "wrong-token-0123456789"


def test_auth_is_off_by_default() -> None:
    async def scenario() -> None:
        async with server() as srv, open_ws(ws_url(srv, "format=json")) as ws:
            assert decode(await ws.recv())["type"] == "snapshot"

    run(scenario())


def test_token_sources_are_accepted() -> None:
    async def scenario() -> None:
        async with server(**AUTH) as srv:
            url = ws_url(srv, "format=json")
            async with open_ws(url, additional_headers=BEARER) as ws:
                assert decode(await ws.recv())["type"] == "snapshot"
            async with open_ws(ws_url(srv, f"format=json&token={TOKEN}")) as ws:
                assert decode(await ws.recv())["type"] == "snapshot"
            offered = [Subprotocol("dashboard.v1"), Subprotocol(f"bearer.{jwt()}")]
            async with open_ws(url, subprotocols=offered) as ws:
                assert ws.subprotocol == "dashboard.v1"
                assert decode(await ws.recv())["type"] == "snapshot"
            async with open_ws(url, additional_headers={"Authorization": f"Bearer {jwt()}"}):
                pass
            assert refusals(srv, "missing_token") == 0

    run(scenario())


@pytest.mark.parametrize(
    ("kwargs", "query", "reason"),
    [
        ({}, "", "missing_token"),
        ({"additional_headers": {"Authorization": "Bearer "}}, "", "missing_token"),
        ({"additional_headers": {"Authorization": f"Basic {TOKEN}"}}, "", "missing_token"),
        ({"additional_headers": {"Authorization": f"Bearer {WRONG}"}}, "", "invalid_token"),
        ({}, "token=", "missing_token"),
        ({}, f"token={TOKEN}x", "invalid_token"),
        ({}, f"token={TOKEN}&token={TOKEN}", "invalid_token"),
        ({"subprotocols": [f"bearer.{TOKEN}"]}, "", "invalid_token"),  # without dashboard.v1
        ({}, "token=" + "a" * 5000, "invalid_token"),
    ],
)  # fmt: skip
def test_bad_credentials_get_401(kwargs: dict[str, object], query: str, reason: str) -> None:
    async def scenario() -> None:
        async with server(**AUTH) as srv:
            status, body, headers = await refusal(ws_url(srv, query), **kwargs)
            assert status == 401
            assert body["error"] == "unauthorized"
            assert headers["www-authenticate"] == f'Bearer realm="dashboard", error="{reason}"'
            assert refusals(srv, reason) == 1
            assert TOKEN not in orjson.dumps(body).decode()

    run(scenario())


def _flip_padding_bits(token: str) -> str:
    """``token`` with its signature's last character changed in the unused low bits only: the
    same signature bytes, in a non-canonical base64url encoding."""
    head, body, signature = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused_bits = {2: 4, 3: 2}[len(signature) % 4]  # 32 bytes: 43 characters, 2 unused bits
    last = alphabet.index(signature[-1])
    flipped = alphabet[last ^ ((1 << unused_bits) - 1)]
    return f"{head}.{body}.{signature[:-1]}{flipped}"


def _forged_tokens() -> list[tuple[str, str]]:
    now = time.time()
    good = jwt()
    head, body, _ = good.split(".")
    b64_crit = {"b64": True, "crit": ["b64"]}  # an extension PyJWT knows
    return [
        ("bad signature", sign_jwt({"exp": now + 60}, "another-secret-0123456789abcdef0123")),
        ("alg none", f"{forge_jwt({'exp': now + 60}, header={'alg': 'none'}).rsplit('.', 1)[0]}."),
        ("alg HS512", forge_jwt({"exp": now + 60}, header={"alg": "HS512"})),
        ("alg missing", forge_jwt({"exp": now + 60}, header={"typ": "JWT"})),
        ("crit header", forge_jwt({"exp": now + 60}, header={"alg": "HS256", "crit": ["x"]})),
        ("crit b64", forge_jwt({"exp": now + 60}, header={"alg": "HS256", **b64_crit})),
        ("no exp", sign_jwt({"sub": "x"}, SECRET)),
        ("exp null", sign_jwt({"exp": None}, SECRET)),
        ("exp not a number", sign_jwt({"exp": "tomorrow"}, SECRET)),
        ("exp a numeric string", sign_jwt({"exp": str(int(now + 60))}, SECRET)),
        ("exp is a bool", sign_jwt({"exp": True}, SECRET)),
        ("exp NaN", jwt(exp=float("nan"))),
        ("exp huge", jwt(exp=10**400)),
        ("not yet valid", jwt(nbf=now + 600)),
        ("claims not an object", forge_jwt([1, 2])),
        ("channels not a list", jwt(channels="orders")),
        ("tampered body", f"{head}.{body}A.{good.split('.')[2]}"),
        ("not base64", f"{head}.!!!.{good.split('.')[2]}"),
        ("two parts", f"{head}.{body}"),
        # refused by PyJWT, accepted by the hand-written verifier it replaced
        ("foreign aud", jwt(aud="another-service")),
        ("empty aud", jwt(aud="")),
        ("iat in the future", jwt(iat=now + 600)),
        ("iat not a number", jwt(iat="yesterday")),
        ("integer sub", jwt(sub=42)),
        ("non-canonical signature", _flip_padding_bits(good)),
    ]  # fmt: skip


@pytest.mark.parametrize(("name", "token"), _forged_tokens(), ids=lambda v: str(v)[:20])
def test_forged_or_malformed_jwts_get_401(name: str, token: str) -> None:
    async def scenario() -> None:
        async with server(**AUTH) as srv:
            headers = {"Authorization": f"Bearer {token}"}
            status, body, _ = await refusal(ws_url(srv), additional_headers=headers)
            assert status == 401, name
            assert body["error"] == "unauthorized"
            assert refusals(srv, "invalid_token") == 1

    run(scenario())


def test_expired_jwt_gets_401_expired_token() -> None:
    async def scenario() -> None:
        async with server(**AUTH) as srv:
            expired = jwt(exp=time.time() - 1)
            status, body, headers = await refusal(ws_url(srv, f"token={expired}"))
            assert (status, body["message"]) == (401, "token expired")
            assert 'error="expired_token"' in headers["www-authenticate"]
            assert refusals(srv, "expired_token") == 1

    run(scenario())


def test_leeway_accepts_a_just_expired_jwt() -> None:
    auth = Authenticator(jwt_secret=SECRET, leeway_s=30.0, now=lambda: 1000.0)
    assert auth.authenticate(sign_jwt({"exp": 990}, SECRET)).expires_at == 1020.0
    with pytest.raises(AuthError, match="expired"):
        auth.authenticate(sign_jwt({"exp": 960}, SECRET))
    with pytest.raises(AuthError, match="not valid yet"):
        auth.authenticate(sign_jwt({"exp": 2000, "nbf": 1040}, SECRET))
    assert auth.authenticate(sign_jwt({"exp": 2000, "nbf": 1020}, SECRET)).subject == "jwt"
    with pytest.raises(AuthError, match="issued in the future"):
        auth.authenticate(sign_jwt({"exp": 2000, "iat": 1040}, SECRET))
    principal = auth.authenticate(sign_jwt({"exp": 2000, "iat": 1020, "sub": "desk"}, SECRET))
    assert principal.subject == "desk"


def test_a_flipped_padding_bit_leaves_the_signature_bytes_unchanged() -> None:
    """The non-canonical token above is refused for its encoding alone, not a different MAC."""
    good = jwt()
    forged = _flip_padding_bits(good)
    assert forged != good
    decoded = [base64.urlsafe_b64decode(t.split(".")[2] + "=") for t in (good, forged)]
    assert decoded[0] == decoded[1]


def test_scope_and_channel_restrictions_get_403() -> None:
    async def scenario() -> None:
        async with server(**AUTH) as srv:
            no_read = jwt(scope="metrics")
            status, body, _ = await refusal(ws_url(srv, f"token={no_read}"))
            assert (status, body["error"]) == (403, "forbidden")
            orders_only = jwt(channels=["orders", "events"])
            query = f"channels=orders,positions&token={orders_only}"
            status, body, _ = await refusal(ws_url(srv, query))
            assert (status, body["message"]) == (
                403,
                "channel 'positions' not allowed for these credentials",
            )
            nothing = jwt(channels=["no_such_section"])
            status, _, _ = await refusal(ws_url(srv, f"token={nothing}"))
            assert status == 403
            assert refusals(srv, "forbidden") == 3

    run(scenario())


def test_restricted_token_sees_only_its_channels_and_cannot_subscribe_others() -> None:
    async def scenario() -> None:
        async with server(**AUTH) as srv:
            srv.writer.merge("/orders/1", {"qty": 1.0})
            srv.writer.merge("/positions/BTC", {"qty": 2.0})
            token = jwt(channels=["orders"], scope="read")
            async with open_ws(ws_url(srv, f"format=json&token={token}")) as ws:
                snapshot = decode(await ws.recv())
                assert snapshot["data"] == {"orders": {"1": {"qty": 1.0}}}
                await ws.send(
                    orjson.dumps({"type": "subscribe", "channels": ["positions"]}).decode()
                )
                error = await recv_data(ws)
                assert (error["type"], error["code"]) == ("error", "forbidden_channel")
                await ws.send(orjson.dumps({"type": "subscribe", "channels": ["orders"]}).decode())
                await ws.send(orjson.dumps({"type": "ping", "payload": 7}).decode())
                assert (await recv_data(ws))["type"] == "pong"

    run(scenario())


def test_jwt_expiring_mid_session_closes_with_4003() -> None:
    async def scenario() -> None:
        async with server(**AUTH) as srv:
            token = jwt(exp=time.time() + 1.0)
            started = time.monotonic()
            async with open_ws(ws_url(srv, f"format=json&token={token}")) as ws:
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 4003
            assert info.value.rcvd.reason == "token expired"
            assert time.monotonic() - started > 0.5  # not before expiry (no upper bound)
            assert refusals(srv, "session_expired") == 1

    run(scenario())


def test_http_endpoints_health_open_api_and_metrics_protected() -> None:
    async def scenario() -> None:
        async with server(**AUTH, metrics_auth=True) as srv:
            assert (await http_get(srv.port, "/health"))[0] == 200
            status, headers, body = await http_get(srv.port, "/api/v1/history?type=orders")
            assert status == 401 and orjson.loads(body)["error"] == "unauthorized"
            assert headers["www-authenticate"].startswith("Bearer")
            status, _, _ = await http_get(srv.port, f"/api/v1/history?token={jwt(scope='metrics')}")
            assert status == 403
            status, _, _ = await http_get(srv.port, f"/api/v1/nothing?token={TOKEN}")
            assert status not in (401, 403)  # authenticated: routed on (404 or the endpoint)
            assert (await http_get(srv.port, "/metrics"))[0] == 401
            assert (await http_get(srv.port, f"/metrics?token={jwt(scope='read')}"))[0] == 403
            assert (await http_get(srv.port, f"/metrics?token={jwt(scope='metrics')}"))[0] == 200
            assert (await http_get(srv.port, f"/metrics?token={TOKEN}"))[0] == 200
        async with server(**AUTH) as srv:  # metrics_auth off: /metrics stays open
            assert (await http_get(srv.port, "/metrics"))[0] == 200

    run(scenario())


def test_tokens_never_reach_the_logs() -> None:
    async def scenario() -> None:
        async with server(**AUTH) as srv:
            secret_jwt = jwt()
            async with open_ws(ws_url(srv, f"token={secret_jwt}&format=json")) as ws:
                await ws.recv()
            await refusal(ws_url(srv, f"token={TOKEN}x"))
            await refusal(ws_url(srv), additional_headers={"Authorization": f"Bearer {TOKEN}y"})
            status, _, body = await http_get(srv.port, f"/ws?format=xml&token={TOKEN}")
            assert status == 400 and TOKEN.encode() not in body
            await wait_until(lambda: not srv._sessions)
            logging.getLogger("test").info("query %s", f"/ws?token={TOKEN}&a=1")
            logging.getLogger("test").info(
                "headers", extra={"h": {"Authorization": f"Bearer {TOKEN}"}}
            )

    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("websockets").level)
    stream = io.StringIO()
    configure_logging("debug", stream)
    try:
        run(scenario())
    finally:
        root.handlers[:], level, ws_level = saved
        root.setLevel(level)
        logging.getLogger("websockets").setLevel(ws_level)
    output = stream.getvalue()
    assert "refused" in output and "[REDACTED]" in output
    assert TOKEN not in output and SECRET not in output
    assert "eyJ" not in output


def test_obfuscated_tokens_never_reach_the_logs_at_debug_level() -> None:
    """A percent-encoded parameter name is decoded by the query parser (``%74oken`` is
    ``token``), so it is a valid token source and must be masked too; so must the whole of a
    token once a JSON log line has escaped what is in it."""

    async def scenario() -> None:
        async with server(**AUTH) as srv:
            for query in (f"%74oken={TOKEN}", f"t%6Fk%65n={TOKEN}", f"%74%6f%6b%65%6e={TOKEN}"):
                async with open_ws(ws_url(srv, f"{query}&format=json")) as ws:
                    assert decode(await ws.recv())["type"] == "snapshot"
            await refusal(ws_url(srv, f"%74oken={TOKEN}zz"))
            await wait_until(lambda: not srv._sessions)
            logging.getLogger("test").info("path", extra={"p": f'/ws?token={TOKEN}"x\\y'})

    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("websockets").level)
    stream = io.StringIO()
    configure_logging("debug", stream)
    try:
        run(scenario())
    finally:
        root.handlers[:], level, ws_level = saved
        root.setLevel(level)
        logging.getLogger("websockets").setLevel(ws_level)
    output = stream.getvalue()
    assert "%74oken=[REDACTED]" in output  # the debug lines of the request were there
    assert TOKEN not in output
    assert TOKEN[:8] not in output


@pytest.mark.parametrize(
    "token",
    [
        'with"quote-0123456789',
        "with'quote-0123456789",
        "back\\slash-0123456789",
        "amp&ersand-0123456789",
    ],
)
def test_static_tokens_that_logs_could_not_mask_are_refused(token: str) -> None:
    with pytest.raises(ConfigError, match="AUTH_TOKENS: each token needs") as info:
        load_config(env={"DASHBOARD_AUTH_TOKENS": token})
    assert token not in str(info.value)


def test_redact_obfuscations() -> None:
    assert redact("GET /ws?%74oken=s3cret&a=1") == "GET /ws?%74oken=[REDACTED]&a=1"
    assert redact("GET /ws?%54%4F%4b%45%4e=s3cret") == "GET /ws?%54%4F%4b%45%4e=[REDACTED]"
    assert (
        redact('{"p": "/ws?token=ab\\"cd\\\\ef", "x": 1}')
        == '{"p": "/ws?token=[REDACTED]", "x": 1}'
    )


def test_redact() -> None:
    assert redact("GET /ws?type=tui&token=abc.def&format=json") == (
        "GET /ws?type=tui&token=[REDACTED]&format=json"
    )
    assert redact("{'Authorization': 'Bearer abc'}") == "{'Authorization': 'Bearer [REDACTED]'}"
    assert redact("authorization: Basic dXNlcjpw") == "authorization: Basic [REDACTED]"
    assert redact("Sec-WebSocket-Protocol: dashboard.v1, bearer.abc") == (
        "Sec-WebSocket-Protocol: dashboard.v1, bearer.[REDACTED]"
    )
    assert redact(f"x {jwt()} y") == "x [REDACTED-JWT] y"


def test_static_tokens_compare_whole_values() -> None:
    auth = Authenticator(tokens=(TOKEN,))
    assert auth.authenticate(TOKEN).subject == "static-token"
    for wrong in (TOKEN[:-1], TOKEN + "0", TOKEN.upper(), ""):
        with pytest.raises(AuthError):
            auth.authenticate(wrong)


def test_slow_expiry_timer_is_cancelled_when_client_leaves() -> None:
    async def scenario() -> None:
        async with server(**AUTH) as srv:
            token = jwt(exp=time.time() + 0.6)
            async with open_ws(ws_url(srv, f"token={token}")):
                pass
            await asyncio.sleep(1.0)
            assert refusals(srv, "session_expired") == 0

    run(scenario())


def test_watch_sends_its_token() -> None:
    async def scenario() -> None:
        async with server(**AUTH) as srv:
            out = io.StringIO()
            await run_watch(ws_url(srv), token=TOKEN, duration=0.3, refresh=0.1, out=out)
            assert out.getvalue()
            with pytest.raises(InvalidStatus) as info:
                await run_watch(ws_url(srv), duration=0.3, out=io.StringIO())
            assert info.value.response.status_code == 401

    run(scenario())
