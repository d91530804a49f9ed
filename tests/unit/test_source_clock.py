"""The source-clock latency arithmetic (bench.hops): a record's hops from its four times,
the send stamp read from a value whatever its layout, percentiles, and each hop's share of
the total around a quantile (where the tail comes from)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from bench.common import CLK_TCK, every_process, name_and_ticks
from bench.hops import HOPS, PEER_HOPS, Times, band, iso_ns, sent_ns, shares, summary
from bench.latency import busiest, with_other
from bench.report import source_clock_goals
from bench.source_clock import PEER_TOPIC, lag_cpu, line, peer_config, process_name
from bench.throughput import benthos_binary

MS = 1_000_000


def test_hops_of_a_bridge_record_add_up_to_the_total() -> None:
    """source + bridge + consumer = total, in ms, from the record's four times."""
    hops = Times(sent=0, received=2 * MS, appended=10 * MS, seen=13 * MS).hops()
    assert hops == {"source": 2.0, "bridge": 8.0, "consumer": 3.0, "total": 13.0}


def test_a_peer_without_a_receipt_stamp_has_one_hop_to_the_broker() -> None:
    """received None folds the first two hops into to_broker."""
    hops = Times(sent=0, received=None, appended=7 * MS, seen=9 * MS).hops()
    assert hops == {"to_broker": 7.0, "consumer": 2.0, "total": 9.0}


def test_the_send_stamp_is_read_from_either_layout_and_odd_values_give_none() -> None:
    """data.message.timestamp (catalog) or data.timestamp (live layout); anything else is
    None, never an exception."""
    stamp = "2026-12-01T21:15:57.123456Z"
    expected = iso_ns(stamp)
    assert expected is not None
    assert expected % 1000 == 0
    catalog = {"event": "message.exchange", "data": {"message": {"timestamp": stamp}}}
    live = {"event": "message.status", "data": {"timestamp": stamp}}
    assert sent_ns(orjson.dumps(catalog)) == expected
    assert sent_ns(orjson.dumps(live)) == expected
    for odd in (b"not json", b"[1]", b'{"data": 3}', b'{"data": {"timestamp": 5}}'):
        assert sent_ns(odd) is None
    assert iso_ns("2026-12-01T21:15:57") is None  # no zone: not a usable clock


def test_bands_sit_around_their_quantile() -> None:
    """p50 takes 25-75 %, p99 98.5-99.5 %."""
    assert band(0.5) == (0.25, 0.75)
    low, high = band(0.99)
    assert round(low, 4) == 0.985
    assert round(high, 4) == 0.995


def test_shares_point_at_the_hop_that_makes_the_tail() -> None:
    """In 1,000 records where 2 % wait 50 ms in the bridge, the p99 band is all bridge and
    the median band is the steady 1 ms source + 1 ms consumer."""
    records = []
    for n in range(1000):
        bridge = 50.0 if n % 50 == 0 else 0.0
        records.append({"source": 1.0, "bridge": bridge, "consumer": 1.0, "total": 2.0 + bridge})
    found = shares(records, HOPS)
    assert found["p50"] == {"source": 50.0, "bridge": 0.0, "consumer": 50.0, "total_ms": 2.0}
    assert found["p99"]["bridge"] > 90


def test_summary_has_every_hop_s_percentiles() -> None:
    """Each hop named gets its own count and percentiles; no records, no shares."""
    records = [{"to_broker": float(n), "consumer": 1.0, "total": n + 1.0} for n in range(100)]
    found = summary(records, PEER_HOPS)
    assert set(found["hops_ms"]) == set(PEER_HOPS)
    assert found["hops_ms"]["to_broker"]["p50"] == 50.0
    assert summary([], PEER_HOPS)["share_pct"] == {}


def clock_entry(rate: float, p99: float, p999: float) -> dict[str, object]:
    total = {"count": 100, "p50": 10.0, "p99": p99, "p999": p999}
    return {"rate": rate, "ack_ms": {}, "source_clock": {"hops_ms": {"total": total}}}


