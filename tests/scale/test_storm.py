"""A reconnect storm costs one snapshot encode per group per flush, not one per client."""

from __future__ import annotations

import asyncio

from server_helpers import run, wait_until

from dashboard_server.config import Config
from dashboard_server.server.app import DashboardServer
from dashboard_server.tools.loadtest.wsclient import Inspector, LoadClient, MessageInfo

CLIENTS = 300


def test_storm_snapshot_encodes_count_groups_not_clients() -> None:
    async def scenario() -> None:
        config = Config().replace(port=0, demo=False, max_connections_per_address=CLIENTS)
        server = DashboardServer(config)
        await server.start()
        try:
            server.writer.replace("/market_data/BTCUSDT", {"last": 50100.0, "volume": 12.5})
            inspector = Inspector()

            def ignore(
                info: MessageInfo, now: float, kernel: float | None, prefix: bytes, size: int
            ) -> None:
                del info, now, kernel, prefix, size

            clients = [
                LoadClient(
                    "127.0.0.1",
                    server.port,
                    f"/ws?type=tui&format={'json' if i % 3 == 0 else 'msgpack'}",
                    inspector,
                    ignore,
                )
                for i in range(CLIENTS)
            ]
            await asyncio.gather(*(c.connect() for c in clients))
            await wait_until(lambda: all(c.stats.snapshot_at for c in clients), timeout=30)
            registry = server.metrics.registry
            encodes = registry.get_sample_value("dashboard_snapshot_encodes_total")
            flushes = registry.get_sample_value("dashboard_snapshot_encodes_per_flush_count")
            at_most_two = registry.get_sample_value(
                "dashboard_snapshot_encodes_per_flush_bucket", {"le": "2.0"}
            )
            assert server.hub.group_count() == 2
            assert flushes is not None and encodes is not None
            assert at_most_two == flushes  # never more encodes in a flush than groups
            assert 2 <= encodes <= 2 * flushes
            for client in clients:
                client.close()
        finally:
            await server.shutdown()

    run(scenario(), timeout=60)
