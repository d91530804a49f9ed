"""The simulator's HTTP and WebSocket server (aiohttp, one port).

REST: ``POST /api/events/websocket/:instance``, ``GET /api/events/getWebsocket/:instance``.
WebSocket: ``GET /ws/:instance``. Control (no token, for tests): ``/_sim/…``, see control.py.
Checks in order: token present and known (401) → the token's rate-limit window (429) →
ownership and existence (403/404) → the endpoint's own rules.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bridge.heap import HeapKeeper
from bridge.simulator.frames import DEFAULT_MIX, FrameFactory
from bridge.simulator.ledger import record_tokens
from bridge.simulator.ratelimit import FixedWindowLimiter, Verdict
from bridge.simulator.stamp import stamped
from bridge.simulator.state import (
    MSG_INSTANCE_NOT_FOUND,
    MSG_INVALID_TOKEN,
    MSG_MISSING_TOKEN,
    MSG_NOT_CONFIGURED,
    MSG_RATE_LIMITED,
    Account,
    ApiError,
    Instance,
    WsConfig,
    not_enabled_message,
    parse_config_body,
    token_from,
)
from bridge.simulator.stats import InstanceStats


@dataclass
class SimConfig:
    """What the simulator serves and how it behaves."""

    instances: dict[str, str] = field(default_factory=dict)  # name -> TokenInstance
    account_tokens: list[str] = field(default_factory=list)
    preconfigured: bool = False  # start every instance with an enabled config (all events)
    rate: float = 5.0  # frames per second per instance; 0 = as fast as the socket takes
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    ping_interval: float = 20.0
    pong_timeout: float = 60.0
    rate_limit: int = 100
    rate_window: float = 60.0
    record_frames: bool = False
    # events happen whether or not anybody listens, as upstream: those emitted while an
    # instance has no socket are counted as unheard (lost upstream), e.g. during a handover
    always_emit: bool = False
    # benchmark source: build this many frames per instance once and send them in a loop
    # (ids repeat after that), so the sender is not the bottleneck; 0 = a fresh frame each time
    prebuilt: int = 0
    # message.exchange frames carry inline base64 media of about this many bytes (0 = fixture)
    media_bytes: int = 0
    # every generated frame carries its send time, stamped as it is written (see stamp.py)
    stamp_sent: bool = False
    seed: int | None = None
    # in every generated frame's id: simulators serving the same instances side by side (an
    # upstream's edges, bench.cluster_scale) never send two frames with one id
    id_tag: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    tls_cert: str | None = None  # serve https/wss with this certificate and key
    tls_key: str | None = None


@dataclass
class Socket:
    ws: web.WebSocketResponse
    request: web.Request
    ping_sent_at: float | None = None
    connected_at: float = field(default_factory=time.monotonic)


MAX_WAIT = 1.0  # a generator wakes at least this often (a knob's new rate applies within it)


def next_wait(rate: float, elapsed: float, sent: int) -> float:
    """How long an instance's generator sleeps before its next turn (pure): until its next
    frame is due, at most ``MAX_WAIT``; at high rates a few ms, frames then go in batches
    (at most 20 ms, as before); ``rate`` 0 (as fast as possible) yields only. Waking only when
    a frame is due keeps thousands of quiet instances from costing the simulator a core."""
    if rate <= 0:
        return 0.0
    due_in = (sent + 1) / rate - elapsed
    return min(MAX_WAIT, max(min(0.02, 1 / rate), due_in))


def phased_start(now: float, rate: float, draw: float) -> float:
    """When an instance's schedule at ``rate`` counts from (pure): ``now`` moved back by
    ``draw`` (in [0, 1)) of one frame's spacing, so its first frame is due within one spacing
    and instances that take a new rate at the same moment keep independent phases. Without it,
    a fleet that noticed a rate together (their idle wake-ups bunched by a stall) sent every
    frame of the second in one burst, every second. ``rate`` 0 or below: ``now``."""
    return now - draw / rate if rate > 0 else now


def error_response(error: ApiError, verdict: Verdict | None = None) -> web.Response:
    body = {"success": False, "error": {"message": error.message}}
    return web.json_response(body, status=error.status, headers=_headers(verdict))


def _headers(verdict: Verdict | None) -> dict[str, str]:
    return verdict.headers() if verdict is not None else {}


def instance_summary(instance: Instance) -> dict[str, Any]:
    """One item of the list answer: identification, connection, profile, integrations."""
    config = instance.config or WsConfig(False, [], False)
    return {
        "name": instance.name,
        "connection": {
            "state": "connected",
            "numberJid": None,
            "presenceStatus": "available",
            "displayStatus": "online",
        },
        "profile": {"name": instance.name, "pictureUrl": None, "isBusiness": False},
        "webhook": {"enabled": False},
        "websocket": config.as_json(),
    }


def upgrade_limited(limit: int, *, with_reset: bool) -> web.Response:
    """The 429 of an upgrade refused on purpose, its window reset in a second (the header
    left out without ``with_reset``)."""
    reset = math.ceil(time.time()) + 1
    headers = Verdict(False, limit, 0, reset).headers()
    if not with_reset:
        del headers["X-RateLimit-Reset"]
    body = {"success": False, "error": {"message": MSG_RATE_LIMITED}}
    return web.json_response(body, status=429, headers=headers)


class SimulatorServer:
    """State, sockets and generators; the Simulator class wraps it with knobs."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.account = Account(account_tokens=set(config.account_tokens))
        record_tokens(config.account_tokens)  # for CI's token grep, when it keeps a ledger
        self.limiter = FixedWindowLimiter(config.rate_limit, config.rate_window)
        self.stats: dict[str, InstanceStats] = {}
        self.pools: dict[str, list[tuple[str, bytes]]] = {}
        self.pool_positions: dict[str, int] = {}
        self.token_requests: Counter[str] = Counter()
        self.token_rejected: Counter[str] = Counter()
        self.config_posts = 0
        self.sockets: dict[str, list[Socket]] = {}
        self.factories: dict[str, FrameFactory] = {}
        self.generators: dict[str, asyncio.Task[None]] = {}
        self.rates: dict[str, float] = {}
        self.stalled_until: dict[str, float] = {}
        self.paused: set[str] = set()
        self.refuse_upgrades: dict[str, tuple[int, bool]] = {}  # name -> (left, with Reset)
        self.base_url = ""
        for name, token in config.instances.items():
            self.add_instance(name, token)

    # ---- instances ----------------------------------------------------------------------
    def add_instance(self, name: str, token: str) -> Instance:
        self.factories.pop(name, None)  # a re-added instance frames with its new token
        config = WsConfig(True, [], False) if self.config.preconfigured else None
        instance = self.account.add(name, token, config)
        record_tokens((token,))
        self.stats.setdefault(name, InstanceStats())
        return instance

    def factory(self, name: str) -> FrameFactory:
        if name not in self.factories:
            instance = self.account.instances[name]
            seed = None if self.config.seed is None else self.config.seed + len(self.factories)
            self.factories[name] = FrameFactory(
                name,
                instance.token,
                self.base_url,
                dict(self.config.mix),
                seed,
                stamp=self.config.stamp_sent,
                id_tag=self.config.id_tag,
            )
        return self.factories[name]

    def rate_of(self, name: str) -> float:
        return self.rates.get(name, self.config.rate)

    def stalled(self, name: str) -> bool:
        return time.monotonic() < self.stalled_until.get(name, 0.0)

    # ---- REST ---------------------------------------------------------------------------
    def admit_token(self, request: web.Request) -> tuple[str, Verdict]:
        """Authenticate and count one request against the token's window; or raise."""
        token = token_from(request.headers, request.query)
        if not token:
            raise _WithVerdictError(ApiError(401, MSG_MISSING_TOKEN), None)
        if not self.account.known_token(token):
            raise _WithVerdictError(ApiError(401, MSG_INVALID_TOKEN), None)
        verdict = self.limiter.hit(token)
        self.token_requests[token] += 1
        if not verdict.allowed:
            self.token_rejected[token] += 1
            raise _LimitedError(verdict)
        return token, verdict

    def admit(self, request: web.Request, name: str) -> tuple[Instance, Verdict]:
        """Authenticate, count against the token's window, authorise; or raise."""
        token, verdict = self.admit_token(request)
        try:
            return self.account.authorize(token, name), verdict
        except ApiError as error:
            raise _WithVerdictError(error, verdict) from None

    async def get_config(self, request: web.Request) -> web.Response:
        name = request.match_info["instance"]
        try:
            instance, verdict = self.admit(request, name)
        except _RefusalError as refusal:
            return refusal.response()
        if instance.config is None:
            return error_response(ApiError(404, MSG_NOT_CONFIGURED), verdict)
        body = {
            "success": True,
            "message": "WebSocket configuration retrieved",
            "websocket": instance.config.as_json(),
        }
        return web.json_response(body, headers=verdict.headers())

    async def post_config(self, request: web.Request) -> web.Response:
        name = request.match_info["instance"]
        try:
            instance, verdict = self.admit(request, name)
        except _RefusalError as refusal:
            return refusal.response()
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        try:
            instance.config = parse_config_body(body)
        except ApiError as error:
            return error_response(error, verdict)
        self.config_posts += 1
        self.stats[name].config_posts += 1
        answer = {
            "success": True,
            "message": "WebSocket configuration saved",
            "websocket": instance.config.as_json(),
        }
        return web.json_response(answer, headers=verdict.headers())

    async def list_instances(self, request: web.Request) -> web.Response:
        """GET /api/instance/list: all of an account token's instances (or the named ones);
        an instance token sees only its own instance, whatever the filter."""
        try:
            token, verdict = self.admit_token(request)
            names = self.visible_instances(token, request.query.get("instanceName"), verdict)
        except _RefusalError as refusal:
            return refusal.response()
        items = [instance_summary(self.account.instances[n]) for n in names]
        word = "Instance" if len(items) == 1 else "Instances"
        body = {"success": True, "message": f"{len(items)} {word} found", "data": items}
        return web.json_response(body, headers=verdict.headers())

    def visible_instances(self, token: str, wanted: str | None, verdict: Verdict) -> list[str]:
        instances = self.account.instances
        if token not in self.account.account_tokens:
            return [n for n, i in instances.items() if i.token == token]
        if not wanted:
            return sorted(instances)
        names = [n.strip() for n in wanted.split(",") if n.strip()]
        if len(names) == 1 and names[0] not in instances:
            raise _WithVerdictError(ApiError(404, MSG_INSTANCE_NOT_FOUND), verdict)
        return [n for n in names if n in instances]

    # ---- WebSocket ----------------------------------------------------------------------
    async def upgrade(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["instance"]
        stats = self.stats.setdefault(name, InstanceStats())
        refused = self.upgrade_refused(name)
        if refused is not None:
            stats.rejected[refused.status] += 1
            return refused
        try:
            instance, verdict = self.admit(request, name)
            if instance.config is None or not instance.config.enabled:
                raise _WithVerdictError(ApiError(400, not_enabled_message(name)), verdict)
        except _RefusalError as refusal:
            response = refusal.response()
            stats.rejected[response.status] += 1
            return response
        ws = web.WebSocketResponse(autoping=False, max_msg_size=0)
        for key, value in verdict.headers().items():
            ws.headers[key] = value
        await ws.prepare(request)
        socket = Socket(ws, request)
        stats.upgrades += 1
        sockets = self.sockets.setdefault(name, [])
        sockets.append(socket)
        stats.max_sockets = max(stats.max_sockets, len(sockets))
        self._ensure_generator(name)
        pinger = asyncio.create_task(self._pinger(name, socket))
        try:
            await self._read(socket)
        finally:
            pinger.cancel()
            sockets.remove(socket)
            stats.closed += 1
        return ws

    async def _read(self, socket: Socket) -> None:
        """The server reads nothing but pings, pongs and close (client JSON is ignored)."""
        async for message in socket.ws:
            if message.type == WSMsgType.PING:
                await socket.ws.pong(message.data)
            elif message.type == WSMsgType.PONG:
                socket.ping_sent_at = None

    async def _pinger(self, name: str, socket: Socket) -> None:
        """Ping every ``ping_interval``; drop a socket that left a ping unanswered too long."""
        interval, timeout = self.config.ping_interval, self.config.pong_timeout
        last_ping = time.monotonic()
        while not socket.ws.closed:
            await asyncio.sleep(min(interval, timeout) / 4)
            now = time.monotonic()
            if socket.ping_sent_at is not None and now - socket.ping_sent_at > timeout:
                self.stats[name].pong_timeouts += 1
                await socket.ws.close(code=1008, message=b"pong timeout")
                return
            if now - last_ping >= interval and not self.stalled(name):
                last_ping = now
                if socket.ping_sent_at is None:
                    socket.ping_sent_at = now
                await socket.ws.ping(b"sim")

    # ---- frame generation ---------------------------------------------------------------
    def start_emitting(self) -> None:
        """With ``always_emit``: every instance's events start now, listened to or not."""
        if self.config.always_emit:
            for name in self.account.instances:
                self.stats.setdefault(name, InstanceStats())
                self._ensure_generator(name)

    def _ensure_generator(self, name: str) -> None:
        task = self.generators.get(name)
        if task is None or task.done():
            self.generators[name] = asyncio.create_task(self._generate(name))

    async def _generate(self, name: str) -> None:
        """Send frames at the instance's rate while it has sockets (none are built before)."""
        pace = self.rate_of(name)
        started, sent = phased_start(time.monotonic(), pace, random.random()), 0
        while self.sockets.get(name) or (self.config.always_emit and name in self.stats):
            rate = self.rate_of(name)
            if rate != pace:  # a new rate applies from now on, with no catch-up burst
                started = phased_start(time.monotonic(), rate, random.random())
                sent, pace = 0, rate
            if self.stalled(name) or name in self.paused or rate < 0:  # (phased as it resumes)
                started = phased_start(time.monotonic(), rate, random.random())
                sent = 0
                await asyncio.sleep(MAX_WAIT if rate < 0 else 0.02)  # rate < 0: no events
                continue
            due = 200 if rate == 0 else int((time.monotonic() - started) * rate) - sent
            for _ in range(max(0, due)):
                if not await self.send_generated(name) and not self.sockets.get(name):
                    self.stats[name].unheard += 1
            sent += max(0, due)
            await asyncio.sleep(next_wait(rate, time.monotonic() - started, sent))

    async def send_generated(self, name: str, event: str | None = None) -> bool:
        """Build the next frame and send it, if the instance's config lets the event out."""
        instance = self.account.instances.get(name)
        if instance is None or instance.config is None:
            return False
        factory = self.factory(name)
        if self.config.prebuilt and event is None:
            frame_id, frame = self._next_prebuilt(name, factory)
        else:
            event = event or factory.next_event()
            if not instance.config.wants(event):
                return False
            frame_id, frame = self._build(factory, event, instance.config.media_base64)
        if self.config.stamp_sent:
            frame = stamped(frame, time.time_ns())
        return await self.send_raw(name, frame, frame_id)

    def _build(self, factory: FrameFactory, event: str, media_base64: bool) -> tuple[str, bytes]:
        if self.config.media_bytes and event == "message.exchange":
            return factory.huge(self.config.media_bytes)
        return factory.build(event, media_base64=media_base64)

    def _next_prebuilt(self, name: str, factory: FrameFactory) -> tuple[str, bytes]:
        """The next frame of the instance's pre-built pool (built at first use)."""
        pool = self.pools.get(name)
        if pool is None:
            config = self.account.instances[name].config
            events = [factory.next_event() for _ in range(self.config.prebuilt)]
            media = config.media_base64 if config is not None else True
            wanted = [e for e in events if config is None or config.wants(e)] or events
            pool = self.pools[name] = [self._build(factory, e, media) for e in wanted]
        index = self.pool_positions.get(name, 0)
        self.pool_positions[name] = (index + 1) % len(pool)
        return pool[index]

    async def send_raw(
        self, name: str, frame: bytes, frame_id: str | None = None, opcode: str = "text"
    ) -> bool:
        """Send ``frame`` to every socket of the instance: as a text frame (``text``, decoded
        and re-encoded, so invalid UTF-8 is replaced), as a binary frame (``binary``), or as
        a text frame carrying the bytes unchanged (``raw_text``: invalid UTF-8 stays so)."""
        sockets = [s for s in self.sockets.get(name, []) if not s.ws.closed]
        if not sockets:
            return False
        payload = frame.decode("utf-8", "replace").encode("utf-8") if opcode == "text" else frame
        kind = WSMsgType.BINARY if opcode == "binary" else WSMsgType.TEXT
        for socket in sockets:
            try:
                await socket.ws.send_frame(payload, kind)
            except (ConnectionError, RuntimeError):
                continue
        self.stats[name].record(frame_id, payload if self.config.record_frames else None)
        return True

    def upgrade_refused(self, name: str) -> web.Response | None:
        """A 429 for this upgrade when the ``reject_upgrades`` knob still has some to refuse
        (with or without ``X-RateLimit-Reset``), else None."""
        left, with_reset = self.refuse_upgrades.get(name, (0, True))
        if left <= 0:
            return None
        self.refuse_upgrades[name] = (left - 1, with_reset)
        return upgrade_limited(self.config.rate_limit, with_reset=with_reset)


class _RefusalError(Exception):
    def response(self) -> web.Response:
        raise NotImplementedError


class _LimitedError(_RefusalError):
    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict

    def response(self) -> web.Response:
        return error_response(ApiError(429, MSG_RATE_LIMITED), self.verdict)


class _WithVerdictError(_RefusalError):
    def __init__(self, error: ApiError, verdict: Verdict | None) -> None:
        self.error = error
        self.verdict = verdict

    def response(self) -> web.Response:
        return error_response(self.error, self.verdict)


def heap_keeper(server: SimulatorServer) -> HeapKeeper:
    """The bridge's heap keeper over the server's sockets (:mod:`bridge.heap`): once a fleet of
    sockets has settled, its objects are frozen out of the collector's full passes. Serving
    5,000 sockets, those passes were 300-450 ms each with the loop held, every few seconds: the
    frames due meanwhile then went out in one burst, which the bridge measured as its own
    latency."""
    return HeapKeeper(
        opened=lambda: sum(stats.upgrades for stats in server.stats.values()),
        closed=lambda: sum(stats.closed for stats in server.stats.values()),
        open_now=lambda: sum(len(sockets) for sockets in server.sockets.values()),
    )
