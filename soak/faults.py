"""How each fault of the menu is done to the real components (one coroutine per kind).

Each returns when the fault is over (its components back), after ``fault.duration``
seconds; the driver then measures how long delivery takes to recover."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.pipeline.gap import GAP_EVENT
from bridge.settings import EVENT_NAMES
from soak.bridges import MAX_FRAME_BYTES
from soak.procs import pid_alive
from soak.redis import BRIDGE_USER
from soak.schedule import Fault

if TYPE_CHECKING:
    from soak.driver import Soak

EVENTS = (*EVENT_NAMES, GAP_EVENT)  # an instance's topics: its events and gap markers
KNOB_OF = {
    "malformed": "send_malformed_id",
    "binary": "send_binary",
    "invalid_utf8": "send_invalid_utf8",
    "duplicate": "send_duplicate",
}


def topics_of(instance: str) -> list[str]:
    return [f"ryze.{instance}.{event}" for event in EVENTS]


async def busiest_brokers(soak: Soak) -> list[int]:
    """Brokers by how many partitions of the bridge's topics they lead, most first."""
    topics = [t for i in soak.bridges["kafka"].instances for t in topics_of(i)]
    try:
        counts = await soak.kafka.leaders(topics)
    except Exception:  # noqa: BLE001 - a cluster in trouble: any order will do
        counts = dict.fromkeys(soak.kafka.nodes, 0)
    return sorted(counts, key=lambda n: (-counts[n], n))


async def kafka_kill_leader(soak: Soak, fault: Fault) -> str:
    order = await busiest_brokers(soak)
    node = order[0] if fault.params.get("signal_busiest", True) else order[-1]
    soak.kafka.nodes[node].signal(signal.SIGKILL)
    await asyncio.sleep(fault.duration)
    soak.kafka.start_node(node)
    return f"broker {node} SIGKILLed, restarted after {fault.duration} s"


async def kafka_kill_two(soak: Soak, fault: Fault) -> str:
    nodes = (await busiest_brokers(soak))[:2]
    for node in nodes:
        soak.kafka.nodes[node].signal(signal.SIGKILL)
    await asyncio.sleep(fault.duration)
    for node in nodes:
        soak.kafka.start_node(node)
    return f"brokers {nodes} SIGKILLed (NotEnoughReplicas), restarted after {fault.duration} s"


async def kafka_pause(soak: Soak, fault: Fault) -> str:
    node = (await busiest_brokers(soak))[0]
    soak.kafka.nodes[node].signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(fault.duration)
    finally:
        soak.kafka.nodes[node].signal(signal.SIGCONT)
    return f"broker {node} SIGSTOPped for {fault.duration} s"


async def topic_recreate(soak: Soak, fault: Fault) -> str:
    """Pause the instance upstream, let its records land, read its topics, delete them;
    resume it (its frames now meet a missing topic); recreate them after the duration."""
    topics = topics_of(fault.target)
    await soak.knob("pause", instance=fault.target)
    await soak.settle_topics(topics)
    await soak.snapshot_topics(topics)
    await soak.kafka.delete_topics(topics)
    for topic in topics:
        soak.generations[topic] = soak.generations.get(topic, 0) + 1
    await soak.knob("resume", instance=fault.target)
    await asyncio.sleep(fault.duration)
    partitions = int(fault.params.get("partitions", 2))
    await soak.kafka.create_topics(topics, partitions)
    return f"topics of {fault.target} deleted, recreated with {partitions} partitions"


async def redis_restart(soak: Soak, fault: Fault) -> str:
    await soak.redis.shutdown_save()
    await asyncio.sleep(fault.duration)
    await soak.redis.restart()
    return f"redis SHUTDOWN SAVE, restarted after {fault.duration} s"


async def redis_oom(soak: Soak, fault: Fault) -> str:
    info: Any = await soak.redis.command("INFO", "memory")
    used = int(info["used_memory"]) if isinstance(info, dict) else 0
    await soak.redis.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
    await soak.redis.command("CONFIG", "SET", "maxmemory", used + 256 * 1024)
    try:
        await asyncio.sleep(fault.duration)
    finally:
        await soak.redis.command("CONFIG", "SET", "maxmemory", 0)
    return f"redis maxmemory {used + 256 * 1024} (noeviction) for {fault.duration} s"


async def redis_readonly(soak: Soak, fault: Fault) -> str:
    await soak.redis.command("REPLICAOF", "127.0.0.1", soak.dead_port)
    try:
        await asyncio.sleep(fault.duration)
    finally:
        await soak.redis.command("REPLICAOF", "NO", "ONE")
    return f"redis a replica of a dead port for {fault.duration} s"


async def redis_acl(soak: Soak, fault: Fault) -> str:
    others = [i for i in soak.bridges["redis"].instances if i != fault.target]
    keys = [f"~ryze:{i}:*" for i in others] + ["~ryze:dlq"]
    await soak.redis.command("ACL", "SETUSER", BRIDGE_USER, "resetkeys", *keys)
    try:
        await asyncio.sleep(fault.duration)
    finally:
        await soak.redis.command("ACL", "SETUSER", BRIDGE_USER, "resetkeys", "~ryze:*")
    return f"writes to {fault.target}'s keys revoked for {fault.duration} s"


