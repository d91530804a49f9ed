"""The fleet in isolation: which runners it runs, how it stops them, the operator's controls.

The runners here are small stand-ins implementing :class:`bridge.fleet.FleetRunner` that run
until stopped (no socket): the fleet's bookkeeping is under test, not a runner's.
"""

from __future__ import annotations

import asyncio
import itertools
import random

from bridge.fleet import RUNNER_RESTARTS, START_BATCH, Fleet, FleetRunner, same_socket
from bridge.metrics import create_metrics
from bridge.reconfigure import not_important, reclassified
from bridge.runner import InstanceStatus
from bridge.settings import InstanceSettings, Settings
from bridge.upstream.rest import WsConfig
from tests.integration.harness import eventually


class StandInRunner:
    """Runs until stopped; ``connected`` says whether it pretends to hold a socket; with
    ``flush_seconds`` it takes that long after the stop to finish (a socket's last frames)."""

    def __init__(self, name: str, settings: InstanceSettings, takeover: bool) -> None:
        self.name = name
        self.settings = settings
        self.takeover = takeover
        self.status = InstanceStatus(state="connected")
        self.runs = 0
        self.crashes = 0
        self.flush_seconds = 0.0
        self.flushed = False
        self.reconnects = 0
        self._stop = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def reading(self) -> bool:
        return self.status.connected

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            raise RuntimeError("a runner bug")
        await self._stop.wait()
        await asyncio.sleep(self.flush_seconds)
        self.flushed = True

    async def stop(self) -> None:
        self._stop.set()

    async def reconnect(self) -> None:
        self.reconnects += 1

    def describe(self) -> dict[str, object]:
        return {"state": self.status.state}


class Made:
    """The fleet's runner factory, remembering what it made."""

    def __init__(self) -> None:
        self.runners: list[StandInRunner] = []
        self.crashes = 0

    def __call__(
        self, name: str, instance: InstanceSettings, known: WsConfig | None, *, takeover: bool
    ) -> FleetRunner:
        runner = StandInRunner(name, instance, takeover)
        runner.crashes = self.crashes
        self.runners.append(runner)
        return runner


async def running(made: Made, count: int) -> None:
    """Wait (bounded) until ``count`` runners have been made and each is running."""
    await eventually(
        lambda: len(made.runners) >= count and all(r.runs for r in made.runners), within=5
    )


def instance(*events: str) -> InstanceSettings:
    return InstanceSettings.model_validate({"token": "tok", "events": list(events)})


async def test_apply_starts_new_stops_gone_restarts_changed_and_leaves_the_rest() -> None:
    """Applying a desired set starts what is new, stops what is gone, restarts what changed
    and leaves an unchanged runner untouched; it counts the changes."""
    made = Made()
    fleet = Fleet(made, create_metrics())
    assert await fleet.apply({"a": instance(), "b": instance()}) == 2
    await running(made, 2)
    first_a = fleet.runners["a"]
    assert await fleet.apply({"a": instance(), "c": instance()}) == 2
    await running(made, 3)
    assert set(fleet.runners) == {"a", "c"}
    assert fleet.runners["a"] is first_a
    assert await fleet.apply({"a": instance("message.status"), "c": instance()}) == 1
    assert fleet.runners["a"] is not first_a
    await running(made, 4)
    assert [(r.name, r.stopping) for r in made.runners] == [
        ("a", True),
        ("b", True),
        ("c", False),
        ("a", False),
    ]
    await fleet.stop_all()
    assert fleet.runners == {}
    assert all(r.flushed for r in made.runners)


async def test_only_owned_instances_run_but_every_wanted_one_is_remembered() -> None:
    """An instance the replica does not own is wanted but not run; starting the wanted ones
    of a selection later runs it, with the takeover flag it is given, paused ones excepted."""
    owned = {"a"}
    made = Made()
    fleet = Fleet(made, create_metrics(), owns=lambda name: name in owned)
    await fleet.apply({"a": instance(), "b": instance(), "c": instance()})
    assert set(fleet.runners) == {"a"}
    assert set(fleet.wanted) == {"a", "b", "c"}
    assert await fleet.pause("a")
    async with fleet.changes():
        owned.update({"b", "c"})
        fleet.paused.add("c")
        assert await fleet.start_wanted(lambda name: name in {"a", "b", "c"}, takeover=True) == 1
    assert set(fleet.runners) == {"b"}
    assert made.runners[-1].takeover is True
    assert await fleet.stop_where(lambda name: name == "b") == 1
    assert fleet.runners == {}


async def test_a_paused_instance_stays_stopped_until_resumed() -> None:
    """Pause stops the runner and shows the instance as paused; a reapplied config leaves it
    stopped; resume runs it again; unknown names are refused."""
    made = Made()
    fleet = Fleet(made, create_metrics())
    await fleet.apply({"a": instance()})
    assert await fleet.pause("a")
    assert fleet.status() == {"a": {"state": "paused"}}
    await fleet.apply({"a": instance("message.status")})
    assert "a" not in fleet.runners
    assert fleet.resume("a", instance("message.status"))
    assert fleet.status() == {"a": {"state": "connected"}}
    assert not fleet.resume("a", instance())  # not paused
    assert not await fleet.pause("nobody")
    assert not await fleet.reconnect("nobody")
    assert await fleet.reconnect("a")
    assert made.runners[-1].reconnects == 1
    await fleet.stop_all()


