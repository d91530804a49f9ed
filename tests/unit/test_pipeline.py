"""The pure pipeline: token removed byte for byte, routing, keys, ids, DLQ decisions."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bridge.pipeline import Drop, Frame, Pipeline, Publish, Router
from bridge.pipeline.events import (
    _CUTS,
    DecodeError,
    cut_compact_member,
    cut_sole_token,
    cut_token,
    decode,
    decode_document,
    decode_head,
    without_token,
)
from bridge.pipeline.filter import EventFilter
from bridge.pipeline.records import record_id, rfc3339
from bridge.pipeline.route import kafka_topic_name
from bridge.simulator import frames

TOKEN = "00000000-0000-4000-8000-0000000000aa"
NS = 1_777_000_000_123_456_789


def frame_bytes(event: str = "message.exchange", data: object = None, layout: str = "go") -> bytes:
    """A frame as the upstream might format it: compact Go style, or spaced and reordered."""
    if layout == "go":
        body = {"event": event, "data": data or {"id": "m1", "message": {"chat": {"jid": "55"}}}}
        body["instanceData"] = {"baseUrl": "https://h", "instance": "shop", "token": TOKEN}
        return orjson.dumps(body)
    return (
        b'{ "instanceData" : { "token" : "' + TOKEN.encode() + b'" ,\n "instance": "shop" },'
        b' "event": "' + event.encode() + b'", "data": {"text": "caf\\u00e9 \\u003cb\\u003e"} }'
    )


def pipeline(**kwargs: object) -> Pipeline:
    options: dict[str, object] = {
        "router": Router("ryze.{instance}.{event}", "instance", kafka_names=True),
        "dlq": "ryze.dlq",
        "max_value_bytes": 1_000_000,
        "token": TOKEN.encode(),
    }
    options.update(kwargs)
    return Pipeline(**options)  # type: ignore[arg-type]


def publish(result: Publish | Drop) -> Publish:
    assert isinstance(result, Publish)
    return result


@pytest.mark.parametrize("layout", ["go", "spaced"])
def test_value_is_frame_minus_token_byte_for_byte(layout: str) -> None:
    """Only the token member is cut: escapes, spacing and key order stay exactly as received."""
    raw = frame_bytes(layout=layout)
    result = publish(pipeline().process(Frame("shop", raw, NS)))
    value = result.record.value
    assert TOKEN.encode() not in value
    assert not result.reserialized
    assert len(raw) - len(value) >= len(TOKEN)
    assert orjson.loads(value) == without_token(orjson.loads(raw))
    if layout == "spaced":
        assert b"\\u003cb\\u003e" in value  # escapes not normalised
        assert value.startswith(b'{ "instanceData" : {')


def test_token_as_only_member_and_nested_token_keys() -> None:
    """A token that is the only member is cut; a 'token' key inside data is left alone."""
    raw = b'{"event":"call.update","data":{"token":"keep-me"},"instanceData":{"token":"' + (
        TOKEN.encode() + b'"}}'
    )
    value = decode(raw).value
    assert orjson.loads(value) == {
        "event": "call.update",
        "data": {"token": "keep-me"},
        "instanceData": {},
    }
    assert b"keep-me" in value


def test_cut_refuses_unverifiable_cut() -> None:
    """cut_token returns None when no cut parses to the expected document."""
    assert cut_token(b'{"a":1}', {"b": 2}) is None


def test_frame_without_token_passes_unchanged() -> None:
    """A frame without instanceData.token is published exactly as received."""
    raw = b'{"event":"label.update","data":{}}'
    assert publish(pipeline().process(Frame("shop", raw, NS))).record.value == raw


def test_route_key_headers_and_id() -> None:
    """Destination from the template, key per mode, the four headers, a stable ryze-id."""
    raw = frame_bytes()
    record = publish(pipeline().process(Frame("shop", raw, NS))).record
    assert record.destination == "ryze.shop.message.exchange"
    assert record.key == b"shop"
    headers = dict(record.headers())
    assert headers["ryze-event"] == b"message.exchange"
    assert headers["ryze-instance"] == b"shop"
    assert headers["ryze-received-at"] == rfc3339(NS).encode()
    assert headers["ryze-id"] == record.id.encode()
    again = publish(pipeline().process(Frame("shop", raw, NS + 5))).record
    assert again.id == record.id == record_id("shop", record.value)
    other = publish(pipeline().process(Frame("other", raw, NS))).record
    assert other.id != record.id


def test_chat_key_tolerates_both_layouts() -> None:
    """key=chat uses data.message.chat.jid (catalog) or data.chat.jid (live), else instance."""
    router = Router("t", "chat")
    catalog = {"data": {"message": {"chat": {"jid": "5511"}}}}
    live = {"data": {"chat": {"jid": "5522"}}}
    assert router.key("shop", catalog) == b"shop/5511"
    assert router.key("shop", live) == b"shop/5522"
    assert router.key("shop", {"data": {}}) == b"shop"
    assert Router("t", "none").key("shop", catalog) is None


def test_rfc3339_microseconds_utc() -> None:
    """Receipt times are RFC 3339, UTC, with microseconds."""
    assert rfc3339(0) == "1970-01-01T00:00:00.000000Z"
    assert rfc3339(1_500_000_123_456) == "1970-01-01T00:25:00.000123Z"


def test_kafka_names_are_made_legal() -> None:
    """Characters Kafka refuses in topic names become underscores; length is capped."""
    assert kafka_topic_name("ryze.loja centro/x.message.exchange") == (
        "ryze.loja_centro_x.message.exchange"
    )
    assert len(kafka_topic_name("a" * 400)) == 249


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json at all " + TOKEN.encode(), "malformed_json"),
        (
            b'{"event":"message.exchange","text":"\xff\xfe","token":"' + TOKEN.encode() + b'"}',
            "malformed_json",
        ),  # text frames arrive as bytes: invalid UTF-8 is caught here
        (b'["a", "list"]', "unknown_shape"),
        (b'{"data": {}, "instanceData": {"token": "' + TOKEN.encode() + b'"}}', "unknown_shape"),
        (b'{"event": 7}', "unknown_shape"),
    ],
)
def test_bad_frames_become_dlq_records_without_token(raw: bytes, reason: str) -> None:
    """Non-JSON, non-object and event-less frames go to the DLQ with a reason, token removed."""
    record = publish(pipeline().process(Frame("shop", raw, NS))).record
    assert record.destination == "ryze.dlq"
    assert record.dlq_reason == reason
    assert TOKEN.encode() not in record.value
    assert dict(record.headers())["ryze-dlq-reason"] == reason.encode()


def test_too_large_goes_to_dlq_truncated() -> None:
    """A frame over the sink's limit becomes a too_large DLQ record that fits the sink."""
    raw = frame_bytes(data={"media": {"base64": "A" * 50_000}})
    result = publish(pipeline(max_value_bytes=10_000).process(Frame("shop", raw, NS)))
    assert result.record.dlq_reason == "too_large"
    assert len(result.record.value) <= 10_000
    assert "truncated" in (result.record.dlq_error or "")


