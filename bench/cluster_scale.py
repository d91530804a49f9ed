"""Cluster scale: many instances over several replicas in ``cluster.mode: kafka``.

    python -m bench.run --only cluster-scale [--cluster-instances 20000]     (2,000 by default)
    python -m bench.cluster_scale --instances 20000 --replicas 4             (the same, alone)

Each instance has its own token (the upstream's 100/min budget is per token), served by one
simulator process emitting ``rate`` events/s per instance (0.05 by default); the replicas
publish into Kafka and share the instances through the group protocol. The phases:

1. **start**: every replica at once; seconds until every instance has exactly one socket, the
   peak connects per second the upstream saw and its 429s.
2. **steady**: RSS and CPU per replica (main process and shipper) over a window, and CPU per
   event (process CPU time, not wall time: on a shared machine it moves far less).
3. **kill**: one replica SIGKILLed mid-stream; seconds until every instance it ran has a new
   socket from the others, the peak connect rate and the 429s meanwhile. It is then started
   again on its directory (a pod restarted on its volume), which delivers what its spool held.
4. **rolling**: each replica in turn SIGTERMed, started again and waited for (``/readyz``, its
   share of shards, every instance connected once); peak connect rate and 429s.
5. **loss**: emission stops, the replicas drain and stop; every frame the simulator wrote to
   a socket is looked up in Kafka by its id. Missing ones are counted, and apart those written
   to the killed replica's sockets (unread when it died, or written after it died and before
   the simulator noticed: the upstream replays nothing). Duplicates are allowed and counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.cluster_parts import (
    Member,
    Sampler,
    delivered_ids,
    delta,
    peak_rate,
    sent_ids,
    until,
)
from bench.common import (
    CREATED_TOPICS,
    Services,
    allow_open_files,
    bridge_config,
    create_topics,
    delete_created_topics,
    kafka_count,
    read_services,
    simulator,
    unique,
)
from bridge import eventloop

SHARDS = 64
SESSION_MS = 10_000


def member_config(
    member: Member, *, url: str, prefix: str, instances: int, kafka: str
) -> dict[str, Any]:
    """A replica's config: every instance listed (each replica computes its shards), a Kafka
    sink, the Kafka group (its session timeout sets how soon a killed replica is noticed)."""
    sink = {
        "kind": "kafka",
        "dlq": f"{prefix}.dlq",
        "kafka": {"bootstrap_servers": kafka, "topic": prefix + ".{event}"},
    }
    cluster = {
        "mode": "kafka",
        "shards": SHARDS,
        "group": prefix,
        "topic": f"{prefix}.cluster",
        "replica_id": member.name,
        "session_timeout_ms": SESSION_MS,
        "heartbeat_interval_ms": 2000,
    }
    extra = {"cluster": cluster, "shutdown_timeout": 20}
    config = bridge_config(url, member.directory, sink, instances=instances, extra=extra)
    config["admin"] = {"host": "127.0.0.1", "port": member.admin_port}
    return config


def edges_needed(instances: int, replicas: int, open_files: int) -> int:
    """How many simulator processes serve the instances (pure): the fewest, dividing the
    replicas evenly, whose open-files limit holds the sockets of their replicas' share twice
    over (a take-over's sockets beside the share); one per replica at most (each replica
    reaches one: an upstream's edges, the same account, each its own state)."""
    for edges in range(1, replicas + 1):
        if replicas % edges == 0 and edge_files(instances, edges) <= open_files:
            return edges
    return replicas


def edge_files(instances: int, edges: int) -> int:
    """Open files one of ``edges`` simulators needs (pure): its share of the sockets twice
    over (a take-over's beside the share), and room for the rest."""
    return 2 * -(-instances // edges) + 1024


def edge_tag(k: int, edges: int) -> str:
    """The frame-id tag of simulator ``k`` of ``edges`` (pure): none when there is one."""
    return "" if edges == 1 else f"e{k}-"


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nobody listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Run:
    """One cluster run: the simulator's sampler, the replicas, the phases' figures."""

    def __init__(self, sampler: Sampler, members: list[Member], instances: int) -> None:
        self.sampler = sampler
        self.members = members
        self.instances = instances
        self.figures: dict[str, Any] = {}

    def last(self) -> str:
        """The latest sample and each replica's readiness, for an error message."""
        found = self.sampler.samples[-1] if self.sampler.samples else None
        return f"{found}; running: {[m.name for m in self.members if m.running]}"

    async def all_once(self) -> bool:
        found = await self.sampler.poll()
        return found.connected == self.instances and found.doubled == 0

    def phase(self, name: str, since: float, **extra: Any) -> dict[str, Any]:
        now, samples = self.sampler.now(), self.sampler.samples
        entry = {
            "began_s_from_start": round(since, 1),
            "peak_connects_per_s": peak_rate(samples, since, now),
            "connects": delta(samples, since, now, "upgrades"),
            "rate_limited_429": delta(samples, since, now, "rate_limited"),
            "most_doubled": max((s.doubled for s in samples if since <= s.at <= now), default=0),
            **extra,
        }
        self.figures[name] = entry
        return entry

    async def start(self, within: float) -> None:
        since = self.sampler.now()
        await asyncio.gather(*(m.start() for m in self.members))
        try:
            took = await until(self.all_once, within, "all instances connected")
        except RuntimeError:
            raise RuntimeError(f"not all connected within {within:.0f} s: {self.last()}") from None
        timeline = [
            (round(s.at - since, 1), s.connected) for s in self.sampler.samples if s.at >= since
        ]
        self.phase("start", since, seconds_to_all_connected=took, timeline=timeline)

    async def steady(self, window: float) -> None:
        procs = [m.proc for m in self.members if m.proc is not None]
        before = [p.cpu_seconds() for p in procs]
        first, t0 = await self.sampler.poll(), time.monotonic()
        await asyncio.sleep(window)
        last, elapsed = await self.sampler.poll(), time.monotonic() - t0
        cpu = [p.cpu_seconds() - b for p, b in zip(procs, before, strict=True)]
        events = max(1, last.sent - first.sent)
        self.figures["steady"] = {
            "events_per_s": round((last.sent - first.sent) / elapsed, 1),
            "rss_mb": [round(p.rss_bytes() / 1e6, 1) for p in procs],
            "cpu_cores": [round(c / elapsed, 3) for c in cpu],
            "cpu_us_per_event": round(sum(cpu) / events * 1e6, 1),
        }

    async def kill(self, victim: Member, within: float) -> float:
        names = await victim.instances()
        await self.sampler.poll()
        before = self.sampler.upgrades_of(names)
        since, killed_at = self.sampler.now(), time.time()
        victim.signal(signal.SIGKILL)
        await victim.exited(30)

        async def moved() -> bool:
            await self.sampler.poll()
            return self.sampler.moved(before)

        took = await until(moved, within, "the killed replica's instances reconnected")
        self.phase("kill", since, instances_moved=len(names), seconds_to_reconnected=took)
        self.figures["kill"]["victims"] = sorted(names)
        await victim.start()  # its spool again, as a pod restarted on its volume
        await self.settle(victim, within)
        return killed_at

    async def settle(self, member: Member, within: float) -> float:
        share = SHARDS // len(self.members)

        async def settled() -> bool:
            return await member.ready() and await member.owned() >= share and await self.all_once()

        return await until(settled, within, f"{member.name} ready with its share")

    async def rolling(self, within: float) -> None:
        since, steps = self.sampler.now(), []
        for member in self.members:
            started, began = time.monotonic(), round(self.sampler.now(), 1)
            member.signal(signal.SIGTERM)
            code = await member.exited(60)
            await member.start()
            await self.settle(member, within)
            took = _since(started)
            steps.append({"replica": member.name, "began": began, "exit": code, "seconds": took})
        self.phase("rolling", since, steps=steps)

    async def stop(self) -> list[int]:
        for member in self.members:
            member.signal(signal.SIGTERM)
        return [await m.exited(60) for m in self.members]


def _since(started: float) -> float:
    return round(time.monotonic() - started, 2)


def loss(
    sent: dict[str, list[tuple[str, float]]],
    seen: dict[str, int],
    victims: set[str],
    killed: tuple[float, float],
) -> dict[str, Any]:
    """Frames sent against frames delivered, by id (pure). ``killed`` is (the kill's time, the
    time every instance of the killed replica had a new socket). Missing frames written to the
    killed replica's sockets are counted apart: before the kill, those the process had not
    read yet died with it in the kernel's buffers; after it, the simulator wrote to a socket
    whose reader was gone until it noticed (the upstream replays nothing). What the process had
    read is in its spool, delivered when it is started again. Every other frame must be
    delivered."""
    killed_at, replaced_at = killed
    missing = [
        (name, fid, at)
        for name, frames in sent.items()
        for fid, at in frames
        if seen.get(fid, 0) == 0
    ]
    lost = [at for name, _, at in missing if name in victims and at <= replaced_at]
    total = sum(len(f) for f in sent.values())
    return {
        "sent": total,
        "delivered_distinct": total - len(missing),
        "duplicates": sum(max(0, n - 1) for fid, n in seen.items() if fid),
        "without_id": seen.get("", 0),  # gap markers (bridge.gap), not frames
        "missing": len(missing),
        "missing_to_killed_sockets": len(lost),
        "of_those_after_the_kill": sum(1 for at in lost if at > killed_at),
        "missing_otherwise": len(missing) - len(lost),
        "missing_examples": [
            f"{fid} sent {at - killed_at:+.2f} s from the kill"
            + (" (killed replica's)" if name in victims else "")
            for name, fid, at in missing[:10]
        ],
    }


async def run(
    services: Services,
    instances: int = 2000,
    *,
    replicas: int = 4,
    rate: float = 0.05,
    window: float = 20.0,
    simulators: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    within = max(600.0, instances / 5)
    allowed = allow_open_files(2 * instances + 4096)  # the simulator's sockets, a take-over's
    edges = simulators or edges_needed(instances, replicas, allowed)
    log(f"cluster-scale: {instances} instances, {replicas} replicas, {edges} simulator(s)")
    if edge_files(instances, edges) > allowed:
        log(f"cluster-scale: {allowed} open files may not hold a simulator's sockets")
    with tempfile.TemporaryDirectory(prefix="ryze-bench-cluster-") as tmp:
        work = Path(tmp)
        prefix = unique("bench.cluster")
        topics = [f"{prefix}.message.exchange", f"{prefix}.bridge.gap"]
        await create_topics(services.kafka, [*topics, f"{prefix}.dlq"])
        CREATED_TOPICS.add(f"{prefix}.cluster")  # the bridge makes it; deleted with the rest
        async with contextlib.AsyncExitStack() as stack:
            sources = [
                await stack.enter_async_context(
                    simulator(
                        work, instances=instances, rate=rate, prebuilt=0, id_tag=edge_tag(k, edges)
                    )
                )
                for k in range(edges)
            ]
            urls = [source.url for source in sources]
            sampler = Sampler(urls, every=1.0 if instances <= 5000 else 2.0)
            await sampler.poll()
            poller = asyncio.create_task(sampler.run())
            members = [
                Member(f"r{i}", work / f"r{i}", {}, port)
                for i, port in enumerate(free_ports(replicas))
            ]
            for i, m in enumerate(members):  # replica i reaches the upstream's edge i mod K
                m.config = member_config(
                    m, url=urls[i % edges], prefix=prefix, instances=instances, kafka=services.kafka
                )
            cluster = Run(sampler, members, instances)
            try:
                await cluster.start(within)
                log(f"cluster-scale: start {cluster.figures['start']}")
                await cluster.steady(window)
                log(f"cluster-scale: steady {cluster.figures['steady']}")
                killed_at = await cluster.kill(members[1], within)
                shown = {k: v for k, v in cluster.figures["kill"].items() if k != "victims"}
                log(f"cluster-scale: kill {shown}")
                await cluster.rolling(within)
                log(f"cluster-scale: rolling {cluster.figures['rolling']}")
                for url in urls:
                    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                        await http.post("/_sim/set_rate", json={"rate": -1})
                await asyncio.sleep(3)
                exits = await cluster.stop()
                sent = await sent_ids(urls, [f"inst-{n:03d}" for n in range(instances)])
            finally:
                poller.cancel()
                for m in members:
                    if m.proc is not None:
                        await m.proc.stop()
        seen = await delivered_ids(services.kafka, topics)
        in_topics = {t: await kafka_count(services.kafka, [t]) for t in [*topics, f"{prefix}.dlq"]}
    victims = set(cluster.figures["kill"].pop("victims"))
    replaced_at = killed_at + cluster.figures["kill"]["seconds_to_reconnected"]
    result = {
        "instances": instances,
        "replicas": replicas,
        "rate_per_instance": rate,
        "simulators": edges,
        **cluster.figures,
        "exit_codes": exits,
        "loss": loss(sent, seen, victims, (killed_at, replaced_at)),
        "records_in_topics": in_topics,
        "unheard": sampler.samples[-1].unheard if sampler.samples else 0,
    }
    log(f"cluster-scale: loss {result['loss']}; records in the topics {in_topics}")
    return result


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.05, help="events/s per instance")
    parser.add_argument(
        "--simulators", type=int, default=0, help="upstream edges (0: as the open-files limit asks)"
    )
    args = parser.parse_args(argv)
    services = read_services()
    try:
        return await run(
            services,
            args.instances,
            replicas=args.replicas,
            rate=args.rate,
            simulators=args.simulators,
        )
    finally:
        await delete_created_topics(services.kafka)


if __name__ == "__main__":
    eventloop.run(main())
