"""``ryze-bridge demo``: the simulator as upstream, the bridge, the file sink, a live summary.

Nothing to install or configure: three simulated instances stream into a JSON-lines file
while a line per interval shows events per second and per event type. Before that it prints
where to look: the admin address (bound on a free port; ``/metrics``, ``/healthz``,
``/readyz``, ``/instances``), the config file the run used (written next to the output), the
output file and the commands to try while it runs; then the first record as it lands in the
file (instance tokens are cut by the pipeline, so none is in it). Ctrl-C (or ``--duration``)
stops the bridge gracefully, draining what it received.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TextIO

import orjson
import yaml

from bridge.metrics import Metrics, create_metrics
from bridge.pipeline.gap import GAP_EVENT
from bridge.settings import Settings
from bridge.simulator import SimConfig, Simulator

DEMO_INSTANCES = ("loja-centro", "loja-norte", "suporte")
# Written next to the output file; a name of its own, never a user's bridge.yaml.
CONFIG_NAME = "ryze-demo.yaml"
EXIT_REFUSED = 2  # the demo would overwrite a file it did not write
SAMPLE_CHARS = 300  # a longer sample record is cut to this many characters
ADMIN_WAIT_SECONDS = 15.0  # how long the demo waits for the admin server to be bound
POLL_SECONDS = 0.05
CONFIG_HEADER = """\
# The config of the last `ryze-bridge demo` run (rewritten by each run). Its upstream is the
# built-in simulator on a port of that run and its spool a temporary directory, so it is a
# starting point to copy, not a config to run as it is. The tokens are the simulator's.
"""


class AdminEndpoint(Protocol):
    host: str
    port: int  # 0 until the server is bound, then the port it got


class Runnable(Protocol):
    @property
    def admin(self) -> AdminEndpoint: ...

    async def run(self) -> int: ...

    def request_stop(self) -> None: ...


SupervisorFactory = Callable[..., Runnable]


def demo_config(base_url: str, events_path: Path, spool_dir: Path) -> dict[str, Any]:
    """The demo's config as the plain data of a config file (pure)."""
    instances: dict[str, Any] = {name: {"token": f"demo-token-{name}"} for name in DEMO_INSTANCES}
    instances["loja-norte"]["events"] = ["message.exchange", "message.status"]
    return {
        "upstream": {"base_url": base_url},
        "instances": instances,
        "sink": {"kind": "file", "file": {"path": str(events_path)}},
        "spool": {"dir": str(spool_dir), "fsync": "never"},
        "admin": {"host": "127.0.0.1", "port": 0},
        "shutdown_timeout": 10,
    }


def written_by_demo(text: str) -> bool:
    """Whether a file's text is a config an earlier demo run wrote (its header's first line)."""
    return text.startswith(CONFIG_HEADER.splitlines()[0])


def config_refusal(path: Path) -> str | None:
    """Why the demo must not write its config at ``path`` (a file there that it did not write),
    or None when the path is free or holds an earlier demo run's config."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        ours = path.is_file() and written_by_demo(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        ours = False
    if ours:
        return None
    return (
        f"demo: {path} exists and was not written by the demo; it is left untouched. "
        "Move it, or pass --output in another folder."
    )


def write_config(path: Path, config: dict[str, Any]) -> None:
    """The config file of this run, with a header saying what it is: a new file, or over an
    earlier demo run's config (never over another file: ``config_refusal`` is checked first)."""
    text = CONFIG_HEADER + yaml.safe_dump(config, sort_keys=False)
    mode = "w" if path.exists() else "x"  # "x": a file that appeared meanwhile is not replaced
    with path.open(mode, encoding="utf-8") as out:
        out.write(text)


def admin_url(host: str, port: int) -> str:
    """The admin server's base URL (pure); an IPv6 host goes in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def cli_command(argv0: str, cwd: Path) -> str:
    """How to call this ryze-bridge from a shell in ``cwd`` (pure).

    Inside a project's own environment (``scripts/demo.sh``: ``.venv/bin/ryze-bridge`` under
    the working directory) the path relative to it, since that folder is not on the PATH;
    an installed command (pipx, ``uv tool install``) by its name.
    """
    path = Path(argv0)
    if path.name == "__main__.py":
        return "python -m bridge"
    if path.name != "ryze-bridge":
        return "ryze-bridge"
    if not path.is_absolute():
        return argv0  # as the user typed it
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else "ryze-bridge"


def where_lines(url: str | None, config: Path, output: Path, command: str) -> list[str]:
    """Where to look and what to try while the demo runs (pure)."""
    admin = (
        [f"admin    {url}  (/metrics, /healthz, /readyz, /instances)", f"metrics  {url}/metrics"]
        if url is not None
        else [f"admin    not listening after {ADMIN_WAIT_SECONDS:.0f} s"]
    )
    status = [f"  {command} status --url {url}"] if url is not None else []
    return [
        *admin,
        f"config   {config}",
        f"output   {output}",
        "try, in another terminal while it runs:",
        *status,
        f"  {command} check-config --config {config}",
        f"  tail -f {output}",
    ]


def shorten(text: str, limit: int = SAMPLE_CHARS) -> str:
    """``text``, cut to ``limit`` characters with an ellipsis when longer (pure)."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def prepare_output(output: Path) -> int:
    """Create the output's folder; how long the output file already is (a rerun appends)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    return output.stat().st_size if output.exists() else 0


def is_event_line(line: bytes) -> bool:
    """Whether a complete output line is an event record rather than a gap marker (pure)."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(entry, dict) and entry.get("event") not in (None, GAP_EVENT)


