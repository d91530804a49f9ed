"""Debian's redis-server for the soak: its own port and folder, an ACL user for the bridge,
and the controls the Redis faults need (restart keeping data, OOM, read-only, ACL)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from soak.procs import Proc, free_port

BRIDGE_USER = "soakbridge"
BRIDGE_COMMANDS = "resetchannels -@all +xadd +multi +exec +ping +hello +client|setname +info"


@dataclass
class RedisServer:
    root: Path
    password: str
    port: int = field(default_factory=free_port)
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def acl(self, keys: str = "~ryze:*") -> str:
        return f"user {BRIDGE_USER} on >{self.password} resetkeys {keys} {BRIDGE_COMMANDS}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        users = self.root / "users.acl"
        users.write_text(f"user default on nopass ~* &* +@all\n{self.acl()}\n")
        users.chmod(0o600)
        argv = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--aclfile",
            str(users),
            "--daemonize",
            "no",
            "--dir",
            str(self.root),
            "--logfile",
            str(self.root / "redis.log"),
        ]
        self.proc = Proc("redis", argv, self.root / "stdout.log")
        self.proc.start()

    def client(self) -> aioredis.Redis:
        return aioredis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    async def wait_ready(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                async with self.client() as r:
                    if await r.ping():
                        return
            except (OSError, aioredis.RedisError):
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError("redis did not answer PING")

    async def shutdown_save(self) -> None:
        """SHUTDOWN SAVE (the data survives), and wait until the process is gone."""
        try:
            async with self.client() as r:
                await r.execute_command("SHUTDOWN", "SAVE")  # type: ignore[no-untyped-call]
        except (OSError, aioredis.RedisError):
            pass  # the connection closes as it shuts down
        if self.proc is not None:
            await self.proc.wait(30)
            await self.proc.stop(grace=5)

    async def restart(self) -> None:
        self.start()
        await self.wait_ready()

    async def command(self, *args: str | int) -> object:
        async with self.client() as r:
            return await r.execute_command(*args)  # type: ignore[no-untyped-call]

    async def stop(self) -> None:
        if self.proc is not None and self.proc.alive():
            await self.shutdown_save()
