"""The scale part's read floor: the websockets library's own cost at the bridge's sockets.

    python -m bench.read_floor URL INSTANCES MODE      # MODE: iter | hook

One process on uvloop (the bridge's loop) holding ``INSTANCES`` plain client connections of
the library the bridge reads with (``inst-000`` with token ``tok-000``, …; the bridge's connect
options: no compression, no client pings), each counting the data frames it receives:

- ``iter``: ``async for message in ws`` — the library's idiomatic use: its recv machinery and a
  task woken per message;
- ``hook``: a ``ClientConnection`` whose ``process_event`` counts data frames itself while its
  task only waits for the close — the least the library allows (the bridge hooks the same
  method: ``WatchedConnection`` in bridge/upstream/ws.py).

It speaks JSON lines on stdout: once every connection was tried, ``{"connected": k, "failed":
f}``; then ``{"count": n}`` (data frames so far) for every line read on stdin, until stdin
ends. The benchmark (bench/scale.py) measures its CPU and memory from /proc. Only the standard
library, websockets and uvloop are imported here, so its memory is theirs and the sockets'.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

MODES = ("iter", "hook")
CONCURRENCY = 100  # handshakes in flight at once
ATTEMPTS = 5  # per socket, a second apart and more (a simulator busy with thousands of them)
DATA = (Opcode.TEXT, Opcode.BINARY)  # a message's first frame; the simulator sends whole ones
ROOT = Path(__file__).resolve().parents[1]  # where ``python -m bench.read_floor`` runs


class Tally:
    """Data frames received by every connection of the process."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


TALLY = Tally()


class CountingConnection(ClientConnection):
    """Counts each data frame as it is parsed and drops it: no queue, no task woken. The first
    event is the handshake's answer (a ``Response``, no opcode), the library's to handle, as
    are the control frames."""

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and event.opcode in DATA:
            TALLY.count += 1
            return
        super().process_event(event)


async def open_socket(url: str, n: int, mode: str, gate: asyncio.Semaphore) -> ClientConnection:
    """Instance ``n``'s socket, tried ``ATTEMPTS`` times (at most ``CONCURRENCY`` handshakes
    at once); the last failure is raised."""
    kind = CountingConnection if mode == "hook" else ClientConnection
    for attempt in range(ATTEMPTS):
        async with gate:
            try:
                return await connect(
                    f"{url.replace('http', 'ws', 1)}/ws/inst-{n:03d}",
                    additional_headers={"token": f"tok-{n:03d}"},
                    create_connection=kind,
                    ping_interval=None,
                    ping_timeout=None,
                    compression=None,
                    max_size=2**24,
                    user_agent_header="ryze-bench-floor",
                )
            except (InvalidHandshake, OSError, TimeoutError):
                if attempt == ATTEMPTS - 1:
                    raise
        await asyncio.sleep(1 + attempt)
    raise AssertionError("unreachable")


async def read(ws: ClientConnection, mode: str) -> None:
    """The socket's task: counting messages (``iter``) or only waiting for the close."""
    if mode == "iter":
        async for _ in ws:
            TALLY.count += 1
    else:
        await ws.wait_closed()


def emit(line: dict[str, int]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def allow_sockets(needed: int) -> None:
    """The soft limit on open files raised to ``needed`` where the hard one allows (the
    benchmark raises its own, which this process inherits)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def answer_requests() -> None:
    """``{"count": n}`` for every line on stdin, until it ends."""
    stdin = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while await stdin.readline():
        emit({"count": TALLY.count})


async def main(url: str, instances: int, mode: str) -> None:
    allow_sockets(instances + 1024)
    gate = asyncio.Semaphore(CONCURRENCY)
    opened = await asyncio.gather(
        *(open_socket(url, n, mode, gate) for n in range(instances)), return_exceptions=True
    )
    sockets = [ws for ws in opened if isinstance(ws, ClientConnection)]
    emit({"connected": len(sockets), "failed": instances - len(sockets)})
    readers = [asyncio.create_task(read(ws, mode)) for ws in sockets]
    try:
        await answer_requests()
    finally:
        for task in readers:
            task.cancel()


# ---- the benchmark's side -------------------------------------------------------------------
def parse_line(line: bytes) -> dict[str, int]:
    """One line of the floor's output (pure): a JSON object of integers, else ValueError."""
    found: Any = json.loads(line)
    if not isinstance(found, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in found.values()
    ):
        raise ValueError(f"not a line of the read floor: {line[:200]!r}")
    return {str(k): int(v) for k, v in found.items()}


@dataclass
class Floor:
    """A running floor process, as the benchmark drives it."""

    process: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    async def line(self) -> dict[str, int]:
        """The next line it prints; a process that ended says why (its stderr, in ``log``)."""
        assert self.process.stdout is not None
        raw = await self.process.stdout.readline()
        if not raw:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the read floor exited: {tail}")
        return parse_line(raw)

    async def ready(self) -> dict[str, int]:
        """``{"connected": k, "failed": f}`` once every socket was tried."""
        return await self.line()

    async def count(self) -> int:
        """Data frames the process received so far."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"count\n")
        await self.process.stdin.drain()
        async with asyncio.timeout(60):
            return (await self.line())["count"]


@contextlib.asynccontextmanager
async def started(url: str, instances: int, mode: str, log: Path) -> AsyncIterator[Floor]:
    """The floor as its own process (its stderr into ``log``), killed at the end."""
    if mode not in MODES:
        raise ValueError(f"unknown read floor mode {mode!r}; known: {MODES}")
    with log.open("wb") as errors:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.read_floor",
            url,
            str(instances),
            mode,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
            cwd=ROOT,
        )
    try:
        yield Floor(process, log)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
