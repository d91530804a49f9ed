"""Simulator conformance, REST: auth, config semantics, rate limit (upstream/ryzeapi.md §2, §4,
§7)."""

from __future__ import annotations

import asyncio
import time

import pytest

from bridge.simulator import SimConfig, Simulator
from tests.conformance.helpers import ACCOUNT, TOKENS, configure, error_message, rest

GET = "/api/events/getWebsocket/{}"
POST = "/api/events/websocket/{}"


@pytest.fixture
async def sim() -> Simulator:  # type: ignore[misc]
    async with Simulator(SimConfig(instances=TOKENS, account_tokens=[ACCOUNT], rate=0)) as s:
        yield s


@pytest.mark.parametrize(
    "how", ["header", "bearer", "query"], ids=["token-header", "bearer", "query"]
)
async def test_token_is_accepted_three_ways(sim: Simulator, how: str) -> None:
    """The token is read from the `token` header, `Authorization: Bearer`, or `?token=`."""
    token = TOKENS["shop"]
    headers = {"token": token} if how == "header" else {}
    headers |= {"Authorization": f"Bearer {token}"} if how == "bearer" else {}
    params = {"token": token} if how == "query" else {}
    async with rest(sim.base_url) as client:
        response = await client.get(GET.format("shop"), headers=headers, params=params)
    assert response.status_code == 404  # authenticated: the config simply does not exist
    assert error_message(response) == "WebSocket not configured for this instance"


async def test_missing_and_invalid_token_are_401(sim: Simulator) -> None:
    """No token → 401 with the documented message; an unknown token → 401 Invalid token."""
    async with rest(sim.base_url) as client:
        missing = await client.get(GET.format("shop"))
        invalid = await client.get(GET.format("shop"), headers={"token": "nope"})
    assert missing.status_code == 401
    assert missing.json() == {
        "success": False,
        "error": {"message": "Missing token in header, Authorization header, or query parameter"},
    }
    assert invalid.status_code == 401
    assert error_message(invalid) == "Invalid token"


async def test_foreign_instance_token_is_403_unknown_instance_404(sim: Simulator) -> None:
    """An instance token used on another instance → 403; an unknown instance → 404."""
    async with rest(sim.base_url) as client:
        foreign = await client.get(GET.format("other"), headers={"token": TOKENS["shop"]})
        unknown = await client.get(GET.format("ghost"), headers={"token": ACCOUNT})
    assert foreign.status_code == 403
    assert error_message(foreign).startswith("Instance token does not ma")
    assert unknown.status_code == 404
    assert error_message(unknown) == "Instance not found"


async def test_account_token_works_for_every_instance(sim: Simulator) -> None:
    """A TokenAccount configures and reads every instance of the account."""
    for name in TOKENS:
        assert (await configure(sim.base_url, name, ACCOUNT)).status_code == 200
        async with rest(sim.base_url) as client:
            response = await client.get(GET.format(name), headers={"token": ACCOUNT})
        assert response.json()["websocket"]["enabled"] is True


async def test_not_configured_is_404_disabled_is_200(sim: Simulator) -> None:
    """404 'not configured' before any POST; after a disable, 200 with enabled false, events
    [] and mediaBase64 false (404 ≠ disabled)."""
    headers = {"token": TOKENS["shop"]}
    async with rest(sim.base_url) as client:
        before = await client.get(GET.format("shop"), headers=headers)
        await configure(sim.base_url, "shop", TOKENS["shop"], events=["call.update"])
        disabled = await client.post(POST.format("shop"), json={"enabled": False}, headers=headers)
        after = await client.get(GET.format("shop"), headers=headers)
    assert before.status_code == 404
    assert disabled.json()["websocket"] == {"enabled": False, "events": [], "mediaBase64": False}
    assert after.status_code == 200
    assert after.json() == {
        "success": True,
        "message": "WebSocket configuration retrieved",
        "websocket": {"enabled": False, "events": [], "mediaBase64": False},
    }


async def test_post_upserts_and_echoes_what_was_persisted(sim: Simulator) -> None:
    """POST is an idempotent upsert; the answer echoes the persisted config; GET agrees."""
    body = {"events": ["message.exchange", "message.status"], "mediaBase64": True}
    first = await configure(sim.base_url, "shop", TOKENS["shop"], **body)
    second = await configure(sim.base_url, "shop", TOKENS["shop"], **body)
    expected = {"enabled": True, **body}
    assert first.status_code == second.status_code == 200
    assert first.json()["websocket"] == second.json()["websocket"] == expected
    async with rest(sim.base_url) as client:
        read = await client.get(GET.format("shop"), headers={"token": TOKENS["shop"]})
    assert read.json()["websocket"] == expected


@pytest.mark.parametrize(
    "content",
    [b"not json", b'{"enabled": "yes"}', b'{"events": ["message.bogus"]}', b"[1]"],
    ids=["not-json", "wrong-type", "unknown-event", "not-object"],
)
async def test_invalid_body_is_400(sim: Simulator, content: bytes) -> None:
    """A body that is not JSON, has a wrong type or an unknown event → 400 Invalid request body."""
    async with rest(sim.base_url) as client:
        response = await client.post(
            POST.format("shop"), content=content, headers={"token": TOKENS["shop"]}
        )
    assert response.status_code == 400
    assert error_message(response) == "Invalid request body"


async def test_rate_limit_429_and_headers_on_every_answer() -> None:
    """Every answer carries X-RateLimit-Limit/Remaining/Reset; past the limit per window the
    answer is 429 with the documented message; the window then resets."""
    config = SimConfig(instances=TOKENS, rate_limit=3, rate_window=1.0)
    async with Simulator(config) as sim, rest(sim.base_url) as client:
        headers = {"token": TOKENS["shop"]}
        answers = [await client.get(GET.format("shop"), headers=headers) for _ in range(4)]
        assert [a.status_code for a in answers] == [404, 404, 404, 429]
        assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
        assert all(a.headers["X-RateLimit-Limit"] == "3" for a in answers)
        assert all(int(a.headers["X-RateLimit-Reset"]) >= int(time.time()) for a in answers)
        assert error_message(answers[3]) == "Rate limit exceeded. Try again later."
        other = await client.get(GET.format("other"), headers={"token": TOKENS["other"]})
        assert other.status_code == 404  # one bucket per token
        await _sleep_until(float(answers[3].headers["X-RateLimit-Reset"]))
        again = await client.get(GET.format("shop"), headers=headers)
        assert again.status_code == 404
        assert sim.rate_limited_of(TOKENS["shop"]) == 1


async def _sleep_until(unix: float) -> None:
    await asyncio.sleep(max(0.0, unix - time.time()) + 0.05)
