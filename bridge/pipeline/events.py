"""The upstream's event names, and decoding a frame with its instance token taken out of it,
byte for byte (pure).

``EVENT_NAMES`` are the six events the upstream documents; the settings import them to
validate ``instances.*.events`` (the pipeline owns them, the settings do not).

The upstream's payloads differ from its catalog, so the bridge never reshapes a frame: the
published value is the frame as received with only the ``"token": "…"`` member of
``instanceData`` cut out of the bytes. The cut is verified by parsing the result and comparing
it with the parsed frame minus the token; only when no verified cut exists (exotic formatting)
is the value re-serialised.

The usual frame is not built into Python objects at all: a typed decoder checks the whole
frame as JSON and takes only ``event`` and ``instanceData.token``; anything it does not expect
goes the general way, which names what is wrong.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, get_args

import msgspec
import orjson

EventName = Literal[
    "message.exchange",
    "message.status",
    "call.update",
    "group.flow",
    "instance.state",
    "label.update",
]
EVENT_NAMES: tuple[str, ...] = get_args(EventName)  # the same six, in the same order
EVENT_KEY = "event"
INSTANCE_DATA_KEY = "instanceData"
TOKEN_KEY = "token"  # noqa: S105 - the key name, not a secret
BIG_FRAME = 1 << 16  # bytes: past this, copies cost more than the calls that avoid them

_STRING = rb'"(?:[^"\\]|\\.)*"'
_TOKEN_MEMBER = rb'"token"\s*:\s*(?P<value>' + _STRING + rb")"
# Try the member with the comma before it, then with the comma after it, then alone.
_MEMBER = re.compile(_TOKEN_MEMBER)
_CUTS = (
    re.compile(rb",\s*" + _TOKEN_MEMBER),
    re.compile(_TOKEN_MEMBER + rb"\s*,"),
    re.compile(_TOKEN_MEMBER),
)


class DecodeError(ValueError):
    """The frame cannot be published as an event; ``reason`` is the DLQ reason."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


@dataclass(slots=True)  # one per frame: not frozen, a frozen __init__ is 3x dearer
class Decoded:
    """A parsed frame: its event name, its parsed document (None when it was not asked for)
    and its value without the token."""

    event: str
    document: dict[str, Any] | None
    value: bytes
    reserialized: bool
    seen: str | None = field(default=None, repr=False)  # the frame's instanceData.token


class _InstanceData(msgspec.Struct):
    token: str | msgspec.UnsetType | None = msgspec.UNSET


class _Head(msgspec.Struct):
    """The two members the pipeline needs; every other value is checked and skipped."""

    event: str
    instanceData: _InstanceData | None = None  # noqa: N815 - the upstream's spelling


_HEAD = msgspec.json.Decoder(_Head)


def parse(raw: bytes) -> dict[str, Any]:
    """Parse a frame into its top-level object, or raise :class:`DecodeError`."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("malformed_json", f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise DecodeError("unknown_shape", f"top level is {type(document).__name__}, not object")
    return document


def event_name(document: dict[str, Any]) -> str:
    """The frame's ``event``; a missing or non-string one is an ``unknown_shape``."""
    event = document.get(EVENT_KEY)
    if not isinstance(event, str) or not event:
        raise DecodeError("unknown_shape", "no string 'event' at the top level")
    return event


def without_token(document: dict[str, Any]) -> dict[str, Any] | None:
    """The document minus ``instanceData.token``, or None when there is no token to remove."""
    instance_data = document.get(INSTANCE_DATA_KEY)
    if not isinstance(instance_data, dict) or TOKEN_KEY not in instance_data:
        return None
    stripped = {k: v for k, v in instance_data.items() if k != TOKEN_KEY}
    return {k: (stripped if k == INSTANCE_DATA_KEY else v) for k, v in document.items()}


def cut_sole_token(raw: bytes, token: str) -> bytes | None:
    """The cut without re-parsing the frame, when it cannot be wrong: the bytes ``"token"``
    occur exactly once, the member cut holds exactly ``token``, and ``token`` is nowhere in
    what is left. Otherwise None (the verified cut decides)."""
    if raw.count(b'"token"') != 1:
        return None
    compact = cut_compact_member(raw, token)
    if compact is not None:
        return compact
    for pattern in _CUTS:
        match = pattern.search(raw)
        if match is None:
            continue
        candidate = raw[: match.start()] + raw[match.end() :]
        if orjson.loads(match.group("value")) != token:
            return None
        return None if token.encode() in candidate else candidate
    return None


def cut_compact_member(raw: bytes, token: str) -> bytes | None:
    """The usual case in a few byte scans: the member written compactly, ``"token":"…"``
    with the token as it is (no escapes), cut with the comma that joins it to a neighbour.
    The caller has checked that ``"token"`` occurs once; None when anything else holds.

    Found from the end (``instanceData`` comes last in the upstream's frames); a big frame
    (inline media) is joined in one copy instead of three."""
    member = _compact_member(token)
    if member is None:
        return None
    start = raw.rfind(member[0])  # the only one: "token" occurs once
    if start < 0:
        return None
    end = start + len(member[0])
    if raw[start - 1 : start] == b",":
        start -= 1
    elif raw[end : end + 1] == b",":
        end += 1
    elif raw[start - 1 : start] != b"{" or raw[end : end + 1] != b"}":
        return None
    if len(raw) < BIG_FRAME:
        candidate = raw[:start] + raw[end:]
    else:
        view = memoryview(raw)
        candidate = b"".join((view[:start], view[end:]))
    return None if member[1] in candidate else candidate


_ESCAPED_IN_JSON = re.compile(r'[\x00-\x1f"\\]')  # what JSON writes with an escape


