"""The short text table of a soak report (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from soak.invariants import Check, Row

HEADER = (
    "fault kind",
    "injected",
    "sent",
    "delivered",
    "DLQ",
    "duplicated",
    "lost",
    "longest recovery",
)


def cells(row: Row) -> tuple[str, ...]:
    """The columns of one row; lost shows each explanation."""
    lost = str(row.lost_total)
    if row.lost:
        lost += " (" + ", ".join(f"{n} {why}" for why, n in sorted(row.lost.items())) + ")"
    recovery = "-" if row.longest_recovery is None else f"{row.longest_recovery:.1f} s"
    if row.not_recovered:
        recovery += f", {row.not_recovered} not recovered"
    return (
        row.kind,
        str(row.injected),
        str(row.sent),
        str(row.delivered),
        str(row.dead_lettered),
        str(row.duplicated),
        lost,
        recovery,
    )


def render(rows: Sequence[Row], checks: Sequence[Check]) -> str:
    """The table, a total line, one line per invariant (PASS/FAIL and its detail), and a
    closing line counting the invariants that held and failed."""
    body = [HEADER, *(cells(r) for r in rows)]
    total = Row("total")
    for r in rows:
        total.injected += r.injected
        total.sent += r.sent
        total.delivered += r.delivered
        total.dead_lettered += r.dead_lettered
        total.duplicated += r.duplicated
        for why, n in r.lost.items():
            total.lost[why] = total.lost.get(why, 0) + n
    body.append(cells(total))
    widths = [max(len(line[i]) for line in body) for i in range(len(HEADER))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in body
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.extend(f"{'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}" for c in checks)
    passed = sum(1 for c in checks if c.ok)
    lines.append(f"soak: {passed} passed, {len(checks) - passed} failed")  # the closing line
    return "\n".join(lines) + "\n"
