"""The ``dashboard-server loadtest`` subcommand: its flags and how they map to a run."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

__all__ = ["add_loadtest_parser", "loadtest_command"]


def _list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_loadtest_parser(commands: Any) -> None:
    """Add the ``loadtest`` subcommand to the ``dashboard-server`` subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "loadtest",
        help="measure fan-out latency, throughput and cost with many clients",
        description="Open N minimal WebSocket clients over M processes against --url (or a "
        "local server this command starts), measure for --duration seconds and report latency "
        "from each message's flush timestamp to receipt, messages/s, seq gaps, the load "
        "generator's own CPU and, with a local server, the server's CPU and RSS per connection "
        "(docs/performance.md).",
    )
    parser.add_argument(
        "--url", help="ws://HOST:PORT/ws of a running server (default: start a local one)"
    )
    parser.add_argument("--clients", type=int, default=1000, help="connections (%(default)s)")
    parser.add_argument(
        "--processes", type=int, default=2, help="load-generator processes (%(default)s)"
    )
    parser.add_argument(
        "--duration", type=float, default=20.0, help="measured seconds (%(default)s)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds between connected and measured"
    )
    parser.add_argument(
        "--types", type=_list, default=("tui",), help="tiers, assigned round-robin (tui)"
    )
    parser.add_argument(
        "--formats", type=_list, default=("msgpack",), help="formats, round-robin (msgpack)"
    )
    parser.add_argument(
        "--channels",
        action="append",
        help="a channel set (comma-separated, or 'all'); repeat for a mix, assigned "
        "round-robin (default: all)",
    )
    parser.add_argument(
        "--compression", action="store_true", help="offer permessage-deflate (and enable it)"
    )
    parser.add_argument(
        "--storm", action="store_true", help="connect every client at the same instant"
    )
    parser.add_argument(
        "--concurrency", type=int, default=100, help="handshakes in flight per process"
    )
    parser.add_argument(
        "--server-args", default="", help="extra 'serve' flags for the local server (quoted)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON here")


def loadtest_command(args: argparse.Namespace) -> int:
    """Run ``dashboard-server loadtest`` from its parsed arguments; returns the exit status."""
    from dashboard_server.tools.loadtest.runner import (
        LoadtestOptions,
        format_report,
        report_json,
        run_loadtest,
    )

    options = LoadtestOptions(
        url=args.url,
        clients=args.clients,
        processes=args.processes,
        duration=args.duration,
        warmup=args.warmup,
        types=args.types,
        formats=args.formats,
        channels=tuple(None if c == "all" else c for c in args.channels or ["all"]),
        compression=args.compression,
        storm=args.storm,
        concurrency=args.concurrency,
        server_args=tuple(shlex.split(args.server_args)),
    )
    try:
        report = run_loadtest(options)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"dashboard-server loadtest: error: {exc}", file=sys.stderr)
        return 1
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as out:
            out.write(report_json(report) + "\n")
    return 0 if report.failed == 0 and report.gaps == 0 else 3
