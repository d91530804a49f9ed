"""The benchmark's report: ratios and targets (pure), the table, the plots."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def rate_of(rows: list[dict[str, Any]], workload: str, run: str) -> float | None:
    for row in rows:
        if row["workload"] == workload and row["run"] == run:
            value = row["rate"]
            return None if value is None else float(value)
    return None


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each bridge/peer row as a ratio to the lower of the raw reader and the raw writer of
    its sink, measured in the same run on the same frames (pure)."""
    out = []
    writers = {"kafka": "raw aiokafka produce", "redis": "raw redis XADD"}
    for row in rows:
        run, workload = row["run"], row["workload"]
        if run.startswith("raw") or row["rate"] is None:
            continue
        sink = "kafka" if ("kafka" in run or run.startswith("peer")) else run.split()[-1]
        read = rate_of(rows, workload, "raw websockets read")
        write = rate_of(rows, workload, writers[sink]) if sink in writers else None
        ceiling = min(r for r in (read, write) if r is not None) if read else None
        out.append(
            {**row, "ceiling": ceiling, "ratio": None if not ceiling else row["rate"] / ceiling}
        )
    return out


def total_ms(entry: dict[str, Any], q: str) -> float | None:
    """A run's source → consumer percentile ``q`` (ms), if it measured one."""
    value = entry.get("source_clock", {}).get("hops_ms", {}).get("total", {}).get(q)
    return None if value is None else float(value)


