"""The benchmark's Benthos-engine peer is taken only when it was built from the sources as
they are: the digest the bench computes is the one scripts/bench.sh writes beside the binary,
and a binary with another digest (older sources) is left out with a word, not measured."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bench.common import ROOT
from bench.throughput import PEER, benthos_binary, peer_sum


def test_the_digest_is_the_one_the_bench_script_writes() -> None:
    """scripts/bench.sh's own ``peer_sum`` (taken from the script, run from the checkout's
    root, as the script runs it) gives the digest the bench looks for."""
    script = (ROOT / "scripts" / "bench.sh").read_text(encoding="utf-8")
    found = re.search(r"^peer_sum\(\) \{ (.+); \}$", script, re.MULTILINE)
    assert found is not None, "scripts/bench.sh defines peer_sum() on one line"
    shell = subprocess.run(
        ["bash", "-c", found.group(1)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert peer_sum() == shell.stdout.strip()


def install(directory: Path, *, executable: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    binary = directory / PEER
    binary.write_bytes(b"#!/bin/sh\n")
    binary.chmod(0o755 if executable else 0o644)
    return binary


def test_only_a_peer_built_from_the_current_sources_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In the cache (``RYZE_CACHE_DIR``, as in scripts/bench.sh): none without a binary, nor
    with one that cannot be run, nor with one whose marker is another digest (said on
    stderr); the binary once its marker is the current digest's."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("RYZE_CACHE_DIR", str(tmp_path))
    assert benthos_binary() is None
    binary = install(tmp_path / "bin", executable=False)
    (binary.parent / f".benthos-{peer_sum()}").touch()
    assert benthos_binary() is None
    binary.chmod(0o755)
    assert benthos_binary() == binary
    (binary.parent / f".benthos-{peer_sum()}").unlink()
    (binary.parent / ".benthos-0123456789abcdef").touch()
    assert benthos_binary() is None
    assert "not built from the sources as they are" in capsys.readouterr().err
    assert benthos_binary(tmp_path / "elsewhere") is None


def test_a_peer_on_the_path_is_checked_where_markers_are_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One on the PATH without markers (built by hand) is taken as given; the cache's own
    directory put on the PATH keeps its check (a stale marker: left out), and so does a link
    on the PATH to the cache's binary."""
    monkeypatch.setenv("RYZE_CACHE_DIR", str(tmp_path / "cache"))
    by_hand = install(tmp_path / "hand")
    monkeypatch.setenv("PATH", str(by_hand.parent))
    assert benthos_binary() == by_hand
    cached = install(tmp_path / "cache" / "bin")
    (cached.parent / ".benthos-0123456789abcdef").touch()
    monkeypatch.setenv("PATH", str(cached.parent))
    assert benthos_binary() is None
    linked = tmp_path / "links" / PEER  # a link on the PATH to the cache's stale binary
    linked.parent.mkdir()
    linked.symlink_to(cached)
    monkeypatch.setenv("PATH", str(linked.parent))
    assert benthos_binary() is None
