"""``ryze-bridge status``: ask one replica's admin API, or every replica of a cluster, for its
instances (filtered on the replica), merge the answers and print them as a summary and a
table, or as JSON.

The JSON shape (stable; documented in docs/operations.md)::

    {"summary": {"failed": 0, "connecting": 0, "silent": 0, "paused": 0, "connected": 0,
                 "total": 0},
     "matched": 0,            # instances the filters keep, over every replica that answered
     "shown": 0,              # rows below (at most --limit)
     "instances": [{"name": "...", "owner": "...", "state": "...", ...}],
     "replicas": [{"url": "...", "ok": true, "replica": "...", "mode": "..."},
                  {"url": "...", "ok": false, "error": "..."}]}
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from bridge.status import STATES, Row, StatusQuery, order

TIMEOUT = 10.0
COLUMNS = (
    ("instance", 24),
    ("state", 11),
    ("phase", 13),
    ("owner", 16),
    ("connected_since", 28),
    ("seconds_since_last_frame", 10),
    ("frames", 9),
    ("reconnects", 10),
    ("last_ensure", 11),
    ("last_error", 0),
)
TITLES = {"seconds_since_last_frame": "silent_s", "connected_since": "connected since"}


@dataclass(frozen=True, slots=True)
class ReplicaAnswer:
    """What one admin address answered to ``/instances`` (``body``), or why it did not."""

    url: str
    body: dict[str, object] | None = None
    error: str | None = None


def shown_url(url: str) -> str:
    """``url`` as printed: without the ``user:password@`` it may carry (pure)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


async def ask(client: httpx.AsyncClient, url: str, query: StatusQuery) -> ReplicaAnswer:
    """One replica's filtered ``/instances``; an error names the failure, never a secret (the
    address is kept without its userinfo)."""
    shown = shown_url(url)
    try:
        response = await client.get(f"{url.rstrip('/')}/instances", params=query.params())
    except httpx.HTTPError as exc:
        return ReplicaAnswer(shown, error=type(exc).__name__)
    if response.status_code != 200:
        return ReplicaAnswer(shown, error=f"HTTP {response.status_code} {response.text.strip()}")
    try:
        body = response.json()
    except ValueError:  # a 200 that is not JSON (another server on the port, a proxy's page)
        return ReplicaAnswer(shown, error="not a status answer (not JSON)")
    if not isinstance(body, dict):
        return ReplicaAnswer(shown, error="not a status answer")
    return ReplicaAnswer(shown, body=body)


async def ask_all(urls: Sequence[str], token: str, query: StatusQuery) -> list[ReplicaAnswer]:
    """Every replica at once, each bounded by :data:`TIMEOUT`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # trust_env off: the bearer token goes to the replicas named, never to a proxy (or a
    # .netrc login) taken from the environment
    async with httpx.AsyncClient(headers=headers, timeout=TIMEOUT, trust_env=False) as client:
        return list(await asyncio.gather(*(ask(client, url, query) for url in urls)))


def replica_entry(answer: ReplicaAnswer) -> dict[str, object]:
    if answer.body is None:
        return {"url": answer.url, "ok": False, "error": answer.error}
    cluster = answer.body.get("cluster")
    cluster = cluster if isinstance(cluster, dict) else {}
    entry: dict[str, object] = {"url": answer.url, "ok": True, "mode": cluster.get("mode")}
    if cluster.get("replica") is not None:
        entry["replica"] = cluster["replica"]
    return entry


def merge(answers: Sequence[ReplicaAnswer], limit: int) -> dict[str, object]:
    """One view over the replicas that answered (pure): summed summary and matches, their
    rows with the replica that owns each, trouble first, at most ``limit`` (0: all)."""
    totals = dict.fromkeys([*STATES, "total"], 0)
    matched = 0
    rows: list[tuple[str, Row]] = []
    for answer in answers:
        if answer.body is None:
            continue
        entry = replica_entry(answer)
        owner = entry.get("replica", answer.url)
        for key, value in dict_of(answer.body.get("summary")).items():
            if key in totals and isinstance(value, int):
                totals[key] += value
        found = answer.body.get("matched", 0)
        matched += found if isinstance(found, int) else 0
        for name, row in dict_of(answer.body.get("instances")).items():
            rows.append((name, {"name": name, "owner": owner, **dict_of(row)}))
    rows.sort(key=order)
    shown = rows[:limit] if limit else rows
    return {
        "summary": totals,
        "matched": matched,
        "shown": len(shown),
        "instances": [row for _, row in shown],
        "replicas": [replica_entry(a) for a in answers],
    }


def dict_of(value: object) -> dict[str, object]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def summary_line(view: dict[str, object]) -> str:
    """``5000 instances: 2 failed, 5 connecting, 3 silent, 0 paused, 4990 connected``."""
    counts = dict_of(view["summary"])
    parts = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES)
    return f"{counts.get('total', 0)} instances: {parts}"


def replicas_line(view: dict[str, object]) -> str | None:
    """Which replicas answered and which did not (None for one replica that answered)."""
    entries = [dict_of(e) for e in view["replicas"]] if isinstance(view["replicas"], list) else []
    missing = [f"{e['url']} ({e.get('error')})" for e in entries if not e.get("ok")]
    if len(entries) == 1 and not missing:
        return None
    answered = [str(e.get("replica", e["url"])) for e in entries if e.get("ok")]
    line = f"replicas: {len(answered)} answered ({', '.join(answered) or 'none'})"
    return line + (f"; did not answer: {', '.join(missing)}" if missing else "")


def table(rows: list[dict[str, object]], columns: Sequence[tuple[str, int]]) -> str:
    """Rows as a fixed-width table (pure)."""
    lines = [[TITLES.get(c, c) for c, _ in columns]]
    for row in rows:
        info = {"instance": row.get("name"), **row}
        lines.append(["-" if info.get(c) is None else str(info.get(c)) for c, _ in columns])
    return "\n".join(
        " ".join(
            cell.ljust(width) if width else cell
            for cell, (_, width) in zip(line, columns, strict=True)
        ).rstrip()
        for line in lines
    )


def render(view: dict[str, object], *, owners: bool) -> str:
    """The text form: summary, replicas, table (with an owner column across replicas), and
    how many rows the limit left out."""
    columns = [c for c in COLUMNS if owners or c[0] != "owner"]
    rows = view["instances"] if isinstance(view["instances"], list) else []
    lines = [summary_line(view)]
    lines += [line for line in (replicas_line(view),) if line]
    lines.append(table(rows, columns))
    if view["shown"] != view["matched"]:
        lines.append(f"showing {view['shown']} of {view['matched']} matching (--limit 0: all)")
    return "\n".join(lines)
