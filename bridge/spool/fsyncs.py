"""The spool's background fsyncs, on a thread of their own.

A disk whose fsync hangs must not take the event loop's default thread pool with it (the
file sink and name resolution use it), nor pile up jobs without end: one dedicated thread,
at most one job outstanding; requests made meanwhile (segment files to fsync, the directory)
are gathered into the next job. :attr:`FsyncQueue.stuck_for` says how long the job now
running has been waiting, for readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bridge.spool.files import fsync_directory


@dataclass
class Job:
    """What one job fsyncs: duplicates of segment descriptors (closed after), a directory."""

    descriptors: list[int] = field(default_factory=list)
    directory: Path | None = None
    done: list[Callable[[], None]] = field(default_factory=list)


def run_job(job: Job) -> OSError | None:
    """fsync everything ``job`` holds, close its descriptors; the first error (pure I/O)."""
    error: OSError | None = None
    for descriptor in job.descriptors:
        try:
            os.fsync(descriptor)
        except OSError as exc:
            error = error or exc
        finally:
            with contextlib.suppress(OSError):  # a close that fails must not end the job
                os.close(descriptor)
    if job.directory is not None:
        try:
            fsync_directory(job.directory)
        except OSError as exc:
            error = error or exc
    return error


def job_error(future: asyncio.Future[OSError | None]) -> OSError | None:
    """What a finished job reports: its fsync error, or what it raised as an OSError."""
    if future.cancelled():
        return None
    raised = future.exception()
    if raised is None:
        return future.result()
    return raised if isinstance(raised, OSError) else OSError(f"fsync job failed: {raised!r}")


class FsyncQueue:
    def __init__(self, on_result: Callable[[OSError | None], None]) -> None:
        self._on_result = on_result
        self._executor: ThreadPoolExecutor | None = None
        self._next = Job()
        self._running_since: float | None = None
        self._closed = False

    @property
    def stuck_for(self) -> float:
        """Seconds the job now running has been going (0: none is)."""
        if self._running_since is None:
            return 0.0
        return time.monotonic() - self._running_since

    @property
    def busy(self) -> bool:
        return self._running_since is not None

    def file(self, descriptor: int, done: Callable[[], None] | None = None) -> None:
        """fsync ``descriptor``'s file (a duplicate of it is taken; raises OSError when even
        that fails); ``done`` is called in the loop once it is (nothing once closed)."""
        if self._closed:
            return
        self._next.descriptors.append(os.dup(descriptor))
        if done is not None:
            self._next.done.append(done)
        self._kick()

    def directory(self, path: Path) -> None:
        self._next.directory = path
        self._kick()

    def _kick(self) -> None:
        if self._running_since is not None or self._closed:
            return  # gathered into the next job, started when this one ends
        job, self._next = self._next, Job()
        if not job.descriptors and job.directory is None:
            return
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="spool-fsync")
        self._running_since = time.monotonic()
        future = loop.run_in_executor(self._executor, run_job, job)
        future.add_done_callback(lambda done: self._finished(done, job))

    def _finished(self, future: asyncio.Future[OSError | None], job: Job) -> None:
        """The job ended: its result reported, its callbacks run and the next job started,
        whatever the job raised (an fsync queue that stops would stop fsyncs for good)."""
        self._running_since = None
        try:
            self._on_result(job_error(future))
        finally:
            for done in job.done:
                done()
            self._kick()

    def close(self) -> None:
        """Stop the thread once its job is done (never waits for a hung one); what is still
        gathered is fsynced here, now (errors reported like the thread's)."""
        self._closed = True
        job, self._next = self._next, Job()
        if job.descriptors or job.directory is not None:
            self._on_result(run_job(job))
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
