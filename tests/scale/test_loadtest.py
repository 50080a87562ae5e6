"""The load generator: message inspection, and a tiny end-to-end run against a local server."""

from __future__ import annotations

import socket

import msgpack
import orjson
import pytest
from server_helpers import run

from dashboard_server.core.engine import load_engine
from dashboard_server.core.messages import Messages, pong_message
from dashboard_server.core.protocol import Format
from dashboard_server.core.timefmt import rfc3339_ms
from dashboard_server.tools.loadtest import (
    LoadtestOptions,
    format_report,
    report_json,
    run_loadtest,
)
from dashboard_server.tools.loadtest.wsclient import Inspector, LoadClient

TS = 1_795_795_035_123


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_inspector_reads_type_seq_timestamp(fmt: Format) -> None:
    inspector = Inspector()
    text = fmt == "json"
    big = {"order_id": "1", "notes": "x" * 500}
    messages = Messages(load_engine("pure").StateDoc(sections=["s"]), epoch="e")
    event = messages.event(fmt, 41, TS, "fills", big)
    update = messages.catch_up(None, fmt, "changes", None, 42, TS + 1)
    pong = pong_message(fmt, 5, TS + 2)
    for _ in range(2):  # the second time from the memo
        info = inspector.inspect(event, text)
        assert (info.type, info.seq, info.timestamp_ms) == ("event", 41, TS)
        info = inspector.inspect(update, text)
        assert (info.type, info.seq, info.timestamp_ms) == ("update", 42, TS + 1)
        info = inspector.inspect(pong, text)
        assert (info.type, info.seq, info.timestamp_ms) == ("pong", None, TS + 2)
    assert inspector.decodes == 3


def test_inspector_falls_back_to_a_full_decode() -> None:
    """Fields after a bulky one (not the server's order) are still found."""
    stamp = rfc3339_ms(TS)
    message = {"data": {"k": "v" * 300}, "type": "snapshot", "seq": 3, "timestamp": stamp}
    for payload, text in ((msgpack.packb(message), False), (orjson.dumps(message), True)):
        info = Inspector().inspect(payload, text)
        assert (info.type, info.seq, info.timestamp_ms) == ("snapshot", 3, TS)
    info = Inspector().inspect(orjson.dumps({"type": "update", "timestamp": "soon"}), True)
    assert (info.type, info.seq, info.timestamp_ms) == ("update", None, None)


def test_small_run_against_a_local_server() -> None:
    options = LoadtestOptions(
        clients=24,
        processes=2,
        duration=1.0,
        warmup=0.3,
        types=("tui", "web"),
        formats=("msgpack", "json"),
        channels=(None, "market_data"),
        server_args=("--demo-rate", "20"),
    )
    report = run_loadtest(options)
    assert (report.connected, report.failed, report.gaps) == (24, 0, 0)
    assert report.message_types["update"] > 0
    assert report.latency_ms["count"] == report.read_latency_ms["count"] > 0
    assert report.server["groups"] == 8
    assert report.server["rss_per_connection_kib"] > 0
    assert "seq gaps 0" in format_report(report)
    assert orjson.loads(report_json(report))["connected"] == 24


def test_a_refused_connection_is_recorded() -> None:
    async def scenario() -> None:
        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        client = LoadClient("127.0.0.1", port, "/ws", Inspector(), lambda *args: None)
        with pytest.raises(ConnectionRefusedError):
            await client.connect()
        assert client.stats.error is not None and client.closed.done()

    run(scenario())