def first_event_line(path: Path, offset: int) -> str | None:
    """The first event record written after ``offset`` (gap markers come first), if any yet."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            for line in f:
                if not line.endswith(b"\n"):
                    return None  # the sink is still writing it
                if is_event_line(line):
                    return line.decode("utf-8", "replace").rstrip("\n")
    except FileNotFoundError:
        return None
    return None


def counts(metrics: Metrics, name: str, label: str) -> Counter[str]:
    """Current totals of a counter family, summed by one label."""
    totals: Counter[str] = Counter()
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                totals[sample.labels.get(label, "")] += int(sample.value)
    return totals


def summary_line(before: Counter[str], after: Counter[str], seconds: float) -> str:
    """``N ev/s | event a/s …`` from two snapshots of received-by-event totals (pure)."""
    rates = {k: (after[k] - before[k]) / seconds for k in after}
    total = sum(rates.values())
    parts = " ".join(f"{k}={v:.0f}/s" for k, v in sorted(rates.items()) if v)
    return f"{total:6.0f} events/s | received {sum(after.values()):6d} | {parts}"


async def run_demo(
    make_supervisor: SupervisorFactory,
    *,
    duration: float | None,
    rate: float,
    output: Path,
    interval: float = 2.0,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    command: str | None = None,
) -> int:
    tokens = {name: f"demo-token-{name}" for name in DEMO_INSTANCES}
    metrics = create_metrics()
    config_path = output.parent / CONFIG_NAME
    refusal = config_refusal(config_path)
    if refusal is not None:
        print(refusal, file=err)
        return EXIT_REFUSED
    offset = prepare_output(output)
    command = command or cli_command(sys.argv[0], Path.cwd())
    config = SimConfig(instances=tokens, rate=rate, seed=7)
    with tempfile.TemporaryDirectory(prefix="ryze-demo-spool-") as spool_dir:
        async with Simulator(config) as sim:
            data = demo_config(sim.base_url, output, Path(spool_dir))
            write_config(config_path, data)
            supervisor = make_supervisor(Settings.model_validate(data), metrics=metrics)
            task = asyncio.create_task(supervisor.run())
            print(f"simulator on {sim.base_url}; writing {output}; Ctrl-C to stop", file=out)
            url = await _admin_url(task, supervisor.admin)
            for line in where_lines(url, config_path, output, command):
                print(line, file=out, flush=True)
            sample = asyncio.create_task(_print_first_record(task, output, offset, out))
            await _report(task, metrics, duration, interval, out)
            sample.cancel()
            await asyncio.wait({sample})
            supervisor.request_stop()
            code = await task
    published = counts(metrics, "ryze_bridge_events_published_total", "event")
    print(f"stopped: {sum(published.values())} records in {output}", file=out)
    return code


async def _admin_url(task: asyncio.Task[int], admin: AdminEndpoint) -> str | None:
    """The admin server's real address once it is bound (its configured port is 0)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ADMIN_WAIT_SECONDS
    while admin.port == 0 and not task.done() and loop.time() < deadline:
        await asyncio.wait({task}, timeout=POLL_SECONDS)
    return admin_url(admin.host, admin.port) if admin.port else None


async def _print_first_record(
    task: asyncio.Task[int], output: Path, offset: int, out: TextIO
) -> None:
    """The first event record this run writes to the output file, as soon as it is there."""
    while not task.done():
        line = await asyncio.to_thread(first_event_line, output, offset)
        if line is not None:
            print(f"first event record in {output}:\n  {shorten(line)}", file=out, flush=True)
            return
        await asyncio.wait({task}, timeout=POLL_SECONDS)


async def _report(
    task: asyncio.Task[int], metrics: Metrics, duration: float | None, interval: float, out: TextIO
) -> None:
    loop = asyncio.get_running_loop()
    deadline = None if duration is None else loop.time() + duration
    before = counts(metrics, "ryze_bridge_events_received_total", "event")
    while not task.done() and (deadline is None or loop.time() < deadline):
        await asyncio.wait({task}, timeout=interval)
        after = counts(metrics, "ryze_bridge_events_received_total", "event")
        print(summary_line(before, after, interval), file=out, flush=True)
        before = after
