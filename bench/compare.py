"""Two builds of the bridge in one run: ``make bench-compare BASE=<commit>``.

    python -m bench.compare --base-python PY --base-dir DIR [--base-label REV]
                            [--rounds 3] [--seconds 8] [--rate 5000]

A redesign is judged against the code before it, on the same machine in the same minutes:
each round measures the base build and this checkout back to back (their order alternating
from round to round, so a machine that slows down for a while costs both alike) on the
benchmark's main workloads — 600 B frames from one instance into Kafka, with the shipper
and in one process (records/s, CPU), and the receipt→ack and consumer latencies of one
instance at ``--rate`` events/s, from the bridge's receipt and hop by hop from the source's
send time (``src_*``: bench.hops; ``--latency-only`` measures only the latencies). Prints
each build's median and the ratio this/base, and writes
``bench/results/<date>-compare.json``. ``scripts/bench-compare.sh`` checks the base commit out
and installs its locked environment beside this one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import latency, throughput
from bench.common import (
    HEAD,
    ROOT,
    Build,
    Services,
    delete_created_topics,
    read_services,
    simulator,
)
from bridge import eventloop

Sample = dict[str, float]
THROUGHPUT_RUNS = (("kafka", False), ("kafka", True))  # (sink, one process)


def log(line: str) -> None:
    print(line, flush=True)


def order(builds: tuple[Build, Build], round_no: int) -> tuple[Build, Build]:
    """The builds in the order of round ``round_no``: alternating, base first in round 0."""
    return builds if round_no % 2 == 0 else (builds[1], builds[0])


def medians(samples: list[Sample]) -> Sample:
    """Per field, the median over the rounds (pure); a field missing in a round is skipped."""
    fields = sorted({k for s in samples for k in s})
    return {f: statistics.median(s[f] for s in samples if f in s) for f in fields}


def ratios(head: Sample, base: Sample) -> Sample:
    """head / base per field both have (pure); a zero base gives no ratio."""
    return {f: head[f] / base[f] for f in head if base.get(f)}


async def throughput_sample(services: Services, build: Build, timing: throughput.Timing) -> Sample:
    workload = throughput.WORKLOADS[0]
    sample: Sample = {}
    with tempfile.TemporaryDirectory(prefix="ryze-bench-cmp-") as tmp:
        async with simulator(Path(tmp), instances=1, rate=0, prebuilt=workload.prebuilt) as source:
            box = throughput.Box(source, services)
            for sink, one_process in THROUGHPUT_RUNS:
                name = f"{sink}{'_one_process' if one_process else ''}"
                got = await throughput.bridge(
                    box, workload, sink, timing, one_process=one_process, build=build
                )
                sample[f"{name}_rate"] = got["rate"]
                sample[f"{name}_cpu"] = got.get("cpu", 0.0)
    return sample


async def latency_sample(services: Services, build: Build, rate: float, seconds: float) -> Sample:
    entry = await latency.at_rate(services, rate, seconds, build)
    sample: Sample = {"latency_cpu_s_per_1000": float(entry["cpu_s_per_1000"])}
    views = {view: entry[view] for view in ("ack_ms", "consumer_ms")}
    views |= {f"src_{hop}_ms": found for hop, found in entry["source_clock"]["hops_ms"].items()}
    for view, found in views.items():
        for q in ("p50", "p99", "p999"):
            value = found.get(q)
            if value is not None:
                sample[f"{view}_{q}"] = float(value)
    return sample


def table(labels: tuple[str, str], base: Sample, head: Sample) -> list[str]:
    """The comparison as printed lines (pure)."""
    lines = [f"{'measure':<32}{labels[0]:>14}{labels[1]:>14}{'ratio':>9}"]
    for field in sorted(set(base) | set(head)):
        b, h = base.get(field), head.get(field)
        ratio = f"{h / b:.2f}" if b and h is not None else "—"
        shown_b = "—" if b is None else f"{b:,.2f}"
        shown_h = "—" if h is None else f"{h:,.2f}"
        lines.append(f"{field:<32}{shown_b:>14}{shown_h:>14}{ratio:>9}")
    return lines


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-python", required=True)
    parser.add_argument("--base-dir", required=True, type=Path)
    parser.add_argument("--base-label", default="base")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument(
        "--latency-only", action="store_true", help="only the latencies (source clock too)"
    )
    args = parser.parse_args(argv)
    services = read_services()
    base = Build(args.base_label, args.base_python, args.base_dir)
    builds = (base, HEAD)
    timing = throughput.Timing(3.0, args.seconds)
    samples: dict[str, list[Sample]] = {base.label: [], HEAD.label: []}
    try:
        for round_no in range(args.rounds):
            for build in order(builds, round_no):
                sample: Sample = {}
                if not args.latency_only:
                    sample = await throughput_sample(services, build, timing)
                sample |= await latency_sample(services, build, args.rate, args.seconds)
                samples[build.label].append(sample)
                shown = ", ".join(f"{k} {v:,.1f}" for k, v in sorted(sample.items()))
                log(f"round {round_no + 1} {build.label}: {shown}")
    finally:
        await delete_created_topics(services.kafka)
    base_m, head_m = medians(samples[base.label]), medians(samples[HEAD.label])
    for line in table((base.label, HEAD.label), base_m, head_m):
        log(line)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "base": base.label,
        "rounds": samples,
        "median": {base.label: base_m, HEAD.label: head_m},
        "ratio": ratios(head_m, base_m),
    }
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%S")
    out = ROOT / "bench" / "results" / f"{stamp}-compare.json"
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    log(f"written: {out.relative_to(ROOT)}")
    return result


if __name__ == "__main__":
    eventloop.run(main())
