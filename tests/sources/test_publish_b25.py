"""``dashboard-server publish-demo --sources b25`` drives a real Redis and a real NATS through the
b25 contract; a server with ``sources=b25`` reads it and a client sees every section the demo
feeds populated, with numbers where the backends write decimal strings."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import orjson
from b25env import until
from nats_helpers import NatsProcess
from redis_helpers import RedisProcess
from server_helpers import make_config, run

from dashboard_server.client.connection import DashboardClient
from dashboard_server.server.app import DashboardServer

B25_STATES = {"NEW", "SUBMITTED", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED"}


def _populated(data: dict[str, Any]) -> bool:
    return all(data.get(s) for s in ("market_data", "orderbook", "orders", "positions"))


def test_publish_demo_b25_feeds_a_b25_server(
    redis_proc: RedisProcess, nats_proc: NatsProcess
) -> None:
    redis = redis_proc.client()
    redis.config_set("notify-keyspace-events", "KA")

    async def main() -> None:
        server = DashboardServer(
            make_config(
                "native",
                sources="b25",
                redis_url=redis_proc.url,
                nats_url=nats_proc.url,
                redis_health_interval_s=0.2,
                tui_interval_ms=50,
            )
        )
        await server.start()
        publisher = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dashboard_server",
            "publish-demo",
            "--sources",
            "b25",
            "--redis-url",
            redis_proc.url,
            "--nats-url",
            nats_proc.url,
            "--symbols",
            "4",
            "--rate",
            "200",
            "--seed",
            "3",
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            client = DashboardClient(f"ws://127.0.0.1:{server.port}/ws", type="tui")
            async with client:
                await until(
                    lambda: _populated(client.data) and client.data["balances"] and
                    client.data["risk"] and {e["channel"] for e in client.state.events}
                    >= {"fills", "trades"},
                    "every b25 section populated",
                    timeout=40,
                )  # fmt: skip
                data = client.data
        finally:
            publisher.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(publisher.communicate(), 30)
            await server.shutdown()
        assert publisher.returncode == 0, stderr.decode()

        assert len(data["market_data"]) == 4
        for quote in data["market_data"].values():
            assert isinstance(quote["last_price"], float) and quote["bid_price"] > 0
        for book in data["orderbook"].values():
            bids = [p for p, _ in book["bids"]]
            asks = [p for p, _ in book["asks"]]
            assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
            assert all(isinstance(x, float) for level in book["bids"] for x in level)
            assert book["timestamp"].endswith("Z")
        for oid, order in data["orders"].items():
            assert order["order_id"] == oid and order["state"] in B25_STATES
            assert isinstance(order["quantity"], int | float)
        for position in data["positions"].values():
            assert isinstance(position["quantity"], float)
            assert position["side"] == (
                "LONG"
                if position["quantity"] > 0
                else "SHORT"
                if position["quantity"] < 0
                else "FLAT"
            )
            assert isinstance(position["entry_price"], float) and "trades" not in position
        assert data["balances"]
        for balance in data["balances"].values():
            assert all(isinstance(balance[f], float) for f in ("free", "locked", "total"))
        metrics = data["risk"]["metrics"]
        assert metrics["timestamp"].endswith("Z") and metrics["total_equity"] > 0
        assert data["strategies"] == {} and data["pnl"] == {}  # HTTP-only in b25: off here
        fills = [e["data"] for e in client.state.events if e["channel"] == "fills"]
        assert all(isinstance(f["price"], float) and f["side"] in ("BUY", "SELL") for f in fills)
        malformed = server.metrics.registry.get_sample_value(
            "dashboard_ingest_malformed_total", {"section": "orders"}
        )
        assert not malformed
        keys = {k.decode().split(":")[0] for k in redis.scan_iter(count=1000)}
        assert {"market_data", "order", "position", "balance"} <= keys
        balance = orjson.loads(redis.get(next(iter(redis.scan_iter("balance:*")))))
        assert isinstance(balance["free"], str)  # decimal strings, as account-monitor writes

    run(main(), timeout=90)
    redis.close()
