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
from bridge.topics import show_topics

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
    topics = commands.add_parser(
        "topics", help="list the topics/streams the config writes to (--check: missing ones)"
    )
    topics.add_argument("--config", "-c", type=Path, help="YAML config file")
    topics.add_argument(
        "--check", action="store_true", help="ask the Kafka broker which are missing (exit 1)"
    )
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


def list_topics(path: Path | None, *, check: bool) -> int:
    """Print the destinations; exit 1 when ``check`` finds one missing or the broker cannot
    be asked, 2 on a bad config."""
    try:
        settings = load_settings(path)
        complete = show_topics(settings, check=check, environ=os.environ)
    except ConfigError as exc:
        return report_invalid(path, exc)
    except BridgeError as exc:
        print(f"cannot check the topics: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK if complete else EXIT_FAILURE


def run(path: Path | None) -> int:
    """The daemon: settings, logging, then the process built from them until a signal."""
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        return report_invalid(path, exc)
    configure_logging(settings.log.level, settings.log.format)
    try:
        return eventloop.run(assemble(settings, config_path=path).run(), settings.event_loop)
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


def config_command(args: argparse.Namespace) -> int:
    """The commands that read a config file: run, check-config, topics."""
    if args.command == "run":
        return run(args.config)
    if args.command == "topics":
        return list_topics(args.config, check=args.check)
    return check_config(args.config)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:  # its options are the simulator's own
        from bridge.simulator.cli import main as simulate

        return simulate(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command in ("run", "check-config", "topics"):
        return config_command(args)
    if args.command == "demo":
        configure_logging("warning", "console")
        return asyncio.run(
            run_demo(assemble, duration=args.duration, rate=args.rate, output=args.output)
        )
    if args.command == "status":
        token = os.environ.get(args.token_env, "") if args.token_env else ""
        return show_status(args.url, token)
    return EXIT_FAILURE