def test_local_filter_drops_and_unknown_events_flow() -> None:
    """drop_events are dropped with a reason; unknown event names are forwarded and flagged."""
    filtered = pipeline(event_filter=EventFilter(frozenset({"call.update"})))
    assert filtered.process(Frame("shop", frame_bytes("call.update"), NS)) == Drop(
        "filtered", "call.update"
    )
    future = publish(pipeline().process(Frame("shop", frame_bytes("poll.vote"), NS)))
    assert not future.known_event
    assert future.record.destination == "ryze.shop.poll.vote"


def test_repr_never_shows_the_token() -> None:
    """The pipeline holds the token to redact it, but never shows it."""
    assert TOKEN not in repr(pipeline())


@pytest.mark.parametrize(
    "raw",
    [
        frame_bytes(),
        frame_bytes(layout="spaced"),
        b'{"instanceData":{"token":"' + TOKEN.encode() + b'","instance":"shop"},"event":"x"}',
        b'{"event":"x","instanceData":{"token":"' + TOKEN.encode() + b'"}}',
        b'{"event":"x","data":{"text":"say \\"token\\" twice"},"instanceData":{"token":"tk-9988"}}',
    ],
)
def test_fast_cut_equals_the_verified_cut(raw: bytes) -> None:
    """Where the token key occurs once, the unverified cut gives the same bytes that a cut
    verified by re-parsing gives, and parses to the document minus the token."""
    expected = without_token(orjson.loads(raw))
    assert expected is not None
    fast = cut_sole_token(raw, orjson.loads(raw)["instanceData"]["token"])
    assert fast is not None
    assert orjson.loads(fast) == expected
    slow = next(
        raw[: m.start()] + raw[m.end() :]
        for pattern in _CUTS
        for m in pattern.finditer(raw)
        if orjson.loads(raw[: m.start()] + raw[m.end() :]) == expected
    )
    assert fast == slow


