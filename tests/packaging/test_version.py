"""One version: pyproject.toml's, and everything that repeats it agrees with it."""

from __future__ import annotations

import zipfile
from importlib.metadata import version

import pytest

import bridge
from tests.packaging.conftest import BUILD_SECONDS, Dist
from tests.packaging.tools import (
    CHANGELOG,
    CHART,
    DOCKERFILE,
    PYPROJECT,
    changelog_version,
    chart_versions,
    dockerfile_versions,
    metadata,
    pyproject_version,
)

UNRELEASED_ONLY = """# Changelog

## [Unreleased]

Nothing has been released yet: the version stays `0.1.0` until the first release.

### Added
- something
"""

RELEASED = """# Changelog

## [Unreleased]

### Added
- something after 0.2.0

## [0.2.0] - 2027-01-15

### Changed
- the spool's format

## [0.1.0] - 2026-12-20
"""


def test_changelog_version_before_the_first_release() -> None:
    """With only an Unreleased section, the version is the one it says stays until then."""
    assert changelog_version(UNRELEASED_ONLY) == "0.1.0"


def test_changelog_version_is_the_latest_release() -> None:
    """Once released, the version is the latest released heading, not an older one."""
    assert changelog_version(RELEASED) == "0.2.0"


def test_changelog_without_a_version_gives_none() -> None:
    """A changelog naming no version at all gives nothing to compare (the check then fails)."""
    assert changelog_version("# Changelog\n\n## [Unreleased]\n") is None


def test_dockerfile_versions_finds_the_build_arg_and_tags() -> None:
    """Both the VERSION build arg's default and a tag in the build example are found."""
    text = "# docker build -t ryze-bridge:1.2.3 .\nFROM x\nARG VERSION=1.2.4\n"
    assert sorted(dockerfile_versions(text)) == ["1.2.3", "1.2.4"]


@pytest.mark.timeout(2 * BUILD_SECONDS)  # it may be the test that builds the wheel
def test_every_version_agrees_with_pyproject(dist: Dist) -> None:
    """bridge.__version__, the wheel's metadata, the chart (version and appVersion), the
    Dockerfile (VERSION default, the tag in its build example) and the changelog all say
    pyproject.toml's version."""
    expected = pyproject_version(PYPROJECT.read_text(encoding="utf-8"))
    with zipfile.ZipFile(dist.wheel) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        wheel_version = metadata(wheel.read(name).decode("utf-8"))["Version"]
    docker = dockerfile_versions(DOCKERFILE.read_text(encoding="utf-8"))
    found = {
        "bridge.__version__": bridge.__version__,
        "installed metadata": version("ryze-bridge"),
        "wheel METADATA": wheel_version,
        "Chart.yaml version, appVersion": chart_versions(CHART.read_text(encoding="utf-8")),
        "Dockerfile": tuple(docker),
        "CHANGELOG.md": changelog_version(CHANGELOG.read_text(encoding="utf-8")),
    }
    assert docker, "deploy/Dockerfile has no ARG VERSION default"
    assert found == {
        "bridge.__version__": expected,
        "installed metadata": expected,
        "wheel METADATA": expected,
        "Chart.yaml version, appVersion": (expected, expected),
        "Dockerfile": tuple(expected for _ in docker),
        "CHANGELOG.md": expected,
    }
