"""The container image definition: hadolint-clean, and its install steps, run here into a
clean virtual environment, give a working `ryze-bridge` without dev dependencies."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from bridge.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def test_dockerfile_passes_hadolint() -> None:
    """hadolint finds nothing to complain about in deploy/Dockerfile."""
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def build_stage_steps() -> tuple[list[list[str]], list[str]]:
    """The build stage's COPY sources and `uv sync` commands, as the Dockerfile writes them."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    build = text.split("\nFROM ", 2)[1]
    copies = [  # what lands in the project's directory (not uv's requirements, copied to /tmp)
        line.split()[1:-1]
        for line in build.splitlines()
        if line.startswith("COPY ") and not line.split()[-1].startswith("/")
    ]
    syncs = [m.group(1) for m in re.finditer(r"^RUN (python -m uv sync .*)$", build, re.M)]
    return copies, syncs


def test_image_install_steps_work_in_a_clean_venv(tmp_path: Path) -> None:
    """Copying what the Dockerfile copies and running its `uv sync` steps gives an
    environment where `ryze-bridge --help` works and no dev tool is installed."""
    copies, syncs = build_stage_steps()
    assert syncs
    assert all("--locked" in s and "--no-dev" in s for s in syncs)
    source = tmp_path / "src"
    source.mkdir()
    for sources in copies:
        for name in sources:
            origin = ROOT / name
            if origin.is_dir():
                shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, source / name)
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_LINK_MODE": "copy"}
    env.pop("VIRTUAL_ENV", None)
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` tells its children where it is
    assert uv, "uv not found"
    for command in syncs:
        args = [uv, *command.split()[3:]]  # "python -m uv sync …" → "uv sync …"
        result = subprocess.run(
            args, cwd=source, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert result.returncode == 0, result.stderr
    help_text = subprocess.run(
        [str(venv / "bin" / "ryze-bridge"), "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "check-config" in help_text
    assert not list((venv / "lib").glob("python*/site-packages/pytest"))
    assert not list((venv / "lib").glob("python*/site-packages/mypy"))


def test_compose_stack_is_well_formed() -> None:
    """deploy/compose.yaml parses and wires the bridge to Kafka and the simulator, with the
    bridge config it carries accepted by the settings."""
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text(encoding="utf-8"))
    assert {"kafka", "redis", "simulator", "bridge", "prometheus"} <= set(compose["services"])
    bridge_config = yaml.safe_load(compose["configs"]["bridge"]["content"])
    Settings.model_validate(bridge_config)


def test_compose_publishes_ports_on_loopback_only() -> None:
    """Every port the compose stack publishes (the bridge's admin without a token, Prometheus,
    the simulator) is bound to 127.0.0.1, never to every interface of the host."""
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text(encoding="utf-8"))
    published = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert published
    assert all(str(p).startswith("127.0.0.1:") for p in published), published


REQUIREMENTS = ROOT / "deploy" / "uv-requirements.txt"
DIGEST = re.compile(r"^[a-z0-9./-]+:[A-Za-z0-9._-]+@sha256:[0-9a-f]{64}$")


def base_images() -> list[str]:
    """Every stage's base image, with ``${ARG}`` references resolved to the ARG's default."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    images = [m.group(1) for m in re.finditer(r"^FROM (\S+)", text, re.M)]
    return [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image) for image in images]


def test_every_base_image_is_pinned_by_digest() -> None:
    """Each FROM names its image by tag *and* sha256 digest, so a re-pushed tag cannot change
    what is built."""
    images = base_images()
    assert len(images) == 2
    assert all(DIGEST.match(image) for image in images), images


def test_uv_is_installed_from_hashed_requirements(tmp_path: Path) -> None:
    """The build stage installs uv only with pip --require-hashes from
    deploy/uv-requirements.txt, which pins scripts/bootstrap.sh's uv version with sha256
    hashes; installing from that file (hashes checked against the wheel really served) works."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    installs = re.findall(r"^RUN .*pip install.*$", text, re.M)
    assert installs == [
        "RUN python -m pip install --require-hashes --no-deps -r /tmp/uv-requirements.txt"
    ]
    assert "COPY deploy/uv-requirements.txt /tmp/uv-requirements.txt" in text
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text(encoding="utf-8")
    version = re.search(r'UV_VERSION="\$\{UV_VERSION:-([0-9.]+)\}"', bootstrap)
    assert version
    requirements = REQUIREMENTS.read_text(encoding="utf-8")
    assert f"uv=={version.group(1)} \\" in requirements
    hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", requirements)
    assert len(hashes) >= 2
    assert len(set(hashes)) == len(hashes)
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv not found"
    result = subprocess.run(
        [uv, "pip", "install", "--require-hashes", "--no-deps", "-r", str(REQUIREMENTS),
         "--target", str(tmp_path / "target"), "--python", sys.executable],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "target" / f"uv-{version.group(1)}.dist-info").is_dir()
