"""The fleet: the runners of this process, one per instance it runs.

It starts a runner per wanted instance (of those this replica owns, see :mod:`bridge.shards`),
keeps each one running (a crash is logged and the runner restarted, never propagated: one
instance failing never stops another), stops one by closing its socket and keeping every frame
it read, and answers the operator's controls (reconnect, pause, resume) and the status rows of
``/instances``. Changes to the running set happen one at a time (:meth:`Fleet.changes`).
Once :meth:`Fleet.close` is called (shutdown) it starts nothing more: every runner it stops
then stays stopped, so no frame is read after the spool's drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from bridge.admin import Liveness
from bridge.logs import get_logger
from bridge.metrics import Metrics, init_instance, set_per_instance
from bridge.metrics_fold import InstanceState, PerInstance
from bridge.retry import RetryPolicy
from bridge.runner import InstanceStatus
from bridge.settings import InstanceSettings
from bridge.upstream.rest import WsConfig

log = get_logger(__name__)
STOP_READ_TIMEOUT = 5.0
# A crashed runner's restarts: the one retry policy, reset after a minute of running.
RUNNER_RESTARTS = RetryPolicy(1.0, 60.0, healthy_after=60.0)


def same_socket(running: InstanceSettings, wanted: InstanceSettings) -> bool:
    """Whether a runner with ``running`` settings can go on as ``wanted`` on the same socket:
    they differ at most in ``important`` (how its series are counted) (pure)."""
    return running.model_copy(update={"important": wanted.important}) == wanted


START_BATCH = 64  # runners made between two turns of the event loop (start_wanted)


class FleetRunner(Protocol):
    """What the fleet needs of a runner (:class:`bridge.runner.Runner`)."""

    name: str
    settings: InstanceSettings
    status: InstanceStatus

    @property
    def stopping(self) -> bool: ...

    @property
    def reading(self) -> bool: ...

    async def run(self) -> None: ...

    async def stop(self) -> None: ...

    async def reconnect(self) -> None: ...

    def describe(self) -> dict[str, object]: ...


class MakeRunner(Protocol):
    def __call__(
        self, name: str, instance: InstanceSettings, known: WsConfig | None, *, takeover: bool
    ) -> FleetRunner: ...


class Fleet:
    def __init__(
        self,
        make_runner: MakeRunner,
        metrics: Metrics,
        *,
        owns: Callable[[str], bool] = lambda _name: True,
    ) -> None:
        self.make_runner = make_runner
        self.metrics = metrics
        self.owns = owns  # whether this replica runs an instance (its shard is owned)
        self.runners: dict[str, FleetRunner] = {}
        self.paused: set[str] = set()
        self.wanted: dict[str, InstanceSettings] = {}  # from config and discovery, every shard
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._removing: dict[str, asyncio.Task[None]] = {}  # stops under way, by instance
        self._changing = asyncio.Lock()
        self._closing = False
        self._view: tuple[FleetRunner, ...] = ()  # read by the scrape, from another thread
        metrics.fleet_view.source = self.states

    def close(self) -> None:
        """Start nothing from now on (shutdown begins): a take, an apply, a resume or a
        restart after this runs nothing; stopping goes on as before."""
        self._closing = True

    @property
    def closing(self) -> bool:
        return self._closing

    def changes(self) -> asyncio.Lock:
        """Held while the running set changes (apply, shards taken or released)."""
        return self._changing

    # ---- the running set ----------------------------------------------------------------
    async def apply(
        self,
        desired: Mapping[str, InstanceSettings],
        known: Mapping[str, WsConfig | None] | None = None,
    ) -> int:
        """Make the running set equal ``desired`` (of what this replica owns): start new
        runners, stop (draining) gone ones, restart changed ones, leave the rest untouched.
        Returns how many changed."""
        async with self._changing:
            self.wanted = dict(desired)
            mine = {n: s for n, s in desired.items() if self.owns(n)}
            changes = 0
            for name in [n for n in self.runners if n not in mine]:
                await self.remove(name)
                changes += 1
            for name, instance in mine.items():
                runner = self.runners.get(name)
                if name in self.paused:
                    continue
                if runner is not None and same_socket(runner.settings, instance):
                    self.reclassify(runner, instance)  # `important` alone: series, not socket
                    continue
                if runner is not None:
                    await self.remove(name)
                started = self.add(name, instance, (known or {}).get(name))
                changes += 1 if runner is not None or started else 0
            return changes

    def reclassify(self, runner: FleetRunner, instance: InstanceSettings) -> None:
        """The running instance's settings become ``instance`` in place; a changed
        ``important`` moves its series (own or ``_other``) without touching its socket."""
        if runner.settings.important != instance.important:
            init_instance(self.metrics, runner.name, instance.important)
        runner.settings = instance

    async def start_wanted(self, which: Callable[[str], bool], *, takeover: bool) -> int:
        """Start the wanted, unpaused instances that ``which`` selects (hold :meth:`changes`);
        how many were not running yet. The loop gets a turn after every ``START_BATCH``
        runners made: a replica handed thousands of instances at once (a cluster's first
        member, the survivors of a SIGKILL) must keep its group heartbeats going, or the
        group throws it out and hands the shards to another member, which does the same."""
        started = 0
        for name, instance in list(self.wanted.items()):
            if which(name) and name not in self.paused:
                started += self.add(name, instance, takeover=takeover)
                if started % START_BATCH == 0:
                    await asyncio.sleep(0)
        return started

    async def stop_where(self, which: Callable[[str], bool]) -> int:
        """Stop (draining) the running instances that ``which`` selects, those another
        caller is stopping included (each returns once its runner is done); how many."""
        names = [n for n in dict.fromkeys([*self.runners, *self._removing]) if which(n)]
        await asyncio.gather(*(self.remove(n) for n in names))
        return len(names)

    async def stop_all(self) -> None:
        """Stop every runner at once (shutdown): each keeps every frame it read."""
        await self.stop_where(lambda _name: True)

    def all_connected(self, which: Callable[[str], bool]) -> bool:
        """Every running instance that ``which`` selects is connected."""
        return all(r.status.connected for n, r in self.runners.items() if which(n))

    def add(
        self,
        name: str,
        instance: InstanceSettings,
        known: WsConfig | None = None,
        *,
        takeover: bool = False,
    ) -> bool:
        """Start the runner of one instance; whether it started (not when it runs already or
        the fleet is closing)."""
        if name in self.runners or self._closing:
            return False
        init_instance(self.metrics, name, instance.important)  # own series or _other
        runner = self.make_runner(name, instance, known, takeover=takeover)
        self.runners[name] = runner
        self._tasks[name] = asyncio.create_task(self._supervise(runner), name=f"runner:{name}")
        self._counted()
        return True

    def _counted(self) -> None:
        """The running set changed: the scrape's snapshot and the configured count follow."""
        self._view = tuple(self.runners.values())
        self.metrics.instances_configured.set(len(self._view))

    async def remove(self, name: str) -> None:
        """Stop one runner: close its socket, keep every frame it read, then forget it.
        Returns only once that is done, also when another caller's stop of it was already
        under way (a release racing the shutdown's stop waits for the runner's last frames)."""
        under_way = self._removing.get(name)
        if under_way is not None:
            await asyncio.shield(under_way)
        runner = self.runners.pop(name, None)
        task = self._tasks.pop(name, None)
        if runner is None or task is None:
            return
        self._counted()
        stopping = asyncio.create_task(self._stop(name, runner, task), name=f"stop:{name}")
        self._removing[name] = stopping
        stopping.add_done_callback(lambda done: self._forget_stop(name, done))
        await asyncio.shield(stopping)

    def _forget_stop(self, name: str, done: asyncio.Task[None]) -> None:
        if self._removing.get(name) is done:
            del self._removing[name]

    async def _stop(self, name: str, runner: FleetRunner, task: asyncio.Task[None]) -> None:
        # a runner with a socket (or upgrading one: frames may come with the answer) finishes
        # reading what arrived; one without (checking its config, waiting for its token's
        # pace or a socket slot, backing off) has read nothing and is simply cancelled
        wait = STOP_READ_TIMEOUT if runner.reading else 0.0
        await runner.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=wait)
        except TimeoutError:  # stuck before a socket was open (ensure, budget): nothing read
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _supervise(self, runner: FleetRunner) -> None:
        """Run a runner; a crash is logged and the runner restarted, never propagated."""
        restarts = RUNNER_RESTARTS.start()
        while self.runners.get(runner.name) is runner and not (runner.stopping or self._closing):
            restarts.healthy(time.monotonic())
            try:
                await runner.run()
            except Exception:
                log.exception("runner.crashed", instance=runner.name)
                await asyncio.sleep(restarts.next_delay(time.monotonic()))
            else:
                return

    # ---- operator controls ----------------------------------------------------------------
    async def reconnect(self, name: str) -> bool:
        runner = self.runners.get(name)
        if runner is None:
            return False
        await runner.reconnect()
        return True

    async def pause(self, name: str) -> bool:
        """Stop one instance until resumed (a reload or a shard taken leaves it stopped)."""
        if name not in self.runners:
            return False
        self.paused.add(name)
        await self.remove(name)
        return True

    def resume(self, name: str, instance: InstanceSettings | None) -> bool:
        """Run a paused instance again, as ``instance`` says (None: no longer wanted)."""
        if name not in self.paused:
            return False
        self.paused.discard(name)
        if instance is not None and self.owns(name):
            self.add(name, instance)
        return True

    def per_instance(self, mode: PerInstance) -> None:
        """``metrics.per_instance`` changed: each running instance counts under its own
        series or ``_other`` as the new mode says, from now on."""
        running = {n: r.settings.important for n, r in self.runners.items()}
        set_per_instance(self.metrics, mode, running)

    # ---- what operators and readiness see ----------------------------------------------------
    def states(self) -> list[InstanceState]:
        """A snapshot of every running instance's state for the scrape (cheap; safe from the
        scrape's thread: it reads an immutable tuple and plain attributes)."""
        rows = []
        for runner in self._view:
            status = runner.status
            heard = status.last_frame_at or status.connected_since
            rows.append(InstanceState(runner.name, status.state, heard))
        return rows

    def status(self) -> dict[str, dict[str, object]]:
        """One row per running or paused instance (never a secret)."""
        rows = {name: runner.describe() for name, runner in self.runners.items()}
        for name in self.paused:
            rows[name] = {"state": "paused"}
        return rows

    def liveness(self) -> list[Liveness]:
        """Each running instance: connected, and seconds since it last heard anything."""
        now = time.time()
        return [
            Liveness(r.name, r.status.connected, now - (r.status.last_frame_at or now))
            for r in self.runners.values()
        ]
