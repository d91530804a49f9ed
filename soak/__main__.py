"""``python -m soak``: the chaos soak (scripts/soak.sh sets up and calls it).

Exit 0 when every invariant holds, 1 when one fails, 2 when the soak itself could not run."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from soak.driver import Options, Soak


def parse(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__)
    parser.add_argument("--seed", type=int, help="the fault schedule's seed (random if absent)")
    parser.add_argument("--duration", type=float, default=1200.0, help="seconds (20 min)")
    parser.add_argument("--out", type=Path, required=True, help="folder for report and table")
    parser.add_argument("--work", type=Path, required=True, help="folder for the processes")
    parser.add_argument("--kafka-libs", type=Path, required=True, help="Kafka's jars")
    parser.add_argument("--instances", type=int, default=6, help="per bridge")
    parser.add_argument("--rate", type=float, default=20.0, help="frames/s per instance")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**9)
    return Options(
        seed, args.duration, args.out, args.work, args.kafka_libs, args.instances, args.rate
    )


async def main_async(options: Options) -> int:
    soak = Soak(options)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: task.cancel() if task else None)
    try:
        return await soak.run()
    except asyncio.CancelledError:
        soak.say(f"interrupted; stopping everything (seed {options.seed})")
        return 130
    except Exception:  # noqa: BLE001 - the harness failed: say so, clean up, exit 2
        traceback.print_exc()
        soak.say(f"the soak itself failed (seed {options.seed}); see the trace above")
        return 2
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        with contextlib.suppress(Exception):
            await soak.tear_down()


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    print(f"soak: seed {options.seed}", flush=True)
    return asyncio.run(main_async(options))


if __name__ == "__main__":
    sys.exit(main())
