"""Simulator conformance, REST: authentication, ownership, the config endpoints, the
instance list and the per-token rate limit (upstream/ryzeapi.md §2, §4, §7)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bridge.simulator import Simulator
from tests.simulator.helpers import (
    ACCOUNT,
    EVENTS,
    MSG_FORBIDDEN,
    MSG_INSTANCE_NOT_FOUND,
    MSG_INVALID_BODY,
    MSG_INVALID_TOKEN,
    MSG_MISSING_TOKEN,
    MSG_NOT_CONFIGURED,
    MSG_RATE_LIMITED,
    OTHER,
    SHOP,
    TOKENS,
    assert_rate_headers,
    config_path,
    configure,
    error_body,
    read_path,
    rest,
    sim_config,
)

CONFIGURED: dict[str, Any] = {"enabled": True, "events": ["message.status"], "mediaBase64": True}


def retrieved(websocket: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "message": "WebSocket configuration retrieved", "websocket": websocket}


# ---- authentication (§2.2) ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"token": TOKENS[SHOP]}, {}),
        ({"Authorization": f"Bearer {TOKENS[SHOP]}"}, {}),
        ({}, {"token": TOKENS[SHOP]}),
    ],
    ids=["token-header", "bearer", "query"],
)
async def test_token_accepted_in_header_bearer_and_query(
    headers: dict[str, str], params: dict[str, str]
) -> None:
    """The token is accepted in the ``token`` header, as ``Authorization: Bearer`` and as
    ``?token=``: each authenticates GET and POST on the instance."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        posted = await client.post(
            config_path(SHOP), json=CONFIGURED, headers=headers, params=params
        )
        assert posted.status_code == 200
        got = await client.get(read_path(SHOP), headers=headers, params=params)
        assert got.status_code == 200
        assert got.json() == retrieved(CONFIGURED)
        assert sim.requests_of(TOKENS[SHOP]) == 2


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({}, {}),
        ({"token": ""}, {}),
        ({"Authorization": "Bearer"}, {}),
        ({"Authorization": f"Basic {TOKENS[SHOP]}"}, {}),
        ({}, {"token": ""}),
    ],
    ids=["nothing", "empty-header", "empty-bearer", "not-bearer", "empty-query"],
)
async def test_missing_token_is_401(headers: dict[str, str], params: dict[str, str]) -> None:
    """Without a usable token (none, empty, or an Authorization that is not Bearer) GET and
    POST answer 401 with ``Missing token in header, Authorization header, or query
    parameter`` in the error envelope."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        for response in (
            await client.get(read_path(SHOP), headers=headers, params=params),
            await client.post(config_path(SHOP), json=CONFIGURED, headers=headers, params=params),
        ):
            assert response.status_code == 401
            assert response.json() == error_body(MSG_MISSING_TOKEN)
        assert sim.config_of(SHOP) is None


async def test_invalid_token_is_401() -> None:
    """An unknown token answers 401 ``Invalid token`` (for a known and for an unknown
    instance alike: authentication comes before existence)."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        for instance in (SHOP, "ghost"):
            response = await client.get(read_path(instance), headers={"token": "nope"})
            assert response.status_code == 401
            assert response.json() == error_body(MSG_INVALID_TOKEN)
        posted = await client.post(config_path(SHOP), json=CONFIGURED, headers={"token": "nope"})
        assert posted.status_code == 401
        assert posted.json() == error_body(MSG_INVALID_TOKEN)
        assert sim.config_of(SHOP) is None


