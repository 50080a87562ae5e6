"""``make screenshot``: start the server with the demo feed, open the dashboard in headless
Chromium, let it run, and save a PNG (default ``screenshots/dashboard.png``, not committed).

Usage: ``python tests/web/screenshot.py [--out PATH] [--wait S] [--width W] [--height H]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webtools import (
    ROOT,
    ServerProcess,
    StaticServer,
    browser_unavailable,
    chromium,
    page_url,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots" / "dashboard.png")
    parser.add_argument("--wait", type=float, default=6.0, help="seconds of live data first")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--symbols", type=int, default=40)
    parser.add_argument("--format", choices=("json", "msgpack"), default="json")
    args = parser.parse_args(argv)

    reason = browser_unavailable()
    if reason is not None:
        print(f"screenshot: cannot run: {reason}", file=sys.stderr)
        return 1
    server = ServerProcess(symbols=args.symbols)
    server.start()
    static = None
    try:
        if not server.serves_dashboard():
            static = StaticServer()
            print("screenshot: the server does not serve / yet; using a static server + ?ws=")
        with chromium(args.width, args.height) as page:
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(page_url(server, static, format=args.format))
            page.wait_for_function("window.dashboard && window.dashboard.renderedSeq !== null",
                                   timeout=15_000)  # fmt: skip
            time.sleep(args.wait)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            if errors:
                print("screenshot: page errors:\n  " + "\n  ".join(errors), file=sys.stderr)
                return 1
        print(f"screenshot: wrote {args.out}")
        return 0
    finally:
        if static is not None:
            static.close()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
