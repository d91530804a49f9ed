"""Control endpoints for tests that run the simulator as a separate process (no token).

``GET /_sim/stats`` — all counters; ``GET /_sim/ids/{instance}`` — ids of frames sent
(``?times=1``: ``[id, Unix time sent]`` pairs);
``GET /_sim/frames/{instance}`` — the frames sent (when recording);
``POST /_sim/{knob}`` with a JSON object of the knob's arguments, one of:
drop, drop_every, stop_dropping, stall, resume, pause, set_rate, set_mix, burst,
send_malformed, send_hostile, send_without_event, send_huge, send_malformed_id, send_binary,
send_invalid_utf8, send_duplicate, reject_upgrades, add_instance, remove_instance, set_config,
reset_counters.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bridge.simulator.state import ApiError

if TYPE_CHECKING:
    from bridge.simulator import Simulator

KNOBS = frozenset(
    {
        "drop",
        "drop_every",
        "stop_dropping",
        "stall",
        "resume",
        "pause",
        "set_rate",
        "set_mix",
        "burst",
        "send_malformed",
        "send_hostile",
        "send_without_event",
        "send_huge",
        "send_malformed_id",
        "send_binary",
        "send_invalid_utf8",
        "send_duplicate",
        "reject_upgrades",
        "add_instance",
        "remove_instance",
        "set_config",
        "reset_counters",
    }
)


def add_control_routes(app: web.Application, sim: Simulator) -> None:
    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(sim.all_stats())

    async def ids(request: web.Request) -> web.Response:
        name = request.match_info["instance"]
        if request.query.get("times"):
            return web.json_response(sim.sent_ids_with_times(name))
        return web.json_response(sim.sent_ids(name))

    async def frames(request: web.Request) -> web.Response:
        sent = sim.sent_frames(request.match_info["instance"])
        return web.json_response([f.decode("utf-8", "replace") for f in sent])

    async def knob(request: web.Request) -> web.Response:
        name = request.match_info["knob"]
        if name not in KNOBS:
            return web.json_response({"error": f"unknown knob {name}"}, status=404)
        try:
            kwargs: dict[str, Any] = await request.json() if request.can_read_body else {}
        except ValueError:
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        try:
            result = getattr(sim, name)(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        except (TypeError, KeyError, ValueError, ApiError) as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        return web.json_response({"ok": True, "result": result})

    app.router.add_get("/_sim/stats", stats)
    app.router.add_get("/_sim/ids/{instance}", ids)
    app.router.add_get("/_sim/frames/{instance}", frames)
    app.router.add_post("/_sim/{knob}", knob)
