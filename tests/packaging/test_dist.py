"""``uv build``: a wheel and an sdist with complete metadata; the sdist builds a working wheel."""

from __future__ import annotations

import shutil
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.packaging.conftest import Dist
from tests.packaging.tools import PYPROJECT, ROOT, metadata, run, uv, uv_env

INSTALL_SECONDS = 300
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2 * INSTALL_SECONDS)]


def wheel_metadata(wheel: Path) -> tuple[str, list[str]]:
    """The wheel's METADATA text and its file names."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        return archive.read(meta).decode("utf-8"), names


def sdist_members(sdist: Path) -> dict[str, bytes | None]:
    """The sdist's members by path below its top folder; file contents for PKG-INFO only."""
    members: dict[str, bytes | None] = {}
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            path = member.name.split("/", 1)[1] if "/" in member.name else ""
            extracted = archive.extractfile(member) if path == "PKG-INFO" else None
            members[path] = extracted.read() if extracted is not None else None
    return members


def check_metadata(text: str) -> None:
    """Everything an index page and a license scanner need, and what pyproject.toml says."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    meta = metadata(text)
    assert meta["Name"] == "ryze-bridge"
    assert meta["Version"] == project["version"]
    assert meta["Summary"] == project["description"]
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["Author"]
    assert meta["Maintainer"]
    assert {"kafka", "redis", "websocket", "ryzeapi"} <= set(meta["Keywords"].split(","))
    urls = meta.get_all("Project-URL") or []
    assert any(url.startswith("Homepage, https://") for url in urls), urls
    classifiers = meta.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert "Typing :: Typed" in classifiers
    assert meta["Description-Content-Type"] == "text/markdown"
    assert str(meta.get_payload()).startswith("# ryze-bridge\n")
    requires = {str(Requirement(r)) for r in meta.get_all("Requires-Dist") or []}
    assert requires == {str(Requirement(d)) for d in project["dependencies"]}


def test_wheel_has_complete_metadata(dist: Dist) -> None:
    """The wheel's METADATA carries the license (expression and file), URLs, classifiers, the
    README, authors, keywords, requires-python and exactly the project's dependencies."""
    text, _ = wheel_metadata(dist.wheel)
    check_metadata(text)


def test_wheel_contents(dist: Dist) -> None:
    """The wheel has the package with its py.typed marker, the license file and the
    ryze-bridge command; no tests, benchmark or soak code."""
    _, names = wheel_metadata(dist.wheel)
    assert "bridge/py.typed" in names
    assert "bridge/cli.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert {n.split("/", 1)[0] for n in names if not n.startswith("ryze_bridge-")} == {"bridge"}
    with zipfile.ZipFile(dist.wheel) as archive:
        entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "ryze-bridge = bridge.cli:main" in archive.read(entry).decode("utf-8")


def test_sdist_has_complete_metadata_and_no_local_state(dist: Dist) -> None:
    """The sdist's PKG-INFO is as complete as the wheel's; it carries the license, lock file
    and tests, and none of a checkout's local state (.venv, .services, caches, .git)."""
    members = sdist_members(dist.sdist)
    pkg_info = members["PKG-INFO"]
    assert pkg_info is not None
    check_metadata(pkg_info.decode("utf-8"))
    assert {"LICENSE", "README.md", "pyproject.toml", "uv.lock", "bridge/py.typed"} <= set(members)
    assert any(path.startswith("tests/") for path in members)
    local = (".venv/", ".services/", ".mypy_cache/", ".ruff_cache/", ".git/", "ryze-demo/")
    assert [p for p in members if p.startswith(local)] == []


def test_sdist_builds_a_working_wheel(dist: Dist, tmp_path: Path) -> None:
    """The sdist, unpacked alone, builds a wheel that installs into a fresh environment and
    whose ryze-bridge command runs."""
    with tarfile.open(dist.sdist) as archive:
        archive.extractall(tmp_path / "src", filter="data")
    (source,) = (tmp_path / "src").iterdir()
    out = tmp_path / "out"
    env = uv_env()
    build = [uv(), "build", "--quiet", "--wheel", "--out-dir", str(out), str(source)]
    run(build, env=env, timeout=INSTALL_SECONDS)
    (wheel,) = out.glob("*.whl")
    venv = tmp_path / "venv"
    run([uv(), "venv", "--quiet", str(venv)], env=env, timeout=60)
    install = [uv(), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python")]
    run([*install, str(wheel)], env=env, timeout=INSTALL_SECONDS)
    command = tmp_path / "venv" / "bin" / "ryze-bridge"
    out_text = run([str(command), "--version"], cwd=tmp_path, timeout=60)
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    assert out_text.strip() == f"ryze-bridge {project['version']}"


# Files a checkout may hold that must never ship: planted in a copy of the sources.
PLANTED = (
    ".env",
    "kubeconfig",
    "admin.pem",
    "scratch/notes.txt",
    "bridge/.env",
    "bridge/tls.key",
    "tests/kubeconfig.yaml",
    "docs/client.p12",
)


def sdist_allow_list() -> set[str]:
    """The top-level entries pyproject.toml lets into the sdist."""
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    entries: list[str] = config["tool"]["hatch"]["build"]["targets"]["sdist"]["only-include"]
    return set(entries)


def test_sdist_holds_only_its_allow_list(dist: Dist) -> None:
    """Every sdist member is PKG-INFO, hatchling's .gitignore, or under an entry of the
    [tool.hatch.build.targets.sdist] allow-list: no scripts, chart, examples or benchmark."""
    allowed = sdist_allow_list() | {"PKG-INFO", ".gitignore"}
    outside = [p for p in sdist_members(dist.sdist) if p and p.split("/", 1)[0] not in allowed]
    assert outside == []


def test_sdist_leaves_out_secrets_a_checkout_may_hold(tmp_path: Path) -> None:
    """A copy of the sources with a .env, a kubeconfig, keys and a scratch folder planted (not
    ignored by git) builds an sdist without any of them, nor anything outside the allow-list."""
    source = tmp_path / "src"
    for entry in sdist_allow_list():
        origin = ROOT / entry
        if origin.is_dir():
            shutil.copytree(origin, source / entry, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(origin, source / entry)
    for planted in PLANTED:
        (source / planted).parent.mkdir(parents=True, exist_ok=True)
        (source / planted).write_text("secret\n", encoding="utf-8")
    out = tmp_path / "out"
    build = [uv(), "build", "--quiet", "--sdist", "--out-dir", str(out), str(source)]
    run(build, env=uv_env(), timeout=INSTALL_SECONDS)
    (sdist,) = out.glob("*.tar.gz")
    members = sdist_members(sdist)
    assert [p for p in PLANTED if p in members] == []
    assert "bridge/cli.py" in members