async def test_other_instances_token_is_403() -> None:
    """A valid TokenInstance used on another instance answers 403 (ownership), with the
    documented message prefix ``Instance token does not ma…``, and changes nothing."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        foreign = {"token": TOKENS[OTHER]}
        got = await client.get(read_path(SHOP), headers=foreign)
        posted = await client.post(config_path(SHOP), json=CONFIGURED, headers=foreign)
        for response in (got, posted):
            assert response.status_code == 403
            assert response.json() == error_body(MSG_FORBIDDEN)
            assert MSG_FORBIDDEN.startswith("Instance token does not ma")
            assert_rate_headers(response.headers)
        assert sim.config_of(SHOP) is None


@pytest.mark.parametrize("token", [TOKENS[SHOP], ACCOUNT], ids=["instance", "account"])
async def test_unknown_instance_is_404(token: str) -> None:
    """A valid token (instance or account) on an instance that does not exist answers 404
    ``Instance not found`` for GET and POST."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        got = await client.get(read_path("ghost"), headers={"token": token})
        posted = await client.post(config_path("ghost"), json=CONFIGURED, headers={"token": token})
        for response in (got, posted):
            assert response.status_code == 404
            assert response.json() == error_body(MSG_INSTANCE_NOT_FOUND)
            assert_rate_headers(response.headers)


async def test_account_token_works_for_every_instance() -> None:
    """A TokenAccount configures and reads the config of every instance of the account."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        for instance in (SHOP, OTHER):
            posted = await client.post(
                config_path(instance), json=CONFIGURED, headers={"token": ACCOUNT}
            )
            assert posted.status_code == 200
            got = await client.get(read_path(instance), headers={"token": ACCOUNT})
            assert got.status_code == 200
            assert got.json() == retrieved(CONFIGURED)
        assert sim.requests_of(ACCOUNT) == 4


# ---- GET getWebsocket (§4.2) ---------------------------------------------------------------
async def test_get_before_any_post_is_404_not_configured() -> None:
    """Before any POST there is no config row: GET answers 404 ``WebSocket not configured
    for this instance`` (distinct from ``Instance not found``), with rate-limit headers."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        response = await client.get(read_path(SHOP), headers={"token": TOKENS[SHOP]})
        assert response.status_code == 404
        assert response.json() == error_body(MSG_NOT_CONFIGURED)
        assert_rate_headers(response.headers)


async def test_get_path_has_no_websocket_alias() -> None:
    """The read path is spelled ``getWebsocket``; there is no ``GET /api/events/websocket``
    alias (§1 notes)."""
    async with Simulator(sim_config(preconfigured=True)) as sim, rest(sim) as client:
        alias = await client.get(config_path(SHOP), headers={"token": TOKENS[SHOP]})
        assert alias.status_code in {404, 405}
        assert (await client.get(read_path(SHOP), headers={"token": TOKENS[SHOP]})).is_success


# ---- POST websocket (§4.1) ----------------------------------------------------------------
async def test_post_upserts_and_echoes_the_persisted_config() -> None:
    """POST is an idempotent upsert (one config per instance) whose answer echoes what was
    persisted in ``websocket``; a second POST replaces the first; GET returns the same."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        headers = {"token": TOKENS[SHOP]}
        first = await client.post(config_path(SHOP), json=CONFIGURED, headers=headers)
        assert first.status_code == 200
        assert first.json() == {
            "success": True,
            "message": "WebSocket configuration saved",
            "websocket": CONFIGURED,
        }
        assert_rate_headers(first.headers)
        again = await client.post(config_path(SHOP), json=CONFIGURED, headers=headers)
        assert again.json()["websocket"] == CONFIGURED
        second = {"enabled": True, "events": ["call.update", "group.flow"], "mediaBase64": False}
        replaced = await client.post(config_path(SHOP), json=second, headers=headers)
        assert replaced.json()["websocket"] == second
        got = await client.get(read_path(SHOP), headers=headers)
        assert got.json() == retrieved(second)
        assert sim.stats(SHOP)["config_posts"] == 3
        # the other instance is untouched
        assert sim.config_of(OTHER) is None


async def test_post_defaults_events_all_and_media_false() -> None:
    """Omitted ``events`` (or an empty list) means all six kinds and is persisted as ``[]``;
    omitted ``mediaBase64`` defaults to false; duplicate events are stored once."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        headers = {"token": TOKENS[SHOP]}
        bare = await client.post(config_path(SHOP), json={"enabled": True}, headers=headers)
        assert bare.json()["websocket"] == {"enabled": True, "events": [], "mediaBase64": False}
        empty = await client.post(
            config_path(SHOP), json={"enabled": True, "events": []}, headers=headers
        )
        assert empty.json()["websocket"]["events"] == []
        config = sim.config_of(SHOP)
        assert config is not None
        assert all(config.wants(event) for event in EVENTS)
        duplicated = await client.post(
            config_path(SHOP),
            json={"enabled": True, "events": ["message.status", "message.status"]},
            headers=headers,
        )
        assert duplicated.json()["websocket"]["events"] == ["message.status"]