async def test_resuming_an_instance_no_longer_wanted_or_not_owned_runs_nothing() -> None:
    """A paused instance resumed when nothing says how to run it, or when this replica no
    longer owns it, is no longer paused and does not run."""
    owned = {"a", "b"}
    fleet = Fleet(Made(), create_metrics(), owns=lambda name: name in owned)
    await fleet.apply({"a": instance(), "b": instance()})
    await fleet.pause("a")
    await fleet.pause("b")
    owned.discard("b")
    assert fleet.resume("a", None)
    assert fleet.resume("b", instance())
    assert fleet.runners == {}
    assert fleet.paused == set()


async def test_stopping_a_connected_runner_waits_for_what_it_reads_last() -> None:
    """A connected runner is given time to finish reading after its stop; a runner without a
    socket is cancelled at once."""
    made = Made()
    fleet = Fleet(made, create_metrics())
    await fleet.apply({"a": instance(), "b": instance()})
    await running(made, 2)
    a, b = made.runners
    a.flush_seconds = 0.2
    await fleet.remove("a")
    assert a.flushed
    b.status.state = "connecting"
    b.flush_seconds = 5.0
    await asyncio.wait_for(fleet.remove("b"), timeout=1.0)
    assert not b.flushed


async def test_a_crashed_runner_is_restarted_and_the_others_keep_running() -> None:
    """A runner whose run raises is logged and run again after the backoff; the others are
    untouched, and liveness lists every running instance."""
    made = Made()
    made.crashes = 1
    fleet = Fleet(made, create_metrics())
    await fleet.apply({"a": instance(), "b": instance()})
    await eventually(lambda: all(r.runs == 2 for r in made.runners), within=5)
    assert [live.name for live in fleet.liveness()] == ["a", "b"]
    assert fleet.all_connected(lambda _name: True)
    await fleet.stop_all()


def test_runner_restarts_follow_the_one_retry_policy() -> None:
    """A crashing runner waits up to 1 s, then 2, 4 … up to 60 s (full jitter below each
    ceiling), and starts again from the first wait after a minute of running."""
    restarts = RUNNER_RESTARTS.start(random.Random(7))
    waits = [restarts.next_delay(float(n)) for n in range(8)]
    ceilings = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert all(0.0 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    restarts.healthy(100.0)
    assert restarts.next_delay(160.0) <= 1.0


async def test_taking_thousands_of_instances_gives_the_loop_a_turn_every_batch() -> None:
    """Starting 1,000 wanted instances at once (a shard take) lets other tasks run between
    every START_BATCH runners made (a Kafka group's heartbeats must go on), and starts each
    of them once."""
    owned: set[str] = set()
    made = Made()
    fleet = Fleet(made, create_metrics(), owns=lambda name: name in owned)
    names = [f"i{n:04d}" for n in range(1000)]
    await fleet.apply({n: instance() for n in names})
    made_at_turn: list[int] = []

    async def other_task() -> None:  # records how many runners existed at each of its turns
        while True:
            made_at_turn.append(len(made.runners))
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    async with fleet.changes():
        owned.update(names)
        assert await fleet.start_wanted(lambda _name: True, takeover=True) == 1000
    other.cancel()
    turns_while_starting = {m for m in made_at_turn if 0 < m < 1000}
    assert len(turns_while_starting) >= 1000 // START_BATCH - 1
    assert max(b - a for a, b in itertools.pairwise(made_at_turn)) <= START_BATCH
    assert sorted(fleet.runners) == names
    await fleet.stop_all()


async def test_a_closed_fleet_starts_nothing_but_still_stops() -> None:
    """Once closed (shutdown began) the fleet starts no runner, whether by apply, resume or
    start_wanted, and counts no refused start as a change; stopping works as before."""
    made = Made()
    fleet = Fleet(made, create_metrics())
    await fleet.apply({"a": instance(), "b": instance()})
    await running(made, 2)
    await fleet.pause("b")
    fleet.close()
    assert fleet.closing
    assert await fleet.apply({"a": instance(), "c": instance()}) == 0  # a stays, c refused
    assert set(fleet.runners) == {"a"}
    assert fleet.resume("b", instance())
    assert await fleet.start_wanted(lambda _name: True, takeover=False) == 0
    assert set(fleet.runners) == {"a"}
    await fleet.stop_all()
    assert fleet.runners == {}
    assert len(made.runners) == 2


def test_only_important_differing_keeps_the_socket_and_reclassifies_discovered_ones() -> None:
    """Settings differing only in ``important`` share a socket, any other change does not;
    a discovery section differing only in ``discovery.important`` leaves the reload's
    comparison equal and re-marks the discovered instances (configured ones as configured)."""
    plain = instance("message.status")
    assert same_socket(plain, plain.model_copy(update={"important": True}))
    assert not same_socket(plain, instance("message.exchange"))
    discovery = {"token_env": "ACCOUNT"}
    old = Settings.model_validate({"discovery": discovery, "instances": {"x": {"token": "t"}}})
    new = Settings.model_validate(
        {"discovery": {**discovery, "important": ["d1"]}, "instances": {"x": {"token": "t"}}}
    )
    assert not_important(old) == not_important(new)
    marked = reclassified({"d1": plain, "d2": plain, "x": old.instances["x"]}, new)
    assert (marked["d1"].important, marked["d2"].important) == (True, False)
    assert marked["x"] == new.instances["x"]
