"""Where the bridge spends its time on one benchmark workload: py-spy attached to the bridge
process while the simulator floods it, then the functions ranked by inclusive and own time.

    python -m bench.profile [--workload "600B x1"] [--sink kafka] [--seconds 10] [--idle]
                            [--rate 5000] [--shipper]
    python -m bench.profile --scale 5000 [--seconds 20]   # quiet fleet: connect, idle, 1/s

Needs the services (scripts/services.sh up) and the bench group (uv sync --group bench).
Writes the raw collapsed stacks to ``bench/results/profile-<workload>-<sink>.txt`` (feed it to
any flame graph tool) and prints the two rankings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import httpx

from bench.common import (
    ROOT,
    bridge_args,
    bridge_config,
    create_topics,
    delete_created_topics,
    delete_streams,
    family,
    process,
    read_services,
    simulator,
    unique,
    write_bridge_config,
)
from bench.scale import RATE_SETTLE_SECONDS, connect_phase
from bench.throughput import BIG_MESSAGES, WORKLOADS, sink_section
from bridge.settings import EVENT_NAMES


def rank(collapsed: str, top: int = 25) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Inclusive and own shares of samples per function from py-spy's raw (collapsed) output:
    lines of ``frame;frame;…;leaf count`` (pure). A function is counted once per stack even
    when it recurses."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return [], []

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, n / total) for name, n in counter.most_common(top)]

    return share(inclusive), share(own)


def _function(frame: str) -> str:
    """``name (path/to/file.py:123)`` → ``name (file.py)``: one entry per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if parts else path
    return f"{name} ({short})"


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workload", default="600B x1", choices=[w.name for w in WORKLOADS])
    parser.add_argument("--sink", default="kafka", choices=["kafka", "redis", "file"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--idle", action="store_true", help="include samples of an idle loop")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="events/s per instance (0: as fast as it reads)"
    )
    parser.add_argument(
        "--shipper", action="store_true", help="profile the shipper process instead"
    )
    parser.add_argument(
        "--scale", type=int, help="N quiet instances (Redis): connect, idle and 1 event/s each"
    )
    args = parser.parse_args(argv)
    spy = py_spy()
    if args.scale:
        await scale_phases(spy, args.scale, args.seconds, shipper=args.shipper)
        return
    workload = next(w for w in WORKLOADS if w.name == args.workload)
    services = read_services()
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    side = "-shipper" if args.shipper else ""
    out = results / f"profile-{workload.name.replace(' ', '-')}-{args.sink}{side}.txt"
    with tempfile.TemporaryDirectory(prefix="ryze-bench-prof-") as tmp:
        work = Path(tmp)
        async with simulator(
            work,
            instances=workload.instances,
            rate=args.rate,
            prebuilt=workload.prebuilt,
            media_bytes=workload.media_bytes,
        ) as source:
            url = source.url
            prefix = unique(f"prof.{args.sink}")
            if args.sink == "kafka":
                topics = [f"{prefix}.{e}" for e in EVENT_NAMES] + [f"{prefix}.dlq"]
                await create_topics(services.kafka, topics, configs=BIG_MESSAGES)
            sink = sink_section(args.sink, services, work, prefix, workload)
            config = bridge_config(url, work, sink, instances=workload.instances)
            path = write_bridge_config(work, config)
            async with process(bridge_args(path), work / "bridge.log") as bridge:
                await asyncio.sleep(args.warmup)
                pid = await shipper_of(bridge.pid) if args.shipper else bridge.pid
                await record(spy, pid, out, args.seconds, rate=250, idle=args.idle)
    show(f"{workload.name} → {args.sink}", out)


async def shipper_of(bridge: int, wait: float = 60.0) -> int:
    """The bridge's shipper process (started once the main process is up): the member of its
    family running ``bridge.shipper``."""
    for _ in range(int(wait * 10)):
        for pid in family(bridge)[1:]:
            with contextlib.suppress(OSError):
                if b"bridge.shipper" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
        await asyncio.sleep(0.1)
    raise SystemExit(f"no shipper under the bridge after {wait:g} s")


def py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is missing: uv sync --group bench")
    return spy


async def record(
    spy: str, pid: int, out: Path, seconds: float, *, rate: int = 200, idle: bool = False
) -> None:
    """py-spy's raw samples of ``pid`` for ``seconds`` (``idle``: threads waiting too)."""
    args = [spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(out)]
    args += ["--duration", str(int(seconds)), "--rate", str(rate), "--nonblocking"]
    if idle:
        args.append("--idle")
    spying = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await spying.communicate()
    if spying.returncode != 0:
        raise SystemExit(f"py-spy failed: {err.decode(errors='replace')[-500:]}")


def show(title: str, out: Path) -> None:
    inclusive, own = rank(out.read_text(encoding="utf-8"))
    print(f"\n== {title}: {out.name}")
    for kind, rows in (("inclusive", inclusive), ("own", own)):
        print(f"{kind}:")
        for name, share in rows:
            print(f"  {share * 100:5.1f} %  {name}")


async def scale_phases(spy: str, instances: int, seconds: float, *, shipper: bool) -> None:
    """The scale benchmark's fleet (Redis sink), profiled while it connects, while it idles
    and while every instance sends 1 event/s."""
    services = read_services()
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ryze-bench-prof-") as tmp:
        work = Path(tmp)
        prefix = unique("prof:scale")
        async with simulator(work, instances=instances, rate=-1, prebuilt=20, mix=None) as src:
            redis = {"url": services.redis, "stream": prefix + ":{event}"}
            sink = {"kind": "redis", "dlq": f"{prefix}:dlq", "redis": redis}
            config = bridge_config(src.url, work, sink, instances=instances)
            async with process(bridge_args(write_bridge_config(work, config)), work / "b.log") as b:
                await asyncio.sleep(1)
                pid = await shipper_of(b.pid) if shipper else b.pid
                side = "-shipper" if shipper else ""
                for phase in ("connect", "idle", "1s"):
                    if phase == "idle":  # the fleet connected, its gap markers delivered
                        await connect_phase(src.url, instances, b.pid, src.pid)
                        await asyncio.sleep(10)
                    if phase == "1s":
                        async with httpx.AsyncClient(base_url=src.url, timeout=60) as http:
                            await http.post("/_sim/set_rate", json={"rate": 1})
                        await asyncio.sleep(RATE_SETTLE_SECONDS)  # as the scale part
                    out = results / f"profile-scale{instances}-{phase}{side}.txt"
                    await record(spy, pid, out, seconds)
                    show(f"{instances} instances, {phase}", out)
        await delete_streams(services.redis, prefix)


async def profile_and_clean_up() -> None:
    try:
        await main()
    finally:  # the broker keeps no bench topics
        await delete_created_topics(read_services().kafka)


if __name__ == "__main__":
    sys.exit(asyncio.run(profile_and_clean_up()))
