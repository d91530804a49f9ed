"""Logging: JSON lines off a terminal, dotted events, and every registered secret masked."""

from __future__ import annotations

import io
import json
import logging

from bridge.logs import configure_logging, get_logger, mask_registered, mask_text, register_secret

SECRET = "tok-0f9e8d7c6b5a-secret"


def test_mask_text_replaces_every_occurrence() -> None:
    """mask_text replaces each secret wherever it stands, longest first."""
    assert mask_text(f"a {SECRET} b {SECRET}", [SECRET]) == "a *** b ***"
    assert mask_text("nothing here", [SECRET]) == "nothing here"


def test_json_lines_mask_registered_secrets_everywhere() -> None:
    """A registered token is masked in the message, in values, in nested data, in exceptions
    and in stdlib loggers routed through structlog."""
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    register_secret(SECRET)
    log = get_logger("test", instance="shop")
    log.info("ws.connected", url=f"wss://h/ws/shop?token={SECRET}", nested={"t": [SECRET]})
    try:
        raise ValueError(f"bad token {SECRET}")
    except ValueError:
        log.exception("ws.failed")
    logging.getLogger("websockets.client").warning("header token: %s", SECRET)
    output = stream.getvalue()
    assert SECRET not in output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert lines[0]["event"] == "ws.connected"
    assert lines[0]["instance"] == "shop"
    assert lines[0]["nested"] == {"t": ["***"]}
    assert any(line.get("logger") == "websockets.client" for line in lines)


def test_text_leaving_the_process_otherwise_is_masked_like_the_logs() -> None:
    """mask_registered (what /readyz's reasons go through) masks every registered secret,
    and leaves other text alone."""
    register_secret("readyz-secret-42")
    assert mask_registered("auth failed for readyz-secret-42!") == "auth failed for ***!"
    assert mask_registered("nothing secret") == "nothing secret"
