"""The Grafana dashboard stays readable at 5,000 instances: job/namespace/pod variables, the
five rows, state counts, heatmaps, process CPU and memory, and no panel query that draws one
series per RyzeAPI instance (checked by Prometheus' own evaluator, promtool, on a fleet of
synthetic series)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.services import unavailable

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "ryze-bridge.json"
ROWS = ["Overview", "Delivery", "Upstream fleet", "Important instances", "Process"]
SELECTOR = 'job=~"$job", namespace=~"$namespace", pod=~"$pod"'
FLEET = 64  # synthetic instances per metric: above the bound, so one series each would show
PODS = 8  # replicas they are spread over: a panel drawing pods x states lines shows too
STATES = ("connected", "silent", "connecting", "failed")
MAX_SERIES = 20  # what a panel may draw: top-N, or an aggregation over instances
LABELS = {"job": "ryze-bridge", "namespace": "ns", "pod": "ryze-bridge-0", "state": "connecting",
          "event": "message.status", "reason": "spool_full", "sink": "kafka", "error": "E",
          "outcome": "created", "process": "bridge", "phase": "takeover"}  # fmt: skip


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def queries() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def as_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced as "All" would."""
    for variable, value in (("$__rate_interval", "2m"), ("$__range", "10m")):
        expr = expr.replace(variable, value)
    return re.sub(r"\$(job|namespace|pod)\b", ".*", expr)


def fleet_series(exprs: list[str]) -> list[dict[str, str]]:
    """Every metric the queries name, FLEET instances wide (plus the ``_other`` fold) spread
    over PODS replicas and the four states, each series carrying every label a query groups
    by; histograms with a few buckets."""
    names = sorted({n for e in exprs for n in re.findall(r"\b(?:ryze_bridge|scrape)_\w+", e)})
    fixed = {k: v for k, v in LABELS.items() if k not in ("pod", "state")}
    base = ", ".join(f'{k}="{v}"' for k, v in fixed.items())
    series = []
    for name in names:
        buckets = ("0.01", "0.1", "1", "+Inf") if name.endswith("_bucket") else (None,)
        for n in [*range(FLEET), FLEET]:  # the last one: the ``_other`` fold
            instance = "_other" if n == FLEET else f"i-{n:04d}"
            spread = f'pod="ryze-bridge-{n % PODS}", state="{STATES[n // PODS % len(STATES)]}"'
            for le in buckets:
                extra = "" if le is None else f', le="{le}"'
                labels = f'{base}, {spread}, ryze_instance="{instance}"{extra}'
                series.append({"series": f"{name}{{{labels}}}", "values": "1+1x20"})
    return series


def promtool_bound_check(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """promtool evaluates ``count(expr) > bool MAX_SERIES`` for each query over the synthetic
    fleet and expects 0: the query returns data, and at most MAX_SERIES series."""
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed (Debian package prometheus)")
    assert promtool is not None
    tests = [
        {"expr": f"count({as_promql(e)}) > bool {MAX_SERIES}", "eval_time": "15m",
         "exp_samples": [{"labels": "{}", "value": 0}]}
        for e in exprs
    ]  # fmt: skip
    spec = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": fleet_series(exprs), "promql_expr_test": tests}
        ],
    }
    path = tmp_path / "dashboard.test.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return subprocess.run([promtool, "test", "rules", str(path)], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def test_no_panel_draws_one_series_per_instance(tmp_path: Path) -> None:
    """Over 64 synthetic instances of every metric on 8 replicas, each dashboard query returns
    data and at most 20 series (top-N or aggregated), so 5,000 instances draw no more, and
    no panel draws a line per replica and state (32 here)."""
    result = promtool_bound_check(queries(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_bound_check_catches_a_per_instance_query(tmp_path: Path) -> None:
    """The check above can fail: a query that draws one line per instance is refused, and
    the same query under topk passes."""
    per_instance = f"max by (ryze_instance) (ryze_bridge_ws_connected{{{SELECTOR}}})"
    assert promtool_bound_check([per_instance], tmp_path).returncode != 0
    assert promtool_bound_check([f"topk(10, {per_instance})"], tmp_path).returncode == 0


def test_variables_rows_and_fleet_panels() -> None:
    """Data source, job, namespace and pod variables; the five rows in order; every query
    filtered by job, namespace and pod; state counts from ryze_bridge_instances, latency
    heatmaps, top-N tables and process CPU, memory and descriptors; panels do not overlap."""
    board = dashboard()
    variables = [v["name"] for v in board["templating"]["list"]]
    assert variables == ["datasource", "job", "namespace", "pod"]
    panels = board["panels"]
    assert [p["title"] for p in panels if p["type"] == "row"] == ROWS
    for expr in queries():
        assert SELECTOR in expr, expr
    exprs = "\n".join(queries())
    assert "sum by (state) (ryze_bridge_instances{" in exprs
    for metric in ("cpu_seconds_total", "resident_memory_bytes", "open_fds"):
        assert re.search(rf"sum by \(pod, process\) \(\w*\(?ryze_bridge_process_{metric}", exprs)
    heatmaps = [t["expr"] for p in panels if p["type"] == "heatmap" for t in p["targets"]]
    assert any("publish_latency_seconds_bucket" in e for e in heatmaps)
    assert all("sum by (le)" in e for e in heatmaps)
    assert re.search(r"topk\(10, .*ryze_bridge_ws_reconnects_total", exprs)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & taken, p["title"]
        assert g["x"] + g["w"] <= 24
        taken |= cells
