"""Origin allow-list and limits through real sockets: each refusal's exact status or close code
and its metric."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import orjson
import pytest
from sectools import open_ws, refusal, refusals, sample, server, ws_url
from server_helpers import decode, run, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from dashboard_server.config import ConfigError, load_config
from dashboard_server.core.ratelimit import TokenBucket
from dashboard_server.server.gate import OriginPolicy

DESK = "https://desk.example.com"


@pytest.mark.parametrize(
    "origin",
    [
        "https://desk.example.com.evil.io",  # suffix trick
        "https://evildesk.example.com",
        "https://evil.io/https://desk.example.com",
        "http://desk.example.com",  # other scheme
        "https://desk.example.com:444",  # other port
        "https://DESK.example.com",  # exact: no case folding
        "https://desk.example.com/",
        "null",
    ],
)
def test_disallowed_origin_gets_403(origin: str) -> None:
    async def scenario() -> None:
        async with server(allowed_origins=(DESK,)) as srv:
            status, body, _ = await refusal(ws_url(srv), origin=Origin(origin))
            assert (status, body["error"]) == (403, "origin_not_allowed")
            assert refusals(srv, "origin") == 1

    run(scenario())


def test_allowed_missing_and_null_origins() -> None:
    async def scenario() -> None:
        async with server(allowed_origins=(DESK, "null")) as srv:
            for origin in (Origin(DESK), Origin("null"), None):
                async with open_ws(ws_url(srv, "format=json"), origin=origin) as ws:
                    assert decode(await ws.recv())["type"] == "snapshot"
            headers = [("Origin", DESK), ("Origin", DESK)]  # two Origin headers: refused
            status, _, _ = await refusal(ws_url(srv), additional_headers=headers)
            assert status == 403
        async with (  # no list: any origin
            server() as srv,
            open_ws(ws_url(srv), origin=Origin("https://anything.example")),
        ):
            pass

    run(scenario())


def test_origin_policy_unit() -> None:
    policy = OriginPolicy([DESK])
    assert policy.allows([]) and policy.allows([DESK])
    assert not policy.allows(["null"]) and not policy.allows([DESK, DESK])
    assert OriginPolicy([]).allows(["null"])


def test_max_connections_gets_503_and_slots_come_back() -> None:
    async def scenario() -> None:
        async with server(max_connections=3) as srv:
            url = ws_url(srv)
            async with open_ws(url), open_ws(url), open_ws(url) as third:
                status, body, headers = await refusal(url)
                assert (status, body["error"]) == (503, "too_many_connections")
                assert headers["retry-after"] == "5"
                assert refusals(srv, "max_connections") == 1
                await third.close()
                await wait_until(lambda: srv.gate.connections == 2)
                async with open_ws(url):
                    pass
            await wait_until(lambda: srv.gate.connections == 0)

    run(scenario())


def test_max_connections_per_address_gets_429() -> None:
    async def scenario() -> None:
        async with server(max_connections_per_address=2) as srv:
            url = ws_url(srv)
            async with open_ws(url), open_ws(url):
                status, body, _ = await refusal(url)
                assert (status, body["error"]) == (429, "too_many_connections_from_address")
                assert refusals(srv, "max_connections_per_address") == 1
                # another client address still gets in (Linux routes all of 127/8 to lo)
                async with open_ws(url, local_addr=("127.0.0.2", 0)):
                    assert srv.gate.per_address == {"127.0.0.1": 2, "127.0.0.2": 1}
            await wait_until(lambda: not srv.gate.per_address)

    run(scenario())


def _raw_connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(5.0)
    return sock


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def test_slowloris_handshake_is_cut_by_open_timeout() -> None:
    async def scenario() -> None:
        async with server(open_timeout_s=0.5) as srv:
            loop = asyncio.get_running_loop()
            sock = _raw_connect(srv.port)
            sock.setblocking(False)
            request = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nX-Pad: "
            try:
                for byte in request + b"a" * 100:  # one byte every 20 ms: never finishes
                    await loop.sock_sendall(sock, bytes([byte]))
                    await asyncio.sleep(0.02)
                # 3.4 s at least, well past open_timeout_s: the cut must come before the end
                raise AssertionError("the server kept a dribbling handshake open")
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                sock.close()
            idle = _raw_connect(srv.port)  # connects and never sends a byte
            try:
                assert await asyncio.to_thread(_closed_by_peer, idle)
            finally:
                idle.close()
            await wait_until(lambda: refusals(srv, "handshake_timeout") == 2)

    run(scenario())


def test_oversized_message_closes_with_1009() -> None:
    async def scenario() -> None:
        async with server(max_message_size=1024) as srv:
            for message in ("x" * 2000, [b"a" * 600, b"b" * 600]):  # whole, fragmented
                async with open_ws(ws_url(srv)) as ws:
                    await ws.send(message)
                    with pytest.raises(ConnectionClosed) as info:
                        while True:
                            await ws.recv()
                    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
            await wait_until(lambda: refusals(srv, "message_size") == 2)

    run(scenario())


def test_message_rate_limit_closes_with_4029() -> None:
    async def scenario() -> None:
        async with server(max_message_rate=5.0, message_burst=5) as srv:
            ping = orjson.dumps({"type": "ping"}).decode()
            async with open_ws(ws_url(srv, "format=json")) as ws:  # within the burst: served
                for _ in range(5):
                    await ws.send(ping)
                kinds = [decode(await ws.recv())["type"] for _ in range(6)]
                assert kinds.count("pong") == 5
            async with open_ws(ws_url(srv, "format=json")) as ws:
                for _ in range(50):
                    await ws.send(ping)
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await ws.recv()
                assert info.value.rcvd is not None and info.value.rcvd.code == 4029
            assert refusals(srv, "rate_limit") == 1
            assert sample(srv, "dashboard_messages_received_total", message_type="ping") == 10

    run(scenario())


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5) and not bucket.take(0.5)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DASHBOARD_AUTH_TOKENS": "short"}, "DASHBOARD_AUTH_TOKENS: each token needs 16+"),
        ({"DASHBOARD_JWT_SECRET": "too-short"}, "DASHBOARD_JWT_SECRET: must be at least 32"),
        ({"DASHBOARD_METRICS_AUTH": "on"}, "METRICS_AUTH: needs auth_tokens or jwt_secret"),
        ({"DASHBOARD_ALLOWED_ORIGINS": "https://a.example/"}, "ALLOWED_ORIGINS: expected"),
        ({"DASHBOARD_ALLOWED_ORIGINS": "*.example.com"}, "ALLOWED_ORIGINS: expected"),
        ({"DASHBOARD_MAX_CONNECTIONS": "0"}, "MAX_CONNECTIONS: must be > 0"),
        ({"DASHBOARD_MAX_MESSAGE_RATE": "0"}, "MAX_MESSAGE_RATE: must be > 0"),
        ({"DASHBOARD_OPEN_TIMEOUT_S": "0"}, "OPEN_TIMEOUT_S: must be > 0"),
    ],
)
def test_security_settings_are_validated(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(env=env)
    assert "short" not in str(info.value)  # a secret is never echoed


def test_security_settings_parse() -> None:
    config = load_config(
        env={
            "DASHBOARD_AUTH_TOKENS": "a" * 16 + ", " + "b" * 16,
            "DASHBOARD_ALLOWED_ORIGINS": f"{DESK},null",
            "DASHBOARD_JWT_SECRET": "s" * 32,
        }
    )
    assert config.auth_tokens == ("a" * 16, "b" * 16)
    assert config.allowed_origins == (DESK, "null")
    assert "s" * 32 not in repr(config) and "a" * 16 not in repr(config)


def test_refusal_log_lines_are_rate_limited() -> None:
    """A flood of refused handshakes is counted in full but logs at most 10 lines a second,
    and the next line logged says how many were held back."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "refused":
                records.append(record)

    handler = Keep()
    gate_log = logging.getLogger("dashboard_server.server.gate")
    gate_log.addHandler(handler)
    level = gate_log.level
    gate_log.setLevel(logging.INFO)

    async def scenario() -> None:
        async with server(allowed_origins=(DESK,)) as srv:
            started = time.monotonic()
            for _ in range(40):
                await refusal(ws_url(srv), origin=Origin("https://evil.example"))
            elapsed = time.monotonic() - started
            assert refusals(srv, "origin") == 40
            assert len(records) <= 10 * (int(elapsed) + 2)
            if elapsed < 1.0:
                assert len(records) <= 20
            await asyncio.sleep(int(time.monotonic()) + 1.05 - time.monotonic())  # next second
            await refusal(ws_url(srv), origin=Origin("https://evil.example"))
            assert sum(getattr(r, "suppressed", 0) for r in records) + len(records) == 41

    try:
        run(scenario())
    finally:
        gate_log.removeHandler(handler)
        gate_log.setLevel(level)


def test_oversized_request_heads_get_414_or_431_and_are_counted() -> None:
    async def scenario() -> None:
        async with server() as srv:
            heads = {
                414: b"GET /ws?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                431: b"GET /ws HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)),
            }
            for status, head in heads.items():
                reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
                writer.write(head)
                line = await asyncio.wait_for(reader.readline(), 5)
                assert line.split()[1] == str(status).encode(), line
                writer.close()
            await wait_until(lambda: refusals(srv, "request_head") == 2)

    run(scenario())