async def test_disable_keeps_the_row_and_clears_events_and_media() -> None:
    """``{"enabled": false}`` keeps the row but clears ``events`` and ``mediaBase64``: the
    POST echoes the cleared values and GET answers 200 (not 404) ``enabled: false``,
    ``events: []``, ``mediaBase64: false``; re-enabling does not bring the old values back."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        headers = {"token": TOKENS[SHOP]}
        await client.post(config_path(SHOP), json=CONFIGURED, headers=headers)
        cleared = {"enabled": False, "events": [], "mediaBase64": False}
        disabled = await client.post(
            config_path(SHOP),
            json={"enabled": False, "events": ["message.status"], "mediaBase64": True},
            headers=headers,
        )
        assert disabled.status_code == 200
        assert disabled.json()["websocket"] == cleared
        got = await client.get(read_path(SHOP), headers=headers)
        assert got.status_code == 200
        assert got.json() == retrieved(cleared)
        enabled = await client.post(config_path(SHOP), json={"enabled": True}, headers=headers)
        assert enabled.json()["websocket"] == {"enabled": True, "events": [], "mediaBase64": False}


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"not json", "application/json"),
        (b"", "application/json"),
        (b'{"enabled": true', "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"[]", "application/json"),
        (b"null", "application/json"),
        (b'"enabled"', "application/json"),
        (b'{"events": ["message.created"]}', "application/json"),
        (b'{"events": ["message.status", "MESSAGE.STATUS"]}', "application/json"),
        (b'{"events": "message.status"}', "application/json"),
        (b'{"events": [1]}', "application/json"),
        (b'{"events": {"message.status": true}}', "application/json"),
        (b'{"enabled": "true"}', "application/json"),
        (b'{"enabled": 1}', "application/json"),
        (b'{"enabled": null}', "application/json"),
        (b'{"mediaBase64": "yes"}', "application/json"),
        (b'{"mediaBase64": 0}', "application/json"),
    ],
    ids=[
        "non-json",
        "empty",
        "truncated",
        "not-utf8",
        "array",
        "null",
        "string",
        "unknown-event",
        "wrong-case-event",
        "events-string",
        "events-number",
        "events-object",
        "enabled-string",
        "enabled-int",
        "enabled-null",
        "media-string",
        "media-int",
    ],
)
async def test_post_invalid_body_is_400(content: bytes, content_type: str) -> None:
    """A body that is not JSON, not an object, names an unknown event or has a field of the
    wrong type answers 400 ``Invalid request body`` (with rate-limit headers) and leaves the
    persisted config as it was."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        headers = {"token": TOKENS[SHOP], "Content-Type": content_type}
        await client.post(config_path(SHOP), json=CONFIGURED, headers=headers)
        response = await client.post(config_path(SHOP), content=content, headers=headers)
        assert response.status_code == 400
        assert response.json() == error_body(MSG_INVALID_BODY)
        assert_rate_headers(response.headers)
        got = await client.get(read_path(SHOP), headers=headers)
        assert got.json() == retrieved(CONFIGURED)
        assert sim.stats(SHOP)["config_posts"] == 1


