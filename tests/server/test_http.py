"""HTTP on the WebSocket port: /health, /metrics, refusals before the upgrade."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from server_helpers import DashboardServer, http_get, make_config, run, running_server
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

REQUIRED_METRICS = (
    "dashboard_connected_clients",
    "dashboard_messages_sent_total",
    "dashboard_messages_received_total",
    "dashboard_broadcast_latency_seconds_bucket",
    "dashboard_serialization_seconds_bucket",
    "dashboard_message_size_bytes_bucket",
    "dashboard_client_subscriptions",
    "dashboard_serialization_duration_seconds_bucket",
    "dashboard_build_info",
    "process_resident_memory_bytes",
    "process_open_fds",
    "python_info",
    "dashboard_active_connections",
    "dashboard_lagging_clients",
    "dashboard_resyncs_total",
    "dashboard_snapshot_encodes_per_flush_bucket",
)


def test_health_and_metrics(engine_name: str) -> None:
    async def scenario() -> None:
        async with running_server(engine_name, demo=True, demo_rate=200) as server:
            status, headers, body = await http_get(server.port, "/health")
            assert status == 200 and headers["content-type"] == "application/json"
            health = orjson.loads(body)
            assert health["status"] == "ok" and health["engine"] == engine_name
            assert health["epoch"] == server.epoch and health["feed"] == "demo"
            url = f"ws://127.0.0.1:{server.port}/ws?type=tui&format=json&channels=orders"
            async with connect(url) as ws:
                await ws.recv()
                await ws.send('{"type":"ping"}')
                await ws.recv()
                health = orjson.loads((await http_get(server.port, "/health"))[2])
                assert health["clients"] == {"tui": 1, "web": 0}
                status, headers, body = await http_get(server.port, "/metrics")
            assert status == 200 and headers["content-type"].startswith("text/plain")
            text = body.decode()
            for name in REQUIRED_METRICS:
                assert name in text, name
            assert 'dashboard_connected_clients{client_type="tui"} 1.0' in text
            assert 'dashboard_client_subscriptions{channel="orders"} 1.0' in text
            assert 'dashboard_messages_received_total{message_type="ping"} 1.0' in text
            assert (
                'dashboard_messages_sent_total{client_type="tui",message_type="pong"} 1.0' in text
            )
            assert 'dashboard_serialization_seconds_count{format="json",type="snapshot"}' in text
            assert 'dashboard_serialization_duration_seconds_count{format="json"}' in text
            assert 'dashboard_broadcast_latency_seconds_count{client_type="tui"}' in text
            assert (
                'dashboard_message_size_bytes_count{format="json",message_type="snapshot"}' in text
            )
            assert f'engine="{engine_name}"' in text and "dashboard_build_info{" in text
            assert "_created" not in text

    run(scenario())


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("format=xml", "format"),
        ("type=tui&channels=nope", "channels"),
        ("interval_ms=1", "interval_ms"),
        ("since=3", "epoch"),
        ("zzz=1", "zzz"),
    ],
)
def test_bad_parameters_get_400_naming_them(query: str, parameter: str) -> None:
    async def scenario() -> None:
        async with running_server("pure") as server:
            status, _, body = await http_get(server.port, f"/ws?{query}")
            assert status == 400
            error = orjson.loads(body)
            assert error["error"] == "bad_parameter" and error["parameter"] == parameter
            with pytest.raises(InvalidStatus) as info:
                async with connect(f"ws://127.0.0.1:{server.port}/ws?{query}"):
                    pass
            assert info.value.response.status_code == 400
            assert parameter in info.value.response.body.decode()
            assert (await http_get(server.port, "/health"))[0] == 200  # still fine

    run(scenario())


def test_dashboard_files_unknown_paths_and_plain_get_on_ws() -> None:
    async def scenario() -> None:
        async with running_server("pure") as server:
            status, headers, body = await http_get(server.port, "/")
            assert status == 200 and headers["content-type"].startswith("text/html")
            assert b"<html" in body.lower()
            for path in ("/nope", "/../pyproject.toml", "/__init__.py", "/%2e%2e/x.js"):
                status, _, body = await http_get(server.port, path)
                assert status == 404 and orjson.loads(body)["error"] == "not_found", path
            status, _, _ = await http_get(server.port, "/ws")  # no Upgrade header
            assert status == 426

    run(scenario())


def test_shutdown_answers_503_then_closes_clients_with_1001() -> None:
    async def scenario() -> None:
        # the grace only has to outlast the two requests below, however slow the machine
        server = DashboardServer(make_config("pure", shutdown_grace_s=3.0))
        await server.start()
        ws = await connect(f"ws://127.0.0.1:{server.port}/ws?format=json")
        await ws.recv()
        stopping = asyncio.create_task(server.shutdown())
        await asyncio.sleep(0.1)
        status, _, body = await http_get(server.port, "/health")
        assert status == 503 and orjson.loads(body)["status"] == "shutting_down"
        with pytest.raises(InvalidStatus) as info:
            await connect(f"ws://127.0.0.1:{server.port}/ws")
        assert info.value.response.status_code == 503
        await ws.wait_closed()
        assert ws.close_code == 1001
        await stopping

    run(scenario())