def test_source_clock_goals_hold_only_when_every_run_does() -> None:
    """p99 ≤ 25 and p99.9 ≤ 50 ms must hold in each 5,000/s run (one bad run misses), the
    1,000/s run is not judged, and the peer comparison is on the runs' medians."""
    runs = [clock_entry(5000, 20, 40), clock_entry(5000, 30, 45), clock_entry(1000, 99, 99)]
    peers = [clock_entry(5000, 22, 60), clock_entry(5000, 28, 60)]
    goals = {g["goal"]: g for g in source_clock_goals(runs, peers)}
    p99, p999, peer = goals.values()
    assert p99["value"] == [20.0, 30.0]
    assert not p99["met"]
    assert p999["met"]
    assert peer["value"] == [25.0, 25.0]
    assert peer["met"]
    assert source_clock_goals([clock_entry(1000, 1, 1)], []) == []


def test_the_measuring_consumer_runs_at_its_priority_only_meanwhile() -> None:
    """Inside the window the consumer's thread runs at the priority asked for (a lower one is
    always allowed); after it, at the one it had. Run in a thread of its own: on Linux a
    thread's priority is its own."""
    import os  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from bench.latency import priority  # noqa: PLC0415

    seen: list[int] = []

    def window() -> None:
        before = os.getpriority(os.PRIO_PROCESS, 0)
        with priority(min(19, before + 3)) as inside:
            seen.extend([inside, os.getpriority(os.PRIO_PROCESS, 0)])
        seen.extend([before, os.getpriority(os.PRIO_PROCESS, 0)])

    thread = threading.Thread(target=window)
    thread.start()
    thread.join(10)
    assert seen[0] == seen[1]
    assert seen[0] > seen[2]
    if os.geteuid() == 0:  # going back up takes the privilege
        assert seen[3] == seen[2]


def test_the_probe_splits_the_loop_s_late_time_into_waiting_for_a_cpu_and_running() -> None:
    """Over each lag's interval (its 5 ms timer and the lag), the shares its thread waited
    for a CPU and ran, for all lags and for the long ones; lags without the kernel's figures
    are counted but not shared out."""
    lags = [
        {"ms": 5.0, "waited_ms": 8.0, "ran_ms": 1.0},  # 10 ms: descheduled
        {"ms": 15.0, "waited_ms": 0.0, "ran_ms": 19.0},  # 20 ms: the loop's own work
        {"ms": 3.0, "ran_ms": 8.0},  # 8 ms, no schedstat: no wait told
    ]
    found = lag_cpu(lags)
    assert found["lags"] == {
        "count": 3,
        "waited_pct": round(100 * 8 / 30, 1),
        "ran_pct": round(100 * 28 / 38, 1),
        "max_waited_ms": 8.0,
    }
    assert found["long"] == {"count": 1, "waited_pct": 0.0, "ran_pct": 95.0, "max_waited_ms": 0.0}
    assert lag_cpu([{"ms": 2.5}]) == {"lags": {"count": 1}, "long": {"count": 0}}


def test_probed_processes_are_named_by_their_command_line() -> None:
    """The shipper is told by ``-m bridge.shipper``, whatever order its file sorts in; a
    second process of a name gets a number."""
    assert process_name({"argv": ["-m", "bridge.shipper", "7"]}, {}) == "shipper"
    assert process_name({"argv": ["-m", "bridge", "run"]}, {}) == "main"
    assert process_name({"argv": ["-m", "bridge.shipper", "9"]}, {"shipper": {}}) == "shipper-2"
    assert process_name({}, {"main": {}, "main-2": {}}) == "main-3"


