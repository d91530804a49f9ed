"""The upstream-lag estimate (bridge.pipeline.sourcetime): the frame's own time is read from
data.message or data, as ISO-8601 or a Unix time in any of four units, and anything odd or
absurd gives no estimate instead of an exception."""

from __future__ import annotations

import orjson
import pytest

from bridge.pipeline.sourcetime import epoch_seconds, source_time, upstream_lag

NOW_S = 1_796_000_000  # 2026-11-30
NOW_NS = NOW_S * 1_000_000_000


def frame(data: object) -> bytes:
    return orjson.dumps({"event": "message.exchange", "data": data, "instanceData": {}})


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-30T00:53:20Z",
        "2026-11-30T00:53:20.000000+00:00",
        "2026-11-30T00:53:20",  # no zone: UTC
        NOW_S,
        NOW_S * 1000,
        NOW_S * 1_000_000,
        NOW_NS,
        str(NOW_S * 1000),
        float(NOW_S),
    ],
)
def test_every_usual_time_shape_reads_as_the_same_unix_second(value: object) -> None:
    """ISO-8601 with or without a zone, and s/ms/µs/ns numbers or digits, are one time."""
    assert epoch_seconds(value) == pytest.approx(NOW_S)


@pytest.mark.parametrize(
    "value",
    [None, True, "", "yesterday", "x" * 100, [1], {"a": 1}, -5, 0, "nan", "1e999", float("inf")],
)
def test_odd_time_members_read_as_nothing(value: object) -> None:
    """Another type, a text that is no time, a huge text, a non-positive or non-finite
    number: None."""
    assert epoch_seconds(value) is None


def test_the_message_time_comes_first_then_the_data_time() -> None:
    """data.message.timestamp (catalog), else data.timestamp (live layout), else
    data.moment; a message that is not an object leaves data's own time."""
    both = frame({"timestamp": 1, "message": {"timestamp": 2}})
    assert source_time(both) == 2
    assert source_time(frame({"timestamp": 1, "message": {"id": "x"}})) == 1
    assert source_time(frame({"moment": 3})) == 3
    assert source_time(frame({"timestamp": 4, "message": "text"})) == 4


@pytest.mark.parametrize(
    "raw", [b"not json", b"[1,2]", b'{"data": 5}', b'{"data": {"message": [1]}}', b"{}"]
)
def test_frames_of_odd_shapes_have_no_time_and_never_raise(raw: bytes) -> None:
    """Malformed JSON, a non-object frame or data, a list as message: None."""
    assert source_time(raw) is None
    assert upstream_lag(raw, NOW_NS) is None


def test_lag_is_receipt_minus_the_frame_s_time_within_bounds() -> None:
    """2.5 s late reads 2.5; slightly ahead (clock skew) reads 0; a day old or far ahead
    is not lag (a fixture's fixed time, a replay, a wrong clock) and reads None."""
    sent_ms = NOW_S * 1000 - 2500
    assert upstream_lag(frame({"timestamp": sent_ms}), NOW_NS) == pytest.approx(2.5)
    assert upstream_lag(frame({"timestamp": NOW_S + 1}), NOW_NS) == 0.0
    assert upstream_lag(frame({"timestamp": NOW_S - 2 * 86_400}), NOW_NS) is None
    assert upstream_lag(frame({"timestamp": NOW_S + 60}), NOW_NS) is None
