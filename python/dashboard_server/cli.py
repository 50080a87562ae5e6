"""The ``dashboard-server`` command.

``dashboard-server serve [flags]`` runs the server until SIGTERM/SIGINT (then shuts down
gracefully and exits 0); ``dashboard-server watch`` shows a server's live state in the terminal.
Every setting of :mod:`dashboard_server.config` has a flag; a bad value stops the start with a
message naming it (exit status 2).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from dashboard_server import __version__
from dashboard_server.config import CONFIG_ENV, SETTINGS, Config, ConfigError, load_config
from dashboard_server.engine import EngineUnavailable
from dashboard_server.logs import configure_logging

__all__ = ["build_parser", "main"]

log = logging.getLogger("dashboard_server")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dashboard-server`` command."""
    parser = argparse.ArgumentParser(
        prog="dashboard-server", description="Real-time state server for trading dashboards."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Settings: CLI flags > DASHBOARD_* env > YAML file > "
        "defaults (docs/configuration.md).",
    )
    serve.add_argument(
        "--config", metavar="FILE", help=f"YAML settings file (default: ${CONFIG_ENV})"
    )
    for setting in SETTINGS:
        serve.add_argument(
            setting.flag,
            dest=setting.name,
            metavar=setting.metavar,
            help=f"{setting.help} [env {setting.env}]",
        )
    watch = commands.add_parser(
        "watch",
        help="show a server's live state in the terminal",
        description="Connect with the Python client and redraw the state periodically.",
    )
    watch.add_argument(
        "--url", default="ws://127.0.0.1:8080/ws", help="WebSocket URL (%(default)s)"
    )
    watch.add_argument("--format", choices=("msgpack", "json"), default="msgpack")
    watch.add_argument("--type", choices=("tui", "web"), default="tui")
    watch.add_argument("--channels", help="comma-separated channels (default: all)")
    watch.add_argument("--duration", type=float, help="stop after this many seconds")
    return parser


async def _serve(config: Config) -> None:
    from dashboard_server.server import DashboardServer

    server = DashboardServer(config)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_shutdown)
    await server.wait_stopped()


def _watch(args: argparse.Namespace) -> int:
    from dashboard_server.watch import run_watch

    channels = [c for c in args.channels.split(",") if c] if args.channels else None
    try:
        asyncio.run(
            run_watch(
                args.url,
                format=args.format,
                type=args.type,
                channels=channels,
                duration=args.duration,
            )
        )
    except KeyboardInterrupt:
        return 0
    except (OSError, ConnectionError) as exc:
        print(f"dashboard-server watch: error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "watch":
        return _watch(args)
    cli = {s.name: getattr(args, s.name) for s in SETTINGS}
    try:
        config = load_config(cli=cli, config_file=args.config)
    except ConfigError as exc:
        print(f"dashboard-server: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    try:
        asyncio.run(_serve(config))
    except (ConfigError, EngineUnavailable, ValueError) as exc:
        log.error("cannot start: %s", exc)
        print(f"dashboard-server: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        log.error("cannot start: %s", exc)
        print(f"dashboard-server: error: {exc}", file=sys.stderr)
        return 1
    return 0
