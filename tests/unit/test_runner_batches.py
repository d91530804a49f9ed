"""A runner's batch of frames (bridge.runner.Runner.handle_all): a batch the bridge itself
fails on is counted as dropped with reason ``internal_error``, a bad timestamp never raises,
and the upstream lag is estimated from the batch's oldest frame, skipping frames over 64 KiB."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from bridge.errors import SpoolError
from bridge.metrics import create_metrics, init_instance
from bridge.pipeline import Frame, Pipeline, Router
from bridge.runner import Runner, RunnerContext
from bridge.settings import InstanceSettings, UpstreamSettings
from bridge.spool.disk import DiskSpool
from bridge.upstream.ratelimit import BucketRegistry, TokenBucket
from bridge.upstream.rest import RestClient
from tests.unit.spools import disk_spool

NOW_S = 1_796_000_000


def no_rest(token: SecretStr, bucket: TokenBucket) -> RestClient:
    raise AssertionError("handle_all makes no REST call")


def runner(registry: CollectorRegistry, spool: DiskSpool) -> Runner:
    metrics = create_metrics(registry, per_instance="all")
    init_instance(metrics, "inst-1")
    ctx = RunnerContext(
        upstream=UpstreamSettings(),
        spool=spool,
        metrics=metrics,
        buckets=BucketRegistry(per_minute=60),
        rest_factory=no_rest,
        environ={},
    )
    pipeline = Pipeline(Router("ryze.{instance}.{event}", "instance"), "ryze.dlq", 1_000_000)
    return Runner("inst-1", InstanceSettings(token=SecretStr("t")), pipeline, ctx)


def frame(sent_s: float, received_s: float, pad: int = 0) -> Frame:
    data = {"timestamp": sent_s, "message": {"id": "m", "pad": "x" * pad}}
    raw = orjson.dumps({"event": "message.exchange", "data": data, "instanceData": {}})
    return Frame("inst-1", raw, int(received_s * 1e9))


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_a_batch_the_spool_fails_on_is_counted_as_internal_error_then_raised(
    tmp_path: Path,
) -> None:
    """The spool gone under the runner (closed here): every frame of the batch whose append
    failed is counted received and dropped (internal_error); the failure is raised to the
    next batch, which is counted the same way before the SpoolError ends the runner (the
    fleet restarts it), so none of them vanishes uncounted and none is counted twice."""
    registry = CollectorRegistry()
    spool = disk_spool(tmp_path)
    spool.close()
    run = runner(registry, spool)
    labels = {"ryze_instance": "inst-1"}

    def counted() -> tuple[float, float]:
        dropped = sample(
            registry, "ryze_bridge_events_dropped_total", **labels, reason="internal_error"
        )
        received = sum(  # the first batch under its event, the raised one under "other"
            sample(registry, "ryze_bridge_events_received_total", **labels, event=event)
            for event in ("message.exchange", "other")
        )
        return dropped, received

    run.handle_all([frame(NOW_S, NOW_S + 1), frame(NOW_S, NOW_S + 1)])
    assert counted() == (2, 2)
    with pytest.raises(SpoolError):
        run.handle_all([frame(NOW_S, NOW_S + 1)])
    assert counted() == (3, 3)


def test_a_bad_timestamp_does_not_raise_out_of_a_batch(tmp_path: Path) -> None:
    """A frame stamped with a superscript digit or a 400-digit integer is spooled and the
    runner goes on (no lag observed for it)."""
    registry = CollectorRegistry()
    spool = disk_spool(tmp_path)
    raws = [
        b'{"event":"x","data":{"timestamp":"\xc2\xb2"}}',
        b'{"data":{"timestamp":' + b"9" * 400 + b"}}",
    ]
    run = runner(registry, spool)
    for raw in raws:
        run.handle_all([Frame("inst-1", raw, NOW_S * 10**9)])
    assert sample(registry, "ryze_bridge_upstream_lag_seconds_count") == 0
    spool.close()


def test_the_lag_is_measured_on_the_batch_s_oldest_frame(tmp_path: Path) -> None:
    """A batch whose first frame was sent 30 s before receipt and whose last 1 s before is
    observed once, as 30 s (the frame that waited longest), not 1 s."""
    registry = CollectorRegistry()
    spool = disk_spool(tmp_path)
    runner(registry, spool).handle_all([frame(NOW_S - 30, NOW_S), frame(NOW_S - 1, NOW_S)])
    assert sample(registry, "ryze_bridge_upstream_lag_seconds_count") == 1
    assert sample(registry, "ryze_bridge_upstream_lag_seconds_sum") == 30
    spool.close()


def test_a_frame_over_64_kib_gives_no_lag_estimate(tmp_path: Path) -> None:
    """The oldest frame weighing more than 64 KiB is not decoded again for its time: no
    estimate for that batch."""
    registry = CollectorRegistry()
    spool = disk_spool(tmp_path)
    runner(registry, spool).handle_all([frame(NOW_S - 5, NOW_S, pad=70_000)])
    assert sample(registry, "ryze_bridge_upstream_lag_seconds_count") == 0
    spool.close()
