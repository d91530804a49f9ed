"""How the chart's API-server tests get their binaries, and that scripts/kube-tools.sh leaves
nothing behind: no lock held by an orphaned build, no build outliving scripts/test.sh.

The process tests run the real script with a stand-in ``go`` first on the PATH (a shell script
that sleeps where a build would compile), so that real signals, a real process group and a real
flock are exercised in seconds instead of a build of minutes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.kube_api import binaries

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "scripts" / "kube-tools.sh"
WAIT_SECONDS = 20.0
FAKE_GO = """#!/usr/bin/env bash
# A stand-in for go: `go build` runs for a minute (its pid in $FAKE_GO_PID); the rest succeeds.
case "$1" in
    build) echo $$ >"$FAKE_GO_PID"; exec sleep 60 ;;
    *) exit 0 ;;
esac
"""


def ended(pid: int) -> bool:
    """Whether a process is gone or a zombie (ended, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_for(condition: str, check: Callable[[], bool]) -> None:
    """Poll ``check`` until true, bounded."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"not within {WAIT_SECONDS} s: {condition}")


def lock_free(lock: Path) -> bool:
    """Whether the build lock can be taken right now (flock -n by another process)."""
    done = subprocess.run(["flock", "-n", str(lock), "true"], check=False, timeout=10)
    return done.returncode == 0


class Build:
    """scripts/kube-tools.sh etcd, its own process group, the stand-in go on its PATH."""

    def __init__(self, tmp: Path, parent: int | None = None) -> None:
        fake = tmp / "fakebin"
        fake.mkdir()
        (fake / "go").write_text(FAKE_GO, encoding="utf-8")
        (fake / "go").chmod(0o755)
        self.go_pid_file = tmp / "go.pid"
        self.lock = tmp / "cache" / "bin" / ".kube-tools.lock"
        env = {
            **os.environ,
            "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
            "RYZE_CACHE_DIR": str(tmp / "cache"),
            "FAKE_GO_PID": str(self.go_pid_file),
        }
        if parent is not None:
            env["RYZE_KUBE_TOOLS_PARENT"] = str(parent)
        self.proc = subprocess.Popen(
            ["bash", str(TOOLS), "etcd"], env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def go_pid(self) -> int:
        wait_for("go build started", lambda: self.go_pid_file.is_file() and self.size() > 0)
        return int(self.go_pid_file.read_text(encoding="utf-8"))

    def size(self) -> int:
        return self.go_pid_file.stat().st_size

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=WAIT_SECONDS)


def test_a_killed_script_leaves_the_lock_free(tmp_path: Path) -> None:
    """SIGKILL of kube-tools.sh alone (as subprocess.run's timeout does) while go builds: the
    lock is free at once; go never held the lock's descriptor."""
    build = Build(tmp_path)
    try:
        go = build.go_pid()
        assert not lock_free(build.lock)  # the script holds it while it builds
        build.proc.send_signal(signal.SIGKILL)
        build.proc.wait(timeout=WAIT_SECONDS)
        assert not ended(go)  # the orphaned go build still runs ...
        wait_for("the lock is free", lambda: lock_free(build.lock))  # ... without the lock
    finally:
        build.stop()


def test_the_build_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    """With RYZE_KUBE_TOOLS_PARENT set (as scripts/test.sh does), a SIGKILL of that parent —
    no trap of it runs — ends the build's whole process group, go included."""
    parent = subprocess.Popen(["sleep", "60"])
    build = Build(tmp_path, parent=parent.pid)
    try:
        go = build.go_pid()
        parent.kill()
        parent.wait(timeout=WAIT_SECONDS)
        wait_for("go build ended", lambda: ended(go))
        build.proc.wait(timeout=WAIT_SECONDS)
        assert lock_free(build.lock)
    finally:
        parent.kill()
        parent.wait(timeout=WAIT_SECONDS)
        build.stop()


def test_missing_binaries_fail_when_services_are_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BRIDGE_REQUIRE_SERVICES=1 (scripts/test.sh exports it) makes missing binaries a failure,
    not a skip, even without CI=true."""
    monkeypatch.setenv("RYZE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("BRIDGE_REQUIRE_SERVICES", "1")
    with pytest.raises(BaseException, match="kube-apiserver not built") as info:  # a skip too
        binaries()
    assert info.type is pytest.fail.Exception


def test_missing_binaries_skip_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run by hand (neither CI=true nor BRIDGE_REQUIRE_SERVICES=1), missing binaries skip the
    tests with a reason naming the command that builds them."""
    monkeypatch.setenv("RYZE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BRIDGE_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"scripts/kube-tools\.sh"):
        binaries()


def test_ci_runs_the_api_server_tests_last_after_the_build() -> None:
    """scripts/test.sh: the main pytest run does not collect the API-server tests; they run in
    a pytest run of their own after it, after waiting for the background build (whose failure
    fails the script), and before the soak."""
    lines = (ROOT / "scripts" / "test.sh").read_text(encoding="utf-8").splitlines()

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if line.strip().startswith(text))

    main = first('"${UV[@]}" run pytest --ignore="$KUBE_API_TESTS"')
    waited = next(i for i, line in enumerate(lines) if line.strip() == "wait_kube_tools")
    kube = first('"${UV[@]}" run pytest "$KUBE_API_TESTS"')  # with keep_outputs' arguments
    soak = next(i for i, line in enumerate(lines) if "bash scripts/soak.sh" in line)
    assert main < waited < kube < soak
    assert any(line.strip() == "KUBE_API_TESTS=tests/deploy/test_kube_api.py" for line in lines)
