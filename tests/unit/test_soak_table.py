"""The soak's text table: one line per fault kind, a total, then one line per invariant."""

from __future__ import annotations

from soak.invariants import Check, Row
from soak.table import render


def test_table_lists_kinds_totals_and_verdicts() -> None:
    """Each row shows its counts, every loss explanation and the longest recovery; the total
    line adds the rows up; each check is a PASS or FAIL line with its detail."""
    rows = [
        Row("bridge_kill", 2, 100, 95, 1, 3, {"tail_at_bridge_kill": 4}, 2.5),
        Row("disk_full", 1, 50, 40, 0, 0, {"unexplained": 10}, None, 1),
    ]
    checks = [Check("no_loss", False, "10 frames lost, unexplained"), Check("order", True, "0")]
    text = render(rows, checks)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["fault", "kind", "injected"]
    bridge_kill = next(line for line in lines if line.startswith("bridge_kill"))
    assert bridge_kill.split()[:7] == ["bridge_kill", "2", "100", "95", "1", "3", "4"]
    assert "4 tail_at_bridge_kill" in bridge_kill
    assert bridge_kill.rstrip().endswith("2.5 s")
    assert "1 not recovered" in next(line for line in lines if line.startswith("disk_full"))
    total = next(line for line in lines if line.startswith("total"))
    assert total.split()[:7] == ["total", "3", "150", "135", "1", "3", "14"]
    assert "FAIL  no_loss: 10 frames lost, unexplained" in lines
    assert "PASS  order: 0" in lines
