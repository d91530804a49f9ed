"""The wheel and sdist, built once per session with ``uv build`` from this checkout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.packaging.tools import ROOT, run, uv, uv_env

BUILD_SECONDS = 300


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """``uv build``: the sdist, then the wheel built from that sdist (uv's default)."""
    out = tmp_path_factory.mktemp("dist")
    args = [uv(), "build", "--quiet", "--out-dir", str(out), str(ROOT)]
    run(args, env=uv_env(), timeout=BUILD_SECONDS)
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1, wheels
    assert len(sdists) == 1, sdists
    return Dist(wheel=wheels[0], sdist=sdists[0])
