"""The token grep: every token a test run used, searched for in every output of that run.

scripts/test.sh runs it after the pytest stages (and the soak) and fails CI on a hit, naming
the file and the byte offset, never the token.

Tokens: every instance and account token a simulator was given during the run (the
simulator appends each to the ledger named by ``RYZE_TOKEN_LEDGER``, children included:
bridge/simulator/ledger.py) and every ``tok-…`` / ``secret-…`` string literal of the test
sources (tokens only a bridge's config holds, such as a wrong one).

Outputs: every file under the roots given — pytest's base temporary directories (spool
segments and ``ack`` files, file-sink outputs and DLQ files, the bridges' stdout/stderr files,
``last-seen.json``, logs), the admin answers the integration harness read
(``admin-answers.txt``: :func:`keep_answer`), the runs' JUnit XML with every test's captured
stdout, stderr and log records (``-o junit_logging=all``; not a failure's traceback, which
quotes the test's source), the soak's directory, and the
records read back from every Kafka topic and every Redis key at the end of the main run
(``dump-brokers``), and what the tests' teardowns deleted before that (kept under
``deleted/`` beside the ledger: tests/brokerdump.py). What the tests wrote as *input* is left
out and counted apart: config files (``*.yaml``, ``*.yml``), Python files, files that hold
nothing but one token, password or PEM, and copies of the project (``venv``, ``src``,
``repo``, ``pipx``, ``site-packages``).

    python -m tests.tokengrep dump-brokers OUT_DIR
    python -m tests.tokengrep scan --ledger FILE --sources tests ROOT...
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from bridge.simulator.ledger import LEDGER_ENV
from tests.brokerdump import dump_records, dump_redis
from tests.services import consume_all, read_services

CHUNK = 8 << 20
LITERAL = re.compile(rb"""["']((?:tok|secret)-[A-Za-z0-9_.-]{3,})["']""")
INPUT_SUFFIXES = frozenset({".yaml", ".yml", ".py"})
COPY_DIRS = frozenset({"venv", ".venv", "src", "repo", "pipx", "site-packages", "__pycache__"})
MAX_TOKEN_FILE = 4096
JUNIT_REPORT = re.compile(rb"<(failure|error)\b.*?</\1>", re.DOTALL)


@dataclass
class Report:
    files: int = 0
    bytes: int = 0
    inputs: int = 0
    hits: list[tuple[Path, int]] = field(default_factory=list)


def keep_answer(path: str, text: str, environ: Mapping[str, str] = os.environ) -> None:
    """With a ledger kept (CI), append an admin answer the tests read to ``admin-answers.txt``
    beside it, so the grep covers admin answers too."""
    ledger = environ.get(LEDGER_ENV)
    if ledger:
        with (Path(ledger).parent / "admin-answers.txt").open("a", encoding="utf-8") as out:
            out.write(f"GET {path}\n{text}\n")


def source_literals(root: Path) -> set[str]:
    """The ``tok-…``/``secret-…`` string literals of the Python files under ``root``."""
    found: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        found.update(m.group(1).decode() for m in LITERAL.finditer(path.read_bytes()))
    return found


def ledger_tokens(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {line for line in path.read_text(encoding="utf-8").splitlines() if len(line) >= 4}


def pattern(tokens: Iterable[str]) -> re.Pattern[bytes]:
    """One regex for every token, the longest first (a token inside another is one hit)."""
    ordered = sorted({t.encode() for t in tokens}, key=len, reverse=True)
    return re.compile(b"|".join(re.escape(t) for t in ordered))


def prefixes(tokens: Iterable[str]) -> frozenset[bytes]:
    """The tokens' first four bytes: few (the test tokens share ``tok-``), so finding those
    with ``bytes.find`` and matching only there is far faster than a regex over every byte."""
    return frozenset(t.encode()[:4] for t in tokens)


def candidates(data: bytes, starts: frozenset[bytes]) -> list[int]:
    """Every position in ``data`` where one of ``starts`` begins, ascending."""
    found = []
    for start in starts:
        at = data.find(start)
        while at != -1:
            found.append(at)
            at = data.find(start, at + 1)
    return sorted(found)


def offsets(
    path: Path, regex: re.Pattern[bytes], longest: int, starts: frozenset[bytes]
) -> Iterator[int]:
    """Byte offsets of the tokens in ``path``, read in chunks that overlap by a token."""
    overlap = max(longest - 1, 0)
    with path.open("rb") as handle:
        base, carry = 0, b""
        while chunk := handle.read(CHUNK):
            data = carry + chunk
            for at in candidates(data, starts):
                match = regex.match(data, at)
                if match and match.end() > len(carry):  # not wholly in the last chunk's tail
                    yield base - len(carry) + at
            carry = data[-overlap:] if overlap else b""
            base += len(chunk)


def report_ranges(path: Path) -> list[tuple[int, int]]:
    """Byte ranges of a JUnit XML's failure and error reports: their tracebacks quote the test
    sources, tokens and all (a failed test fails CI on its own; its captured output is still
    scanned)."""
    if path.suffix != ".xml":
        return []
    data = path.read_bytes()
    return [m.span() for m in JUNIT_REPORT.finditer(data)]


def is_input(path: Path, tokens: frozenset[str]) -> bool:
    """A file the tests wrote for the bridge to read, not one the run produced."""
    if path.suffix in INPUT_SUFFIXES or path.name.endswith(".ledger"):
        return True
    if any(part in COPY_DIRS for part in path.parts):
        return True
    if path.stat().st_size <= MAX_TOKEN_FILE:
        text = path.read_bytes().strip()
        return text.decode(errors="replace") in tokens or text.startswith(b"-----BEGIN")
    return False


def files_under(roots: Iterable[Path]) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
        elif root.is_dir():
            yield from (p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink())


def scan(roots: Iterable[Path], tokens: set[str]) -> Report:
    """Every file under ``roots`` (inputs aside) searched for every token."""
    report = Report()
    if not tokens:
        return report
    regex, longest, known = pattern(tokens), max(map(len, tokens)), frozenset(tokens)
    starts = prefixes(tokens)
    for path in files_under(roots):
        if is_input(path, known):
            report.inputs += 1
            continue
        report.files += 1
        report.bytes += path.stat().st_size
        skip = report_ranges(path)
        report.hits.extend(
            (path, offset)
            for offset in offsets(path, regex, longest, starts)
            if not any(start <= offset < end for start, end in skip)
        )
    return report


async def dump_brokers(out: Path) -> int:
    """Every record of every Kafka topic and every value of every Redis key (streams, strings,
    hashes, lists, sets; every database), written to files under ``out`` for the scan; returns
    how many were read. What the tests deleted at teardown was kept under ``deleted/`` beside
    the ledger before it went (tests/brokerdump.py)."""
    services = read_services()
    bootstrap: str = services["kafka"]["bootstrap_servers"]
    out.mkdir(parents=True, exist_ok=True)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if not t.startswith("__")]
    finally:
        await admin.close()
    records = await consume_all(bootstrap, topics, within=120.0) if topics else []
    (out / "kafka.records").write_bytes(b"")
    dump_records(records, out / "kafka.records")
    count = len(records)
    client = Redis.from_url(services["redis"]["url"])  # its TLS port is the same server's
    try:
        count += await dump_redis(client, out / "redis.entries")
    finally:
        await client.aclose()
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tokengrep")
    commands = parser.add_subparsers(dest="command", required=True)
    dump = commands.add_parser("dump-brokers")
    dump.add_argument("out", type=Path)
    grep = commands.add_parser("scan")
    grep.add_argument("--ledger", type=Path, required=True)
    grep.add_argument("--sources", type=Path, default=Path("tests"))
    grep.add_argument("roots", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "dump-brokers":
        count = asyncio.run(dump_brokers(args.out))
        print(f"token grep: read back {count} Kafka records and Redis values")
        return 0
    tokens = ledger_tokens(args.ledger) | source_literals(args.sources)
    report = scan(args.roots, tokens)
    for path, offset in report.hits:
        print(f"token grep: HIT {path} at byte {offset}", file=sys.stderr)
    print(
        f"token grep: {len(tokens)} tokens, {report.files} files, {report.bytes} bytes scanned "
        f"({report.inputs} input files left out): {len(report.hits)} hits"
    )
    return 1 if report.hits or not tokens else 0


if __name__ == "__main__":
    sys.exit(main())
