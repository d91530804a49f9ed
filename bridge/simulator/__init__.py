"""A RyzeAPI-compatible server for demos, tests and benchmarks, with fault knobs.

In-process::

    async with Simulator(SimConfig(instances={"shop": "tok-shop"})) as sim:
        sim.base_url            # http://127.0.0.1:PORT
        sim.drop("shop")        # knobs: drop, drop_every, stall, burst, send_malformed, …
        sim.stats("shop")       # counters: upgrades, rejections, sockets, frames, ids

As a process: ``ryze-bridge simulate --instances 3`` (knobs under ``POST /_sim/<knob>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from types import TracebackType
from typing import Any

from aiohttp import web

from bridge.simulator.control import add_control_routes
from bridge.simulator.server import SimConfig, SimulatorServer
from bridge.simulator.state import WsConfig, parse_config_body

__all__ = ["SimConfig", "Simulator"]


class Simulator:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.server = SimulatorServer(self.config)
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_post("/api/events/websocket/{instance}", self.server.post_config)
        self.app.router.add_get("/api/events/getWebsocket/{instance}", self.server.get_config)
        self.app.router.add_get("/ws/{instance}", self.server.upgrade)
        self.app.router.add_get("/api/instance/list", self.server.list_instances)
        add_control_routes(self.app, self)
        self._runner: web.AppRunner | None = None
        self._droppers: list[asyncio.Task[None]] = []
        self.port = 0

    @property
    def base_url(self) -> str:
        scheme = "https" if self.config.tls_cert else "http"
        return f"{scheme}://{self.config.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        context = None
        if self.config.tls_cert:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the one site's socket: port 0 resolved
        self.server.base_url = self.base_url
        for factory in self.server.factories.values():  # made before start (set_mix)
            factory.base_url = self.base_url
        self.server.start_emitting()

    async def close(self) -> None:
        for task in [*self._droppers, *self.server.generators.values()]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for name in list(self.server.sockets):
            await self.drop(name, code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ---- counters -----------------------------------------------------------------------
    def stats(self, instance: str) -> dict[str, Any]:
        """Counters of one instance (see InstanceStats.summary)."""
        stats = self.server.stats[instance]
        return stats.summary(len(self.server.sockets.get(instance, [])))

    def all_stats(self) -> dict[str, Any]:
        tokens = self.server.token_requests
        return {
            "instances": {name: self.stats(name) for name in self.server.stats},
            "config_posts": self.server.config_posts,
            "requests": sum(tokens.values()),
            "rate_limited": sum(self.server.token_rejected.values()),
        }

    def sent_ids(self, instance: str) -> list[str]:
        stats = self.server.stats.get(instance)
        return list(stats.ids) if stats else []

    def sent_ids_with_times(self, instance: str) -> list[tuple[str, float]]:
        """(id, Unix time it went out) of every frame sent, in send order."""
        stats = self.server.stats.get(instance)
        return list(zip(stats.ids, stats.sent_at, strict=True)) if stats else []

    def sent_frames(self, instance: str) -> list[bytes]:
        stats = self.server.stats.get(instance)
        return list(stats.frames) if stats else []

    def requests_of(self, token: str) -> int:
        return self.server.token_requests[token]

    def rate_limited_of(self, token: str) -> int:
        return self.server.token_rejected[token]

    def config_of(self, instance: str) -> WsConfig | None:
        return self.server.account.instances[instance].config

    # ---- knobs --------------------------------------------------------------------------
    async def drop(self, instance: str, code: int = 1000, abnormal: bool = False) -> int:
        """Close the instance's sockets now (``abnormal``: cut TCP with no close frame)."""
        sockets = list(self.server.sockets.get(instance, []))
        for socket in sockets:
            if abnormal and socket.request.transport is not None:
                socket.request.transport.abort()
            else:
                await socket.ws.close(code=code, message=b"simulator drop")
        return len(sockets)

    def drop_every(self, seconds: float, instance: str | None = None) -> None:
        """Drop the sockets of ``instance`` (or of all) every ``seconds`` until closed."""

        async def dropper() -> None:
            while True:
                await asyncio.sleep(seconds)
                for name in [instance] if instance else list(self.server.sockets):
                    await self.drop(name, code=1001)

        self._droppers.append(asyncio.create_task(dropper()))

    def stop_dropping(self) -> None:
        for task in self._droppers:
            task.cancel()
        self._droppers.clear()

    def stall(self, instance: str, seconds: float = 3600.0) -> None:
        """No frames and no pings for ``seconds`` (or until :meth:`resume`)."""
        self.server.stalled_until[instance] = time.monotonic() + seconds

    def resume(self, instance: str) -> None:
        self.server.stalled_until.pop(instance, None)
        self.server.paused.discard(instance)

    def pause(self, instance: str) -> None:
        """Stop generating frames (pings go on)."""
        self.server.paused.add(instance)

    def set_rate(self, rate: float, instance: str | None = None) -> None:
        if instance is None:
            self.config.rate = rate
            self.server.rates.clear()
        else:
            self.server.rates[instance] = rate

    def set_mix(self, mix: dict[str, float], instance: str | None = None) -> None:
        for name in [instance] if instance else list(self.server.account.instances):
            self.server.factory(name).mix = dict(mix)

    async def burst(self, instance: str, count: int, event: str | None = None) -> int:
        """Send ``count`` frames at once; returns how many went out."""
        sent = 0
        for _ in range(count):
            sent += await self.server.send_generated(instance, event)
        return sent

    async def send_raw(self, instance: str, frame: bytes) -> bool:
        return await self.server.send_raw(instance, frame)

    async def send_malformed(self, instance: str) -> bool:
        token = self.server.account.instances[instance].token
        return await self.send_raw(
            instance,
            b'{"event": "message.exchange", "data": {' + (b'"token": "' + token.encode() + b'"'),
        )

    async def send_hostile(self, instance: str) -> int:
        """Frames that carry the instance's token where a careless relay lets it through: cut
        short after an escaped ``\\u0074oken`` key, a wrong top-level shape, invalid UTF-8, the
        token pasted in a text and a URL of a well-formed frame, a second ``instanceData``
        (duplicate key); how many went out."""
        token = self.server.account.instances[instance].token.encode()
        _, frame = self.server.factory(instance).build("message.exchange")
        pasted = frame.replace(b'"data":{', b'"data":{"note":"t=' + token + b'",', 1)
        pasted = pasted.replace(b'"data":{', b'"data":{"url":"https://h/?t=' + token + b'",', 1)
        frames = [
            b'{"event":"message.exchange","instanceData":{"\\u0074oken":"' + token,
            b'[{"event":"message.exchange","instanceData":{"token":"' + token + b'"}}]',
            b'{"event":"label.update","bad":"\xff","instanceData":{"token":"' + token + b'"}}',
            pasted,
            b'{"instanceData":{"token":"' + token + b'"},"event":"label.update","instanceData":{}}',
        ]
        opcodes = ["text", "text", "raw_text", "text", "text"]
        return sum(
            [
                await self.server.send_raw(instance, f, None, o)
                for f, o in zip(frames, opcodes, strict=True)
            ]
        )

    async def send_without_event(self, instance: str) -> bool:
        return await self.send_raw(instance, b'{"data": {"id": "no-event"}, "instanceData": {}}')

    async def send_malformed_id(self, instance: str) -> str | None:
        """Truncated JSON that holds a frame id (counted as sent) and the token; its id."""
        frame_id, frame = self.server.factory(instance).build("message.exchange")
        cut = frame[: frame.index(b'"instanceData"')] + b'"token":"'
        cut += self.server.account.instances[instance].token.encode() + b'"'
        return frame_id if await self.server.send_raw(instance, cut, frame_id) else None

    async def send_binary(self, instance: str) -> str | None:
        """A well-formed frame in a binary WebSocket message; its id."""
        frame_id, frame = self.server.factory(instance).build("message.status")
        sent = await self.server.send_raw(instance, frame, frame_id, opcode="binary")
        return frame_id if sent else None

    async def send_invalid_utf8(self, instance: str) -> str | None:
        """A text message whose bytes are not UTF-8 (a 0xff inside a string); its id."""
        frame_id, frame = self.server.factory(instance).build("label.update")
        bad = frame.replace(b'"id":"', b'"bad":"\xff\xfe","id":"', 1)
        sent = await self.server.send_raw(instance, bad, frame_id, opcode="raw_text")
        return frame_id if sent else None

    async def send_duplicate(self, instance: str, copies: int = 2) -> str | None:
        """The same frame, byte for byte, ``copies`` times (each counted as sent); its id."""
        frame_id, frame = self.server.factory(instance).build("message.status")
        sent = [await self.server.send_raw(instance, frame, frame_id) for _ in range(copies)]
        return frame_id if all(sent) else None

    def reject_upgrades(self, instance: str, count: int, with_reset: bool = True) -> None:
        """Answer the instance's next ``count`` upgrades 429 (``with_reset``: carrying
        ``X-RateLimit-Reset`` one second ahead; else with no Reset header)."""
        self.server.refuse_upgrades[instance] = (count, with_reset)

    async def send_huge(self, instance: str, size: int) -> str | None:
        frame_id, frame = self.server.factory(instance).huge(size)
        return frame_id if await self.server.send_raw(instance, frame, frame_id) else None

    def add_instance(self, name: str, token: str) -> None:
        self.server.add_instance(name, token)

    async def remove_instance(self, name: str) -> None:
        await self.drop(name, code=1001)
        self.server.account.remove(name)
        self.server.factories.pop(name, None)

    def set_config(self, instance: str, body: dict[str, Any]) -> None:
        """Change an instance's config behind the bridge's back (same rules as the POST)."""
        self.server.account.instances[instance].config = parse_config_body(body)

    def reset_counters(self) -> None:
        for name in self.server.stats:
            self.server.stats[name] = type(self.server.stats[name])()
        self.server.token_requests.clear()
        self.server.token_rejected.clear()
        self.server.config_posts = 0
