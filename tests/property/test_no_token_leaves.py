"""No token on any path, as a property: for any frame an upstream may send — valid JSON of
any shape, cut short, invalid UTF-8, duplicate keys, escaped key spellings, the token inside
texts, URLs and nested objects — in configured and in discovery mode, the token is in none of
what the bridge makes of it: the published or dead-lettered value, its key, its headers
(DLQ reason and error included), the spool's bytes on disk or the log lines (the metrics'
labels are checked by the one test that runs fixed frames: rendering them per example would
cost more than the rest).

Each frame goes through a real :class:`Runner` (pipeline, logging, metrics) into a real
:class:`DiskSpool` in a temporary directory, as a frame read off a socket does."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from pydantic import SecretStr

from bridge.logs import configure_logging
from bridge.masking import SecretIndex
from bridge.metrics import create_metrics
from bridge.pipeline import Frame, Record
from bridge.pipeline.tokens import unescape
from bridge.runner import Runner, RunnerContext
from bridge.settings import InstanceSettings, Settings, UpstreamSettings
from bridge.spool.disk import DiskSpool
from bridge.upstream.ratelimit import BucketRegistry
from bridge.wiring import build_pipeline
from tests.property.frames import frames, tokens

# 500 examples of a property take ~15 s of CPU; a shared machine may stretch that past the
# suite's default 120 s.
pytestmark = pytest.mark.timeout(300)
INSTANCE = "shop"
SETTINGS = Settings.model_validate({"sink": {"kind": "redis"}})


@dataclass
class Outcome:
    """Everything the bridge made of some frames, as bytes to search."""

    records: list[Record]
    spool: bytes
    logs: bytes
    metrics: bytes = b""

    def blobs(self) -> Iterator[tuple[str, bytes]]:
        for n, record in enumerate(self.records):
            yield f"record {n} value", record.value
            yield f"record {n} key", record.key or b""
            yield f"record {n} destination", record.destination.encode()
            for name, value in record.headers():
                yield f"record {n} header {name}", value
        yield "spool files", self.spool
        yield "log lines", self.logs
        yield "metrics", self.metrics


def spellings(token: str) -> set[bytes]:
    """The token's bytes, and as JSON (compact and ASCII-escaped) writes it."""
    return {token.encode(), orjson.dumps(token)[1:-1], repr(token)[1:-1].encode()}


def leaks(outcome: Outcome, secrets: list[str]) -> list[str]:
    """Where a token shows: raw, JSON-escaped, or spelled with escapes a JSON reader reads."""
    found: list[str] = []
    for where, blob in outcome.blobs():
        read = unescape(blob)
        found.extend(
            f"{where}: {blob[:300]!r}"
            for secret in secrets
            if any(form in blob for form in spellings(secret)) or secret.encode() in read
        )
    return found


class CollectingSpool(DiskSpool):
    """The real disk spool; what it was given is kept too, to inspect every header."""

    given: list[Record]

    def append_all(self, records):  # type: ignore[no-untyped-def]
        self.given.extend(records)
        return super().append_all(records)


@contextmanager
def bridge_runner(socket_token: str) -> Iterator[tuple[Runner, CollectingSpool, io.StringIO]]:
    """A runner of ``shop`` whose socket authenticates with ``socket_token`` (the instance's
    own when configured, the account's in discovery mode), on a disk spool in a temporary
    directory, logging JSON into a string."""
    logs = io.StringIO()
    configure_logging("debug", "json", stream=logs)
    instance = InstanceSettings(token=SecretStr(socket_token))
    with tempfile.TemporaryDirectory() as tmp:
        spool = CollectingSpool(Path(tmp), 1 << 26, "drop_newest", "never")
        spool.given = []
        spool.open()
        ctx = RunnerContext(
            upstream=UpstreamSettings(),
            spool=spool,
            metrics=create_metrics(),
            buckets=BucketRegistry(per_minute=100),
            rest_factory=lambda *_: None,  # type: ignore[arg-type]
            environ={},
        )
        pipeline = build_pipeline(SETTINGS, instance, SecretIndex(b"***"))  # nothing carried over
        runner = Runner(INSTANCE, instance, pipeline, ctx)
        try:
            yield runner, spool, logs
        finally:
            spool.close()


def run(socket_token: str, raws: list[bytes], metrics: bool = False) -> Outcome:
    """The frames read off the socket one after the other, and all the bridge made of them."""
    with bridge_runner(socket_token) as (runner, spool, logs):
        for n, raw in enumerate(raws):
            runner.handle_all([Frame(INSTANCE, raw, 1_700_000_000_000_000_000 + n)])
        spool.close()
        stored = b"".join(p.read_bytes() for p in sorted(Path(spool.directory).iterdir()))
        return Outcome(
            spool.given,
            stored,
            logs.getvalue().encode(),
            generate_latest(runner.metrics.registry) if metrics else b"",
        )


def carrying(token: str) -> bytes:
    """An ordinary frame of the instance, carrying its token where the upstream puts it."""
    return orjson.dumps({"event": "label.update", "data": {}, "instanceData": {"token": token}})


@given(token=tokens, data=st.data())
def test_configured_mode_no_token_in_anything_made_of_a_frame(
    token: str, data: st.DataObject
) -> None:
    """Configured mode: the socket uses the instance token; any frame (the token anywhere in
    it) leaves no trace of the token."""
    raw = data.draw(frames(token))
    outcome = run(token, [raw])
    assert leaks(outcome, [token]) == []


@given(token=tokens, account=tokens, data=st.data())
def test_discovery_mode_no_token_once_the_instance_token_was_seen(
    token: str, account: str, data: st.DataObject
) -> None:
    """Discovery mode: the socket uses the account token; once the instance token came in a
    frame's ``instanceData``, any later frame holding either token anywhere leaves no trace."""
    raw = data.draw(frames(token))
    outcome = run(account, [carrying(token), raw])
    assert leaks(outcome, [token, account]) == []


@given(token=tokens, account=tokens, data=st.data())
def test_discovery_mode_a_first_frame_never_leaks_its_token_member(
    token: str, account: str, data: st.DataObject
) -> None:
    """Discovery mode, the first frame of an instance (its token not known yet): the token
    carried as a ``token`` member — whatever the frame's shape, damage or key spelling —
    never leaves, nor does the account token pasted anywhere."""
    raw = data.draw(frames(token, pasted=False))
    outcome = run(account, [raw])
    assert leaks(outcome, [token, account]) == []


@pytest.mark.parametrize("mode", ["configured", "discovery"])
def test_the_leak_check_finds_a_token_left_in(mode: str) -> None:
    """Fixed frames (one ordinary, one with the token as its event name, one cut short) leave
    no token in anything, the metrics included; and the check can fail: a token pasted into
    what the bridge wrote is found, raw or spelled with escapes."""
    token = "abcd~efgh"
    raws = [carrying(token), b'{"event":"' + token.encode() + b'"}', b"[" + carrying(token)]
    outcome = run(token if mode == "configured" else "acct~0000", raws, metrics=True)
    assert leaks(outcome, [token]) == []
    assert b"ryze_bridge_events_received_total{" in outcome.metrics
    outcome.logs += b'"\\u0061bcd~efgh"'
    assert leaks(outcome, [token]) != []
