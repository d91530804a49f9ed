"""The command line: check-config prints the masked config, exit 2 names the bad key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli import EXIT_BAD_CONFIG, EXIT_OK, main

TOKEN_INLINE = "inline-4b1d9e0f-secret"
TOKEN_ENV = "env-90c2aa17-secret"
TOKEN_FILE = "file-5e6f7a8b-secret"


def test_check_config_masks_tokens_given_each_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token from token, token_env or token_file never appears in check-config's output."""
    token_file = tmp_path / "t"
    token_file.write_text(TOKEN_FILE, encoding="utf-8")
    monkeypatch.setenv("SHOP_TOKEN", TOKEN_ENV)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"instances:\n  a:\n    token: {TOKEN_INLINE}\n  b:\n    token_env: SHOP_TOKEN\n"
        f"  c:\n    token_file: {token_file}\n",
        encoding="utf-8",
    )
    assert main(["check-config", "--config", str(config)]) == EXIT_OK
    out, err = capsys.readouterr()
    assert "instances:" in out
    for secret in (TOKEN_INLINE, TOKEN_ENV, TOKEN_FILE):
        assert secret not in out
        assert secret not in err


def test_check_config_exit_2_names_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid file exits 2 and the message on stderr names the offending key."""
    config = tmp_path / "c.yaml"
    config.write_text("sink:\n  kafka:\n    acks: sometimes\n", encoding="utf-8")
    assert main(["check-config", "--config", str(config)]) == EXIT_BAD_CONFIG
    _, err = capsys.readouterr()
    assert "sink.kafka.acks" in err


def test_check_config_warns_on_unset_token_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An instance whose token env var is unset is valid config, reported as a warning."""
    config = tmp_path / "c.yaml"
    config.write_text("instances:\n  a:\n    token_env: RYZE_UNSET_FOR_TEST\n", encoding="utf-8")
    assert main(["check-config", "--config", str(config)]) == EXIT_OK
    _, err = capsys.readouterr()
    assert "warning: instances.a.token_env" in err


def test_console_script_and_module_entry(tmp_path: Path) -> None:
    """`python -m bridge check-config` runs as a process and exits 2 on a bad file."""
    config = tmp_path / "c.yaml"
    config.write_text("nonsense: true\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == EXIT_BAD_CONFIG
    assert "nonsense: unknown key" in proc.stderr