def test_the_probe_reads_its_thread_s_cpu_and_run_queue_time() -> None:
    """The probe's reader: a thread that ran 20 ms of CPU is seen to have run that long (ns
    read as ms), and its wait for a CPU is told where the kernel keeps it, never below 0."""
    path = Path(__file__).parents[2] / "bench" / "probe" / "sitecustomize.py"
    spec = importlib.util.spec_from_file_location("bench_probe_site", path)
    assert spec is not None
    assert spec.loader is not None
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)  # no PYTHON_RYZE_BENCH_PROBE: nothing installed
    sched = probe.SchedStat()
    try:
        before = sched.read()
        deadline = time.monotonic() + 5
        while time.thread_time_ns() - before[0] < 20_000_000 and time.monotonic() < deadline:
            pass
        found = sched.since(before)
    finally:
        sched.close()
    assert found["ran_ms"] >= 20.0
    if before[1] is not None:  # Linux with schedstats
        assert found["waited_ms"] >= 0.0
    assert sched.read()[1] is None  # closed: no wait told


def test_the_peer_writes_the_bridge_s_default_layout() -> None:
    """The peer's records go to a topic per event under the run's prefix (interpolated from
    each message's ``event``; one not JSON, without an event or with one that is no topic
    name, to the run's DLQ topic, as the bridge's: see the next test), keyed by the
    instance, with the bridge's batching."""
    output = peer_config("ws://x/ws/inst-000", "127.0.0.1:9092", "bench.peer.7")["output"]
    franz = output["franz_peer"]
    assert franz["topic"] == "bench.peer.7" + PEER_TOPIC
    assert franz["key"] == "inst-000"
    assert franz["batching"] == {"count": 1000, "period": "5ms"}


def test_each_printed_run_says_how_busy_the_machine_was() -> None:
    """A run's line ends with the cores each part used in its window and the machine's
    (``box``): a tail on a shared 2-core machine is read against them; a run without them
    (an older result) says so with a dash. Records dead-lettered in the run are said, since
    the sample (the layout's topics) leaves them out."""
    hops = {"total": {"p50": 7.0, "p99": 20.0, "p999": 30.0}}
    entry: dict[str, Any] = {
        "delivered_per_s": 4999.6,
        "source_clock": {"hops_ms": hops, "share_pct": {"p99": {"total_ms": 20.0}}},
        "cores": {"client": 0.93, "source": 0.61, "box": 1.87},
    }
    shown = line("run 1 head", entry)
    assert shown.startswith("run 1 head: 5000/s  ms p50/p99/p999: total 7.0/20.0/30.0")
    assert shown.endswith("cores: client 0.93 source 0.61 box 1.87")
    entry["dlq"] = 3
    assert line("run 1 head", entry).endswith("box 1.87  DLQ: 3 records in the run, not sampled")
    del entry["cores"], entry["dlq"]
    assert line("run 1 head", entry).endswith("cores: -")


def test_what_the_machine_spent_beyond_the_parts_measured_is_shown() -> None:
    """``other`` is the box's cores less the parts' (an extra process on a shared machine
    shows there), never negative (tick rounding); without a box figure nothing is added."""
    cores = {"client": 0.77, "source": 0.29, "broker": 0.29, "bench": 0.25, "box": 1.77}
    assert with_other(cores)["other"] == 0.17
    assert with_other({**cores, "box": 1.5})["other"] == 0.0
    assert with_other({"client": 0.5}) == {"client": 0.5}


