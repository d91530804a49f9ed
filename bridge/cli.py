"""Command line: parse arguments, build settings, hand over. Nothing imports this module.

Exit codes: 0 clean stop, 2 bad configuration, 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from bridge import __version__, eventloop
from bridge.compose import assemble
from bridge.demo import run_demo
from bridge.errors import BridgeError, ConfigError
from bridge.fdlimit import FileLimit, files_needed, raise_soft_limit
from bridge.logs import configure_logging, get_logger
from bridge.settings import Settings, load_settings, masked_dump, resolve_token
from bridge.status import STATES, StatusQuery, parse_states
from bridge.statusview import ask_all, merge, render

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
    add_status(commands)
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


def add_status(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status", help="summarize and list the instances of a running bridge or cluster"
    )
    status.add_argument("--url", default="http://127.0.0.1:9464", help="its admin address")
    status.add_argument(
        "--replicas", metavar="URL,URL", help="every replica's admin address: a cluster-wide view"
    )
    status.add_argument("--token-env", help="environment variable holding the admin token")
    status.add_argument("--state", metavar="STATE[,STATE]", help=f"only {', '.join(STATES)}")
    status.add_argument("--name", default="*", metavar="GLOB", help="only names matching GLOB")
    status.add_argument(
        "--limit", type=int, default=100, help="at most this many rows, trouble first (0: all)"
    )
    status.add_argument("--json", action="store_true", help="print JSON (docs/operations.md)")


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
        from bridge.topics import show_topics

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
    alone = settings.cluster.mode == "none"  # a cluster's replica runs a share, unknown yet
    report_file_limit(raise_soft_limit(), len(settings.instances) if alone else 0)
    try:
        process = assemble(settings, config_path=path)
        eventloop.settle_heap()
        return eventloop.run(process.run(), settings.event_loop)
    except ConfigError as exc:
        return report_invalid(path, exc)
    except BridgeError as exc:
        get_logger("bridge.cli").error("bridge.failed", error=str(exc))
        return EXIT_FAILURE


def report_file_limit(limit: FileLimit, instances: int) -> None:
    """Say the open-files limit the process runs with; warn when the configured instances'
    sockets may not fit in it (discovered instances come on top; 0 instances: a cluster's
    replica, whose share is not known yet: the socket slots bound it)."""
    log = get_logger("bridge.cli")
    needed = files_needed(instances)
    if limit.soft < needed:
        log.warning(
            "process.open_files_short",
            limit=limit.soft,
            hard_limit=limit.hard,
            needed=needed,
            action="raise the hard RLIMIT_NOFILE (ulimit -Hn) of the bridge's container or unit",
        )
    elif limit.raised_from is not None:
        log.info("process.open_files_raised", limit=limit.soft, was=limit.raised_from)


def show_status(args: argparse.Namespace) -> int:
    """Ask the replica (or every one of ``--replicas``), print the merged view; exit 1 when
    a replica did not answer (after printing what the others said)."""
    states = parse_states(args.state or "")
    if isinstance(states, str):
        print(f"--state: {states}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.limit < 0:
        print("--limit: not below 0 (0: all)", file=sys.stderr)
        return EXIT_BAD_CONFIG
    token = os.environ.get(args.token_env, "") if args.token_env else ""
    urls = [u.strip() for u in args.replicas.split(",") if u.strip()] if args.replicas else []
    query = StatusQuery(states, args.name, args.limit)
    answers = asyncio.run(ask_all(urls or [args.url], token, query))
    view = merge(answers, args.limit)
    failed = [a for a in answers if a.body is None]
    if args.json:
        print(json.dumps(view, indent=2))
    elif len(failed) < len(answers):  # nobody answered: no table of nothing
        owners = len(answers) > 1 or any("replica" in e for e in replica_entries(view))
        print(render(view, owners=owners))
    for answer in failed:
        print(f"{answer.url}: {answer.error}", file=sys.stderr)
    return EXIT_FAILURE if failed else EXIT_OK


def replica_entries(view: dict[str, object]) -> list[dict[str, object]]:
    entries = view.get("replicas")
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


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
        return show_status(args)
    return EXIT_FAILURE
