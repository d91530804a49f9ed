"""The benchmark, one command: ``make bench`` (or ``bash scripts/bench.sh``).

    python -m bench.run [--quick] [--only throughput,latency,isolation,scale]
                        [--workload "600B x1" …] [--repeats 3] [--instances 1000,5000]
    python -m bench.run --only cluster-scale [--cluster-instances 20000]

``cluster-scale`` (bench/cluster_scale.py: replicas in ``cluster.mode: kafka``, a SIGKILL, a
rolling restart) is not in the default set: it takes minutes and most of the machine.

Needs the test services (scripts/services.sh up; scripts/bench.sh does it). Writes
``bench/results/<date>.json`` and PNG plots beside it, and prints the table and the goals.
Every figure is a ratio to raw baselines measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import cluster_scale, latency, report, scale, source_clock, throughput
from bench.common import ROOT, delete_created_topics, read_services
from bridge import eventloop

PARTS = ("throughput", "latency", "isolation", "scale")
OPTIONAL_PARTS = ("cluster-scale",)


def log(line: str) -> None:
    print(line, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short windows, fewer instances")
    parser.add_argument("--only", default=",".join(PARTS))
    parser.add_argument(
        "--workload", action="append", help="throughput workloads to run (e.g. '600B x1')"
    )
    parser.add_argument(
        "--repeats", type=int, help="rounds per throughput workload, median kept (3; quick 1)"
    )
    parser.add_argument("--instances", help="scale: instance counts to run (1000,5000; quick 200)")
    parser.add_argument(
        "--cluster-instances", type=int, default=2000, help="cluster-scale: over 4 replicas"
    )
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - {*PARTS, *OPTIONAL_PARTS}
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; known: {[*PARTS, *OPTIONAL_PARTS]}")
    return args


def empty_result() -> dict[str, Any]:
    """The result document before any part ran: the date, the machine, empty parts."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
        },
        "throughput": [],
        "latency": [],
        "latency_peer": [],
        "isolation": None,
        "scale": [],
        "cluster_scale": None,
    }


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    parts = set(args.only.split(","))
    services = read_services()
    timing = throughput.Timing(2.0, 3.0) if args.quick else throughput.Timing()
    window = 5.0 if args.quick else 15.0
    result = empty_result()
    try:
        if "throughput" in parts:
            log("throughput (records/s on the broker's side):")
            chosen = tuple(
                w for w in throughput.WORKLOADS if not args.workload or w.name in args.workload
            )
            repeats = args.repeats or (1 if args.quick else 3)
            result["throughput"] = await throughput.run(services, timing, log, chosen, repeats)
        if "latency" in parts:
            entry = await latency.at_rate(services, 1000, window)
            log(f"latency at 1000/s: ack {entry['ack_ms']}")
            result["latency"].append(entry)
            for run in range(1 if args.quick else 3):  # the bridge, then the peer, each run
                entry = await latency.at_rate(services, 5000, window)
                log(source_clock.line(f"latency at 5000/s, run {run + 1}, bridge", entry))
                result["latency"].append(entry)
                found = await source_clock.peer(services, 5000, window)
                if found is not None:
                    log(source_clock.line(f"latency at 5000/s, run {run + 1}, peer", found))
                    result["latency_peer"].append(found)
        if "isolation" in parts:
            result["isolation"] = await latency.isolation(services, window)
            log(f"isolation: {result['isolation']}")
        if "scale" in parts:
            counts = args.instances or ("200" if args.quick else "1000,5000")
            for instances in (int(n) for n in counts.split(",")):
                entry = await scale.run(services, instances, window)
                result["scale"].append(entry)
                hidden = ("timeline", "targets", "peer", "floor")  # the floor: in scale_table
                shown = {k: v for k, v in entry.items() if k not in hidden}
                log(f"scale: {shown}")
        if "cluster-scale" in parts:
            instances = 400 if args.quick else args.cluster_instances
            result["cluster_scale"] = await cluster_scale.run(services, instances, log=log)
    finally:  # the broker keeps no bench topics: thousands of them slow its restarts
        await delete_created_topics(services.kafka)
    result["targets"] = report.targets(
        result["throughput"],
        result["latency"],
        result["isolation"],
        result["scale"],
        result["latency_peer"],
    )
    stem = ROOT / "bench" / "results" / datetime.now(UTC).strftime("%Y-%m-%dT%H%M%S")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    show(result, [stem.with_suffix(".json"), *report.plots(result, stem)])
    return result


def show(result: dict[str, Any], written: list[Path]) -> None:
    """The tables, the goals and the files written."""
    log("")
    log(report.table(result["throughput"]))
    log("")
    if result["scale"]:
        log(report.scale_table(result["scale"]))
        log("")
    for goal in result["targets"]:
        log(f"{'met ' if goal['met'] else 'MISS'}  {goal['goal']}: {goal['value']}")
    for path in written:
        log(f"written: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    eventloop.run(main())  # the bridge's loop (uvloop) for the raw baselines too