def test_fast_cut_declines_when_token_appears_twice() -> None:
    """A second "token" (a key in data, or a value) sends the cut to the verified path."""
    raw = b'{"event":"x","data":{"token":"keep"},"instanceData":{"token":"t"}}'
    assert cut_sole_token(raw, "t") is None
    assert decode(raw).value == b'{"event":"x","data":{"token":"keep"},"instanceData":{}}'


def test_fast_cut_refuses_an_escaped_key_elsewhere() -> None:
    """If the real key is written with an escape and another "token" key holds the same
    value, the fast cut refuses (the token would stay) and the verified cut removes the
    right member."""
    raw = b'{"event":"x","data":{"token":"s3cr3t"},"instanceData":{"tok\\u0065n":"s3cr3t"}}'
    assert cut_sole_token(raw, "s3cr3t") is None
    value = decode(raw).value
    assert orjson.loads(value) == {"event": "x", "data": {"token": "s3cr3t"}, "instanceData": {}}


@pytest.mark.parametrize(
    ("raw", "cut"),
    [
        (b'{"a":1,"token":"tk","b":2}', b'{"a":1,"b":2}'),
        (b'{"token":"tk","b":2}', b'{"b":2}'),
        (b'{"a":1,"token":"tk"}', b'{"a":1}'),
        (b'{"token":"tk"}', b"{}"),
        (b'{"a":1, "token":"tk"}', None),
        (b'{"a":"tk","token":"tk"}', None),
        (b'{"token": "tk"}', None),
    ],
)
def test_compact_member_cut(raw: bytes, cut: bytes | None) -> None:
    """The compact cut takes the member with the comma that joins it to a neighbour, and
    declines (None) when the token is still there afterwards or the member is not written
    compactly between separators it understands (the verified cut takes over then)."""
    assert cut_compact_member(raw, "tk") == cut


FIXTURES = sorted((Path(frames.__file__).parent / "fixtures").glob("*.json"))
HEAD_CASES = [
    frame_bytes(),
    frame_bytes(layout="spaced"),
    frame_bytes(data={"text": "Jo\u00e3o", "n": 1e300}),
    b'{"event":"x","instanceData":{"token":null}}',
    b'{"event":"x","instanceData":{"instance":"shop"}}',
    b'{"event":"x","instanceData":null}',
    b'{"event":"x","instanceData":"not an object"}',
    b'{"event":"x","data":{"token":"keep"},"instanceData":{"token":"t"}}',
    b'{"event":"x","instanceData":{"token":7}}',
    b'{"event":"","instanceData":{"token":"t"}}',
    b'{"event":"x","text":"caf\xc3\xa9"}',
]


