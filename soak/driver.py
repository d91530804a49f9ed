"""The soak driver: set up the real components, run the seeded fault schedule while the
bridges relay, read everything back, check the invariants, write the report and table."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from soak.bridges import BATCH_MAX_RECORDS, Bridge, bridge_config, token_env, total
from soak.collect import leaks, read_kafka, read_redis
from soak.faults import FAULTS, topics_of
from soak.invariants import Collected, Counts, FaultRun, KillWindow, Seen, Sent, verdict
from soak.kafka import KafkaCluster
from soak.procs import Proc, free_port, pid_alive
from soak.proxy import ResettingProxy
from soak.redis import BRIDGE_USER, RedisServer
from soak.schedule import Fault, build_schedule
from soak.table import render

RECOVERY_WAIT = 75.0  # how long the driver waits for recovery (the invariant says 60 s)
METRICS_LAG = 2.5  # seconds: a margin for the last scrape (see drain)
DRAIN_WAIT = 45.0  # at the end, how long the spools may take to empty
SCRAPE_EVERY = 1.0


@dataclass
class Options:
    seed: int
    duration: float
    out: Path
    work: Path
    kafka_libs: Path
    instances: int = 6  # per bridge
    rate: float = 20.0  # frames/s per instance
    tmpfs_mb: int = 32


@dataclass
class Soak:
    options: Options
    kafka: KafkaCluster = field(init=False)
    redis: RedisServer = field(init=False)
    proxy: ResettingProxy = field(init=False)
    simulator: Proc | None = None
    sim_url: str = ""
    bridges: dict[str, Bridge] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)
    snapshots: list[Seen] = field(default_factory=list)
    snapshot_raw: list[bytes] = field(default_factory=list)
    runs: list[FaultRun] = field(default_factory=list)
    kills: list[KillWindow] = field(default_factory=list)
    timeline: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)
    mounts: list[Path] = field(default_factory=list)
    dead_port: int = field(default_factory=free_port)
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=30))
    _open_kill: dict[str, float] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        work = self.options.work
        self.kafka = KafkaCluster(self.options.kafka_libs, work / "kafka")
        self.redis = RedisServer(work / "redis", secrets.token_urlsafe(18))
        self.proxy = ResettingProxy(self.redis.port)

    # ---- bookkeeping ----------------------------------------------------------------------
    def say(self, message: str) -> None:
        print(f"soak {time.strftime('%H:%M:%S')} {message}", flush=True)

    def remember_pid(self, pid: int | None) -> None:
        """For scripts/soak.sh's trap: every pid the soak started, one a line."""
        if pid:
            with (self.options.work / "pids").open("a") as out:
                out.write(f"{pid}\n")

    def kill_window(self, bridge: str, at: float | None) -> None:
        """Open (``at``: the kill) or close (None: the restart) a bridge's kill window."""
        if at is not None:
            self._open_kill[bridge] = at
            return
        killed = self._open_kill.pop(bridge, None)
        if killed is not None:
            self.kills.append(KillWindow(bridge, killed - 1.0, killed + 1.0))
        proc = self.bridges[bridge].proc
        self.remember_pid(proc.pid if proc is not None else None)

    async def knob(self, name: str, **args: Any) -> Any:
        answer = await self.http.post(f"{self.sim_url}/_sim/{name}", json=args)
        answer.raise_for_status()
        return answer.json().get("result")

    # ---- set-up ---------------------------------------------------------------------------
    def mount_tmpfs(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        size = f"size={self.options.tmpfs_mb}m"
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(path)],
            check=True,
            capture_output=True,
        )
        self.mounts.append(path)
        with (self.options.work / "mounts").open("a") as out:
            out.write(f"{path}\n")

    async def set_up(self) -> None:
        o = self.options
        names = {b: [f"{b[0]}{n:02d}" for n in range(o.instances)] for b in ("kafka", "redis")}
        self.tokens = {i: secrets.token_urlsafe(24) for b in names.values() for i in b}
        self.say("starting a three-node Kafka cluster (KRaft, RF 3, min.insync.replicas 2)")
        self.kafka.configure()
        for proc in self.kafka.nodes.values():
            proc.start()
            self.remember_pid(proc.pid)
        await self.kafka.wait_ready(240)
        topics = [t for i in names["kafka"] for t in topics_of(i)] + ["ryze.dlq"]
        await self.kafka.create_topics(topics)
        self.say(f"kafka up on {self.kafka.bootstrap}, {len(topics)} topics created")
        self.redis.start()
        self.remember_pid(self.redis.proc.pid if self.redis.proc else None)
        await self.redis.wait_ready()
        await self.proxy.start()
        await self.start_simulator()
        for kind in ("kafka", "redis"):
            spool = o.work / f"spool-{kind}"
            self.mount_tmpfs(spool)
            (spool / "spool").mkdir()
            self.bridges[kind] = self.make_bridge(kind, names[kind], spool / "spool")
            self.bridges[kind].start()
            self.remember_pid(self.bridges[kind].lives[-1].pid)
        await self.wait_connected(120)

    async def start_simulator(self) -> None:
        o = self.options
        port = free_port()
        sim_yaml = o.work / "simulator.yaml"
        sim_yaml.write_text(yaml.safe_dump({"instances": self.tokens, "preconfigured": True}))
        argv = [
            sys.executable,
            "-m",
            "bridge",
            "simulate",
            "--port",
            str(port),
            "--config",
            str(sim_yaml),
            "--rate",
            str(o.rate),
            "--seed",
            str(o.seed),
        ]
        self.simulator = Proc("simulator", argv, o.work / "simulator.log")
        self.simulator.start()
        self.remember_pid(self.simulator.pid)
        self.sim_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await self.http.get(f"{self.sim_url}/_sim/stats")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError("the simulator did not answer within 30 s")

    def make_bridge(self, kind: str, instances: list[str], spool: Path) -> Bridge:
        if kind == "kafka":
            sink = {
                "dlq": "ryze.dlq",
                "kafka": {
                    "bootstrap_servers": self.kafka.bootstrap,
                    "topic": "ryze.{instance}.{event}",
                    "key": "instance",
                },
            }
        else:
            sink = {
                "dlq": "ryze:dlq",
                "redis": {
                    "url": f"redis://127.0.0.1:{self.proxy.port}/0",
                    "stream": "ryze:{instance}:{event}",
                    "maxlen": None,
                    "username": BRIDGE_USER,
                    "password_env": "SOAK_REDIS_PASSWORD",
                },
            }
        env = {token_env(i): self.tokens[i] for i in instances}
        env["SOAK_REDIS_PASSWORD"] = self.redis.password
        bridge = Bridge(kind, instances, {}, self.options.work, env)
        bridge.config = bridge_config(
            kind,
            self.sim_url,
            instances=instances,
            spool=spool,
            admin_port=bridge.admin_port,
            sink=sink,
        )
        bridge.write_config()
        check = subprocess.run(
            [sys.executable, "-m", "bridge", "check-config", "--config", str(bridge.config_path)],
            capture_output=True,
            env={**os.environ, **env},
            check=False,
            timeout=60,
        )
        if check.returncode != 0:
            raise RuntimeError(
                f"check-config refused the {kind} bridge's config: {check.stderr.decode()[-500:]}"
            )
        return bridge

    async def wait_connected(self, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            ok = True
            for bridge in self.bridges.values():
                samples = await bridge.scrape(self.http)
                ok = ok and total(samples, "ws_connected") >= len(bridge.instances)
            if ok:
                return
            await asyncio.sleep(1)
        raise RuntimeError(f"the bridges did not connect every instance within {within:.0f} s")

    # ---- background -----------------------------------------------------------------------
    async def scraper(self) -> None:
        while True:
            for name, bridge in self.bridges.items():
                samples = await bridge.scrape(self.http)
                if samples is not None:
                    point = (
                        time.time(),
                        total(samples, "spool_events"),
                        total(samples, "events_published_total"),
                        total(samples, "ws_connected"),
                    )
                    self.timeline.setdefault(name, []).append(point)
            await asyncio.sleep(SCRAPE_EVERY)

    async def watchdog(self) -> None:
        """A bridge that exits on its own is reported and started again."""
        while True:
            await asyncio.sleep(1)
            for name, bridge in self.bridges.items():
                if bridge.expect_down or bridge.proc is None or bridge.proc.alive():
                    continue
                code = bridge.proc.exit_code()
                bridge.lives[-1].exit_code = code
                bridge.unplanned_exits.append({"at": time.time(), "code": code})
                self.say(f"bridge {name} exited on its own (code {code}); starting it again")
                await asyncio.sleep(1)
                bridge.start()
                self.remember_pid(bridge.lives[-1].pid)

    # ---- faults ---------------------------------------------------------------------------
    async def settle_topics(self, topics: list[str], within: float = 20.0) -> None:
        """Until the topics' records stop growing for 2 s (or ``within``)."""
        deadline, last, still = time.monotonic() + within, -1, 0
        while time.monotonic() < deadline and still < 2:
            seen, _ = await read_kafka(self.kafka.bootstrap, topics, self.generations, 30)
            still = still + 1 if len(seen) == last else 0
            last = len(seen)
            await asyncio.sleep(1)

    async def snapshot_topics(self, topics: list[str]) -> None:
        seen, raw = await read_kafka(self.kafka.bootstrap, topics, self.generations, 60)
        self.snapshots += seen
        self.snapshot_raw += raw

    async def run_fault(self, fault: Fault) -> None:
        bridge = self.bridges[fault.bridge]
        exits_before = len(bridge.unplanned_exits)
        self.say(
            f"fault {fault.index}: {fault.kind} on {fault.bridge}/{fault.target} "
            f"for {fault.duration} s"
        )
        started = time.time()
        try:
            note = await asyncio.wait_for(FAULTS[fault.kind](self, fault), fault.duration + 120)
        except Exception as exc:  # noqa: BLE001 - reported, the soak goes on
            note = f"the fault could not be done as planned: {type(exc).__name__}: {exc}"
            self.say(note)
        ended = time.time()
        recovered_at = await self.wait_recovered(fault.bridge, ended)
        restarted = len(bridge.unplanned_exits) > exits_before
        took = "not recovered" if recovered_at is None else f"{recovered_at - ended:.1f} s"
        self.say(
            f"fault {fault.index} over: {note}; recovery {took}"
            + ("; the bridge had to be restarted" if restarted else "")
        )
        self.runs.append(
            FaultRun(
                fault.index,
                fault.kind,
                fault.bridge,
                fault.target,
                started,
                ended,
                recovered_at,
                restarted,
                note,
            )
        )

    async def wait_recovered(self, name: str, since: float) -> float | None:
        """When the bridge, after ``since``, has every instance connected, publishes, and
        holds at most ~2 s of traffic in its spool; None after RECOVERY_WAIT."""
        bridge = self.bridges[name]
        backlog = 2 * self.options.rate * len(bridge.instances)
        deadline = time.monotonic() + RECOVERY_WAIT
        previous: tuple[int, float] | None = None
        while time.monotonic() < deadline:
            await asyncio.sleep(SCRAPE_EVERY)
            samples = await bridge.scrape(self.http)
            if samples is None:
                previous = None
                continue
            life, published = len(bridge.lives), total(samples, "events_published_total")
            moving = previous is not None and previous[0] == life and published > previous[1]
            previous = (life, published)
            if (
                moving
                and total(samples, "ws_connected") >= len(bridge.instances)
                and total(samples, "spool_events") <= backlog
            ):
                return max(time.time(), since)
        return None

    # ---- the end --------------------------------------------------------------------------
    async def drain(self) -> None:
        """Stop generating, let the bridges empty their spools (bounded), scrape last."""
        await self.knob("set_rate", rate=-1)
        await asyncio.sleep(3)
        deadline = time.monotonic() + DRAIN_WAIT
        while time.monotonic() < deadline:
            empty = True
            for bridge in self.bridges.values():
                samples = await bridge.scrape(self.http)
                empty = empty and samples is not None and total(samples, "spool_events") == 0
            if empty:
                break
            await asyncio.sleep(1)
        # the shipper's counts ride on its acknowledgements; the last scrape leaves the
        # main process a moment to apply the last of them
        await asyncio.sleep(METRICS_LAG)
        for name, bridge in self.bridges.items():
            bridge.expect_down = True
            await bridge.scrape(self.http)
            if bridge.proc is not None:
                code = await bridge.proc.stop(grace=30)
                bridge.lives[-1].exit_code = code
                self.say(f"bridge {name} stopped (exit {code})")

    async def sent(self) -> list[Sent]:
        out = []
        for name in self.tokens:
            answer = await self.http.get(f"{self.sim_url}/_sim/ids/{name}", params={"times": 1})
            out += [Sent(name, frame_id, at) for frame_id, at in answer.json()]
        return out

    async def collect(self) -> Collected:
        sent = await self.sent()
        topics = [t for i in self.bridges["kafka"].instances for t in topics_of(i)] + ["ryze.dlq"]
        kafka_seen, kafka_raw = await read_kafka(
            self.kafka.bootstrap, topics, self.generations, within=300
        )
        async with self.redis.client() as client:
            redis_seen, redis_raw = await read_redis(client)
        tokens = list(self.tokens.values())
        found = leaks([*kafka_raw, *self.snapshot_raw], tokens, "kafka")
        found += leaks(redis_raw, tokens, "redis")
        found += leaks(self.files_to_scan(), tokens, "bridge logs or spool")
        counts: dict[str, Counts] = {}
        bridge_of = {}
        published = {}
        for name, bridge in self.bridges.items():
            counts.update(bridge.counts())
            published[name] = bridge.published()
            bridge_of.update(dict.fromkeys(bridge.instances, name))
            found += leaks(
                [json.dumps(life.last).encode() for life in bridge.lives], tokens, "metrics"
            )
        return Collected(
            sent,
            [*self.snapshots, *kafka_seen, *redis_seen],
            self.runs,
            self.kills,
            counts,
            bridge_of,
            BATCH_MAX_RECORDS,
            found,
            published,
        )

    def files_to_scan(self) -> list[bytes]:
        blobs = [(self.options.work / f"bridge-{n}.log").read_bytes() for n in self.bridges]
        for mount in self.mounts:
            blobs += [
                p.read_bytes() for p in mount.rglob("*") if p.is_file() and p.name != "filler"
            ]
        return blobs

    # ---- whole run ------------------------------------------------------------------------
    async def run(self) -> int:
        o = self.options
        self.say(f"seed {o.seed}; duration {o.duration:.0f} s; report in {o.out}")
        await self.set_up()
        self._tasks = [asyncio.create_task(self.scraper()), asyncio.create_task(self.watchdog())]
        names = {k: b.instances for k, b in self.bridges.items()}
        schedule = build_schedule(o.seed, 1000, names)
        began = time.monotonic()
        self.say("relaying; first fault in 15 s")
        await asyncio.sleep(15)
        planned = []
        for fault in schedule:
            if time.monotonic() - began + fault.duration > o.duration:
                break
            planned.append(fault)
            await self.run_fault(fault)
            await asyncio.sleep(fault.gap)
        for task in self._tasks:
            task.cancel()
        self.say("schedule done; draining")
        await self.drain()
        data = await self.collect()
        result = verdict(data)
        table = render(result.rows, result.checks)
        self.write_report(data, result, planned, table)
        self.say(f"seed {o.seed}; report {o.out / 'report.json'}; table {o.out / 'table.txt'}")
        print(table, end="", flush=True)  # its last line counts the invariants
        return 0 if result.ok else 1

    def write_report(self, data: Collected, result: Any, planned: list[Fault], table: str) -> None:
        o = self.options
        o.out.mkdir(parents=True, exist_ok=True)
        report = {
            "seed": o.seed,
            "duration": o.duration,
            "ok": result.ok,
            "replay": f"make soak SEED={o.seed} DURATION={o.duration:.0f}",
            "options": {
                "instances_per_bridge": o.instances,
                "rate_per_instance": o.rate,
                "tmpfs_mb": o.tmpfs_mb,
                "batch_max_records": BATCH_MAX_RECORDS,
            },
            "checks": [asdict(c) for c in result.checks],
            "rows": [asdict(r) for r in result.rows],
            "schedule": [f.as_json() for f in planned],
            "faults": [asdict(f) for f in data.faults],
            "kill_windows": [asdict(k) for k in data.kills],
            "unplanned_exits": {n: b.unplanned_exits for n, b in self.bridges.items()},
            "counts": {i: asdict(c) for i, c in data.counts.items()},
            "sent": len(data.sent),
            "seen": len(data.seen),
            "losses": result.losses[:2000],
            "losses_total": len(result.losses),
            "timeline": self.timeline,
        }
        (o.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
        (o.out / "table.txt").write_text(table)
        logs = o.out / "logs"
        logs.mkdir(exist_ok=True)
        wanted = [
            *o.work.glob("*.log"),
            *o.work.glob("kafka/node*/*.log"),
            o.work / "redis/redis.log",
        ]
        for path in wanted:
            if path.is_file() and path.stat().st_size < 200 * 1024 * 1024:
                name = path.name if path.parent == o.work else f"{path.parent.name}-{path.name}"
                shutil.copy(path, logs / name)

    async def tear_down(self) -> None:
        """Stop everything this soak started, unmount its tmpfs mounts (also on errors)."""
        for task in self._tasks:
            task.cancel()
        for bridge in self.bridges.values():
            bridge.expect_down = True
            shippers = bridge.shippers()
            if bridge.proc is not None:
                await bridge.proc.stop(grace=15)
            for pid in shippers:
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
        if self.simulator is not None:
            await self.simulator.stop(grace=10)
        await self.proxy.stop()
        await self.redis.stop()
        await self.kafka.stop()
        await self.http.aclose()
        for mount in self.mounts:
            subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
