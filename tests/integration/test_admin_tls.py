"""The admin server's connection guard with admin TLS on (the certificate the test services'
CA signed for 127.0.0.1): a client that never starts its TLS handshake is closed at the header
deadline and counted, a connection over the cap is closed right after its handshake, and a
prompt HTTPS request is answered."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bridge.admin import AdminServer, Readiness
from bridge.adminguard import ConnectionLimits
from bridge.metrics import Metrics, create_metrics
from tests.services import read_services, unavailable
from tests.unit.test_admin_guard import closed_by_server, dropped

pytestmark = pytest.mark.integration
HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def tls() -> dict[str, Any]:
    services = read_services()
    if "tls" not in services:
        unavailable("the services run without TLS; restart them: scripts/services.sh down && up")
    files: dict[str, Any] = services["tls"]
    return files


async def ready() -> Readiness:
    return Readiness(True, ())


@contextlib.asynccontextmanager
async def tls_admin(
    files: dict[str, Any], limits: ConnectionLimits
) -> AsyncIterator[tuple[AdminServer, Metrics]]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files["server_cert"], files["server_key"])
    metrics = create_metrics(CollectorRegistry())
    server = AdminServer(metrics, ready, host=HOST, port=0, tls=context, limits=limits)
    await server.start()
    try:
        yield server, metrics
    finally:
        await server.close()


def client_context(files: dict[str, Any]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=files["ca_file"])


async def test_a_client_that_never_handshakes_is_closed_at_the_deadline(
    tls: dict[str, Any],
) -> None:
    """A TCP connection that never sends its ClientHello holds its slot only until the header
    deadline: then it is closed and counted as header_timeout, and HTTPS still answers."""
    limits = ConnectionLimits(max_connections=4, header_timeout=0.5)
    async with tls_admin(tls, limits) as (server, metrics):
        reader, writer = await asyncio.open_connection(HOST, server.port)
        assert await closed_by_server(reader, within=3.0)
        writer.close()
        assert dropped(metrics, "header_timeout") == 1
        reader, writer = await asyncio.open_connection(
            HOST, server.port, ssl=client_context(tls), server_hostname=HOST
        )
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(-1), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200")
        assert answer.endswith(b"ok\n")


async def test_over_the_cap_a_tls_connection_is_closed_after_its_handshake(
    tls: dict[str, Any],
) -> None:
    """With max_connections 2 and two TLS connections open, a third completes its handshake
    and is closed at once, counted as over_limit."""
    limits = ConnectionLimits(max_connections=2, header_timeout=30)
    async with tls_admin(tls, limits) as (server, metrics):
        held = [
            await asyncio.open_connection(
                HOST, server.port, ssl=client_context(tls), server_hostname=HOST
            )
            for _ in range(2)
        ]
        reader, writer = await asyncio.open_connection(
            HOST, server.port, ssl=client_context(tls), server_hostname=HOST
        )
        assert await closed_by_server(reader, within=3.0)
        assert dropped(metrics, "over_limit") == 1
        writer.close()
        for _, w in held:
            w.close()