@pytest.mark.parametrize("raw", HEAD_CASES + [p.read_bytes() for p in FIXTURES])
def test_the_head_decoder_agrees_with_the_document_decoder(raw: bytes) -> None:
    """Where the typed head decoder answers, its event and value are those of the general
    decoder; where it declines, the general way decides (and names what is wrong)."""
    try:
        general = decode_document(raw)
    except DecodeError:
        assert decode_head(raw) is None
        return
    head = decode_head(raw)
    if head is not None:
        assert (head.event, head.value, head.reserialized) == (
            general.event,
            general.value,
            general.reserialized,
        )
        assert head.document is None
    without = decode(raw, document=False)
    assert (without.event, without.value) == (general.event, general.value)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event":"x","text":"\xff"}',  # invalid UTF-8 in a value the head decoder skips
        b'{"event":"x","a":[1,2,}',
        b'{"event":"x"} trailing',
        b'["event"]',
        b'{"event":7}',
        b'{"instanceData":{"token":"t"}}',
    ],
)
def test_the_head_decoder_declines_what_the_general_way_must_name(raw: bytes) -> None:
    """Malformed JSON, invalid UTF-8 anywhere, a non-object and a missing or non-string event
    are left to the general decoder, which raises the DLQ reason."""
    assert decode_head(raw) is None
    with pytest.raises(DecodeError):
        decode(raw, document=False)


def test_fixture_frames_take_the_head_path() -> None:
    """The upstream's sample frames are all decoded without building their document."""
    assert FIXTURES
    for path in FIXTURES:
        raw = path.read_bytes()
        if b'"event"' in raw:
            assert decode_head(raw) is not None, path.name


@pytest.mark.parametrize("layout", ["go", "spaced"])
def test_the_token_anywhere_else_in_a_frame_is_masked(layout: str) -> None:
    """A token that also appears outside instanceData (pasted in a text, in a URL) never
    leaves: every occurrence is replaced by ***, the value stays JSON."""
    raw = frame_bytes(data={"text": f"my token is {TOKEN}", "url": f"https://h/m?t={TOKEN}"})
    if layout == "spaced":
        raw = raw.replace(b",", b", ")
    record = publish(pipeline().process(Frame("shop", raw, NS))).record
    assert TOKEN.encode() not in record.value
    document = orjson.loads(record.value)
    assert document["data"]["text"] == "my token is ***"
    assert document["data"]["url"] == "https://h/m?t=***"
    assert "token" not in document["instanceData"]
    assert record.id == record_id("shop", record.value)


def test_a_decoded_frame_never_shows_the_token() -> None:
    """The token a frame carried is kept for the pipeline to learn, never shown."""
    decoded = decode(frame_bytes(), document=False)
    assert decoded.seen == TOKEN
    assert TOKEN not in repr(decoded)


def test_compact_cut_refuses_a_token_formed_where_the_two_sides_meet() -> None:
    """The bytes left on either side of the cut member can spell the token once joined
    (token ``1}``: ``{"a":1`` and ``}`` meet as ``{"a":1}``): the cut declines then, so no
    published value holds the token; the same frame with another token is cut."""
    assert cut_compact_member(b'{"a":1,"token":"1}"}', "1}") is None
    assert cut_compact_member(b'{"a":1,"token":"2}"}', "2}") == b'{"a":1}'
    assert cut_compact_member(b'{"a":"1}","token":"1}"}', "1}") is None  # left of the cut
    assert cut_compact_member(b'{"token":"1}","a":"1}"}', "1}") is None  # right of it


def test_the_ryze_id_of_a_frame_is_the_same_in_every_release() -> None:
    """Consumers de-duplicate on the ``ryze-id`` across bridge upgrades: the id of a given
    instance and value is pinned here (SHA-256 of them, 128 bits, in hex)."""
    value = b'{"event":"message.exchange"}'
    assert record_id("shop", value) == "8c1792ce80fa9ab7a5847cffc1a7ebb5"
    assert record_id("shop2", value) != record_id("shop", value)
    assert record_id("shop", value + b" ") != record_id("shop", value)