def written_with_escapes(text: str) -> bool:
    """Whether JSON writes ``text`` with an escape in it (a control character, ``"``, ``\\``)."""
    return _ESCAPED_IN_JSON.search(text) is not None


@lru_cache(maxsize=16_384)
def _compact_member(token: str) -> tuple[bytes, bytes] | None:
    """``"token":"<token>"`` and the token's bytes, or None when the token would be written
    with escapes. Cached per token (one per instance): the cache is larger than a replica's
    fleet, since an LRU cycled through more tokens than it holds misses every time."""
    if written_with_escapes(token):
        return None
    value = token.encode()
    return b'"token":"' + value + b'"', value


def cut_token(raw: bytes, expected: dict[str, Any], token: Any = None) -> bytes | None:
    """``raw`` with the token member cut out, verified to parse to ``expected``; else None.
    One candidate, one parse (linear however many ``"token"`` members a frame holds): the
    first member after the last ``"instanceData"``, else the last one."""
    sole = cut_sole_token(raw, token) if isinstance(token, str) else None
    if sole is not None:
        return sole
    member = _instance_member(raw)
    if member is None:
        return None
    candidate = _cut_member(raw, *member)
    try:
        return candidate if orjson.loads(candidate) == expected else None
    except orjson.JSONDecodeError:
        return None


def _instance_member(raw: bytes) -> tuple[int, int] | None:
    """Where the ``"token": "…"`` member that is ``instanceData``'s most likely stands."""
    after = raw.rfind(b'"' + INSTANCE_DATA_KEY.encode() + b'"')
    match = _MEMBER.search(raw, max(after, 0)) if after >= 0 else None
    if match is None:
        last = deque(_MEMBER.finditer(raw), maxlen=1)
        match = last[0] if last else None
    return None if match is None else match.span()


def _cut_member(raw: bytes, start: int, end: int) -> bytes:
    """``raw`` without the member at ``start:end`` and the comma joining it to a neighbour
    (the one before it, else the one after it)."""
    before = len(raw[:start].rstrip())
    if raw[before - 1 : before] == b",":
        return raw[: before - 1] + raw[end:]
    after = len(raw) - len(raw[end:].lstrip())
    if raw[after : after + 1] == b",":
        return raw[:start] + raw[after + 1 :]
    return raw[:start] + raw[end:]


def decode_head(raw: bytes) -> Decoded | None:
    """The usual frame decoded without building its document: valid JSON (UTF-8 included), a
    non-empty string ``event``, and either no token or a string one that the sole cut takes out.
    None for anything else (the general way decides)."""
    try:
        head = _HEAD.decode(raw)
    except msgspec.DecodeError:  # malformed, or a shape the general way must name
        return None
    if not head.event or not (raw.isascii() or _is_utf8(raw)):  # skipped strings unchecked
        return None
    token = msgspec.UNSET if head.instanceData is None else head.instanceData.token
    if token is msgspec.UNSET:
        return Decoded(head.event, None, raw, reserialized=False)
    if not isinstance(token, str):  # null: the general way cuts the member
        return None
    sole = cut_sole_token(raw, token)
    if sole is None:
        return None
    return Decoded(head.event, None, sole, reserialized=False, seen=token)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def decode(raw: bytes, *, document: bool = True) -> Decoded:
    """Parse ``raw`` and remove its token, keeping every other byte as received. Without
    ``document`` the parsed document is not kept (and the usual frame is never built)."""
    if not document:
        head = decode_head(raw)
        if head is not None:
            return head
    return decode_document(raw)


def decode_document(raw: bytes) -> Decoded:
    """:func:`decode` the general way: the frame parsed into Python objects."""
    document = parse(raw)
    event = event_name(document)
    instance_data = document.get(INSTANCE_DATA_KEY)
    token = instance_data.get(TOKEN_KEY) if isinstance(instance_data, dict) else None
    if isinstance(token, str):  # the usual frame: cut without building the expected document
        sole = cut_sole_token(raw, token)
        if sole is not None:  # (``document`` still holds the token: it is only read, never sent)
            return Decoded(event, document, sole, reserialized=False, seen=token)
    seen = token if isinstance(token, str) else None
    expected = without_token(document)
    if expected is None:
        return Decoded(event, document, raw, reserialized=False)
    value = cut_token(raw, expected)
    if value is None:
        return Decoded(event, expected, orjson.dumps(expected), reserialized=True, seen=seen)
    return Decoded(event, expected, value, reserialized=False, seen=seen)


def token_cut(raw: bytes) -> tuple[bytes, str | None]:
    """For the DLQ: ``raw`` without its ``instanceData.token`` member when it parses as an
    object, and that token (the bytes as they are otherwise)."""
    try:
        document = parse(raw)
    except DecodeError:
        return raw, None
    instance_data = document.get(INSTANCE_DATA_KEY)
    token = instance_data.get(TOKEN_KEY) if isinstance(instance_data, dict) else None
    expected = without_token(document)
    if expected is not None:
        raw = cut_token(raw, expected) or orjson.dumps(expected)
    return raw, token if isinstance(token, str) else None


def chat_id(document: dict[str, Any]) -> str | None:
    """The chat a message belongs to, tolerant of the catalog and the live layout."""
    data = document.get("data")
    if not isinstance(data, dict):
        return None
    for holder in (data.get("message"), data):
        chat = holder.get("chat") if isinstance(holder, dict) else None
        if isinstance(chat, dict):
            jid = chat.get("jid") or chat.get("lid")
            if isinstance(jid, str) and jid:
                return jid
        elif isinstance(chat, str) and chat:
            return chat
    return None