def test_the_peer_s_topic_of_odd_messages_is_its_dlq(tmp_path: Path) -> None:
    """The real engine (where the bench built it), with the peer's topic interpolation as a
    file name: a message with an event goes to that event's; one not JSON, without an
    event, or with one the bridge would dead-letter (a number, an empty string, a character
    outside its pattern, too long, in its own ``bridge.`` namespace), to ``dlq``."""
    binary = benthos_binary()
    if binary is None:
        pytest.skip("the Benthos-engine peer is not built here (scripts/bench.sh builds it)")
    output = {"path": str(tmp_path) + "/p" + PEER_TOPIC + ".txt", "codec": "lines"}
    config = {"input": {"stdin": {}}, "output": {"file": output}, "logger": {"level": "WARN"}}
    path = tmp_path / "peer.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    odd = [b'{"x":1}', b"not json", b'{"event":5}', b'{"event":""}', b'{"event":"a/b"}']
    odd += [b'{"event":"Foo"}', b'{"event":"a_b"}', b'{"event":"bridge.gap"}']
    odd.append(b'{"event":"%s"}' % (b"a" * 300))
    lines = b"\n".join([b'{"event":"messages.upsert"}', *odd]) + b"\n"
    subprocess.run([str(binary), "-c", str(path)], input=lines, timeout=30, check=True)
    written = {p.name: p.read_bytes().splitlines() for p in tmp_path.glob("p.*.txt")}
    assert written == {"p.messages.upsert.txt": [b'{"event":"messages.upsert"}'], "p.dlq.txt": odd}


def test_the_busiest_processes_outside_the_parts_are_named() -> None:
    """Who took the machine's ``other`` share: the processes outside the measured parts by
    cores between two samples, the busiest first, at most three, none under 0.01 of a core;
    one started in between counts from nothing."""
    tick = CLK_TCK
    before = {1: ("init", 0), 7: ("bridge", 0), 20: ("kdamond.0", 100), 30: ("java", 500)}
    after = {
        1: ("init", 0),
        7: ("bridge", 50 * tick),
        20: ("kdamond.0", 100 + 2 * tick),
        30: ("java", 500 + 5 * tick),
        40: ("cc1", 3 * tick),
        41: ("sh", 1),
    }
    found = busiest(before, after, {7}, 10.0)
    assert found == {"java[30]": 0.5, "cc1[40]": 0.3, "kdamond.0[20]": 0.2}
    assert busiest(before, after, {7, 30, 40}, 10.0) == {"kdamond.0[20]": 0.2}
    assert busiest(before, after, set(), 0.0) == {}


def test_every_process_is_read_with_its_name_and_ticks() -> None:
    """/proc as it is: this process is found by its id, with a name and a tick count that
    does not go back."""
    first = every_process()
    name, ticks = first[os.getpid()]
    assert name
    assert every_process()[os.getpid()][1] >= ticks


def test_a_disturbed_run_names_who_took_the_machine() -> None:
    """When the machine spent 0.05 of a core or more beyond the parts, the line names the
    busiest other processes and what no live process accounts for (processes ended in the
    window, interrupts) as ``unnamed``; below that it says nothing of them."""
    hops = {"total": {"p50": 7.0, "p99": 20.0, "p999": 30.0}}
    entry: dict[str, Any] = {
        "delivered_per_s": 5000,
        "source_clock": {"hops_ms": hops, "share_pct": {"p99": {}}},
        "cores": {"client": 0.7, "box": 1.7, "other": 0.28},
        "others": {"cc1[40]": 0.2, "kdamond.0[78]": 0.05},
    }
    assert line("run 3", entry).endswith(
        "other 0.28  other: cc1[40] 0.2, kdamond.0[78] 0.05, unnamed 0.03"
    )
    entry["others"] = {}
    assert line("run 3", entry).endswith("other 0.28  other: unnamed 0.28")
    entry["cores"]["other"] = 0.01
    assert "other:" not in line("run 3", entry)


@pytest.mark.parametrize(
    ("name", "ticks"), [("python", 7 + 3), ("a) (b", 7 + 3), ("x (y)) z", 7 + 3), ("", 7 + 3)]
)
def test_a_stat_line_s_name_and_ticks_whatever_the_name_holds(name: str, ticks: int) -> None:
    """The name is all between the first " (" and the last ")" (parentheses and spaces in
    it included); the ticks are utime + stime (proc(5) fields 14 and 15)."""
    stat = f"4242 ({name}) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 12345 0 0"
    assert name_and_ticks(stat) == (name, ticks)
    with pytest.raises((ValueError, IndexError)):
        name_and_ticks("4242 (cut")
