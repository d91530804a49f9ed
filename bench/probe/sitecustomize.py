"""Bench-only probe, loaded into the bridge and its shipper through ``PYTHONPATH`` when
``PYTHON_RYZE_BENCH_PROBE`` names a directory (bench.source_clock ``--probe``); never part of
the product. (The shipper is given Python's own variables only, hence the name.)

It writes ``probe-<pid>.jsonl`` into that directory, one line per event worth seeing:
- ``gc``: a garbage-collector pass of 1 ms or more (``gc.callbacks`` start → stop), its
  generation and when it ended (ns since the epoch, to lay beside the records' hops), and how
  much of it its thread ran (CPU time) and, holding the GIL all along, waited for a CPU;
- ``lag``: the event loop woke a 5 ms timer 2 ms or more late (the loop was held: a
  callback, a scrape, a batch built on the loop, the GIL held by another thread, or no CPU
  to run on), with how much of the interval the loop's thread spent waiting for a CPU
  (``waited_ms``, runnable but not running: the kernel's run-queue time from
  ``/proc/thread-self/schedstat``), where Linux tells, and running (``ran_ms``, its CPU
  time); the rest of the interval it slept (nothing to do, or waiting for the GIL);
- ``stall``: for a lag of 5 ms or more, where the loop's thread was meanwhile: a sampler
  thread notes the thread's innermost frames every millisecond, and the stall line counts
  the samples taken inside it by stack (``stacks``: innermost frame first);
a ``start`` line (the command line, to tell the processes apart), and every 5 s a ``totals``
line (passes and ms per generation, timer wake-ups and their lag histogram). Lines are written
as they happen: the bench ends the bridge with SIGKILL.

``PYTHON_RYZE_BENCH_STALL_DUMP_MS=N``: the loop's stalls of N ms or more are also caught by
``faulthandler`` (its watchdog thread dumps every thread's stack into ``stalls-<pid>.txt`` in
the probe's directory while the loop is still held): exact stacks, but it walks live frames from
another thread too and crashed the bridge once at 5,000 instances, and arming it every 5 ms
costs the loop ~1 %: off unless asked for. bench.source_clock deletes the probe's directory
after a run, so set both variables yourself (a directory you keep) to read the dumps.

``PYTHON_RYZE_BENCH_SAMPLER=0`` (or false, no, off) leaves the sampler out (no ``stall``
stacks): walking another thread's live frames (``sys._current_frames()``, ``f_back``) can crash
CPython 3.11 (CPython's gh-99110 and later reports of the same kind against 3.11 releases);
here it crashed the bridge twice at 5,000 instances, where frames come and go fastest.
"""

from __future__ import annotations

import asyncio
import collections
import faulthandler
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

DIR = os.environ.get("PYTHON_RYZE_BENCH_PROBE")
OFF = {"0", "false", "no", "off"}


def stall_dump_ms(text: str) -> float:
    """``PYTHON_RYZE_BENCH_STALL_DUMP_MS`` as a number of ms (0: off); anything but a finite
    number ≥ 0 stops the process at once, loudly (a probe that silently did not load would
    read as "no pauses")."""
    try:
        value = float(text or "0")
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        sys.stderr.write(f"bench probe: PYTHON_RYZE_BENCH_STALL_DUMP_MS={text!r}: not ms >= 0\n")
        raise SystemExit(2)
    return value


SAMPLING = os.environ.get("PYTHON_RYZE_BENCH_SAMPLER", "1").strip().lower() not in OFF
STALL_DUMP = stall_dump_ms(os.environ.get("PYTHON_RYZE_BENCH_STALL_DUMP_MS", "0")) if DIR else 0.0
LAG_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 1000)
LAG_LABELS = [*map(str, LAG_BOUNDS_MS), "inf"]


