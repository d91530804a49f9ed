"""The shipper's link to the main process: what it counts arrives in the main process's
metrics unchanged, and nothing it is given or inherits carries an instance token."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from prometheus_client import CollectorRegistry, generate_latest

from bridge.metrics import (
    apply_sink_side,
    create_metrics,
    observe_all,
    sink_side_changes,
    sink_side_values,
)
from bridge.settings import Settings
from bridge.shipper.link import frame, receive
from bridge.shipper.parent import init_message, shipper_environment

SINK_LINES = ("events_published", "publish_latency", "publish_errors", "sink_up", "dlq_records")


def sink_lines(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return sorted(
        line
        for line in text.splitlines()
        if not line.startswith("#") and any(name in line for name in SINK_LINES)
    )


def test_what_the_shipper_counts_reaches_the_main_process_unchanged() -> None:
    """Counters, the sink_up gauge and the latency histogram (buckets and sum), carried
    over in two reports, read the same in the main process as in the shipper."""
    shipper = create_metrics()
    main = create_metrics()
    before = sink_side_values(shipper)
    shipper.events_published.labels("kafka", "ryze.a").inc(5)
    shipper.sink_up.labels("kafka").set(1)
    observe_all(shipper.publish_latency.labels("kafka"), [0.002, 0.003, 0.2, 7.0])
    middle = sink_side_values(shipper)
    apply_sink_side(main, sink_side_changes(before, middle))
    shipper.events_published.labels("kafka", "ryze.a").inc(2)
    shipper.publish_errors.labels("kafka", "SinkUnavailableError").inc()
    shipper.sink_up.labels("kafka").set(0)
    shipper.dlq_records.labels("too_large").inc()
    observe_all(shipper.publish_latency.labels("kafka"), [0.0004, 45.0])
    apply_sink_side(main, sink_side_changes(middle, sink_side_values(shipper)))
    assert sink_lines(main.registry) == sink_lines(shipper.registry)
    assert any('ryze_bridge_events_published_total{' in line and line.endswith(" 7.0")
               for line in sink_lines(main.registry))  # fmt: skip


def test_nothing_that_did_not_move_is_reported() -> None:
    """Two readings without a change between them give no change (pure)."""
    metrics = create_metrics()
    metrics.events_published.labels("kafka", "t").inc()
    values = sink_side_values(metrics)
    assert sink_side_changes(values, sink_side_values(metrics)) == []


def test_the_shipper_gets_no_instance_token() -> None:
    """Its environment keeps Python's variables only, and its init message the sink, spool
    and event-loop sections: an instance token given inline or by variable is in neither."""
    environ = {"PATH": "/usr/bin", "HOME": "/root", "LC_ALL": "C.UTF-8",
               "SHOP_TOKEN": "tok-secret-1", "RYZE_BRIDGE__SINK__KIND": "kafka"}  # fmt: skip
    assert shipper_environment(environ) == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
    }
    settings = Settings.model_validate(
        {
            "instances": {
                "shop": {"token": "tok-secret-2"},
                "desk": {"token_env": "SHOP_TOKEN"},
            }
        }
    )
    message = init_message(settings, None, (1, 0), (1, 0))
    assert "tok-secret" not in repr(message)
    assert "SHOP_TOKEN" not in repr(message)
    assert set(message["settings"]) == {"sink", "spool", "event_loop"}
    assert Settings.model_validate(message["settings"]).sink == settings.sink


async def test_messages_survive_the_framing() -> None:
    """A message framed on one side is read whole on the other; a peer gone reads as None."""
    reader = asyncio.StreamReader()
    reader.feed_data(frame(["ack", [[1, 2, 3, 4, 5]], []]) + frame(["stop"]))
    reader.feed_eof()
    assert await receive(reader) == ["ack", [[1, 2, 3, 4, 5]], []]
    assert await receive(reader) == ["stop"]
    assert await receive(reader) is None


def test_a_shipper_that_cannot_finish_still_exits() -> None:
    """Once its main process is gone, the shipper ends within the bound even when something
    keeps its event loop from finishing (here: a sleep that ignores everything)."""
    code = (
        "from bridge.shipper.child import exit_after; import time\n"
        "exit_after(0.2, 3)\n"
        "time.sleep(30)"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], check=False, timeout=20)
    assert done.returncode == 3
    assert time.monotonic() - started < 10
