"""The admin server's defences, over real loopback sockets: a cap on open connections (more
are closed at once and counted), a deadline for a request's headers (a slowloris connection is
closed and counted), one request per connection, ``/instances`` masked with every registered
secret, and a loopback default that warns when it is widened without a token."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from bridge.admin import AdminServer, Readiness, exposed_unauthenticated, masked_strings
from bridge.adminguard import ConnectionLimits, headers_complete
from bridge.logs import register_secret
from bridge.masking import MASK
from bridge.metrics import Metrics, create_metrics
from bridge.settings import AdminSettings

HOST = "127.0.0.1"
TOKEN = "admin-guard-test-token-5b1e"
LEAKED = "tok-admin-guard-leak-9f3a"  # an instance token an upstream error text quoted


class Rows:
    """The fleet's status rows as the admin API sees them (one failed instance whose upstream
    error text quotes its token)."""

    def instances_status(self) -> dict[str, dict[str, object]]:
        return {"shop": {"state": "failed", "error": f"401 from upstream: bad token {LEAKED}"}}

    def cluster_status(self) -> dict[str, object]:
        return {"mode": "none", "note": f"copied {LEAKED}"}

    async def control(self, name: str, action: str) -> bool:
        return False


async def ready() -> Readiness:
    return Readiness(True, ())


@contextlib.asynccontextmanager
async def admin(limits: ConnectionLimits) -> AsyncIterator[tuple[AdminServer, Metrics]]:
    metrics = create_metrics(CollectorRegistry())
    server = AdminServer(
        metrics,
        ready,
        host=HOST,
        port=0,
        control=Rows(),
        token=SecretStr(TOKEN),
        limits=limits,
    )
    await server.start()
    try:
        yield server, metrics
    finally:
        await server.close()


def dropped(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "ryze_bridge_admin_connections_dropped_total", {"reason": reason}
    )
    return value or 0.0


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """True when the server ends the connection (EOF or reset) within ``within`` seconds."""
    try:
        while True:
            if await asyncio.wait_for(reader.read(4096), within) == b"":
                return True
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):  # TLS: an unclean close
        return True
    except TimeoutError:
        return False


async def get(port: int, path: str, token: str | None = None) -> tuple[bytes, bytes]:
    """One whole HTTP/1.1 request; the response's head and body (read to EOF, bounded)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    data = await asyncio.wait_for(reader.read(-1), 5)  # to EOF: the server closes
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


async def test_connections_over_the_cap_are_closed_and_counted() -> None:
    """With max_connections 3 and three connections open (headers unfinished), a fourth is
    closed by the server at once and counted as over_limit; when one of the three goes, a new
    connection is served again."""
    async with admin(ConnectionLimits(max_connections=3, header_timeout=30)) as (server, metrics):
        held = [await asyncio.open_connection(HOST, server.port) for _ in range(3)]
        for _, writer in held:
            writer.write(b"GET /healthz HTTP/1.1\r\n")
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection(HOST, server.port)
        assert await closed_by_server(reader, within=2.0)
        assert dropped(metrics, "over_limit") == 1
        writer.close()
        held[0][1].close()
        head = b""
        for _ in range(50):  # the slot frees when the server sees the close (bounded)
            await asyncio.sleep(0.05)
            head, _ = await get(server.port, "/healthz")
            if head.startswith(b"HTTP/1.1 200"):
                break
        assert head.startswith(b"HTTP/1.1 200"), head
        for _, w in held[1:]:
            w.close()


async def test_slow_headers_are_closed_at_the_deadline() -> None:
    """A client trickling header lines (slowloris) is closed about header_timeout after it
    connected, though it keeps sending, and counted as header_timeout; a client that connects
    and says nothing is closed too."""
    async with admin(ConnectionLimits(max_connections=8, header_timeout=0.5)) as (server, metrics):
        reader, writer = await asyncio.open_connection(HOST, server.port)
        silent_reader, silent_writer = await asyncio.open_connection(HOST, server.port)
        started = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for i in range(40):  # at most 4 s of trickling
            try:
                writer.write(f"X-Slow-{i}: y\r\n".encode())
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(4096), 0.1) == b"":
                    closed = True
                    break
        elapsed = time.monotonic() - started
        assert closed
        assert 0.4 <= elapsed < 3.0, elapsed
        assert await closed_by_server(silent_reader, within=2.0)
        assert dropped(metrics, "header_timeout") == 2
        writer.close()
        silent_writer.close()


