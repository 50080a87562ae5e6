"""The README's embedding example, run as written (port 0 instead of 8080, and a client checking
what it serves instead of the hour-long sleep)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from server_helpers import ENGINES  # noqa: F401  (imports the source tree if needed)

from dashboard_server.client.connection import DashboardClient

README = Path(__file__).resolve().parents[2] / "README.md"


def embedding_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Embedding the server in a Python program") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_readme_embedding_example_runs() -> None:
    code = embedding_example()
    assert "port=8080" in code and "await asyncio.sleep(3600)" in code
    seen: dict[str, Any] = {}

    async def check(server: Any) -> None:
        url = f"ws://127.0.0.1:{server.port}/ws"
        async with DashboardClient(url, format="json", reconnect=False) as client:
            await client.wait_for(lambda c: "BTCUSDT" in c.data.get("positions", {}), timeout=10)
            await client.wait_for(lambda c: c.status is not None, timeout=10)
            seen["data"] = client.data
            seen["status"] = client.status

    code = code.replace("port=8080", "port=0").replace(
        "await asyncio.sleep(3600)", "await check(server)"
    )
    namespace: dict[str, Any] = {"__name__": "readme_example", "check": check}
    exec(compile(code, str(README), "exec"), namespace)  # our own README
    assert seen["data"]["market_data"] == {"BTCUSDT": {"last_price": 67012.5, "bid": 67012.4}}
    assert seen["data"]["positions"] == {"BTCUSDT": {"side": "long", "quantity": 1.5}}
    assert seen["status"]["feed"] == "none" and seen["status"]["state"] == "ok"
