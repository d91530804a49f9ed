"""What the packaging tests share: the repository's version sources, parsed, and uv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "ryze-bridge" / "Chart.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
CHANGELOG = ROOT / "CHANGELOG.md"
PYPROJECT = ROOT / "pyproject.toml"

DOCKER_ARG = re.compile(r"^ARG VERSION=(?P<version>\S+)\s*$", re.MULTILINE)
DOCKER_TAG = re.compile(r"ryze-bridge:(?P<version>\d[\w.+-]*)")
HEADING = re.compile(r"^## \[(?P<name>[^\]]+)\]", re.MULTILINE)
PENDING = re.compile(r"version stays `(?P<version>[^`]+)`")


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def unavailable(what: str) -> None:
    """Fail under CI (the check must run there), skip elsewhere."""
    if in_ci():
        pytest.fail(what)
    pytest.skip(what)


def pyproject_version(text: str) -> str:
    """``[project] version`` of a pyproject.toml (pure)."""
    return str(tomllib.loads(text)["project"]["version"])


def chart_versions(text: str) -> tuple[str, str]:
    """(``version``, ``appVersion``) of a Chart.yaml (pure)."""
    chart = yaml.safe_load(text)
    return str(chart["version"]), str(chart["appVersion"])


def dockerfile_versions(text: str) -> list[str]:
    """Every version a Dockerfile writes: ``ARG VERSION=`` defaults and ``ryze-bridge:`` tags."""
    return [m["version"] for m in (*DOCKER_ARG.finditer(text), *DOCKER_TAG.finditer(text))]


def changelog_version(text: str) -> str | None:
    """The version the changelog says the project is at (pure).

    The latest released heading (``## [0.2.0] - 2027-01-15``); before the first release (only
    ``## [Unreleased]``) the version its Unreleased section says stays until then.
    """
    released = [m["name"] for m in HEADING.finditer(text) if m["name"] != "Unreleased"]
    if released:
        return released[0]
    pending = PENDING.search(text)
    return pending["version"] if pending else None


def metadata(text: str) -> Message:
    """A core-metadata file (METADATA, PKG-INFO) parsed (pure)."""
    return Parser().parsestr(text)


def uv() -> str:
    """The uv that runs these tests (``uv run`` exports it as UV), else the one on the PATH."""
    found = os.environ.get("UV") or shutil.which("uv")
    if found is None:
        unavailable("no uv: run the tests with `uv run pytest` (scripts/test.sh does)")
    assert found is not None
    return found


# What `uv run` hands its children; a uv started by a test must not inherit it. The first one
# makes `uv pip install` install into the interpreter that ran `python -m uv run`.
UV_RUN_STATE = ("UV_INTERNAL__PARENT_INTERPRETER", "UV_RUN_RECURSION_DEPTH", "VIRTUAL_ENV")


def uv_env(**extra: str) -> dict[str, str]:
    """This environment without what ``uv run`` set for the test process, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in UV_RUN_STATE}
    return {**env, **extra}


def run(
    args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float
) -> str:
    """Run a command, bounded; its stdout, or a failure showing both of its outputs."""
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout
