"""The benchmark's arithmetic: ratios to the same run's raw ceilings, medians of rounds, the
goals, and the profile ranking. (The measurements themselves run on demand: make bench.)"""

from __future__ import annotations

import gc
from typing import Any

import pytest

from bench import compare
from bench.common import HEAD, Build, CpuSample, cores_used
from bench.latency import no_collection, record_latencies
from bench.profile import rank
from bench.report import cpu_per_record, ratios, table, targets
from bench.throughput import median_rows


def row(run: str, rate: float | None, workload: str = "600B x1") -> dict[str, object]:
    return {"workload": workload, "run": run, "rate": rate}


RAW = [
    row("raw websockets read", 100_000),
    row("raw aiokafka produce", 50_000),
    row("raw redis XADD", 40_000),
]


def test_a_ratio_is_to_the_lower_of_the_raw_reader_and_the_raw_writer_of_its_sink() -> None:
    """Kafka runs and peers divide by min(raw read, raw produce), Redis by min(raw read, raw
    XADD), the file sink by the raw read alone."""
    rows = [*RAW, row("bridge → kafka", 30_000), row("bridge → redis", 20_000),
            row("bridge → file", 25_000), row("peer: benthos engine", 60_000)]  # fmt: skip
    found = {r["run"]: r["ratio"] for r in ratios(rows)}
    assert found == {
        "bridge → kafka": pytest.approx(0.6),
        "bridge → redis": pytest.approx(0.5),
        "bridge → file": pytest.approx(0.25),
        "peer: benthos engine": pytest.approx(1.2),
    }


def test_goals_are_judged_on_the_measured_values() -> None:
    """Each goal carries its value and whether it holds; a missed one says so."""
    rows = [*RAW, row("bridge → kafka", 29_000), row("peer: benthos engine", 20_000)]
    latency = [{"rate": 5000, "ack_ms": {"p50": 9.0, "p99": 26.0}}]
    scale = [{"targets": [{"goal": "idle RSS", "value": 120.0, "met": True}]}]
    isolation = {"p99_delay_ms": 30.0}
    found = [(g["value"], g["met"]) for g in targets(rows, latency, isolation, scale)]
    assert found == [
        (0.58, False),  # WS→Kafka ratio to the raw ceiling
        (1.45, True),  # ... to the Benthos peer
        (26.0, False),  # p99 at 5,000/s
        (120.0, True),  # a scale run's own judged rows, as they are
        (30.0, True),  # 4 MB neighbour delay
    ]


def test_median_row_keeps_the_middle_round_with_its_cpu_and_every_rate() -> None:
    """Three rounds give the middle one (with the CPU measured in it) and all three rates; a
    round that measured nothing is listed but not chosen."""
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {
        ("600B x1", "bridge → kafka"): [
            {"rate": 30.0, "cpu": 1.0},
            {"rate": 10.0, "cpu": 2.0},
            {"rate": 20.0, "cpu": 3.0},
        ],
        ("600B x1", "peer: benthos engine"): [{"rate": None}, {"rate": 5.0}],
        ("600B x1", "peer: missing"): [{"rate": None}],
    }
    rows = {r["run"]: r for r in median_rows(samples)}
    assert rows["bridge → kafka"]["rate"] == 20.0
    assert rows["bridge → kafka"]["cpu"] == 3.0
    assert rows["bridge → kafka"]["samples"] == [30.0, 10.0, 20.0]
    assert rows["peer: benthos engine"]["rate"] == 5.0
    assert rows["peer: missing"]["rate"] is None


def test_profile_ranks_inclusive_time_once_per_stack_and_own_time_at_the_leaf() -> None:
    """py-spy's collapsed stacks: a function counts once per stack even when it recurses, and
    own time goes to the innermost frame."""
    collapsed = "\n".join(
        [
            "main (a/b/cli.py:1);loop (a/b/run.py:5);loop (a/b/run.py:5);parse (x/ev.py:9) 3",
            "main (a/b/cli.py:1);write (x/disk.py:2) 1",
            "garbage line",
        ]
    )
    inclusive, own = rank(collapsed)
    assert dict(inclusive) == {
        "main (b/cli.py)": 1.0,
        "loop (b/run.py)": 0.75,
        "parse (x/ev.py)": 0.75,
        "write (x/disk.py)": 0.25,
    }
    assert dict(own) == {"parse (x/ev.py)": 0.75, "write (x/disk.py)": 0.25}