# ---- GET /api/instance/list (§4.5) ----------------------------------------------------------
async def test_list_with_account_token_returns_every_instance() -> None:
    """With a TokenAccount and no filter the list returns every instance, each with its
    websocket config (a never-configured one shows as disabled), and says ``N Instances
    found``."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        await configure(sim, SHOP, **CONFIGURED)
        response = await client.get("/api/instance/list", headers={"token": ACCOUNT})
        assert response.status_code == 200
        body = response.json()
        assert body["success"] is True
        assert body["message"] == "2 Instances found"
        by_name = {item["name"]: item for item in body["data"]}
        assert set(by_name) == {SHOP, OTHER}
        assert by_name[SHOP]["websocket"] == CONFIGURED
        assert by_name[OTHER]["websocket"] == {
            "enabled": False,
            "events": [],
            "mediaBase64": False,
        }
        for item in body["data"]:
            assert {"connection", "profile", "webhook", "websocket"} <= set(item)
            assert item["connection"]["state"] in {
                "connected",
                "connecting",
                "disconnected",
                "loggedout",
            }
        assert_rate_headers(response.headers)


async def test_list_filters_by_instance_name() -> None:
    """``?instanceName=a`` returns one instance (``1 Instance found``), ``a,b`` several with
    unknown names ignored, and a single unknown name answers 404 ``Instance not found``."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        headers = {"token": ACCOUNT}
        one = await client.get("/api/instance/list", params={"instanceName": SHOP}, headers=headers)
        assert one.json()["message"] == "1 Instance found"
        assert [i["name"] for i in one.json()["data"]] == [SHOP]
        several = await client.get(
            "/api/instance/list", params={"instanceName": f"{SHOP},ghost,{OTHER}"}, headers=headers
        )
        assert sorted(i["name"] for i in several.json()["data"]) == [OTHER, SHOP]
        missing = await client.get(
            "/api/instance/list", params={"instanceName": "ghost"}, headers=headers
        )
        assert missing.status_code == 404
        assert missing.json() == error_body(MSG_INSTANCE_NOT_FOUND)
        assert_rate_headers(missing.headers)


async def test_list_with_instance_token_returns_only_its_instance() -> None:
    """With a TokenInstance any filter is ignored and only the token's own instance comes
    back."""
    async with Simulator(sim_config()) as sim, rest(sim) as client:
        headers = {"token": TOKENS[SHOP]}
        for params in ({}, {"instanceName": OTHER}, {"instanceName": f"{OTHER},{SHOP}"}):
            response = await client.get("/api/instance/list", params=params, headers=headers)
            assert response.status_code == 200
            assert response.json()["message"] == "1 Instance found"
            assert [i["name"] for i in response.json()["data"]] == [SHOP]


# ---- rate limit (§7.1) ----------------------------------------------------------------------
async def test_every_answer_carries_rate_limit_headers() -> None:
    """200s and errors (400, 403, 404 of both kinds, 429) all carry X-RateLimit-Limit,
    -Remaining (counting down) and -Reset (Unix seconds in the future, fixed for the
    window)."""
    async with Simulator(sim_config(rate_limit=6)) as sim, rest(sim) as client:
        headers = {"token": TOKENS[SHOP]}
        answers = [
            await client.get(read_path(SHOP), headers=headers),  # 404 not configured
            await client.post(config_path(SHOP), json=CONFIGURED, headers=headers),  # 200
            await client.get(read_path(SHOP), headers=headers),  # 200
            await client.post(config_path(SHOP), content=b"x", headers=headers),  # 400
            await client.get(read_path(OTHER), headers=headers),  # 403
            await client.get(read_path("ghost"), headers=headers),  # 404 instance
            await client.get(read_path(SHOP), headers=headers),  # 429
        ]
        assert [a.status_code for a in answers] == [404, 200, 200, 400, 403, 404, 429]
        resets = {
            assert_rate_headers(a.headers, limit=6, remaining=max(0, 5 - n))
            for n, a in enumerate(answers)
        }
        assert len(resets) == 1


