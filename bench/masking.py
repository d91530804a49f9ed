"""What keeping tokens out costs, in process CPU time (not wall time: a busy machine inflates
wall time, CPU time much less):

    python -m bench.masking [--lines 20000] [--frames 50000]

- ``log line``: the log masking processor (``bridge.logs.mask_secrets``) on a typical line
  (10 fields, ~200 characters, no secret in it) with 0, 100 and 5,000 registered secrets,
  and on the same line with one secret in a value (5,000 registered);
- ``pipeline``: ``Pipeline.process`` per frame (~600 B text messages from the simulator's
  fixtures) as configured (the instance token known), in discovery mode (the account token
  known, the instance token learned from the frames), and with the token also pasted in the
  message's text.

The log target (issue 20): at most 20 µs per line with 5,000 secrets.
"""

from __future__ import annotations

import argparse
import secrets
import time
from collections.abc import Callable
from typing import Any

import orjson

from bridge.logs import mask_secrets, register_secret
from bridge.pipeline import Frame
from bridge.settings import InstanceSettings, Settings
from bridge.simulator.frames import FrameFactory
from bridge.wiring import build_pipeline

TOKEN = "tok-masking-bench-0123456789"  # noqa: S105 - not a secret
ACCOUNT = "acc-masking-bench-9876543210"
SECRET_COUNTS = (0, 100, 5_000)


def line(secret: str = "") -> dict[str, Any]:
    """A typical log line's event dict: 10 fields, ~200 characters."""
    return {
        "event": "ws.reconnecting",
        "level": "info",
        "logger": "bridge.runner",
        "timestamp": "2026-12-01T21:00:00.123456Z",
        "instance": "shop-0042",
        "reason": "connection_closed",
        "delay": 1.25,
        "url": f"wss://api.example.com/ws/shop-0042{secret}",
        "detail": "received 1006 (abnormal closure); then sent 1006",
        "attempt": 3,
    }


def cpu_us(run: Callable[[], object], count: int) -> float:
    """Process CPU µs per call of ``run`` (called ``count`` times)."""
    started = time.process_time()
    for _ in range(count):
        run()
    return (time.process_time() - started) / count * 1e6


def log_lines(count: int) -> None:
    registered = 0
    plain = line()
    for target in SECRET_COUNTS:
        while registered < target:
            register_secret(secrets.token_urlsafe(24))
            registered += 1
        mask_secrets(None, "info", line())  # the automaton is built before timing
        per_line = cpu_us(lambda: mask_secrets(None, "info", plain), count)
        print(f"log line, {target:5d} secrets          {per_line:7.2f} µs/line")
    register_secret(TOKEN)
    leaky = line(f"?token={TOKEN}")
    mask_secrets(None, "info", leaky)
    per_line = cpu_us(lambda: mask_secrets(None, "info", leaky), count)
    print(f"log line, {registered + 1:5d} secrets, one hit  {per_line:7.2f} µs/line")


def frames(count: int, pasted: bool) -> list[Frame]:
    factory = FrameFactory("shop", TOKEN, "http://127.0.0.1", {"message.exchange": 1}, seed=1)
    now = time.time_ns()
    built = []
    for _ in range(count):
        raw = factory.build(media_base64=False)[1]
        if pasted:
            document = orjson.loads(raw)
            document["data"]["pasted"] = f"my token is {TOKEN}"
            raw = orjson.dumps(document)
        built.append(Frame("shop", raw, now))
    return built


def pipeline_frames(count: int) -> None:
    settings = Settings.model_validate({"sink": {"kind": "kafka"}})
    for label, token, pasted in (
        ("configured", TOKEN, False),
        ("discovery", ACCOUNT, False),
        ("configured, pasted", TOKEN, True),
    ):
        pipeline = build_pipeline(settings, InstanceSettings(token=token))
        batch = frames(count, pasted)
        started = time.process_time()
        for frame in batch:
            pipeline.process(frame)
        per_frame = (time.process_time() - started) / count * 1e6
        print(f"pipeline, {label:22s} {per_frame:7.2f} µs/frame")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--frames", type=int, default=50_000)
    args = parser.parse_args()
    log_lines(args.lines)  # first: the pipeline registers the tokens it learns
    pipeline_frames(args.frames)


if __name__ == "__main__":
    main()
