"""Start-up's objects are frozen out of the garbage collector's way (settle_heap): after it,
the collector's generations hold none of them, so a full pass no longer walks them. Run in a
process of its own: freezing the test runner's heap would keep its garbage forever."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import gc, json
import bridge.compose, bridge.shipper.child
before = len(gc.get_objects())
from bridge.eventloop import settle_heap
settle_heap()
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(),
                  "tracked": len(gc.get_objects())}))
"""


def test_settle_heap_freezes_what_start_up_built() -> None:
    """Importing the daemon's modules leaves tens of thousands of tracked objects; after
    settle_heap nearly all are frozen and the generations hold next to nothing."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    found = json.loads(done.stdout)
    assert found["before"] > 10_000
    assert found["frozen"] >= found["before"] * 0.9
    assert found["tracked"] < 1_000
