"""Names from the upstream are data, never structure: the event and instance name patterns,
the ``invalid_event`` dead letter, the quoted WebSocket path, discovered and configured
instance names checked alike."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bridge.discovery import shown_name, valid_names
from bridge.errors import ConfigError
from bridge.metrics import DLQ_REASONS
from bridge.pipeline import Frame, Pipeline, Publish, Router
from bridge.pipeline.events import EVENT_NAMES
from bridge.pipeline.filter import EventFilter
from bridge.pipeline.names import INVALID_EVENT, is_safe_event, is_valid_instance
from bridge.settings import load_settings
from bridge.upstream.rest import ListedInstance
from bridge.upstream.ws import ws_url

TOKEN = "00000000-0000-4000-8000-0000000000bb"
HOSTILE_EVENTS = [
    "message.exchange:evil/../x y",
    "bridge.gap",
    "bridge.anything",
    "Message.Exchange",
    "message.exchange\n",
    "ryze:{instance}",
    "x" * 65,
    ".hidden",
    "-dash",
    "",
    "café",
    "a\x00b",
]


def frame(event: str) -> bytes:
    return orjson.dumps({"event": event, "data": {"chat": "55"}, "instanceData": {"token": TOKEN}})


def pipeline(router: Router, **kwargs: object) -> Pipeline:
    options: dict[str, object] = {
        "router": router,
        "dlq": "ryze.dlq",
        "max_value_bytes": 1_000_000,
        "token": TOKEN.encode(),
    }
    options.update(kwargs)
    return Pipeline(**options)  # type: ignore[arg-type]


def test_documented_and_unknown_but_safe_event_names_are_safe() -> None:
    """The six documented names, and an unknown name inside the pattern (a new upstream
    event), may name a destination; the bound is 64 characters."""
    assert all(is_safe_event(event) for event in EVENT_NAMES)
    assert is_safe_event("poll.vote")
    assert is_safe_event("a")
    assert is_safe_event("x" * 64)
    assert is_safe_event("message-ack-2.v1")


def test_an_event_name_with_an_underscore_is_refused() -> None:
    """Kafka counts ``_`` and ``.`` as one in topic names: ``message_status`` would create a
    topic that blocks ``ryze.message.status``. ``_`` is outside the pattern (no documented
    name uses it), so such a frame is dead-lettered as ``invalid_event``."""
    assert not any("_" in event for event in EVENT_NAMES)
    assert not is_safe_event("message_status")
    result = pipeline(Router("ryze.{event}", kafka_names=True)).process(
        Frame("shop", frame("message_status"), 1)
    )
    assert isinstance(result, Publish)
    assert (result.record.destination, result.record.dlq_reason) == ("ryze.dlq", "invalid_event")


@pytest.mark.parametrize("event", HOSTILE_EVENTS)
def test_hostile_or_reserved_event_names_are_refused(event: str) -> None:
    """Separators, paths, spaces, upper case, a trailing newline, over 64 characters and
    the bridge's own ``bridge.`` namespace are refused."""
    assert not is_safe_event(event)


@pytest.mark.parametrize("key_mode", ["instance", "chat"])
@pytest.mark.parametrize("event", [e for e in HOSTILE_EVENTS if e])
def test_a_refused_event_name_is_dead_lettered_and_names_nothing(event: str, key_mode: str) -> None:
    """Both decode ways (the typed head, and the document the chat key reads) send a
    refused name to the DLQ as ``invalid_event``: the record goes to the DLQ topic,
    its event header is ``unknown``, the error does not echo the name, the token is cut."""
    router = Router("ryze.{instance}.{event}", key_mode, kafka_names=True)  # type: ignore[arg-type]
    result = pipeline(router).process(Frame("shop", frame(event), 1))
    assert isinstance(result, Publish)
    record = result.record
    assert (record.destination, record.dlq_reason) == ("ryze.dlq", INVALID_EVENT)
    assert record.event == "unknown"
    assert event.strip() not in (record.dlq_error or "")
    assert TOKEN.encode() not in record.value
    assert router._names == {}  # the name never filled the template


