"""A real small filesystem for disk-full tests: a tmpfs mounted for the test, and a filler
file that takes every byte left on it."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

PAGE = 4096


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` (needs root) and unmounted afterwards. Where it
    cannot be mounted the test fails under CI=true and is skipped elsewhere, with the reason."""
    path.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
        problem = (done.stderr.strip() or f"exit {done.returncode}") if done.returncode else ""
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = str(exc)
    if problem:
        reason = f"cannot mount a {size} tmpfs (root needed): {problem}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield path
    finally:
        # never raised from here: it would hide the test's own error
        done = subprocess.run(["umount", "--lazy", str(path)], capture_output=True, check=False,
                              text=True, timeout=10)  # fmt: skip
        if done.returncode:
            warnings.warn(f"umount {path}: {done.stderr.strip()}", stacklevel=2)


def fill(path: Path) -> Path:
    """Write ``path`` until its filesystem is full (ENOSPC); returns it (delete it to free)."""
    chunk = b"\0" * PAGE
    with path.open("wb", buffering=0) as handle:
        for _ in range(1 << 20):  # bounded: 4 GiB at most
            try:
                handle.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return path
    raise AssertionError(f"{path}'s filesystem never filled")
