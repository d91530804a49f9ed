"""The upstream-lag estimate (bridge.pipeline.sourcetime): the frame's own time is read from
data.message or data, as ISO-8601 or a Unix time in any of four units, and anything odd or
absurd gives no estimate instead of an exception."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

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


@pytest.mark.parametrize("value", ["²", "1²", "١٢٣", str(NOW_S)[:-1] + "²", 10**400, -(10**400)])
def test_non_ascii_digits_and_huge_integers_read_as_nothing(value: object) -> None:
    """A superscript or Arabic-Indic digit (str.isdigit is true, float() refuses it) and an
    integer beyond a float's range give no time instead of ValueError/OverflowError."""
    assert epoch_seconds(value) is None
    member = orjson.dumps(value) if isinstance(value, str) else str(value).encode()
    raw = b'{"data":{"timestamp":' + member + b"}}"
    assert upstream_lag(raw, NOW_NS) is None


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
_DIGITS = st.text(
    st.characters(categories=["Nd", "No"]) | st.sampled_from("0123456789."), max_size=40
)
_HUGE = st.integers(min_value=10**300, max_value=10**600).flatmap(
    lambda n: st.sampled_from([n, -n])
)
_TIMES = _DIGITS | _HUGE | st.integers() | st.text(max_size=45) | st.floats() | _JSON


@given(raw=st.binary(max_size=200), received_ns=st.integers(min_value=0, max_value=2**63))
def test_upstream_lag_never_raises_on_arbitrary_bytes(raw: bytes, received_ns: int) -> None:
    """Any bytes at all: a lag in bounds or None, never an exception."""
    lag = upstream_lag(raw, received_ns)
    assert lag is None or 0.0 <= lag <= 86_400.0


@given(
    time=_TIMES,
    where=st.sampled_from(["data", "message"]),
    key=st.sampled_from(["timestamp", "moment"]),
)
def test_upstream_lag_never_raises_on_arbitrary_time_members(
    time: object, where: str, key: str
) -> None:
    """Any JSON value (huge integers, odd texts, Unicode digits) where the time is read: a lag
    in bounds or None, never an exception."""
    data: dict[str, object] = {key: time} if where == "data" else {"message": {key: time}}
    raw = json.dumps({"event": "x", "data": data}).encode()  # orjson refuses huge integers
    lag = upstream_lag(raw, NOW_NS)
    assert lag is None or 0.0 <= lag <= 86_400.0
