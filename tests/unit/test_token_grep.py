"""CI's token grep (tests/tokengrep.py) finds every planted token at its byte offset, across
read chunks, reports the file and offset but never the token, leaves the tests' input files
out, and the simulator's ledger records the tokens it is given."""

from __future__ import annotations

from pathlib import Path

import pytest

import tests.tokengrep as grep
from bridge.simulator.ledger import LEDGER_ENV, record_tokens
from bridge.simulator.server import SimConfig, SimulatorServer

# built, not a literal: CI's own grep of this run must not find the files these tests plant
TOKEN = "-".join(("tok", "grep", "unit", "7c1d"))


def test_a_planted_token_is_found_at_its_offset(tmp_path: Path) -> None:
    """A token in a spool-like output file is reported with that file and its byte offset; a
    clean file gives no hit; the counts cover both files."""
    out = tmp_path / "run" / "spool"
    out.mkdir(parents=True)
    (out / "seg-1.log").write_bytes(b"x" * 100 + TOKEN.encode() + b"y" * 10)
    (out / "clean.jsonl").write_bytes(b'{"data": "nothing here"}\n')
    report = grep.scan([tmp_path / "run"], {TOKEN, "tok-other-1234"})
    assert report.hits == [(out / "seg-1.log", 100)]
    assert report.files == 2
    assert report.bytes == 110 + len(TOKEN) + 25


def test_a_token_across_two_chunks_is_found_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token that straddles two reads is found exactly once, at its true offset."""
    monkeypatch.setattr(grep, "CHUNK", 64)
    path = tmp_path / "big.log"
    path.write_bytes(b"a" * 60 + TOKEN.encode() + b"b" * 200 + TOKEN.encode())
    starts = grep.prefixes({TOKEN})
    found = list(grep.offsets(path, grep.pattern({TOKEN}), len(TOKEN), starts))
    assert found == [60, 60 + len(TOKEN) + 200]


def test_inputs_are_left_out(tmp_path: Path) -> None:
    """Config files, files holding only a token, and copies of the project are inputs the
    tests wrote, not outputs: left out and counted apart."""
    (tmp_path / "bridge.yaml").write_text(f"instances: {{shop: {{token: {TOKEN}}}}}\n")
    (tmp_path / "token").write_text(f"{TOKEN}\n")
    (tmp_path / "venv" / "lib").mkdir(parents=True)
    (tmp_path / "venv" / "lib" / "x.txt").write_text(TOKEN)
    (tmp_path / "stderr").write_text(f"ws.failed token={TOKEN}\n")
    report = grep.scan([tmp_path], {TOKEN})
    assert report.inputs == 3
    assert report.hits == [(tmp_path / "stderr", 16)]


def test_the_command_fails_naming_the_file_not_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`scan` exits 1 on a hit and prints the file and offset, never the token; with no hit
    it exits 0 and says how much it scanned."""
    ledger = tmp_path / "tokens.ledger"
    ledger.write_text(f"{TOKEN}\n")
    sources = tmp_path / "sources"
    sources.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "dlq.jsonl").write_text(f'{{"raw": "{TOKEN}"}}\n')
    args = ["scan", "--ledger", str(ledger), "--sources", str(sources), str(out)]
    assert grep.main(args) == 1
    captured = capsys.readouterr()
    assert f"{out / 'dlq.jsonl'} at byte 9" in captured.err
    assert TOKEN not in captured.out + captured.err
    (out / "dlq.jsonl").write_text('{"raw": "***"}\n')
    assert grep.main(args) == 0
    assert "1 tokens, 1 files, 15 bytes scanned (0 input files left out): 0 hits" in (
        capsys.readouterr().out
    )


def test_source_literals_are_collected(tmp_path: Path) -> None:
    """`tok-…` and `secret-…` string literals of the test sources count as tokens (those only
    a bridge config holds); f-string templates do not."""
    (tmp_path / "t.py").write_text(
        'A = "tok-wrong-3"\nB = \'secret-xyz9\'\nC = f"tok-{n}"\nD = "token"\n'
    )
    assert grep.source_literals(tmp_path) == {"tok-wrong-3", "secret-xyz9"}


async def test_the_simulator_records_its_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With RYZE_TOKEN_LEDGER set, a simulator appends every instance and account token it is
    given (at start and added later) to the ledger, created 0600; unset, it writes nothing."""
    ledger = tmp_path / "tokens.ledger"
    monkeypatch.setenv(LEDGER_ENV, str(ledger))
    server = SimulatorServer(SimConfig(instances={"shop": TOKEN}, account_tokens=["tok-acct-9"]))
    server.add_instance("late", "tok-late-5")
    assert grep.ledger_tokens(ledger) == {TOKEN, "tok-acct-9", "tok-late-5"}
    assert ledger.stat().st_mode & 0o777 == 0o600
    monkeypatch.delenv(LEDGER_ENV)
    record_tokens(["tok-not-recorded"])
    assert "tok-not-recorded" not in ledger.read_text()


def test_junit_failure_reports_are_left_out(tmp_path: Path) -> None:
    """In a JUnit XML, a token inside a failure's report (a traceback quoting the test's
    source) is not a hit; the same token in a test's captured output is."""
    xml = tmp_path / "junit.xml"
    head = f'<testcase><failure message="x">src = "{TOKEN}"</failure><system-out>'
    xml.write_text(f"{head}{TOKEN}</system-out></testcase>")
    assert grep.scan([xml], {TOKEN}).hits == [(xml, len(head))]
