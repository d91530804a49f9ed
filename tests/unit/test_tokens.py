"""No token leaves the pipeline: known tokens masked in every spelling, every ``token`` member
of an unparseable frame masked at byte level, tokens learned per instance (bounded)."""

from __future__ import annotations

import orjson
import pytest

from bridge.masking import SecretIndex
from bridge.pipeline import Frame, KnownTokens, Pipeline, Publish, Record, Router
from bridge.pipeline.tokens import (
    MAX_SEEN,
    MAX_SHARED,
    hides,
    mask_members,
    scrub_parsed,
    scrub_unparsed,
    unescape,
)

TOKEN = "tok-inst-a1b2c3d4"
ACCOUNT = "acc-discovery-9z8y"


def known(*tokens: str) -> KnownTokens:
    book = KnownTokens()
    for token in tokens:
        book.pin(token.encode())
    return book


def discovery() -> Pipeline:
    """A discovered instance's pipeline: its socket uses the account token."""
    return Pipeline(Router("ryze.{event}"), "dlq", 1 << 20, token=ACCOUNT.encode())


def record(result: object) -> Record:
    assert isinstance(result, Publish)
    return result.record


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event":"x","instanceData":{"token":"SECRET"',
        b'{"event":"x","instanceData":{"\\u0074oken":"SECRET"}}',
        b'{"event":"x","instanceData":{"tok\\u0065n" :  "SECRET"}',
        b'{"event":"x","instanceData":{"\\u0074\\u006F\\u006b\\u0065\\u006e":"SECRET',
        b'{"a":"\xff","token":"SECRET"}',
        b'{"token":"SECRET","token":"SECRET"}',
        b'[{"token":"SEC\\"RET"}]',
        b'{"a":{"token":"SECRET\\',
        b'{"instanceData": {"token" \xff: \xc3"SECRET"}}',
        b'{"instanceData": {"\xfftok\xc3en": "SECRET"}}',
        b'{"instanceData": {"tok\\\xffu0065n": "SECRET"}}',
    ],
    ids=[
        "truncated",
        "escaped-key",
        "spaced",
        "all-escaped-unterminated",
        "invalid-utf8",
        "duplicate",
        "array",
        "trailing-backslash",
        "invalid-utf8-around-the-colon",
        "invalid-utf8-in-the-key",
        "invalid-utf8-in-an-escape",
    ],
)
def test_every_token_member_of_an_unparseable_frame_is_masked(raw: bytes) -> None:
    """Whatever the key's spelling and however the frame ends, a token member's value is
    masked, an unterminated one up to the end; the rest of the bytes stay as they were."""
    masked = mask_members(raw)
    assert b"SECRET" not in masked
    assert b"SEC" not in masked
    assert masked.startswith(raw[:5])


def test_a_member_named_otherwise_keeps_its_value() -> None:
    """Keys that only look alike (``tokens``, ``Token``, a value "token") are not masked."""
    raw = b'{"tokens":"a1","Token":"b2","x":"token","y":["token", "c3"]}'
    assert mask_members(raw) == raw


def test_unescape_reads_every_escape_tolerantly() -> None:
    """Escapes are read as JSON reads them (a surrogate pair included); a bad one stands for
    its character."""
    assert unescape(b"\\u0074ok\\/\\n\\\\u0041") == b"tok/\n\\u0041"
    assert unescape(b"\\ud83d\\ude00") == "😀".encode()
    assert unescape(b"\\q") == b"q"


def test_a_known_token_is_masked_in_every_spelling_in_a_published_value() -> None:
    """Raw, in a URL, JSON-escaped (a token with a quote), and spelled with ``\\u`` or ``\\/``
    escapes: every spelling is gone, and the value is still the same JSON otherwise."""
    book = known(TOKEN, 'tok"quoted/1')
    spelled = "".join(f"\\u{ord(c):04x}" for c in TOKEN[:4]) + TOKEN[4:]
    value = orjson.dumps({"a": f"https://h/?t={TOKEN}", "b": 'x tok"quoted/1'}).replace(
        b"}", b',"c":"' + spelled.encode() + b'","d":"tok\\"quoted\\/1"}'
    )
    assert hides(value, book.tokens)
    assert scrub_parsed(value, book) is None  # re-serialised: the pipeline does it
    plain = orjson.dumps({"a": f"https://h/?t={TOKEN}", "b": 'x tok"quoted/1'})
    scrubbed = scrub_parsed(plain, book)
    assert scrubbed is not None
    assert orjson.loads(scrubbed) == {"a": "https://h/?t=***", "b": "x ***"}


def test_a_token_spelled_inside_an_escape_is_masked_with_its_string() -> None:
    """A token whose bytes begin inside an escape (``\\n`` + ``abcd…`` spells ``nabcd…``)
    cannot be masked in place without breaking the JSON: its whole string is masked."""
    pipeline = Pipeline(Router("r"), "dlq", 1 << 20, token=b"nabcd12345")
    raw = b'{"event":"label.update","data":{"t":"x\\nabcd12345","u":"ok"}}'
    published = record(pipeline.process(Frame("shop", raw, 1)))
    assert b"nabcd12345" not in published.value
    assert orjson.loads(published.value)["data"] == {"t": "***", "u": "ok"}


