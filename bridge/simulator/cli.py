"""``ryze-bridge simulate``: the simulator as a process.

Prints ``simulator listening on http://HOST:PORT`` (``https://`` when its config file names
``tls_cert`` and ``tls_key``) on stdout once it accepts connections
(tests that start it parse that line) and stops cleanly on SIGTERM/SIGINT (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bridge import eventloop
from bridge.logs import configure_logging
from bridge.simulator import SimConfig, Simulator
from bridge.simulator.frames import DEFAULT_MIX
from bridge.simulator.server import heap_keeper


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ryze-bridge simulate",
        description="A local RyzeAPI-compatible server (REST + WebSocket) with fault knobs.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--config", type=Path, help="YAML/JSON: instances, account_tokens, …")
    parser.add_argument("--instances", type=int, default=0, help="add inst-000… with tok-000…")
    parser.add_argument("--account-token", action="append", default=[], dest="account_tokens")
    parser.add_argument("--preconfigured", action="store_true", help="configs start enabled")
    parser.add_argument("--rate", type=float, default=5.0, help="frames/s per instance, 0 = max")
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--pong-timeout", type=float, default=60.0)
    parser.add_argument("--rate-limit", type=int, default=100, help="requests per window")
    parser.add_argument("--rate-window", type=float, default=60.0, help="seconds")
    parser.add_argument("--record-frames", action="store_true")
    parser.add_argument("--always-emit", action="store_true", help="events with no listener")
    parser.add_argument("--prebuilt", type=int, default=0, help="frames built once, looped")
    parser.add_argument("--media-bytes", type=int, default=0, help="inline media size")
    parser.add_argument(
        "--stamp-sent", action="store_true", help="frames carry their send time (timestamp)"
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--id-tag", default="", help="in every frame id (simulators side by side: ids stay unique)"
    )
    return parser


def config_from(args: argparse.Namespace) -> SimConfig:
    file: dict[str, Any] = {}
    if args.config is not None:
        file = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
    instances = dict(file.get("instances", {}))
    instances.update({f"inst-{n:03d}": f"tok-{n:03d}" for n in range(args.instances)})
    return SimConfig(
        instances=instances,
        account_tokens=[*file.get("account_tokens", []), *args.account_tokens],
        preconfigured=args.preconfigured or bool(file.get("preconfigured", False)),
        rate=args.rate,
        ping_interval=args.ping_interval,
        pong_timeout=args.pong_timeout,
        rate_limit=args.rate_limit,
        rate_window=args.rate_window,
        record_frames=args.record_frames,
        always_emit=args.always_emit,
        prebuilt=args.prebuilt,
        media_bytes=args.media_bytes,
        stamp_sent=args.stamp_sent or bool(file.get("stamp_sent", False)),
        mix=dict(file.get("mix") or DEFAULT_MIX),
        seed=args.seed,
        id_tag=args.id_tag,
        host=args.host,
        port=args.port,
        tls_cert=_path_text(file.get("tls_cert")),
        tls_key=_path_text(file.get("tls_key")),
    )


def _path_text(value: Any) -> str | None:
    """A file path from the config file (``tls_cert``, ``tls_key``: serve https/wss), or None."""
    return None if value is None else str(value)


async def serve(config: SimConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with Simulator(config) as sim:
        keeper = asyncio.create_task(heap_keeper(sim.server).run())  # (logs to stderr)
        try:
            print(f"simulator listening on {sim.base_url}", flush=True)
            print(json.dumps({"instances": sorted(config.instances)}), flush=True)
            await stop.wait()
        finally:
            keeper.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from(args)
    except (OSError, yaml.YAMLError) as exc:
        print(f"simulate: bad --config: {exc}", file=sys.stderr)
        return 2
    configure_logging("info", "auto")  # stderr: stdout says where it listens, nothing else
    eventloop.run(serve(config))  # uvloop where installed, as the bridge
    return 0
