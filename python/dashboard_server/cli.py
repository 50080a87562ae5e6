"""The ``dashboard-server`` command.

``dashboard-server serve [flags]`` runs the server until SIGTERM/SIGINT (then shuts down
gracefully and exits 0); ``dashboard-server watch`` shows a server's live state in the terminal;
``dashboard-server publish-demo --redis-url URL`` drives the demo feed into Redis through the
backends' contract (docs/redis.md), or with ``--sources b25`` into Redis and NATS the way the
original system's backends write (docs/sources.md); ``dashboard-server loadtest`` measures
fan-out with many clients (docs/performance.md).
Every setting of :mod:`dashboard_server.config` has a flag; a bad value stops the start with a
message naming it (exit status 2).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from dashboard_server import __version__
from dashboard_server.config import CONFIG_ENV, SETTINGS, Config, ConfigError, load_config
from dashboard_server.core.engine import EngineUnavailable
from dashboard_server.telemetry.logs import configure_logging
from dashboard_server.tools.loadtest.command import add_loadtest_parser, loadtest_command

__all__ = ["build_parser", "main"]

log = logging.getLogger("dashboard_server")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dashboard-server`` command."""
    parser = argparse.ArgumentParser(
        prog="dashboard-server",
        description="Real-time state server for trading dashboards: Redis state (or a built-in "
        "demo feed) to WebSocket clients as a snapshot then compact updates.",
        epilog="`dashboard-server COMMAND --help` lists a command's options. Documentation: "
        "docs/configuration.md (settings), docs/protocol.md (WebSocket and HTTP), docs/redis.md, "
        "docs/security.md, docs/operations.md (deployment).",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="print the version and exit",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server until SIGTERM/SIGINT (then close every client with 1001 "
        "and exit 0). With no settings it serves the live demo feed on http://127.0.0.1:8080 "
        "(/ dashboard, /ws, /health, /metrics). Settings: CLI flags > DASHBOARD_* env > YAML "
        "file > defaults (docs/configuration.md); an invalid one exits with status 2.",
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
        description="Connect with the Python client and redraw the state at the tier's rate "
        "(tui 100 ms, web 250 ms, or --interval-ms), fitted to the terminal.",
    )
    watch.add_argument(
        "address",
        nargs="?",
        help="the server: ws://host:port/ws, http://host:port/ (the dashboard page's URL) or "
        "host:port (default: --url)",
    )
    watch.add_argument(
        "--url", default="ws://127.0.0.1:8080/ws", help="the server, as ADDRESS (%(default)s)"
    )
    watch.add_argument(
        "--interval-ms",
        type=int,
        help="subscribe with this flush interval (default: the tier's); also the redraw rate",
    )
    watch.add_argument(
        "--format",
        choices=("msgpack", "json"),
        default="msgpack",
        help="message encoding (%(default)s)",
    )
    watch.add_argument(
        "--type",
        choices=("tui", "web"),
        default="tui",
        help="tier, which sets the update interval (%(default)s)",
    )
    watch.add_argument("--channels", help="comma-separated channels (default: all)")
    watch.add_argument("--duration", type=float, help="stop after this many seconds")
    watch.add_argument(
        "--token",
        default=os.environ.get("DASHBOARD_TOKEN"),
        help="bearer token for a server with authentication on (default: $DASHBOARD_TOKEN)",
    )
    publish = commands.add_parser(
        "publish-demo",
        help="drive the demo feed into Redis, as the trading backends would",
        description="Write the demo feed's items under {section}:{id} and PUBLISH them "
        "(docs/redis.md), until SIGINT/SIGTERM or --duration.",
    )
    publish.add_argument(
        "--redis-url",
        default=os.environ.get("DASHBOARD_REDIS_URL") or "redis://127.0.0.1:6379/0",
        help="Redis URL (default: $DASHBOARD_REDIS_URL or %(default)s)",
    )
    publish.add_argument("--symbols", type=int, default=20, help="symbols simulated (%(default)s)")
    publish.add_argument("--rate", type=float, default=50.0, help="steps per second (%(default)s)")
    publish.add_argument("--seed", type=int, help="seed of the simulation (default: random)")
    publish.add_argument(
        "--format",
        choices=("json", "msgpack"),
        default="json",
        help="payload encoding written to Redis (%(default)s)",
    )
    publish.add_argument("--duration", type=float, help="stop after this many seconds")
    publish.add_argument(
        "--sources",
        choices=("generic", "b25"),
        default="generic",
        help="the contract written: generic ({section}:{id} SET + PUBLISH) or b25 (the original "
        "system's keys, channels and NATS subjects, docs/sources.md) (%(default)s)",
    )
    publish.add_argument(
        "--nats-url",
        default=os.environ.get("DASHBOARD_NATS_URL") or "nats://127.0.0.1:4222",
        help="NATS server, for --sources b25 (default: $DASHBOARD_NATS_URL or %(default)s)",
    )
    add_loadtest_parser(commands)
    return parser


async def _serve(config: Config) -> None:
    from dashboard_server.server.app import DashboardServer

    server = DashboardServer(config)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_shutdown)
    await server.wait_stopped()


def _watch(args: argparse.Namespace) -> int:
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    from dashboard_server.client.connection import ClientClosed
    from dashboard_server.client.watch import run_watch, watch_url

    channels = [c for c in args.channels.split(",") if c] if args.channels else None
    try:
        url = watch_url(args.address or args.url)
    except ValueError as exc:
        print(f"dashboard-server watch: error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(
            run_watch(
                url,
                format=args.format,
                type=args.type,
                interval_ms=args.interval_ms,
                channels=channels,
                duration=args.duration,
                token=args.token,
            )
        )
    except KeyboardInterrupt:
        return 0
    except InvalidStatus as exc:
        status = exc.response.status_code
        hint = " (it needs a token: --token or $DASHBOARD_TOKEN)" if status == 401 else ""
        print(
            f"dashboard-server watch: error: {url}: the server refused the connection with "
            f"HTTP {status}{hint}",
            file=sys.stderr,
        )
        return 1
    except (OSError, ConnectionError, InvalidHandshake, ClientClosed) as exc:
        print(f"dashboard-server watch: error: {url}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _publish_demo(args: argparse.Namespace) -> None:
    from dashboard_server.tools.publish import publish_demo

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    publisher = await publish_demo(
        args.redis_url,
        symbols=args.symbols,
        rate=args.rate,
        seed=args.seed,
        fmt=args.format,
        duration=args.duration,
        stop=stop,
        sources=args.sources,
        nats_url=args.nats_url,
    )
    log.info(
        "publish-demo stopped",
        extra={
            "writes": publisher.writes,
            "events": publisher.events,
            "failures": publisher.failures,
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "watch":
        return _watch(args)
    if args.command == "loadtest":
        return loadtest_command(args)
    if args.command == "publish-demo":
        configure_logging("info")
        try:
            asyncio.run(_publish_demo(args))
        except ValueError as exc:
            print(f"dashboard-server publish-demo: error: {exc}", file=sys.stderr)
            return 2
        return 0
    cli = {s.name: getattr(args, s.name) for s in SETTINGS}
    warnings: list[str] = []
    try:
        config = load_config(cli=cli, config_file=args.config, warnings=warnings)
    except ConfigError as exc:
        print(f"dashboard-server: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    for warning in warnings:
        log.warning("%s: ignored (strict_env refuses to start instead)", warning)
    if config.workers > 1:
        from dashboard_server.server.workers import run_workers

        return run_workers(config)
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