async def redis_reset(soak: Soak, fault: Fault) -> str:
    before = soak.proxy.resets
    soak.proxy.resetting = True
    try:
        await asyncio.sleep(fault.duration)
    finally:
        soak.proxy.resetting = False
    return f"{soak.proxy.resets - before} connections reset mid-pipeline"


async def sim_drop(soak: Soak, fault: Fault) -> str:
    names = soak.bridges[fault.bridge].instances if fault.params.get("all") else [fault.target]
    for name in names:
        await soak.knob("drop", instance=name, abnormal=bool(fault.params.get("abnormal")))
    return f"sockets of {len(names)} instances dropped"


async def sim_stall(soak: Soak, fault: Fault) -> str:
    await soak.knob("stall", instance=fault.target, seconds=fault.duration)
    await asyncio.sleep(fault.duration)
    await soak.knob("resume", instance=fault.target)
    return f"{fault.target} silent for {fault.duration} s"


async def sim_429(soak: Soak, fault: Fault) -> str:
    count, with_reset = int(fault.params["count"]), bool(fault.params["with_reset"])
    await soak.knob("reject_upgrades", instance=fault.target, count=count, with_reset=with_reset)
    await soak.knob("drop", instance=fault.target, abnormal=False)
    return f"{count} upgrades of {fault.target} answered 429 (Reset header: {with_reset})"


async def odd_frames(soak: Soak, fault: Fault) -> str:
    sent = []
    for kind in fault.params["frames"]:
        if kind == "oversized":
            await soak.knob("send_huge", instance=fault.target, size=MAX_FRAME_BYTES + 65536)
        else:
            await soak.knob(KNOB_OF[kind], instance=fault.target)
        sent.append(kind)
    return f"sent to {fault.target}: {', '.join(sent)}"


async def bridge_kill(soak: Soak, fault: Fault) -> str:
    bridge = soak.bridges[fault.bridge]
    shippers = bridge.shippers()
    bridge.expect_down = True
    if bridge.proc is not None:
        bridge.proc.signal(signal.SIGKILL)
        killed_at = time.time()
        await bridge.proc.wait(10)
        soak.kill_window(fault.bridge, killed_at)
    # as systemd (KillMode=control-group) or a container runtime would: the dead bridge's
    # shipper goes with it, before the new bridge starts
    orphans = await reap(shippers, within=0.5)
    await asyncio.sleep(fault.duration)
    bridge.start()
    soak.kill_window(fault.bridge, None)
    return f"bridge SIGKILLed, restarted after {fault.duration} s; orphaned shippers: {orphans}"


async def reap(pids: list[int], within: float) -> int:
    """Wait for ``pids`` to end; SIGKILL those still there; how many had to be killed."""
    deadline = time.monotonic() + within
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    left = [p for p in pids if pid_alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return len(left)


async def shipper_kill(soak: Soak, fault: Fault) -> str:
    shippers = soak.bridges[fault.bridge].shippers()
    for pid in shippers:
        os.kill(pid, signal.SIGKILL)
    return f"shipper {shippers} SIGKILLed"


async def bridge_term_sink_down(soak: Soak, fault: Fault) -> str:
    """Redis down, the bridge SIGTERMed (it drains what it can within shutdown_timeout),
    started again while Redis is still down, Redis back after the duration."""
    bridge = soak.bridges["redis"]
    started = time.monotonic()
    await soak.redis.shutdown_save()
    bridge.expect_down = True
    code = await bridge.proc.stop(grace=30) if bridge.proc is not None else None
    bridge.start()
    await asyncio.sleep(max(0.0, fault.duration - (time.monotonic() - started)))
    await soak.redis.restart()
    return f"redis down, bridge SIGTERMed (exit {code}) and restarted, redis back"


async def disk_full(soak: Soak, fault: Fault) -> str:
    spool = Path(soak.bridges[fault.bridge].config["spool"]["dir"])
    filler = spool.parent / "filler"
    written = fill(filler)
    try:
        await asyncio.sleep(fault.duration)
    finally:
        filler.unlink(missing_ok=True)
    return f"{written} bytes of filler on the spool's tmpfs for {fault.duration} s"


def fill(path: Path) -> int:
    """Write zeros to ``path`` until the filesystem is full; the bytes written."""
    written = 0
    chunk = b"\0" * (1 << 20)
    with path.open("wb", buffering=0) as out:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    written += out.write(chunk[:size])
            except OSError:
                continue
    return written


FAULTS: dict[str, Callable[[Soak, Fault], Awaitable[str]]] = {
    "kafka_kill_leader": kafka_kill_leader,
    "kafka_kill_two": kafka_kill_two,
    "kafka_pause": kafka_pause,
    "topic_recreate": topic_recreate,
    "redis_restart": redis_restart,
    "redis_oom": redis_oom,
    "redis_readonly": redis_readonly,
    "redis_acl": redis_acl,
    "redis_reset": redis_reset,
    "sim_drop": sim_drop,
    "sim_stall": sim_stall,
    "sim_429": sim_429,
    "odd_frames": odd_frames,
    "bridge_kill": bridge_kill,
    "shipper_kill": shipper_kill,
    "bridge_term_sink_down": bridge_term_sink_down,
    "disk_full": disk_full,
}
