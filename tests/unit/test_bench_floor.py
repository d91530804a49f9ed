"""The scale part's read floor, its pure parts: what it counts, the lines it prints, the
bridge's CPU per event as a multiple of the floors', and the table beside the peer."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from bench.read_floor import TALLY, CountingConnection, parse_line
from bench.report import scale_rows, scale_table, vs_floor

FLOORS: dict[str, dict[str, Any]] = {
    "iter": {"seconds_to_all_connected": 9.5, "rss_idle_mb": 180.0, "idle_cpu_percent": 0.4,
             "events_per_second": 4990.0, "cpu_us_per_event": 42.0},
    "hook": {"seconds_to_all_connected": 9.1, "rss_idle_mb": 170.0, "idle_cpu_percent": 0.3,
             "events_per_second": 4995.0, "cpu_us_per_event": 28.0},
}  # fmt: skip
ENTRY: dict[str, Any] = {
    "instances": 5000, "seconds_to_all_connected": 6.9, "rss_idle_mb": 288.0,
    "idle_cpu_percent": 1.67, "events_per_second": 5008.0, "cpu_us_per_event": 169.0,
    "floor": FLOORS,
    "peer": {"seconds_to_all_connected": 50.8, "rss_mb": 396.0, "events_per_s": 5038.0,
             "cpu_us_per_event": 88.0, "cpu_idle": 0.0373},
}  # fmt: skip


async def test_the_hook_counts_data_frames_and_leaves_the_rest_to_the_library() -> None:
    """The handshake's answer (no opcode) still opens the connection, text and binary frames
    are counted and never queued, a ping is not counted."""
    connection = CountingConnection(ClientProtocol(parse_uri("ws://sim/ws/inst-000")))
    before = TALLY.count
    connection.process_event(Response(101, "Switching Protocols", Headers()))
    assert connection.response is not None
    for opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.PING):
        connection.process_event(Frame(opcode, b"{}"))
    assert TALLY.count - before == 2
    assert connection.response_rcvd.done()


def test_the_floor_s_lines_are_objects_of_integers() -> None:
    """The ready line and a count parse; anything else (a traceback line, a string, a
    boolean, a list) is refused."""
    assert parse_line(b'{"connected": 100, "failed": 0}\n') == {"connected": 100, "failed": 0}
    assert parse_line(b'{"count": 5}') == {"count": 5}
    for line in (b"Traceback (most recent call last):", b'{"count": "5"}', b'{"count": true}',
                 b"[1, 2]"):  # fmt: skip
        with pytest.raises(ValueError, match=r"."):
            parse_line(line)


def test_cpu_per_event_is_a_multiple_of_each_floor_s_to_a_tenth() -> None:
    """169 µs against floors of 42 and 28 µs is 4.0 and 6.0 times; a floor that failed, or a
    run that measured nothing, gives no ratio."""
    assert vs_floor(169.0, FLOORS) == {"iter": 4.0, "hook": 6.0}
    assert vs_floor(169.0, {"iter": {"error": "TimeoutError"}}) == {"iter": None}
    assert vs_floor(None, FLOORS) == {"iter": None, "hook": None}


def test_the_scale_table_puts_the_bridge_the_peer_and_the_floors_side_by_side() -> None:
    """One row each, the peer's idle CPU as % of a core, every cost as a multiple of both
    floors; without a peer its row is left out."""
    rows = {row["run"]: row for row in scale_rows(ENTRY)}
    assert list(rows) == [
        "bridge + shipper",
        "peer: benthos engine",
        "floor: websockets iter",
        "floor: websockets hook",
    ]
    assert rows["bridge + shipper"]["vs_floor"] == {"iter": 4.0, "hook": 6.0}
    assert rows["peer: benthos engine"]["vs_floor"] == {"iter": 2.1, "hook": 3.1}
    assert rows["peer: benthos engine"]["idle_cpu_percent"] == 3.73
    assert rows["floor: websockets hook"]["vs_floor"] == {"iter": 0.7, "hook": 1.0}
    lines = scale_table([ENTRY]).splitlines()
    assert lines[0].split()[-3:] == ["iter", "\N{MULTIPLICATION SIGN}", "hook"]
    assert lines[1].split()[-3:] == ["169.0", "4.0", "6.0"]
    assert len(scale_rows({**ENTRY, "peer": None})) == 3