async def test_a_request_is_answered_then_the_connection_closed() -> None:
    """A prompt request gets its answer with ``Connection: close`` and the server ends the
    connection (no idle keep-alive holds a slot), refusals and unknown paths included; nothing
    is counted as dropped."""
    async with admin(ConnectionLimits(max_connections=2, header_timeout=0.5)) as (server, metrics):
        head, body = await get(server.port, "/healthz")
        assert head.startswith(b"HTTP/1.1 200")
        assert body == b"ok\n"
        assert b"connection: close" in head.lower()
        head, _ = await get(server.port, "/metrics")  # no token: 401, closed all the same
        assert head.startswith(b"HTTP/1.1 401")
        head, _ = await get(server.port, "/nowhere", token=TOKEN)  # raised 404: closed too
        assert head.startswith(b"HTTP/1.1 404")
        await asyncio.sleep(0.7)  # past the deadline: answered connections are not counted
        assert dropped(metrics, "header_timeout") == 0
        assert dropped(metrics, "over_limit") == 0


async def test_instances_texts_are_masked() -> None:
    """/instances never carries a registered secret, even when an upstream error text or a
    cluster note quotes it: the secret is replaced by the mask, the rest of the text stays."""
    register_secret(LEAKED)
    async with admin(ConnectionLimits()) as (server, _):
        head, body = await get(server.port, "/instances", token=TOKEN)
    assert head.startswith(b"HTTP/1.1 200")
    assert LEAKED.encode() not in body
    assert f"bad token {MASK}".encode() in body
    assert f"copied {MASK}".encode() in body


def test_masked_strings_keeps_the_shape() -> None:
    """Every string value of a nested structure is masked (in one pass), keys, numbers and
    booleans are left alone, and the structure keeps its shape."""
    value = {"a": ["x SECRET y", 1, True, None], "b": {"SECRET": "SECRET"}, "c": ("", "z")}
    out = masked_strings(value, lambda text: text.replace("SECRET", "***"))
    assert out == {"a": ["x *** y", 1, True, None], "b": {"SECRET": "***"}, "c": ["", "z"]}


@pytest.mark.parametrize(
    ("host", "token", "exposed"),
    [
        ("0.0.0.0", None, True),
        ("10.1.2.3", None, True),
        ("::", None, True),
        ("0.0.0.0", SecretStr("t0k3n"), False),
        ("127.0.0.1", None, False),
        ("::1", None, False),
        ("localhost", None, False),
    ],
)
def test_unauthenticated_beyond_loopback_is_flagged(
    host: str, token: SecretStr | None, exposed: bool
) -> None:
    """The start-up warning (admin.unauthenticated) is due exactly when the admin port is
    bound beyond loopback with no token."""
    assert exposed_unauthenticated(host, token) is exposed


def test_admin_defaults_are_loopback_and_bounded() -> None:
    """admin.host defaults to loopback; the connection cap and the header deadline have sane
    defaults."""
    admin_settings = AdminSettings()
    assert admin_settings.host == "127.0.0.1"
    assert admin_settings.max_connections == 256
    assert admin_settings.header_timeout_seconds == 5.0


@pytest.mark.parametrize(
    ("reads", "done"),
    [
        ([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"], True),
        ([b"GET / HTTP/1.1\r\nHost: x\r", b"\n\r", b"\n"], True),
        ([b"GET / HTTP/1.1\nHost: x\n", b"\n"], True),
        ([b"GET / HTTP/1.1\r\nHost: x\r\n", b"X: y\r\n"], False),
    ],
)
def test_end_of_headers_is_found_across_reads(reads: list[bytes], done: bool) -> None:
    """The blank line ending the headers is found even when it straddles reads."""
    tail, found = b"", False
    for data in reads:
        found, tail = headers_complete(tail, data)
        if found:
            break
    assert found is done


async def test_a_bad_instances_limit_is_a_400_naming_the_parameter() -> None:
    """``limit`` in Unicode digits (``²``: str.isdigit, int() refuses it) or 5,000 digits long
    is refused with 400 naming ``limit``, not a 500; a plain limit is answered."""
    async with admin(ConnectionLimits()) as (server, _):
        for limit in ("%C2%B2", "%D9%A1", "9" * 5000):
            head, body = await get(server.port, f"/instances?limit={limit}", token=TOKEN)
            assert head.startswith(b"HTTP/1.1 400"), head
            assert b"limit" in body
        head, _ = await get(server.port, "/instances?limit=10", token=TOKEN)
        assert head.startswith(b"HTTP/1.1 200")