async def test_rate_limit_429_after_limit() -> None:
    """After N requests in a window the token's next requests answer 429 ``Rate limit
    exceeded. Try again later.`` with Remaining 0; the simulator counts the rejections."""
    async with Simulator(sim_config(rate_limit=3)) as sim, rest(sim) as client:
        headers = {"token": TOKENS[SHOP]}
        ok = [await client.post(config_path(SHOP), json=CONFIGURED, headers=headers)]
        ok += [await client.get(read_path(SHOP), headers=headers) for _ in range(2)]
        assert [r.status_code for r in ok] == [200, 200, 200]
        assert [r.headers["X-RateLimit-Remaining"] for r in ok] == ["2", "1", "0"]
        for _ in range(2):
            limited = await client.get(read_path(SHOP), headers=headers)
            assert limited.status_code == 429
            assert limited.json() == error_body(MSG_RATE_LIMITED)
            assert_rate_headers(limited.headers, limit=3, remaining=0)
        posted = await client.post(config_path(SHOP), json={"enabled": False}, headers=headers)
        assert posted.status_code == 429
        config = sim.config_of(SHOP)
        assert config is not None
        assert config.enabled is True
        assert sim.requests_of(TOKENS[SHOP]) == 6
        assert sim.rate_limited_of(TOKENS[SHOP]) == 3


async def test_rate_limit_is_per_token() -> None:
    """The bucket is per token: one token's 429s do not touch another instance token's nor
    the account token's requests (and the account token has its own single bucket)."""
    async with Simulator(sim_config(rate_limit=2)) as sim, rest(sim) as client:
        for _ in range(3):
            last = await client.get(read_path(SHOP), headers={"token": TOKENS[SHOP]})
        assert last.status_code == 429
        other = await client.get(read_path(OTHER), headers={"token": TOKENS[OTHER]})
        assert other.status_code == 404
        assert other.headers["X-RateLimit-Remaining"] == "1"
        account = [
            await client.get(read_path(name), headers={"token": ACCOUNT})
            for name in (SHOP, OTHER, SHOP)
        ]
        assert [a.status_code for a in account] == [404, 404, 429]


async def test_rate_limit_is_checked_before_ownership_and_existence() -> None:
    """Checks run token → rate limit → ownership/existence: an exhausted token gets 429 even
    on another instance or an unknown one, while a missing or unknown token still gets 401
    (and is not counted)."""
    async with Simulator(sim_config(rate_limit=1)) as sim, rest(sim) as client:
        headers = {"token": TOKENS[SHOP]}
        assert (await client.get(read_path(SHOP), headers=headers)).status_code == 404
        assert (await client.get(read_path(OTHER), headers=headers)).status_code == 429
        assert (await client.get(read_path("ghost"), headers=headers)).status_code == 429
        assert (await client.get(read_path(SHOP), headers={"token": "x"})).status_code == 401
        assert (await client.get(read_path(SHOP))).status_code == 401
        assert sim.requests_of(TOKENS[SHOP]) == 3
        assert sim.all_stats()["requests"] == 3


async def test_rate_window_resets() -> None:
    """Once the window (rate_window) has passed — at the latest at X-RateLimit-Reset — the
    token's bucket is full again: 200 with Remaining limit-1 and a later Reset."""
    async with Simulator(sim_config(rate_limit=2, rate_window=1.0)) as sim, rest(sim) as client:
        headers = {"token": TOKENS[SHOP]}
        await client.post(config_path(SHOP), json=CONFIGURED, headers=headers)
        await client.get(read_path(SHOP), headers=headers)
        limited = await client.get(read_path(SHOP), headers=headers)
        assert limited.status_code == 429
        reset = assert_rate_headers(limited.headers)
        await asyncio.sleep(min(2.0, max(0.0, reset - time.time()) + 0.05))
        again = await client.get(read_path(SHOP), headers=headers)
        assert again.status_code == 200
        assert_rate_headers(again.headers, limit=2, remaining=1)
        assert int(again.headers["X-RateLimit-Reset"]) > reset - 1
