"""trusted_proxies: forwarded client addresses are believed only from listed proxies."""

from __future__ import annotations

import logging

import pytest
from sectools import open_ws, refusal, server, ws_url
from server_helpers import run, wait_until
from websockets.datastructures import Headers

from dashboard_server.server.gate import ProxyPolicy

PROXIES = ProxyPolicy(["10.0.0.0/8", "192.168.1.1", "2001:db8::/32"])


def headers(**values: str | list[str]) -> Headers:
    result = Headers()
    for name, value in values.items():
        for item in value if isinstance(value, list) else [value]:
            result[name.replace("_", "-")] = item
    return result


@pytest.mark.parametrize(
    ("peer", "given", "client"),
    [
        # an untrusted peer: headers ignored, whatever they say
        ("203.0.113.9", headers(X_Forwarded_For="1.1.1.1"), "203.0.113.9"),
        ("203.0.113.9", headers(Forwarded="for=1.1.1.1"), "203.0.113.9"),
        # a trusted proxy: the rightmost address that is not a trusted proxy
        ("10.0.0.1", headers(X_Forwarded_For="198.51.100.7"), "198.51.100.7"),
        ("10.0.0.1", headers(X_Forwarded_For="6.6.6.6, 198.51.100.7"), "198.51.100.7"),
        ("10.0.0.1", headers(X_Forwarded_For="6.6.6.6, 198.51.100.7, 10.2.3.4"), "198.51.100.7"),
        ("10.0.0.1", headers(X_Forwarded_For=["6.6.6.6", "198.51.100.7"]), "198.51.100.7"),
        ("10.0.0.1", headers(X_Forwarded_For="10.9.9.9, 10.2.3.4"), "10.9.9.9"),
        ("10.0.0.1", headers(X_Forwarded_For="unknown"), "10.0.0.1"),
        ("10.0.0.1", headers(X_Forwarded_For="garbage, 10.2.3.4"), "10.2.3.4"),
        ("10.0.0.1", headers(), "10.0.0.1"),
        ("192.168.1.1", headers(X_Forwarded_For="198.51.100.7:5555"), "198.51.100.7"),
        ("192.168.1.2", headers(X_Forwarded_For="198.51.100.7"), "192.168.1.2"),
        # RFC 7239
        ("10.0.0.1", headers(Forwarded="for=198.51.100.7;proto=https"), "198.51.100.7"),
        ("10.0.0.1", headers(Forwarded='for=6.6.6.6, for="[2001:db9::1]:4711"'), "2001:db9::1"),
        ("10.0.0.1", headers(Forwarded='for="_hidden", for=10.1.1.1'), "10.1.1.1"),
        ("10.0.0.1", headers(Forwarded="proto=https;For=198.51.100.7"), "198.51.100.7"),
        ("2001:db8::5", headers(X_Forwarded_For="::ffff:198.51.100.7"), "198.51.100.7"),
        # X-Forwarded-For wins when both are present
        ("10.0.0.1", headers(X_Forwarded_For="1.2.3.4", Forwarded="for=5.6.7.8"), "1.2.3.4"),
    ],
)
def test_forwarded_address(peer: str, given: Headers, client: str) -> None:
    assert PROXIES.client_address(peer, given) == client


def test_no_trusted_proxy_never_reads_headers() -> None:
    assert ProxyPolicy([]).client_address("10.0.0.1", headers(X_Forwarded_For="1.1.1.1")) == (
        "10.0.0.1"
    )


def test_per_address_limit_counts_forwarded_clients_behind_a_trusted_proxy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        async with server(max_connections_per_address=1, trusted_proxies=("127.0.0.1",)) as srv:
            url = ws_url(srv)
            one = {"X-Forwarded-For": "198.51.100.1"}
            two = {"X-Forwarded-For": "198.51.100.2"}
            async with open_ws(url, additional_headers=one), open_ws(url, additional_headers=two):
                assert srv.gate.per_address == {"198.51.100.1": 1, "198.51.100.2": 1}
                with caplog.at_level(logging.INFO, logger="dashboard_server.server.gate"):
                    status, _, _ = await refusal(url, additional_headers=one)
                assert status == 429
                assert any(getattr(r, "remote", None) == "198.51.100.1" for r in caplog.records)
            await wait_until(lambda: not srv.gate.per_address)

    run(scenario())


def test_forwarded_headers_from_an_untrusted_peer_are_ignored() -> None:
    async def scenario() -> None:
        async with server(max_connections_per_address=1, trusted_proxies=("10.0.0.0/8",)) as srv:
            url = ws_url(srv)
            async with open_ws(url, additional_headers={"X-Forwarded-For": "198.51.100.1"}):
                assert srv.gate.per_address == {"127.0.0.1": 1}
                status, _, _ = await refusal(url, additional_headers={"Forwarded": "for=1.2.3.4"})
                assert status == 429

    run(scenario())