class Probe:
    def __init__(self, directory: Path) -> None:
        self.out = (directory / f"probe-{os.getpid()}.jsonl").open("a", encoding="utf-8")
        self.dumps = None
        if STALL_DUMP:
            self.dumps = (directory / f"stalls-{os.getpid()}.txt").open("a", encoding="utf-8")
        self.gc_started = 0
        self.gc_cpu_started = 0
        self.gc_ms = [0.0, 0.0, 0.0]
        self.gc_passes = [0, 0, 0]
        self.lag_counts = [0] * (len(LAG_BOUNDS_MS) + 1)
        self.last_totals = time.monotonic()
        self.described = 0
        self.started = time.monotonic()
        self.walked: dict[str, int] | None = None
        self.describe_gen1 = False

    def write(self, line: dict[str, Any]) -> None:
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            generation = int(info.get("generation", 0))
            if generation == 1 and self.describe_gen1 and self.describing():
                self.walked = walked(1)  # like the long one before (before its clock starts)
            self.gc_cpu_started = time.thread_time_ns()  # keeps the GIL (no system call)
            self.gc_started = time.perf_counter_ns()
            return
        ms = (time.perf_counter_ns() - self.gc_started) / 1e6
        ran = (time.thread_time_ns() - self.gc_cpu_started) / 1e6
        generation = int(info.get("generation", 0))
        self.gc_ms[generation] += ms
        self.gc_passes[generation] += 1
        if ms >= 1:
            line = {"kind": "gc", "gen": generation, "ms": ms, "at": time.time_ns()}
            # a pass holds the GIL: what it did not run, its thread waited for a CPU
            line |= {"ran_ms": ran, "waited_ms": max(0.0, ms - ran)}
            line["collected"] = int(info.get("collected", 0))  # freed cyclic garbage
            if self.walked is not None:
                self.described += 1
                line["walked"], self.walked = self.walked, None
            elif generation == 2 and ms >= 5 and self.describing():
                self.described += 1  # what it walked stayed in generation 2 (its survivors)
                line["walked"] = walked(2, only=True)
            self.describe_gen1 = generation == 1 and ms >= 5
            self.write(line)

    def describing(self) -> bool:
        """Whether a long pass is described: the first ``DESCRIBED`` past start-up (walking
        a connecting fleet's objects would stall it for seconds)."""
        return self.described < DESCRIBED and time.monotonic() - self.started >= DESCRIBE_AFTER

    def on_lag(self, lag_ms: float, sched: dict[str, float] | None = None) -> None:
        index = next((i for i, b in enumerate(LAG_BOUNDS_MS) if lag_ms <= b), -1)
        self.lag_counts[index] += 1
        if lag_ms >= 2:
            self.write({"kind": "lag", "ms": lag_ms, "at": time.time_ns(), **(sched or {})})
        if time.monotonic() - self.last_totals >= 5:
            self.last_totals = time.monotonic()
            self.write(
                {
                    "kind": "totals",
                    "gc_ms": self.gc_ms,
                    "gc_passes": self.gc_passes,
                    "lag_le_ms": dict(zip(LAG_LABELS, self.lag_counts, strict=True)),
                }
            )

    async def watch_loop(self) -> None:
        sampler = Sampler(threading.get_ident())
        if SAMPLING:
            sampler.start()
        sched = SchedStat()  # opened here: the loop's thread
        try:
            await self.watch_with(sampler, sched)
        finally:
            sched.close()

    async def watch_with(self, sampler: Sampler, sched: SchedStat) -> None:
        while True:
            counted = sched.read()
            before = time.perf_counter()
            if self.dumps is not None:
                faulthandler.dump_traceback_later(STALL_DUMP / 1000 + 0.005, file=self.dumps)
            try:
                await asyncio.sleep(0.005)
            finally:
                if self.dumps is not None:
                    faulthandler.cancel_dump_traceback_later()
            after = time.perf_counter()
            lag_ms = max(0.0, (after - before - 0.005) * 1000)
            self.on_lag(lag_ms, sched.since(counted))
            if lag_ms >= STALL_MS:
                stacks = sampler.between(before + 0.005, after)
                self.write({"kind": "stall", "ms": lag_ms, "at": time.time_ns(), "stacks": stacks})