def test_a_filtered_refused_name_is_still_dead_lettered() -> None:
    """The name is checked before the local filter: a hostile name listed in drop_events
    is dead-lettered, not dropped under its own name."""
    hostile = "bridge.gap"
    filtered = pipeline(Router("t.{event}"), event_filter=EventFilter(frozenset({hostile})))
    result = filtered.process(Frame("shop", frame(hostile), 1))
    assert isinstance(result, Publish)
    assert result.record.dlq_reason == INVALID_EVENT


def test_an_unknown_safe_event_keeps_being_published() -> None:
    """An unknown name inside the pattern is published to its own destination, flagged
    unknown (today's behaviour)."""
    result = pipeline(Router("ryze.{event}")).process(Frame("shop", frame("poll.vote"), 1))
    assert isinstance(result, Publish)
    assert result.record.destination == "ryze.poll.vote"
    assert result.record.dlq_reason is None
    assert not result.known_event


def test_the_dlq_reason_is_a_counted_reason() -> None:
    """``invalid_event`` is one of the DLQ reasons whose series exist from the start."""
    assert INVALID_EVENT in DLQ_REASONS


def test_the_dlq_reason_is_named_as_the_design_says() -> None:
    """A refused event name is dead-lettered with the reason ``invalid_event`` (design §2),
    the name the metrics, the DLQ schema and the docs use."""
    result = pipeline(Router("ryze.{event}")).process(Frame("shop", frame("Bad Name"), 1))
    assert isinstance(result, Publish)
    assert result.record.dlq_reason == "invalid_event"
    assert "invalid_event" in DLQ_REASONS


@pytest.mark.parametrize("name", ["shop", "loja-centro", "Store_2", "a", "9" * 64])
def test_valid_instance_names(name: str) -> None:
    """Letters, digits, ``_`` and ``-``, starting with a letter or digit, up to 64."""
    assert is_valid_instance(name)


@pytest.mark.parametrize(
    "name", ["shop.main", "a:b", "a/b", "", "-shop", "_x", "a b", "x" * 65, "shop\n", "lojä"]
)
def test_invalid_instance_names(name: str) -> None:
    """The routing separators ``.`` and ``:``, paths, spaces, a trailing newline, non-ASCII
    and more than 64 characters are refused."""
    assert not is_valid_instance(name)


def test_a_configured_bad_instance_name_fails_naming_its_key(tmp_path: Path) -> None:
    """check-config's error names the instance key, quoted, and says why."""
    config = tmp_path / "bridge.yaml"
    config.write_text('instances:\n  "shop.main": {token_env: T}\n  ok: {token_env: T}\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    (problem,) = raised.value.problems
    assert problem.startswith("instances['shop.main']: not an instance name")
    assert "no '.' or ':'" in problem


def test_discovered_bad_names_are_set_apart() -> None:
    """A listing's invalid names are returned apart from the valid instances, in order; a
    logged name is quoted and cut to 80 characters."""
    listed = [ListedInstance(n, None) for n in ("shop", "a.b", "x:y", "ok-2", "../etc")]
    valid, refused = valid_names(listed)
    assert [i.name for i in valid] == ["shop", "ok-2"]
    assert refused == ["a.b", "x:y", "../etc"]
    assert shown_name("a\nb") == "'a\\nb'"
    assert len(shown_name("y" * 500)) == 83


def test_the_websocket_path_quotes_the_instance() -> None:
    """The instance is one quoted path segment: no ``/``, ``?``, ``#`` or ``..`` steers it."""
    assert ws_url("https://h", "shop") == "wss://h/ws/shop"
    assert ws_url("https://h", "../admin?x=1#f") == "wss://h/ws/..%2Fadmin%3Fx%3D1%23f"
    assert ws_url("http://h:1/", "a b/c") == "ws://h:1/ws/a%20b%2Fc"
