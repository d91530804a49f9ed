"""The bridge raises its open-files soft limit to the hard one at start (a socket per
instance: 1,024 descriptors is short of a fleet), says so, and warns with the numbers when even
the hard limit is short of what the configured instances need. The raise runs in a process of
its own started with a low soft limit, so the test runner's limit is left alone."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest
import structlog

from bridge.cli import report_file_limit
from bridge.fdlimit import HEADROOM, UNLIMITED_CAP, FileLimit, files_needed, target_soft

SCRIPT = """
import json, resource
from bridge.fdlimit import raise_soft_limit
limit = raise_soft_limit()
print(json.dumps({"soft": limit.soft, "hard": limit.hard, "was": limit.raised_from,
                  "now": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}))
"""


def _low_soft_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


def test_soft_limit_is_raised_to_the_hard_one() -> None:
    """A process started with a soft limit of 256 runs with its hard limit after the raise,
    and reports what it was raised from."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("the hard limit leaves nothing to raise")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        preexec_fn=_low_soft_limit,
    )
    found = json.loads(done.stdout)
    assert found["was"] == 256
    assert found["now"] == found["soft"] == target_soft(256, hard)
    assert found["soft"] > 256


def test_target_is_the_hard_limit_or_a_cap_when_unlimited() -> None:
    """The soft limit asked for is the hard one; an unlimited hard limit asks for the cap; a
    soft limit already there is kept."""
    assert target_soft(1024, 65536) == 65536
    assert target_soft(65536, 65536) == 65536
    assert target_soft(1024, resource.RLIM_INFINITY) == UNLIMITED_CAP
    assert target_soft(resource.RLIM_INFINITY, resource.RLIM_INFINITY) == resource.RLIM_INFINITY


def test_short_limit_warns_with_the_numbers() -> None:
    """5,000 instances under a 4,096 limit: one warning naming the limit, the hard limit and
    what is needed; a raise that leaves room is said at info level, nothing else."""
    with structlog.testing.capture_logs() as logs:
        report_file_limit(FileLimit(4096, 4096), 5000)
        report_file_limit(FileLimit(65536, 65536, raised_from=1024), 5000)
        report_file_limit(FileLimit(65536, 65536), 5000)
    assert [entry["event"] for entry in logs] == [
        "process.open_files_short",
        "process.open_files_raised",
    ]
    assert logs[0]["limit"] == 4096
    assert logs[0]["needed"] == files_needed(5000) == 5000 + HEADROOM
    assert logs[1]["was"] == 1024