def test_cores_are_ticks_over_the_machine_s_own_elapsed_ticks() -> None:
    """On a 2-CPU machine, 400 total ticks are 200 ticks of wall time: a group that ran 150
    ticks used 0.75 cores, and 300 busy ticks are 1.5 busy cores for the whole box."""
    before = CpuSample({"client": 1_000, "source": 50}, busy=10_000, total=40_000)
    after = CpuSample({"client": 1_150, "source": 90}, busy=10_300, total=40_400)
    assert cores_used(before, after, cpus=2) == {"client": 0.75, "source": 0.2, "box": 1.5}
    assert cores_used(after, after, cpus=2) == {}  # no time passed: nothing to say


def test_cpu_per_record_is_the_client_s_cores_over_its_rate() -> None:
    """1.5 cores at 50,000 records/s is 30 µs a record; without a CPU or a rate, no figure."""
    assert cpu_per_record({"cpu": 1.5, "rate": 50_000}) == pytest.approx(30.0)
    assert cpu_per_record({"rate": 50_000}) is None
    assert cpu_per_record({"cpu": 1.0, "rate": None}) is None
    line = table([{"workload": "600B x1", "run": "bridge → file", "rate": 50_000.0,
                   "cpu": 1.5, "box_cpu": 1.98, "rss_mb": 140.0}])  # fmt: skip
    assert line.splitlines()[1].split()[-4:] == ["1.50", "30.0", "1.98", "140"]


def test_latencies_count_only_records_received_once_the_window_opened() -> None:
    """A record received at 1,000 ms, appended at 1,012 ms and seen at 1,015 ms took 12 ms to
    the ack and 15 ms to the consumer; one received before the window opened waited in the
    consumer's prefetch buffer and is not counted, nor one without a receipt time."""
    ms = 1_000_000
    assert record_latencies(1_000 * ms, 1_012, 1_015 * ms, since_ns=999 * ms) == (12.0, 15.0)
    assert record_latencies(998 * ms, 1_012, 2_015 * ms, since_ns=999 * ms) is None
    assert record_latencies(None, 1_012, 1_015 * ms, since_ns=0) is None


def test_compare_alternates_the_order_of_the_builds() -> None:
    """Two builds are measured base first in even rounds and head first in odd ones, so a
    machine slowed for a while costs both builds alike."""
    base = Build("base", "python3")
    assert compare.order((base, HEAD), 0) == (base, HEAD)
    assert compare.order((base, HEAD), 1) == (HEAD, base)
    assert compare.order((base, HEAD), 2) == (base, HEAD)


def test_compare_reports_medians_and_ratios() -> None:
    """The comparison keeps each field's median over the rounds and gives head/base per field;
    a field measured as zero in the base gives no ratio rather than a division error."""
    base = compare.medians(
        [{"rate": 100.0, "p99": 10.0}, {"rate": 120.0, "p99": 30.0}, {"rate": 90.0}]
    )
    head = compare.medians([{"rate": 110.0, "p99": 5.0, "zero": 1.0}])
    assert base == {"rate": 100.0, "p99": 20.0}
    assert compare.ratios(head, base) == {"rate": 1.1, "p99": 0.25}
    assert compare.ratios({"x": 1.0}, {"x": 0.0}) == {}
    lines = compare.table(("base", "head"), base, head)
    assert lines[0].split() == ["measure", "base", "head", "ratio"]
    assert any(line.split()[0] == "zero" and line.split()[-1] == "—" for line in lines[1:])


def test_the_measuring_window_runs_without_collector_passes_and_restores_it_after() -> None:
    """The measuring consumer's window turns the collector off (its passes over the records it
    keeps were the measured tail) and leaves it as it found it, enabled or not, even on error."""
    assert gc.isenabled()
    seen: list[bool] = []

    def window() -> None:
        with no_collection():
            seen.append(gc.isenabled())
            raise RuntimeError("window ended")

    with pytest.raises(RuntimeError):
        window()
    assert seen == [False]
    assert gc.isenabled()
    gc.disable()
    try:
        with no_collection():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
