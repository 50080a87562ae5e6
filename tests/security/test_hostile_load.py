"""Hostile load within every limit: each attack runs against a real server, from a process of its
own, next to a well-behaved bystander (``loadwatch``). What must hold for each: the bystander
keeps at least 80 % of the updates it got in a control window just before and sees no seq gap,
``/health`` answers within 500 ms, RSS grows by at most 64 MB, and the attacker is refused or
closed with its documented code.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from loadwatch import attack, watching
from sectools import refusals, sample, server, ws_url
from server_helpers import run, small_socket, wait_until
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

SECONDS = 3.0


def test_cpu_bombs_in_pings_are_refused_cheaply() -> None:
    """Four connections each sending 19 msg/s of 64 KB MessagePack pings whose payload is 65,000
    empty arrays (within max_message_size and the rate limit): refused before decoding with
    ``message_too_large``, and closed with 4002 after max_bad_messages; four more send the
    largest legal pings and keep getting their pongs."""

    async def scenario() -> dict[str, Any]:
        async with server() as srv, watching(srv) as watch:
            control = await watch.measure(SECONDS)
            bombs = await attack("pings", srv.port, SECONDS, conns=4, rate=19, elements=65000)
            legal = await attack("pings", srv.port, SECONDS, conns=4, rate=19, elements=250)
            during = await watch.measure(SECONDS)
            bombed, served = await bombs.result(), await legal.result()
            watch.assert_held(control, during)
            closes = bombed["codes"].count(4002)  # 1000: closed by the attacker at the end
            assert closes >= 4 and set(bombed["codes"]) <= {4002, 1000}, bombed
            assert sample(srv, "dashboard_bad_message_closes_total") == closes
            invalid = sample(srv, "dashboard_messages_received_total", message_type="invalid")
            assert invalid >= 11 * closes
            assert served["codes"] == [1000] * 4, served  # only closed by the attacker itself
            assert served["replies"] >= 0.9 * served["sent"], served
            return bombed

    run(scenario(), timeout=60)


def test_many_fragments_are_cut_at_the_librarys_limit() -> None:
    """Messages of 100,000 empty fragments (600 KB on the wire each, no payload at all): the
    library stops at 4096 fragments and closes with 1009 (counted as ``message_size``)."""

    async def scenario() -> None:
        async with server() as srv, watching(srv) as watch:
            control = await watch.measure(SECONDS)
            attacker = await attack("fragments", srv.port, SECONDS, count=100_000)
            during = await watch.measure(SECONDS)
            result = await attacker.result()
            watch.assert_held(control, during)
            assert result["codes"] and set(result["codes"]) == {1009}, result
            assert refusals(srv, "message_size") == len(result["codes"])

    run(scenario(), timeout=60)


def test_ping_flood_counts_against_the_message_rate() -> None:
    """WebSocket ping frames as fast as the attacker can write them: each one takes a token of
    the message rate limit, so the flood is closed with 4029 after ``message_burst``."""

    async def scenario() -> None:
        async with server() as srv, watching(srv) as watch:
            control = await watch.measure(SECONDS)
            attacker = await attack("ping_flood", srv.port, SECONDS, read=1)
            during = await watch.measure(SECONDS)
            result = await attacker.result()
            watch.assert_held(control, during)
            assert result["codes"] == [4029], result
            assert result["replies"] <= srv.config.message_burst + 2  # pongs are not messages
            assert refusals(srv, "rate_limit") == 1

    run(scenario(), timeout=60)


def test_unread_pongs_count_against_the_write_cap() -> None:
    """With the rate limit out of the way, a client floods pings and never reads: pongs are
    dropped once its write buffer is over ``write_buffer_high``, so memory stays bounded, and
    the client is closed for lagging."""

    async def scenario() -> None:
        async with (
            server(
                max_message_rate=1e9,
                message_burst=1_000_000_000,
                write_buffer_high=256 * 1024,
                write_buffer_low=64 * 1024,
                lag_timeout_s=1.0,
                close_timeout_s=1.0,
            ) as srv,
            watching(srv) as watch,
        ):
            control = await watch.measure(SECONDS)
            attacker = await attack("ping_flood", srv.port, SECONDS, read=0)
            during = await watch.measure(SECONDS)
            result = await attacker.result()
            watch.assert_held(control, during)
            assert result["sent"] > 5_000, result  # >= 650 KB of pings, each asking a pong
            assert refusals(srv, "pong_dropped") > 0
            await wait_until(lambda: sample(srv, "dashboard_lag_closes_total") == 1)

    run(scenario(), timeout=60)


def test_custom_intervals_share_a_few_flush_tasks() -> None:
    """300 clients asking for 300 different intervals (20, 21, ... 319 ms): they are rounded to
    ``interval_steps_ms``, so a handful of flush tasks serve them all."""

    async def scenario() -> None:
        async with server() as srv, watching(srv) as watch:
            control = await watch.measure(SECONDS)
            attacker = await attack("intervals", srv.port, SECONDS + 8, conns=300, first=20)
            # the attack is holding 300 groups' worth of intervals, not the handshakes
            await wait_until(lambda: srv.gate.connections > 300, timeout=SECONDS + 4)
            during = await watch.measure(SECONDS)
            running = srv.fanout.running_intervals()
            result = await attacker.result()
            watch.assert_held(control, during)
            assert result["connections"] == 300 and not result["refused"], result
            assert running <= set(srv.config.allowed_intervals())
            assert running >= {20, 50, 100, 250}, running
            assert srv.hub.lagging_count() == 0

    run(scenario(), timeout=60)


def test_lagging_client_gets_4001_before_the_socket_closes() -> None:
    """A client that stops reading is closed for lagging; when it reads again it must find the
    4001 close frame, not a TCP reset (the close frame must not wait behind everything that
    was queued for it)."""

    async def scenario() -> None:
        async with (
            server(
                write_buffer_high=256 * 1024,
                write_buffer_low=64 * 1024,
                lag_timeout_s=1.0,
                close_timeout_s=2.0,
            ) as srv,
            watching(srv, interval_ms=50) as watch,
        ):
            control = await watch.measure(SECONDS)
            sock = small_socket(srv.port)
            async with connect(
                ws_url(srv, "format=json&interval_ms=20"), sock=sock, max_size=None
            ) as slow:
                slow.transport.pause_reading()
                blob = "x" * 20_000
                stop = asyncio.Event()

                async def heavy() -> None:  # ~1 MB/s to the slow client
                    step = 0
                    while not stop.is_set():
                        srv.writer.merge("/orders/blob", {"b": f"{step:08d}{blob}"})
                        step += 1
                        await asyncio.sleep(0.02)

                writer = asyncio.create_task(heavy())
                during = await watch.measure(SECONDS)
                await wait_until(lambda: sample(srv, "dashboard_lag_closes_total") == 1)
                # it reads again only after the close handshake timed out on the server's side
                # (close_timeout_s): the transport used to be aborted then, a reset
                await asyncio.sleep(srv.config.close_timeout_s + 0.5)
                stop.set()
                await writer
                slow.transport.resume_reading()
                with pytest.raises(ConnectionClosed) as info:
                    async with asyncio.timeout(10):
                        while True:
                            await slow.recv()
                assert info.value.rcvd is not None and info.value.rcvd.code == 4001
            watch.assert_held(control, during)

    run(scenario(), timeout=60)
