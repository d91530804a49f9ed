"""The install paths users expect: ``pipx install .`` and ``uv tool install .``.

Each installs into folders of the test's own (PIPX_HOME/PIPX_BIN_DIR/PIPX_MAN_DIR,
UV_TOOL_DIR/UV_TOOL_BIN_DIR); nothing is installed for the machine or the user. pipx itself
runs from uv's cache (``uv tool run pipx``), not installed either.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.packaging.tools import PYPROJECT, ROOT, run, uv, uv_env

INSTALL_SECONDS = 300
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2 * INSTALL_SECONDS)]
CONFIG = """\
instances:
  shop:
    token_env: SHOP_TOKEN
sink:
  kind: file
  file: {path: events.jsonl}
"""


def check_command(command: Path, tmp_path: Path) -> None:
    """The installed ryze-bridge answers --version with the project's version and validates a
    config (its settings, YAML and pydantic dependencies are importable)."""
    assert command.exists(), f"{command} was not installed"
    version = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["version"]
    env = uv_env(SHOP_TOKEN="not-a-real-token")
    assert run([str(command), "--version"], env=env, timeout=60).strip() == (
        f"ryze-bridge {version}"
    )
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    effective = run([str(command), "check-config", "--config", str(config)], env=env, timeout=60)
    assert "shop:" in effective
    assert "not-a-real-token" not in effective


def test_uv_tool_install(tmp_path: Path) -> None:
    """`uv tool install .` from the repository gives a working ryze-bridge command."""
    env = uv_env(UV_TOOL_DIR=str(tmp_path / "tools"), UV_TOOL_BIN_DIR=str(tmp_path / "bin"))
    run([uv(), "tool", "install", "--quiet", "."], cwd=ROOT, env=env, timeout=INSTALL_SECONDS)
    check_command(tmp_path / "bin" / "ryze-bridge", tmp_path)
    assert "ryze-bridge" in run([uv(), "tool", "list"], env=env, timeout=60)


def test_pipx_install(tmp_path: Path) -> None:
    """`pipx install .` from the repository gives a working ryze-bridge command."""
    env = uv_env(
        PIPX_HOME=str(tmp_path / "pipx"),
        PIPX_BIN_DIR=str(tmp_path / "bin"),
        PIPX_MAN_DIR=str(tmp_path / "man"),
    )
    pipx = [uv(), "tool", "run", "--quiet", "pipx"]
    run([*pipx, "install", "."], cwd=ROOT, env=env, timeout=INSTALL_SECONDS)
    check_command(tmp_path / "bin" / "ryze-bridge", tmp_path)
    assert "ryze-bridge" in run([*pipx, "list", "--short"], env=env, timeout=60)
