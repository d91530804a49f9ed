"""The shipper process under real faults: its sink's password really rotated on disk and in
the Redis ACL, the shipper really SIGKILLed. Each test prints one line ``FAULT name: …``."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bridge.shipper.parent import ShipperDelivery
from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import counter, eventually, running_bridge, settings_for
from tests.integration.test_worker_faults import frame_ids, readyz
from tests.services import read_stream, unique

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def set_password(admin: Redis, user: str, password: str, prefix: str) -> None:
    """The ACL user ``user`` with only ``password``, on the keys under ``prefix``; its live
    connections closed (so the next one must authenticate again)."""
    await admin.execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", user, "reset", "on", f">{password}", f"~{prefix}:*", "+@all"
    )
    await admin.execute_command("CLIENT", "KILL", "USER", user)  # type: ignore[no-untyped-call]


async def never_ready_until(delivery: ShipperDelivery, text: str, within: float) -> list[str]:
    """The problems seen, polled every 10 ms until one contains ``text`` and then for one
    second more; fails if readiness had no problem once, or ``text`` did not come."""
    seen: list[str] = []
    deadline = time.monotonic() + within
    until: float | None = None
    while until is None or time.monotonic() < until:
        assert time.monotonic() < deadline, f"no {text!r} within {within} s: {seen}"
        problem = delivery.problem
        assert problem is not None, f"readiness flapped to ready after {seen[-3:]}"
        if not seen or seen[-1] != problem:
            seen.append(problem)
        if until is None and text in problem:
            until = time.monotonic() + 1.0
        await asyncio.sleep(0.01)
    return seen


async def test_a_rotated_password_file_is_picked_up_by_the_shipper(
    redis_url: str, tmp_path: Path
) -> None:
    """The Redis ACL password is rotated while the shipper runs and the shipper is SIGKILLed
    before the file has the new one: the restarted shipper cannot start, and readiness stays
    not ready throughout (no ~1 s flap to ready when it connects). Once the file holds the
    new password, the shipper's sink picks it up (before the fix: the password read at the
    bridge's start, for ever) and everything read meanwhile is delivered, nothing lost."""
    prefix = unique("rotate")
    user = f"u-{prefix}"
    secret = tmp_path / "redis-password"
    secret.write_text("first-password-1\n")
    tokens = {"shop": "tok-rotate-1"}
    admin = Redis.from_url(redis_url)
    await set_password(admin, user, "first-password-1", prefix)
    try:
        async with Simulator(SimConfig(instances=tokens, rate=100)) as sim:
            settings = settings_for(
                sim.base_url,
                tmp_path,
                instances={"shop": {"token": tokens["shop"]}},
                sink={
                    "kind": "redis",
                    "dlq": f"{prefix}:dlq",
                    "retry_max": 1.0,
                    "redis": {
                        "url": redis_url,
                        "stream": prefix + ":{instance}:{event}",
                        "username": user,
                        "password_file": str(secret),
                    },
                },
            )
            async with running_bridge(settings) as bridge:
                delivery = bridge.delivery
                assert isinstance(delivery, ShipperDelivery)
                published = "ryze_bridge_events_published_total"
                await eventually(lambda: counter(bridge.metrics, published) > 50, within=20)
                await set_password(admin, user, "second-password-2", prefix)
                pid = delivery.pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                seen = await never_ready_until(delivery, "cannot start", within=20)
                status, body = await readyz(bridge.admin.port)
                assert status == 503
                assert "second-password-2" not in body
                secret.write_text("second-password-2\n")
                started = time.monotonic()
                await eventually(lambda: delivery.problem is None, within=15)
                recovered = time.monotonic() - started
                sim.pause("shop")
                sent = sim.sent_ids("shop")
                await eventually(lambda: bridge.spool.stats().events == 0, within=30)
                status, _ = await readyz(bridge.admin.port)
        keys = [k.decode() for k in await admin.keys(f"{prefix}:shop:*") if isinstance(k, bytes)]
        values = [f[b"data"] for k in keys for _, f in await read_stream(admin, k)]
    finally:
        await admin.execute_command("ACL", "DELUSER", user)  # type: ignore[no-untyped-call]
        await admin.aclose()
    counts = Counter(frame_ids(values))
    print(  # noqa: T201 - the fault report
        f"FAULT password-rotated: sent={len(sent)} delivered={len(counts)} "
        f"duplicated={sum(c - 1 for c in counts.values())} recovered_in={recovered:.1f}s "
        f"problems={seen}"
    )
    assert set(counts) == set(sent)
    assert status == 200
