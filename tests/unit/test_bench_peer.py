"""The benchmark's Benthos-engine peer is taken only when it was built from the sources as
they are: the digest the bench computes is the one scripts/bench.sh writes beside the binary,
and a binary with another digest (older sources) is left out with a word, not measured."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.common import ROOT
from bench.throughput import PEER_SOURCES, benthos_binary, peer_sum


def test_the_digest_is_the_one_the_bench_script_writes() -> None:
    """``sha256sum go.sum main.go | sha256sum | cut -c1-16``, run from the checkout's root."""
    shell = subprocess.run(
        ["bash", "-c", f"sha256sum {' '.join(PEER_SOURCES)} | sha256sum | cut -c1-16"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert peer_sum() == shell.stdout.strip()


def test_only_a_peer_built_from_the_current_sources_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """None without a binary; none with a binary whose marker is another digest (said on
    stderr); the binary with the current digest's marker; ``RYZE_CACHE_DIR`` is where it is
    looked for by default, as in scripts/bench.sh."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("RYZE_CACHE_DIR", str(tmp_path))
    binary = tmp_path / "bin" / "ryze-bench-benthos"
    assert benthos_binary() is None
    binary.parent.mkdir()
    binary.write_bytes(b"")
    (binary.parent / ".benthos-0123456789abcdef").touch()
    assert benthos_binary() is None
    assert "built from other sources" in capsys.readouterr().err
    (binary.parent / f".benthos-{peer_sum()}").touch()
    assert benthos_binary() == binary
    assert benthos_binary(tmp_path / "elsewhere") is None
