"""The README's first step on a stock machine: scripts/bootstrap.sh with the distribution's own
python3 (Debian 12's is PEP 668 "externally managed"), an empty home directory and a fresh
copy of the repository, where another Python may come first on the caller's PATH.

uv's package cache is shared with the caller's (UV_CACHE_DIR): what the test is about (no uv
anywhere, no pip for the system's python, the bootstrap's own venv for uv installed from the
package index into the empty home, the project environment made with /usr/bin/python3) all
still happens; the cache only spares downloading the locked wheels again, and uv checks each
against the lock's hashes whichever way it gets it. pip's cache is not shared (the empty home
has none), so uv itself is really fetched. The machine's TLS trust settings (SSL_CERT_FILE,
SSL_CERT_DIR) pass through: they are the network's, not a user's state.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from tests.packaging.tools import PYPROJECT, ROOT, run, unavailable, uv, uv_env

SYSTEM_PYTHON = Path("/usr/bin/python3")
STOCK_PATH = "/usr/bin:/bin"
TIMEOUT = 600
DEMO = {"BOOTSTRAP_NO_DEV": "1"}  # how scripts/demo.sh sources it; scripts/test.sh does not

# Two syncs: fetching uv and, on a cold uv cache, every wheel can take minutes.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2 * TIMEOUT)]
PASSED_THROUGH = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def fresh_copy(dest: Path) -> None:
    """The repository as a clone of this working tree would be: the tracked files and new
    ones not ignored, as they are now (so uncommitted changes are what gets tested)."""
    listing = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    for name in filter(None, run(listing, cwd=ROOT, timeout=60).split("\0")):
        source = ROOT / name
        if not source.exists():  # deleted in the working tree, not yet committed
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / name, follow_symlinks=False)


def stock_env(home: Path, uv_cache: str) -> dict[str, str]:
    """What `env -i HOME=<home> PATH=/usr/bin:/bin` leaves, with the shared uv cache."""
    env = {"HOME": str(home), "PATH": STOCK_PATH, "UV_CACHE_DIR": uv_cache}
    env.update({k: os.environ[k] for k in PASSED_THROUGH if k in os.environ})
    return env


def has_uv_module(python: Path) -> bool:
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('uv') is None)"
    return subprocess.run([str(python), "-c", code], check=False, timeout=60).returncode == 0


def venv_config(venv: Path) -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read_string("[venv]\n" + (venv / "pyvenv.cfg").read_text(encoding="utf-8"))
    return dict(parser["venv"])


def test_bootstrap_with_the_distribution_python_and_an_empty_home(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """On a fresh copy, with /usr/bin/python3 first on a stock PATH and an empty HOME, the
    bootstrap installs uv into its own venv (never into the system's python) and makes the
    project environment on that interpreter, first as the demo wants it (no dev tools), then
    as the tests want it, its bytecode compiled at install (once per setup); its ryze-bridge
    --version answers the version."""
    if not SYSTEM_PYTHON.exists():
        unavailable(f"no {SYSTEM_PYTHON}: this test is about the distribution's interpreter")
    assert shutil.which("python3", path=STOCK_PATH) == str(SYSTEM_PYTHON)
    system_version = run([str(SYSTEM_PYTHON), "--version"], timeout=60).split()[1]
    uv_before = has_uv_module(SYSTEM_PYTHON)
    repo, home = tmp_path / "repo", tmp_path / "home"
    home.mkdir()
    fresh_copy(repo)
    uv_cache = run([uv(), "cache", "dir"], env=uv_env(), timeout=60).strip()

    env = stock_env(home, uv_cache)
    started = time.monotonic()
    run(["bash", "scripts/bootstrap.sh"], cwd=repo, env={**env, **DEMO}, timeout=TIMEOUT)
    seconds = round(time.monotonic() - started, 1)
    request.node.user_properties.append(("bootstrap_seconds", seconds))  # in a JUnit report
    assert not (repo / ".venv" / "bin" / "mypy").exists(), "the demo's setup has dev tools"
    run(["bash", "scripts/bootstrap.sh"], cwd=repo, env=env, timeout=TIMEOUT)
    assert (repo / ".venv" / "bin" / "mypy").exists(), "test.sh's setup has no dev tools"
    site = next((repo / ".venv" / "lib").glob("python3*/site-packages"))
    assert list((site / "redis" / "__pycache__").glob("*.pyc")), "no bytecode compiled at install"
    assert (repo / ".venv" / ".ryze-bytecode").read_text().strip(), "the compile not noted"

    version = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["version"]
    answer = run([str(repo / ".venv" / "bin" / "ryze-bridge"), "--version"], timeout=60)
    assert answer.strip() == f"ryze-bridge {version}"
    venv = venv_config(repo / ".venv")
    assert (venv["home"], venv["version_info"].split(".")[:3]) == (
        str(SYSTEM_PYTHON.parent),
        system_version.split("."),
    )
    assert list((home / ".cache" / "ryze-bridge").glob("uv-*/bin/uv")), "uv not in its own venv"
    assert has_uv_module(SYSTEM_PYTHON) == uv_before, "the bootstrap changed the system python"