class SchedStat:
    """The opening thread's CPU time (``time.thread_time_ns``) and its run-queue wait
    (``/proc/thread-self/schedstat``'s second field: ns runnable but waiting for a CPU; the
    first, time run, is only brought up to date at scheduler events, a tick late) so far. No
    wait is told where the file is missing or reads all zeros (a kernel without schedstats)."""

    def __init__(self) -> None:
        try:
            self.fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self.fd = None

    def read(self) -> tuple[int, int | None]:
        """ns run, ns waited (None: not known)."""
        ran = time.thread_time_ns()
        if self.fd is None:
            return ran, None
        try:
            fields = os.pread(self.fd, 100, 0).split()
            waited = int(fields[1])
        except (OSError, ValueError, IndexError):
            return ran, None
        return ran, waited if any(int(f) for f in fields) else None

    def since(self, before: tuple[int, int | None]) -> dict[str, float]:
        """ms run and, where known, ms waiting for a CPU since ``before``."""
        ran, waited = self.read()
        found = {"ran_ms": (ran - before[0]) / 1e6}
        if waited is not None and before[1] is not None:
            found["waited_ms"] = (waited - before[1]) / 1e6
        return found

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


STALL_MS = 5.0
DESCRIBED = 10  # long gen 1/2 passes whose objects are described (it costs a walk)
DEPTH = 16
DESCRIBE_AFTER = 60.0  # seconds after start


def walked(generation: int, *, only: bool = False) -> dict[str, int]:
    """The objects a pass of ``generation`` walks (it and the younger ones; ``only``: it
    alone), by type (top 8)."""
    found: collections.Counter[str] = collections.Counter()
    for younger in [generation] if only else range(generation + 1):
        found.update(type(o).__name__ for o in gc.get_objects(younger))
    return {"total": sum(found.values()), **dict(found.most_common(8))}


class Sampler(threading.Thread):
    """Notes the loop thread's innermost frames every millisecond (the last two seconds)."""

    def __init__(self, ident: int) -> None:
        super().__init__(name="bench-probe-sampler", daemon=True)
        self.target = ident
        self.ring: collections.deque[tuple[float, Stack]] = collections.deque(maxlen=2000)

    def run(self) -> None:
        # cheap while sampling (it takes the GIL from the thread it watches): raw code objects
        # and line numbers, named only when a stall asks for them
        while True:
            time.sleep(0.001)
            frame = sys._current_frames().get(self.target)
            stack: list[tuple[Any, int | None]] = []
            while frame is not None and len(stack) < DEPTH:
                code = getattr(frame, "f_code", None)  # a frame torn down under us: skipped
                if code is None:
                    break
                stack.append((code, frame.f_lineno))
                frame = frame.f_back
            self.ring.append((time.perf_counter(), tuple(stack)))

    def between(self, start: float, end: float) -> dict[str, int]:
        found = collections.Counter(stack for at, stack in list(self.ring) if start <= at <= end)
        return {named(stack): count for stack, count in found.most_common(5)}


Stack = tuple[tuple[Any, int | None], ...]


def named(stack: Stack) -> str:
    return " < ".join(f"{c.co_name} ({Path(c.co_filename).name}:{n})" for c, n in stack)


def wrap_run(run: Any, probe: Probe) -> Any:
    def probed(main: Any, *args: Any, **kwargs: Any) -> Any:
        async def with_probe() -> Any:
            watcher = asyncio.get_running_loop().create_task(probe.watch_loop())
            try:
                return await main
            finally:
                watcher.cancel()

        return run(with_probe(), *args, **kwargs)

    return probed


def install(directory: Path) -> None:
    probe = Probe(directory)
    probe.write({"kind": "start", "argv": sys.orig_argv[1:4], "at": time.time_ns()})
    gc.callbacks.append(probe.on_gc)
    asyncio.run = wrap_run(asyncio.run, probe)
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return
    uvloop.run = wrap_run(uvloop.run, probe)


if DIR:
    install(Path(DIR))
