"""Latency from the source's clock: the bridge and the Benthos-engine peer, hop by hop, in the
same run, one command:

    python -m bench.source_clock [--runs 3] [--seconds 15] [--rate 5000]
                                 [--fleet 5000] [--no-peer] [--probe]
                                 [--base-python PY --base-dir DIR]

Each run measures the bridge (default settings, into the real Kafka) and then the peer at
``--rate`` events/s on one instance; ``--fleet N`` measures N instances at 1 event/s each
instead (the fleet workload; the peer has one socket, so it is left out). Every record's
send time comes from the simulator (``--stamp-sent``), its receipt from ``ryze-received-at``,
its ack from the broker's append time, its arrival from a plain consumer polling with a 5 ms
fetch wait (bench.hops), at scheduling priority ``--consumer-nice`` (-10 by default: ahead of
what it measures on a shared machine, as a consumer on a machine of its own; 0 as the rest).
``--probe`` loads bench/probe into the bridge and its shipper and adds their GC pauses and
event-loop lag to the result; ``--base-python/--base-dir`` measure another build too,
alternating with this one run by run (as bench.compare). Writes
``bench/results/<date>-source-clock.json`` and prints one line per run and hop.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench import latency
from bench.common import (
    HEAD,
    ROOT,
    Build,
    Services,
    create_topics,
    delete_created_topics,
    process,
    read_services,
    simulator,
    unique,
)
from bench.throughput import benthos_binary, benthos_config
from bridge import eventloop
from bridge.pipeline.names import BRIDGE_NAMESPACE, EVENT_NAME_PATTERN

PROBE = ROOT / "bench" / "probe"


def log(line: str) -> None:
    print(line, flush=True)


OTHER_SAID = 0.05  # cores outside the parts from which a line names who took them
PEER_TOPIC = (  # the bridge's own test of an event name (bridge.pipeline.names)
    '.${! match json("event").catch(null) { this.type() == "string" && '
    f'this.re_match("{EVENT_NAME_PATTERN}") && !this.has_prefix("{BRIDGE_NAMESPACE}") '
    '=> this, _ => "dlq" } }'
)


def peer_config(ws_url: str, bootstrap: str, prefix: str) -> dict[str, Any]:
    """The Benthos engine's config: websocket input → franz-go output, the bridge's producer
    settings (acks=all, idempotent, zstd, 5 ms linger), as in the throughput part, and the
    bridge's default layout: a topic per event (``<prefix>.<event>``, read from each
    message's JSON as the bridge reads it), keyed by instance — so the consumer reads the
    same number of topics from both. A message not JSON, without an event, or whose event the
    bridge would not take as one (its own pattern and namespace test) goes to
    ``<prefix>.dlq``, as the bridge dead-letters those: a topic the broker refuses would
    fail the peer's whole batch, retried for good with the records written before it
    duplicated (pure)."""
    topic = prefix + PEER_TOPIC
    return benthos_config({"websocket": {"url": ws_url}}, bootstrap, topic, key="inst-000")


async def peer(
    services: Services, rate: float, seconds: float, nice: int = latency.CONSUMER_NICE
) -> dict[str, Any] | None:
    """The peer at ``rate`` events/s from one instance: sent → appended → consumer."""
    binary = benthos_binary()
    if binary is None:
        return None
    with tempfile.TemporaryDirectory(prefix="ryze-bench-peer-") as tmp:
        work = Path(tmp)
        prefix = unique("bench.peer")
        topics = latency.layout_topics(prefix)  # the consumer reads as many as the bridge's
        dlq = f"{prefix}.dlq"
        await create_topics(services.kafka, [*topics, dlq], configs=latency.LOG_APPEND)
        async with simulator(work, instances=1, rate=rate, prebuilt=1000, stamp_sent=True) as src:
            ws_url = src.url.replace("http://", "ws://") + "/ws/inst-000?token=tok-000"
            path = work / "benthos.yaml"
            config = peer_config(ws_url, services.kafka, prefix)
            path.write_text(yaml.safe_dump(config), encoding="utf-8")
            async with process([str(binary), "-c", str(path)], work / "benthos.log") as proc:
                await latency.warm_up(src.url, 1, services.kafka, topics)
                window = latency.WindowCpu(proc, src.pid, services.kafka_pid)
                sampled = await latency.sample_times(
                    services.kafka, topics, seconds, nice=nice, window=window
                )
            dead = await latency.dead_letters(services.kafka, dlq)
    return latency.result_of(rate, seconds, sampled, window) | {"dlq": dead}


def probe_summary(directory: Path, window: list[int]) -> dict[str, Any]:
    """Per probed process (the main one, then the shipper, by start): the GC pauses of 1 ms
    or more per generation and the event-loop stalls of 2 ms or more seen in the measured
    window (start-up left out), as counts and percentiles in ms."""
    found: dict[str, Any] = {}
    files = [
        [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x]
        for path in directory.glob("probe-*.jsonl")
    ]
    for lines in sorted((x for x in files if x), key=lambda lines: lines[0].get("at", 0)):
        name = process_name(lines[0], found)
        inside = [x for x in lines if "at" in x and window[0] <= x["at"] <= window[1]]
        found[name] = {
            f"gc{gen}_pauses_ms": latency.percentiles(
                [x["ms"] for x in inside if x["kind"] == "gc" and x["gen"] == gen]
            )
            for gen in (0, 1, 2)
        }
        lags = [x for x in inside if x["kind"] == "lag"]
        found[name]["loop_lag_ms"] = latency.percentiles([x["ms"] for x in lags])
        found[name]["loop_lag_cpu"] = lag_cpu(lags)
        passes = [x for x in inside if x["kind"] == "gc" and "waited_ms" in x]
        found[name]["gc_waited_ms"] = round(sum(x["waited_ms"] for x in passes), 1)
        found[name]["gc_ran_ms"] = round(sum(x["ran_ms"] for x in passes), 1)
        found[name]["gc_long"] = [
            {k: round(x[k], 1) for k in ("gen", "ms", "ran_ms", "collected") if k in x}
            for x in inside
            if x["kind"] == "gc" and x["ms"] >= 5
        ]
        found[name]["stalls_where"] = stall_stacks([x for x in inside if x["kind"] == "stall"])
        found[name]["gc_walked"] = [
            {"gen": x["gen"], "ms": round(x["ms"], 1), **x["walked"]}
            for x in lines
            if x["kind"] == "gc" and "walked" in x
        ]
    return found


def process_name(start: dict[str, Any], named: dict[str, Any]) -> str:
    """A probed process's name from its start line's command line (``-m bridge.shipper``:
    the shipper; a restarted one gets a number), not from the files' times: a file's ctime
    moves at every write."""
    base = "shipper" if "bridge.shipper" in start.get("argv", []) else "main"
    name, n = base, 1
    while name in named:
        n += 1
        name = f"{base}-{n}"
    return name


def lag_cpu(lags: list[dict[str, Any]], long_ms: float = 10.0) -> dict[str, Any]:
    """Where the loop's late time went, over its lags of 2 ms or more and over those of
    ``long_ms`` or more: the share of their intervals its thread waited for a CPU (runnable,
    not running: every other thread on the machine's cores, the shipper's and the bridge's
    own included) and ran (its CPU time); the rest it slept (pure)."""
    found: dict[str, Any] = {}
    for label, picked in (("lags", lags), ("long", [x for x in lags if x["ms"] >= long_ms])):
        entry: dict[str, Any] = {"count": len(picked)}
        for key, share in (("waited_ms", "waited_pct"), ("ran_ms", "ran_pct")):
            told = [x for x in picked if key in x]
            if told:  # each interval: the 5 ms timer and its lag
                span = sum(x["ms"] + 5.0 for x in told)
                entry[share] = round(100 * sum(x[key] for x in told) / span, 1)
        waits = [x["waited_ms"] for x in picked if "waited_ms" in x]
        if waits:
            entry["max_waited_ms"] = round(max(waits), 1)
        found[label] = entry
    return found


def stall_stacks(stalls: list[dict[str, Any]], top: int = 8) -> list[tuple[str, int]]:
    """Where the loop's thread was during stalls of 5 ms or more: the sampler's stacks
    (innermost frame first), by how many 1 ms samples they took, most first."""
    counts: Counter[str] = Counter()
    for stall in stalls:
        counts.update(stall.get("stacks", {}))
    return counts.most_common(top)


async def bridge_run(
    services: Services,
    rate: float,
    seconds: float,
    instances: int,
    *,
    probe: bool,
    build: Build,
    nice: int,
) -> dict[str, Any]:
    if not probe:
        return await latency.at_rate(services, rate, seconds, build, instances=instances, nice=nice)
    with tempfile.TemporaryDirectory(prefix="ryze-bench-probe-") as tmp:
        env = {"PYTHON_RYZE_BENCH_PROBE": tmp, "PYTHONPATH": str(PROBE)}
        if instances > 1:  # the sampler can crash CPython 3.11 at fleet sizes (bench/probe)
            env["PYTHON_RYZE_BENCH_SAMPLER"] = "0"
        entry = await latency.at_rate(
            services, rate, seconds, build, instances=instances, env=env, nice=nice
        )
        entry["probe"] = probe_summary(Path(tmp), entry["window_ns"])
    return entry


def line(label: str, entry: dict[str, Any]) -> str:
    """One printed line: each hop's p50/p99/p999, the hops' shares at p99, the cores each part
    used, and the records dead-lettered in the window if any (left out of the sample)."""
    hops = entry["source_clock"]["hops_ms"]
    shown = "  ".join(
        f"{hop} {h.get('p50', '-')}/{h.get('p99', '-')}/{h.get('p999', '-')}"
        for hop, h in hops.items()
    )
    share = entry["source_clock"]["share_pct"].get("p99", {})
    cores = entry.get("cores", {})
    said = [f"cores: {' '.join(f'{name} {used}' for name, used in cores.items()) or '-'}"]
    other = cores.get("other", 0)
    if other >= OTHER_SAID:
        named = entry.get("others", {})
        others = [f"{name} {used}" for name, used in named.items()]
        unnamed = round(other - sum(named.values()), 3)
        if unnamed >= 0.01:  # processes ended in the window, interrupts: no one to name
            others.append(f"unnamed {unnamed}")
        said.append(f"other: {', '.join(others)}")
    dead = entry.get("dlq", 0)
    if dead is None:
        said.append("DLQ: not counted (the broker did not say)")
    elif dead:
        said.append(f"DLQ: {dead} records in the run, not sampled")
    rate = f"{entry['delivered_per_s']:.0f}/s"
    return f"{label}: {rate}  ms p50/p99/p999: {shown}  p99 share {share}  " + "  ".join(said)


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--fleet", type=int, default=0, help="N instances at 1 event/s each")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--probe", action="store_true", help="GC and loop-lag probe")
    parser.add_argument("--tag", default="", help="added to the result file's name")
    parser.add_argument("--base-python", help="also measure another build (as bench.compare)")
    parser.add_argument("--base-dir", type=Path)
    parser.add_argument(
        "--consumer-nice",
        type=int,
        default=latency.CONSUMER_NICE,
        help="the measuring consumer's scheduling priority (0: as every other process)",
    )
    args = parser.parse_args(argv)
    builds = [HEAD]
    if args.base_python:
        builds.insert(0, Build("base", args.base_python, args.base_dir))
    services = read_services()
    instances, rate = (args.fleet, 1.0) if args.fleet else (1, args.rate)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "instances": instances,
        "rate_per_instance": rate,
        "consumer_nice": args.consumer_nice,
        "bridge": [],
        "base": [],
        "peer": [],
    }
    try:
        for run in range(args.runs):
            for build in builds if run % 2 == 0 else builds[::-1]:  # alternating
                entry = await bridge_run(
                    services,
                    rate,
                    args.seconds,
                    instances,
                    probe=args.probe,
                    build=build,
                    nice=args.consumer_nice,
                )
                result["bridge" if build is HEAD else "base"].append(entry)
                log(line(f"run {run + 1} {build.label}", entry))
            if not args.no_peer and instances == 1:
                found = await peer(services, rate, args.seconds, args.consumer_nice)
                if found is not None:
                    result["peer"].append(found)
                    log(line(f"run {run + 1} peer  ", found))
    finally:
        await delete_created_topics(services.kafka)
    entries = [*result["bridge"], *result["base"], *result["peer"]]
    result["consumer_nice"] = sorted({e["consumer_nice"] for e in entries})  # as in force
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%S")
    out = ROOT / "bench" / "results" / f"{stamp}-source-clock{args.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    log(f"written: {out.relative_to(ROOT)}")
    return result


if __name__ == "__main__":
    eventloop.run(main())
