"""TEMPORARY stand-in for part A of issue 22: the ``Delivery`` protocol and
``build_delivery`` that ``bridge.delivery`` is to offer. On merge, delete this module and
import both from :mod:`bridge.delivery` instead (same names, same signature).

Today's logic, moved unchanged from the former ``Supervisor._delivery``: the sink worker runs
in a process of its own (``sink.separate_process``) unless a sink is given or there is a
fencing to share with it; otherwise in this process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from bridge.delivery import Delivery as InProcessDelivery
from bridge.metrics import Metrics
from bridge.settings import Settings
from bridge.shipper.parent import ShipperDelivery
from bridge.sinks.base import Sink
from bridge.sinks.redis import Fencing
from bridge.spool.disk import DiskSpool


class Delivery(Protocol):
    """What the rest of the process needs of a delivery, wherever its worker runs."""

    @property
    def in_process(self) -> bool: ...

    @property
    def kind(self) -> str: ...

    @property
    def running(self) -> bool: ...

    @property
    def delivering(self) -> bool: ...

    @property
    def problem(self) -> str | None: ...

    def start(self) -> None: ...

    async def reachable(self) -> bool: ...

    async def stop_worker(self) -> None: ...

    async def close(self, within: float) -> None: ...


def build_delivery(
    settings: Settings,
    spool: DiskSpool,
    metrics: Metrics,
    *,
    environ: Mapping[str, str],
    fencing: Fencing | None = None,
    sink: Sink | None = None,
) -> Delivery:
    """The sink worker in a process of its own (``sink.separate_process``, no fencing to
    share, no sink given) or in this one."""
    if settings.sink.separate_process and sink is None and fencing is None:
        return ShipperDelivery(settings, spool, metrics, environ=environ)
    return InProcessDelivery(settings, spool, metrics, sink=sink, environ=environ, fencing=fencing)