def source_clock_goals(
    latency: list[dict[str, Any]], peers: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Issue 24's goals over the 5,000/s runs (pure): p99 source → consumer ≤ 25 ms and p99.9
    ≤ 50 ms in every run, and no worse than the peer's tail in the same run."""
    runs = [e for e in latency if e["rate"] == 5000 and total_ms(e, "p99") is not None]
    if not runs:
        return []
    p99 = [total_ms(e, "p99") or 0.0 for e in runs]
    p999 = [total_ms(e, "p999") or 0.0 for e in runs]
    found = [
        {"goal": "p99 source→consumer ≤ 25 ms at 5,000/s, every run", "value": p99,
         "met": max(p99) <= 25},
        {"goal": "p99.9 source→consumer ≤ 50 ms at 5,000/s, every run", "value": p999,
         "met": max(p999) <= 50},
    ]  # fmt: skip
    theirs = [total_ms(e, "p99") for e in peers if total_ms(e, "p99") is not None]
    if theirs:
        found.append(
            {"goal": "p99 source→consumer ≤ the Benthos peer's (median of runs)",
             "value": [statistics.median(p99), statistics.median(t or 0.0 for t in theirs)],
             "met": statistics.median(p99) <= statistics.median(t or 0.0 for t in theirs)}
        )  # fmt: skip
    return found


def targets(
    rows: list[dict[str, Any]],
    latency: list[dict[str, Any]],
    isolation: dict[str, Any] | None,
    scale: list[dict[str, Any]],
    peers: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The issue's goals, each with its measured value and whether it holds (pure)."""
    found: list[dict[str, Any]] = []
    by_run = {(r["workload"], r["run"]): r for r in ratios(rows)}
    main = by_run.get(("600B x1", "bridge → kafka"))
    if main and main["ratio"] is not None:
        found.append(
            {
                "goal": "WS→Kafka ≥ 0.6 × min(raw WS, raw producer)",
                "value": round(main["ratio"], 2),
                "met": main["ratio"] >= 0.6,
            }
        )
    peer = rate_of(rows, "600B x1", "peer: benthos engine")
    if main and peer:
        ratio = main["rate"] / peer
        found.append(
            {
                "goal": "WS→Kafka ≥ 1.0 × Benthos engine peer",
                "value": round(ratio, 2),
                "met": ratio >= 1.0,
            }
        )
    for entry in latency:
        if entry["rate"] == 5000 and "p99" in entry["ack_ms"]:
            p99 = entry["ack_ms"]["p99"]
            found.append(
                {"goal": "p99 receipt→ack ≤ 25 ms at 5,000/s", "value": p99, "met": p99 <= 25}
            )
    found.extend(source_clock_goals(latency, peers or []))
    for entry in scale:
        found.extend(entry.get("targets", []))
    if isolation:
        delay = isolation["p99_delay_ms"]
        found.append(
            {
                "goal": "4 MB neighbour delays small frames ≤ 100 ms p99",
                "value": round(delay, 1),
                "met": delay <= 100,
            }
        )
    return found


def spread(samples: list[float | None] | None) -> str:
    """The rates of a row's rounds as ``low–high`` (pure); empty for a single round."""
    rates = [r for r in samples or [] if r is not None]
    if len(rates) < 2:
        return ""
    return f"{min(rates):,.0f}–{max(rates):,.0f}"


def cpu_per_record(row: dict[str, Any]) -> float | None:
    """Microseconds of CPU the measured client spent per record delivered (pure): the cost
    that does not swing with the machine's speed the way rates do."""
    cpu, rate = row.get("cpu"), row.get("rate")
    if cpu is None or not rate:
        return None
    return float(cpu) * 1e6 / float(rate)


def table(rows: list[dict[str, Any]]) -> str:
    """One line per row: rate, ratio to the ceiling, the client's cores and µs of CPU per
    record, the whole machine's busy cores in the same window, RSS and the rounds' spread."""
    lines = [
        f"{'workload':<10} {'run':<28} {'records/s':>11} {'× ceiling':>10} {'CPU':>5} "
        f"{'µs/rec':>7} {'box':>5} {'RSS MB':>7}  rounds"
    ]
    ratio_of = {(r["workload"], r["run"]): r["ratio"] for r in ratios(rows)}
    for row in rows:
        rate = "—" if row["rate"] is None else f"{row['rate']:,.0f}"
        ratio = ratio_of.get((row["workload"], row["run"]))
        shown = "" if ratio is None else f"{ratio:.2f}"
        cpu = "" if row.get("cpu") is None else f"{row['cpu']:.2f}"
        cost = cpu_per_record(row)
        per = "" if cost is None else f"{cost:.1f}"
        box = "" if row.get("box_cpu") is None else f"{row['box_cpu']:.2f}"
        rss = "" if "rss_mb" not in row else f"{row['rss_mb']:.0f}"
        lines.append(
            f"{row['workload']:<10} {row['run']:<28} {rate:>11} {shown:>10} {cpu:>5} {per:>7} "
            f"{box:>5} {rss:>7}  {spread(row.get('samples'))}".rstrip()
        )
    return "\n".join(lines)


def vs_floor(cost: float | None, floors: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """µs of CPU per event as a multiple of each read floor's, to 0.1 (pure); None where
    either side measured nothing."""
    found: dict[str, float | None] = {}
    for mode, entry in floors.items():
        base = entry.get("cpu_us_per_event")
        found[mode] = round(cost / base, 1) if cost and base else None
    return found


def scale_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """One scale run as rows alike (pure): the bridge (with its shipper), the Benthos peer
    when it ran, and each read floor, with their µs of CPU per event as multiples of each
    floor's. The peer's RSS is at its busiest, the others' idle."""
    floors: dict[str, dict[str, Any]] = entry.get("floor") or {}
    peer = entry.get("peer")
    found: list[dict[str, Any]] = [
        {"run": "bridge + shipper", "connect_s": entry.get("seconds_to_all_connected"),
         "rss_mb": entry.get("rss_idle_mb"), "idle_cpu_percent": entry.get("idle_cpu_percent"),
         "events_per_second": entry.get("events_per_second"),
         "cpu_us_per_event": entry.get("cpu_us_per_event")},
    ]  # fmt: skip
    if peer:
        idle = peer.get("cpu_idle")
        found.append(
            {"run": "peer: benthos engine", "connect_s": peer.get("seconds_to_all_connected"),
             "rss_mb": peer.get("rss_mb"),
             "idle_cpu_percent": None if idle is None else round(100 * idle, 2),
             "events_per_second": peer.get("events_per_s"),
             "cpu_us_per_event": peer.get("cpu_us_per_event")}
        )  # fmt: skip
    for mode, floor in floors.items():
        found.append(
            {"run": f"floor: websockets {mode}", "connect_s": floor.get("seconds_to_all_connected"),
             "rss_mb": floor.get("rss_idle_mb"), "idle_cpu_percent": floor.get("idle_cpu_percent"),
             "events_per_second": floor.get("events_per_second"),
             "cpu_us_per_event": floor.get("cpu_us_per_event"),
             "error": floor.get("error") or _failed(floor)}
        )  # fmt: skip
    for row in found:
        row["vs_floor"] = vs_floor(row["cpu_us_per_event"], floors)
    return found


def scale_table(entries: list[dict[str, Any]]) -> str:
    """Per scale run, the bridge, the peer and the read floors side by side: seconds to all
    connected, RSS, idle CPU (% of a core), events/s and µs of CPU per event at 1 event/s per
    instance, and that cost as a multiple of each floor's (``× iter``, ``× hook``)."""
    lines: list[str] = []
    for entry in entries:
        rows = scale_rows(entry)
        modes = list(entry.get("floor") or {})
        title = f"scale, {entry['instances']:,} instances"
        lines.append(
            f"{title:<26} {'connect s':>9} {'RSS MB':>7} {'idle CPU %':>10} {'events/s':>9} "
            f"{'µs/event':>8}" + "".join(f" {'× ' + m:>6}" for m in modes)
        )
        for row in rows:
            cells = [
                _cell(row["connect_s"], 9, ".1f"),
                _cell(row["rss_mb"], 7, ".0f"),
                _cell(row["idle_cpu_percent"], 10, ".2f"),
                _cell(row["events_per_second"], 9, ",.0f"),
                _cell(row["cpu_us_per_event"], 8, ".1f"),
                *(_cell(row["vs_floor"].get(m), 6, ".1f") for m in modes),
            ]
            error = f"  {row['error']}" if row.get("error") else ""
            lines.append(f"{row['run']:<26} {' '.join(cells)}{error}".rstrip())
        lines.append("")
    return "\n".join(lines).rstrip()


def _failed(floor: dict[str, Any]) -> str | None:
    """What a floor's sockets that never opened or closed before the end make of its row."""
    failed = floor.get("failed") or 0
    closed = floor.get("instances", 0) - (floor.get("connected_at_end") or 0) - failed
    if not failed and closed <= 0:
        return None
    return f"{failed} sockets never opened, {max(0, closed)} closed: not the same load"


def _cell(value: float | None, width: int, spec: str) -> str:
    return f"{'—' if value is None else format(value, spec):>{width}}"


def plots(result: dict[str, Any], stem: Path) -> list[Path]:
    """PNG plots next to the JSON: throughput ratios, latency percentiles, scale timeline."""
    import matplotlib  # noqa: PLC0415 - only the bench needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    written = []
    rows = ratios(result["throughput"])
    if rows:
        fig = _bars(
            plt,
            {f"{r['workload']} · {r['run']}": r["ratio"] or 0 for r in rows},
            ["#3b7dd8" if "bridge" in r["run"] else "#999" for r in rows],
            (0.6, "goal 0.6", "rate ÷ min(raw reader, raw writer), same run"),
            width=10,
        )
        written.append(_save(fig, stem, "throughput"))
    if result.get("latency"):
        fig, ax = plt.subplots(figsize=(7, 4))
        for entry in result["latency"]:
            points = [entry["ack_ms"].get(k, 0) for k in ("p50", "p99", "p999")]
            ax.plot(["p50", "p99", "p99.9"], points, marker="o", label=f"{entry['rate']:,.0f}/s")
        ax.axhline(25, color="#c33", linestyle="--", label="goal p99 25 ms")
        ax.set_ylabel("receipt → broker ack (ms)")
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, stem, "latency"))
    runs = [entry for entry in result.get("scale") or [] if entry.get("timeline")]
    if runs:
        fig, ax = plt.subplots(figsize=(7, 4))
        for entry in runs:
            xs, ys = zip(*entry["timeline"], strict=True)
            label = f"{entry['instances']:,} instances (idle RSS {entry.get('rss_idle_mb')} MB)"
            ax.plot(xs, ys, label=label)
        ax.axvline(60, color="#c33", linestyle="--", label="goal 60 s")
        ax.set_xlabel("seconds since the bridge started")
        ax.set_ylabel("instances connected")
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, stem, "scale"))
    costs = [
        (f"{entry['instances']:,} · {row['run']}", row)
        for entry in result.get("scale") or []
        for row in scale_rows(entry)
        if row["cpu_us_per_event"] is not None
    ]
    if costs:
        colors = {"bridge": "#3b7dd8", "peer:": "#999", "floor:": "#5a5"}
        fig = _bars(
            plt,
            {label: row["cpu_us_per_event"] for label, row in costs},
            [colors[row["run"].split()[0]] for _, row in costs],
            (60, "goal 60 µs", "µs of CPU per event, every instance at 1 event/s (same run)"),
            width=8,
        )
        written.append(_save(fig, stem, "scale-cpu"))
    return written


def _bars(
    plt: Any, bars: dict[str, float], colors: list[str], goal: tuple[float, str, str], width: int
) -> Any:
    """A horizontal bar chart, top to bottom in ``bars``' order, with a dashed goal line
    (``goal``: its value, its legend, the x axis' label)."""
    value, legend, xlabel = goal
    fig, ax = plt.subplots(figsize=(width, 0.35 * len(bars) + 1.5))
    ax.barh(list(bars), list(bars.values()), color=colors)
    ax.axvline(value, color="#c33", linestyle="--", label=legend)
    ax.set_xlabel(xlabel)
    ax.invert_yaxis()
    ax.legend()
    fig.tight_layout()
    return fig


def _save(fig: Any, stem: Path, name: str) -> Path:
    path = stem.with_name(f"{stem.name}-{name}.png")
    fig.savefig(path, dpi=110)
    return path