def test_discovery_learns_the_instance_token_and_masks_it_from_then_on() -> None:
    """In discovery mode the instance token is known only from its frames: once a frame
    carried it, it is masked in every later frame, parsed or not, and reported once."""
    heard: list[str] = []
    pipeline = Pipeline(
        Router("r"), "dlq", 1 << 20, token=ACCOUNT.encode(), known=KnownTokens(heard.append)
    )
    first = b'{"event":"label.update","instanceData":{"token":"' + TOKEN.encode() + b'"}}'
    for raw in (
        first,
        first,
        b'{"event":"label.update","data":{"note":"' + TOKEN.encode() + b'"}}',
        b'{"event":"label.update","data":{"note":"' + TOKEN.encode(),
        b'{"event":"label.update","data":"' + ACCOUNT.encode() + b'"}',
    ):
        value = record(pipeline.process(Frame("shop", raw, 1))).value
        assert TOKEN.encode() not in value
        assert ACCOUNT.encode() not in value
    assert heard == [TOKEN]


def test_an_instance_remembers_a_bounded_number_of_tokens() -> None:
    """Past ``MAX_SEEN`` distinct tokens the oldest seen is forgotten; the pinned one stays."""
    book = known(ACCOUNT)
    for n in range(MAX_SEEN + 3):
        book.learn(f"tok-rotated-{n:04d}")
    assert len(book.tokens) == MAX_SEEN + 1
    assert ACCOUNT.encode() in book.tokens
    assert b"tok-rotated-0000" not in book.tokens
    book.learn("abc")  # too short to be masked in text
    assert b"abc" not in book.tokens


def test_an_upstream_inventing_tokens_cannot_grow_the_process_indexes() -> None:
    """An instance reports (for the logs and the fleet) its first ``MAX_SHARED`` distinct
    tokens only; later ones are still masked in its own frames."""
    heard: list[str] = []
    book = KnownTokens(heard.append)
    for n in range(MAX_SHARED + 10):
        book.learn(f"tok-invented-{n:05d}")
    assert len(heard) == MAX_SHARED
    assert f"tok-invented-{MAX_SHARED + 9:05d}".encode() in book.tokens


def test_an_event_name_holding_a_token_is_dead_lettered_masked() -> None:
    """A frame whose event name holds a known token never becomes a topic, stream or header:
    it is dead-lettered (``invalid_event``) with the token masked."""
    raw = b'{"event":"' + ACCOUNT.encode() + b'","data":{}}'
    dead = record(discovery().process(Frame("shop", raw, 1)))
    assert dead.dlq_reason == "invalid_event"
    assert ACCOUNT.encode() not in dead.value
    assert ACCOUNT not in dead.event + (dead.dlq_error or "")


def test_a_chat_key_holding_a_token_is_masked() -> None:
    """The chat id read from the frame for the key is masked like the value."""
    pipeline = Pipeline(Router("r", key_mode="chat"), "dlq", 1 << 20, token=TOKEN.encode())
    raw = orjson.dumps({"event": "message.exchange", "data": {"chat": f"c-{TOKEN}"}})
    published = record(pipeline.process(Frame("shop", raw, 1)))
    assert published.key == b"shop/c-***"


def test_a_dead_letter_spelling_a_token_outside_a_string_is_read_and_masked() -> None:
    """Garbage that spells a known token with escapes outside any string (the scanner cannot
    align on its strings) has its escapes read, and the token masked."""
    book = known(TOKEN)
    spelled = b"\\u0074" + TOKEN[1:].encode()
    scrubbed = scrub_unparsed(b'}}"a" ' + spelled + b' "b', book)
    assert not hides(scrubbed, book.tokens)
    assert TOKEN.encode() not in scrubbed


def test_a_token_of_another_instance_is_masked_too() -> None:
    """Every pipeline of a process shares the fleet's tokens: a frame of one instance that
    holds another instance's token (configured or seen), raw or JSON-escaped, has it masked,
    published or dead-lettered."""
    fleet: SecretIndex[bytes] = SecretIndex(b"***")
    shop = Pipeline(
        Router("r"), "dlq", 1 << 20, token=b"tok-shop-0001", known=KnownTokens(fleet=fleet)
    )
    cafe = Pipeline(
        Router("r"), "dlq", 1 << 20, token=b"tok-cafe-0002", known=KnownTokens(fleet=fleet)
    )
    seen = b'{"event":"label.update","instanceData":{"token":"tok-cafe-seen\\"1"}}'
    record(cafe.process(Frame("cafe", seen, 1)))
    for raw in (
        b'{"event":"label.update","data":{"a":"tok-cafe-0002","b":"x tok-cafe-seen\\"1"}}',
        b'{"event":"label.update","data":{"a":"tok-cafe-0002 tok-cafe-seen\\"1',
    ):
        value = record(shop.process(Frame("shop", raw, 1))).value
        assert b"tok-cafe-0002" not in value
        assert b'tok-cafe-seen\\"1' not in value
    named = b'{"event":"x.tok-cafe-0002","data":{}}'
    assert record(shop.process(Frame("shop", named, 1))).dlq_reason == "invalid_event"
