"""Command line: parse arguments, build settings, hand over. Nothing imports this module.

Exit codes: 0 clean stop, 2 bad configuration, 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
import yaml

from bridge import __version__, eventloop
from bridge.compose import assemble
from bridge.demo import run_demo
from bridge.errors import BridgeError, ConfigError
from bridge.logs import configure_logging, get_logger
from bridge.settings import Settings, load_settings, masked_dump, resolve_token

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ryze-bridge",
        description="Relay RyzeAPI WebSocket events into Kafka topics and Redis streams.",
    )
    parser.add_argument("--version", action="version", version=f"ryze-bridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the bridge daemon")
    run.add_argument("--config", "-c", type=Path, help="YAML config file")
    demo = commands.add_parser(
        "demo", help="simulator + bridge + file sink with a live summary (no services needed)"
    )
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    demo.add_argument("--rate", type=float, default=25.0, help="events/s per instance")
    demo.add_argument("--output", type=Path, default=Path("ryze-demo/events.jsonl"))
    status = commands.add_parser("status", help="show the instances of a running bridge")
    status.add_argument("--url", default="http://127.0.0.1:9464", help="its admin address")
    status.add_argument("--token-env", help="environment variable holding the admin token")
    check = commands.add_parser(
        "check-config", help="validate a config file and print it with secrets masked"
    )
    check.add_argument("--config", "-c", type=Path, help="YAML config file")
    simulate = commands.add_parser(
        "simulate", help="run a local RyzeAPI-compatible server (REST + WebSocket)", add_help=False
    )
    simulate.add_argument("args", nargs=argparse.REMAINDER, help="simulator options (see --help)")
    return parser


def token_warnings(settings: Settings) -> list[str]:
    """Instances whose token cannot be resolved in this environment (each fails alone)."""
    warnings = []
    for name, instance in settings.instances.items():
        try:
            resolve_token(name, instance, os.environ)
        except ConfigError as exc:
            warnings.extend(exc.problems)
    return warnings


def report_invalid(path: Path | None, exc: ConfigError) -> int:
    print(f"invalid config{f' {path}' if path else ''}:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_BAD_CONFIG


def check_config(path: Path | None) -> int:
    """Print the effective config (secrets masked); exit 2 naming every bad key."""
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        return report_invalid(path, exc)
    sys.stdout.write(yaml.safe_dump(masked_dump(settings), sort_keys=False))
    for warning in token_warnings(settings):
        print(f"warning: {warning} (that instance will fail until it is)", file=sys.stderr)
    return EXIT_OK


def run(path: Path | None) -> int:
    """The daemon: settings, logging, then the process built from them until a signal."""
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        return report_invalid(path, exc)
    configure_logging(settings.log.level, settings.log.format)
    try:
        process = assemble(settings, config_path=path)
        eventloop.settle_heap()
        return eventloop.run(process.run(), settings.event_loop)
    except ConfigError as exc:
        return report_invalid(path, exc)
    except BridgeError as exc:
        get_logger("bridge.cli").error("bridge.failed", error=str(exc))
        return EXIT_FAILURE


STATUS_COLUMNS = (
    ("instance", 24),
    ("state", 13),
    ("connected_since", 28),
    ("seconds_since_last_frame", 10),
    ("frames", 9),
    ("reconnects", 10),
    ("last_ensure", 11),
    ("last_error", 0),
)


def status_table(instances: dict[str, dict[str, object]]) -> str:
    """The /instances answer as a fixed-width table (pure)."""
    titles = {"seconds_since_last_frame": "silent_s", "connected_since": "connected since"}
    rows = [[titles.get(c, c) for c, _ in STATUS_COLUMNS]]
    for name in sorted(instances):
        info = {"instance": name, **instances[name]}
        rows.append(["-" if info.get(c) is None else str(info.get(c)) for c, _ in STATUS_COLUMNS])
    return "\n".join(
        " ".join(
            cell.ljust(width) if width else cell
            for cell, (_, width) in zip(row, STATUS_COLUMNS, strict=True)
        ).rstrip()
        for row in rows
    )


def show_status(url: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(f"{url.rstrip('/')}/instances", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        print(f"cannot reach {url}: {type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILURE
    if response.status_code != 200:
        print(f"{url}: HTTP {response.status_code} {response.text.strip()}", file=sys.stderr)
        return EXIT_FAILURE
    print(status_table(response.json()["instances"]))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:  # its options are the simulator's own
        from bridge.simulator.cli import main as simulate

        return simulate(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run(args.config)
    if args.command == "demo":
        configure_logging("warning", "console")
        return asyncio.run(
            run_demo(assemble, duration=args.duration, rate=args.rate, output=args.output)
        )
    if args.command == "status":
        token = os.environ.get(args.token_env, "") if args.token_env else ""
        return show_status(args.url, token)
    if args.command == "check-config":
        return check_config(args.config)
    return EXIT_FAILURE
