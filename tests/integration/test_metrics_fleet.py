"""The metrics of a running bridge with several instances, read as Prometheus reads them
(``/metrics`` over HTTP, gzipped): the quiet instances folded into ``_other``, the aggregate
states, both processes' metrics, and a reload of ``metrics.per_instance`` moving instances
between their own series and ``_other``."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bridge.metrics_fold import PerInstance
from bridge.settings import MetricsSettings, Settings
from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import eventually, running_bridge, scrape, settings_for

TOKENS = {"vip": "tok-vip-1a1a", "a": "tok-a-2b2b", "b": "tok-b-3c3c", "c": "tok-c-4d4d"}
RECEIVED = "ryze_bridge_events_received_total"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of ``name`` in an exposition, by their sorted labels."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def per_instance(settings: Settings, mode: PerInstance) -> Settings:
    return settings.model_copy(update={"metrics": MetricsSettings(per_instance=mode)})


def by_instance(text: str, name: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for labels, value in samples(text, name).items():
        key = dict(labels)["ryze_instance"]
        totals[key] = totals.get(key, 0.0) + value
    return totals


async def test_quiet_instances_fold_into_other_and_a_reload_moves_them(tmp_path: Path) -> None:
    """Four instances, one important: ``/metrics`` has series for ``vip`` and ``_other``
    only, the received counts summed over ``ryze_instance`` equal what the simulator sent,
    ``instances{state="connected"}`` is 4, CPU/memory/fds of the bridge and its shipper are
    there, no token is. Reloaded with ``per_instance: all`` every instance has its own
    series; with ``none`` they are gone and what arrives next counts under ``_other``."""
    async with Simulator(SimConfig(instances=TOKENS, rate=40)) as sim:
        instances: dict[str, dict[str, object]] = {n: {"token": t} for n, t in TOKENS.items()}
        instances["vip"]["important"] = True
        settings = settings_for(
            sim.base_url, tmp_path, instances=instances,
            sink={"kind": "file", "file": {"path": str(tmp_path / "events.jsonl")}},
        )  # fmt: skip
        async with running_bridge(settings) as bridge:
            port = bridge.admin.port
            await eventually(lambda: all(sim.stats(n)["frames_sent"] >= 20 for n in TOKENS))
            for name in TOKENS:
                sim.pause(name)
            sent: int = sum(sim.stats(n)["frames_sent"] for n in TOKENS)

            async def all_counted() -> bool:
                return sum(by_instance(await scrape(port), RECEIVED).values()) == sent

            await eventually(all_counted, within=15)
            text = await scrape(port)
            assert set(by_instance(text, RECEIVED)) == {"vip", "_other"}
            assert set(by_instance(text, "ryze_bridge_ws_connected")) == {"vip", "_other"}
            assert by_instance(text, "ryze_bridge_ws_connected") == {"vip": 1, "_other": 3}
            states = samples(text, "ryze_bridge_instances")
            assert states[(("state", "connected"),)] == 4
            assert sum(states.values()) == 4
            processes = samples(text, "ryze_bridge_process_resident_memory_bytes")
            assert set(processes) == {(("process", "bridge"),), (("process", "shipper"),)}
            assert not any(token in text for token in TOKENS.values())

            await bridge.apply(per_instance(settings, "all"))
            text = await scrape(port)
            assert set(by_instance(text, "ryze_bridge_ensure_total")) == {*TOKENS, "_other"}

            await bridge.apply(per_instance(settings, "none"))
            before = by_instance(await scrape(port), RECEIVED)
            assert set(before) == {"_other"}
            start = sim.stats("b")["frames_sent"]
            sim.resume("b")
            await eventually(lambda: sim.stats("b")["frames_sent"] >= start + 20)
            sim.pause("b")
            more: int = sim.stats("b")["frames_sent"] - start

            async def counted_under_other() -> bool:
                now = by_instance(await scrape(port), RECEIVED)
                return set(now) == {"_other"} and now["_other"] - before["_other"] == more

            await eventually(counted_under_other, within=15)


async def test_a_reload_that_only_flips_important_keeps_every_socket(tmp_path: Path) -> None:
    """A reload that makes ``a`` unimportant and ``b`` important moves their series (``b``
    gets its own, ``a`` folds into ``_other``) without reconnecting: the simulator saw one
    upgrade per instance, before and after."""
    tokens = {"a": TOKENS["a"], "b": TOKENS["b"]}
    async with Simulator(SimConfig(instances=tokens, rate=20)) as sim:
        instances: dict[str, dict[str, object]] = {n: {"token": t} for n, t in tokens.items()}
        instances["a"]["important"] = True
        settings = settings_for(
            sim.base_url, tmp_path, instances=instances,
            sink={"kind": "file", "file": {"path": str(tmp_path / "events.jsonl")}},
        )  # fmt: skip
        async with running_bridge(settings) as bridge:
            port = bridge.admin.port
            await eventually(lambda: all(sim.stats(n)["open_sockets"] == 1 for n in tokens))
            upgrades = {n: sim.stats(n)["upgrades"] for n in tokens}
            connected = "ryze_bridge_ws_connected"
            assert by_instance(await scrape(port), connected) == {"a": 1, "_other": 1}
            flipped = {
                n: s.model_copy(update={"important": n == "b"})
                for n, s in settings.instances.items()
            }
            assert await bridge.apply(settings.model_copy(update={"instances": flipped})) == (
                "applied"
            )

            async def moved() -> bool:
                return by_instance(await scrape(port), connected) == {"b": 1, "_other": 1}

            await eventually(moved, within=15)
            assert {n: sim.stats(n)["upgrades"] for n in tokens} == upgrades
            assert all(sim.stats(n)["open_sockets"] == 1 for n in tokens)
            assert bridge.parts.fleet.runners["b"].settings.important
