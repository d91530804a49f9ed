"""The fault schedule from a seed (pure, deterministic): which fault, on what, for how long,
and the quiet gap after it. The same seed and the same lists give the same schedule."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# kind -> (bridge it concerns: "kafka", "redis" or "any"; min and max seconds it lasts)
MENU: dict[str, tuple[str, float, float]] = {
    "kafka_kill_leader": ("kafka", 5, 45),
    "kafka_kill_two": ("kafka", 5, 20),
    "kafka_pause": ("kafka", 2, 6),
    "topic_recreate": ("kafka", 5, 20),
    "redis_restart": ("redis", 2, 8),
    "redis_oom": ("redis", 5, 15),
    "redis_readonly": ("redis", 5, 15),
    "redis_acl": ("redis", 5, 20),
    "redis_reset": ("redis", 3, 8),
    "sim_drop": ("any", 0, 0),
    "sim_stall": ("any", 5, 15),
    "sim_429": ("any", 0, 0),
    "odd_frames": ("any", 0, 0),
    "bridge_kill": ("any", 1, 3),
    "shipper_kill": ("any", 0, 0),
    "bridge_term_sink_down": ("redis", 8, 15),
    "disk_full": ("any", 5, 20),
}
ODD_FRAMES = ("malformed", "binary", "invalid_utf8", "oversized", "duplicate")


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` on ``bridge`` (and ``target``: an instance or a broker choice)
    for ``duration`` seconds, then ``gap`` quiet seconds once the bridge has recovered."""

    index: int
    kind: str
    bridge: str
    target: str
    duration: float
    gap: float
    params: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def build_schedule(
    seed: int,
    count: int,
    instances: Mapping[str, Sequence[str]],
    kinds: Sequence[str] = tuple(MENU),
) -> list[Fault]:
    """``count`` faults drawn from ``kinds``: the menu is shuffled and run through in turn
    (so a short soak still meets many kinds), reshuffled after each pass. ``instances`` maps
    each bridge ("kafka", "redis") to its instance names."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    deck: list[str] = []
    while len(faults) < count:
        if not deck:
            deck = list(kinds)
            rng.shuffle(deck)
        kind = deck.pop()
        faults.append(draw(rng, len(faults), kind, instances))
    return faults


def draw(
    rng: random.Random, index: int, kind: str, instances: Mapping[str, Sequence[str]]
) -> Fault:
    """The details of one fault of ``kind`` (pure given ``rng``'s state)."""
    which, low, high = MENU[kind]
    bridge = rng.choice(sorted(instances)) if which == "any" else which
    target = rng.choice(list(instances[bridge]))
    duration = round(rng.uniform(low, high), 1)
    gap = round(rng.uniform(3, 10), 1)
    params: dict[str, Any] = {}
    if kind == "odd_frames":
        params = {"frames": [rng.choice(ODD_FRAMES) for _ in range(rng.randint(3, 8))]}
    elif kind == "sim_drop":
        params = {"abnormal": rng.random() < 0.5, "all": rng.random() < 0.3}
    elif kind == "sim_429":
        params = {"count": rng.randint(1, 4), "with_reset": rng.random() < 0.5}
    elif kind == "kafka_kill_leader":
        params = {"signal_busiest": rng.random() < 0.7}
    elif kind == "topic_recreate":
        params = {"partitions": rng.choice((1, 2))}
    return Fault(index, kind, bridge, target, duration, gap, params)
