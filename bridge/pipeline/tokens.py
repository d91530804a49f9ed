"""The tokens an instance's frames may carry, and taking every one of them out of the bytes
that leave the pipeline (pure functions, and one small bounded memory per instance).

A frame is masked against :class:`KnownTokens` (its socket's token, the last ``MAX_SEEN``
``instanceData.token`` values it carried) and, raw or JSON-escaped, against every other
instance's (the fleet's :class:`~bridge.masking.SecretIndex`); as written raw and as JSON
writes it. A spelling with other escapes (``\\u0061``, ``\\/``) is found by reading them
(:func:`hides`): such a value is re-serialised or, unparseable, masked string by string. An
unparseable frame also has the value of every ``"token": "…"`` member masked
(:func:`mask_members`: keys read tolerantly, any alignment, an unterminated value to the end).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import ahocorasick_rs
import orjson

from bridge.masking import FAST, SecretIndex, mask_text
from bridge.pipeline.events import written_with_escapes
from bridge.pipeline.token_key import JUNK, TOKEN_KEY
from bridge.pipeline.token_key import MEMBER as _MEMBER

MASK = b"***"
MASK_TEXT = "***"
MAX_SEEN = 8  # distinct instanceData.token values remembered per instance (rotations)
MAX_SHARED = 64  # of those, how many an instance may ever add to the process-wide indexes
MIN_TOKEN = 4  # shorter values are not masked in text (as in the logs)
MIN_FLEET_TOKEN = 8  # nor, across instances, values short enough to be found in plain data
# What sends a value the long way: a token member, or an escape that may spell a token.
_SUSPECT = (b'"token"', b"\\u", b"\\/")

_SIMPLE = {b'"': b'"', b"\\": b"\\", b"/": b"/", b"b": b"\b", b"f": b"\f"}
_SIMPLE |= {b"n": b"\n", b"r": b"\r", b"t": b"\t"}
_ESCAPE = re.compile(
    rb"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"  # a surrogate pair
    rb"|\\u([0-9a-fA-F]{4})|\\(.)",
    re.DOTALL,
)
_JUNK_BYTES = re.compile(JUNK)  # (in a key: "\xfftoken" is read as token too)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.DOTALL)  # unterminated: to the end


def suspect(value: bytes) -> bool:
    """Whether ``value`` holds what may hide a token: a token member, or an escape (pure).
    Three byte scans: faster than an automaton for three patterns, and they keep the GIL
    (``ahocorasick_rs`` releases it at every call, and each release may hand the loop's
    thread to another for a switch interval)."""
    return b'"token"' in value or b"\\u" in value or b"\\/" in value


def unescape(raw: bytes) -> bytes:
    """``raw`` with every JSON escape read (tolerant: a bad one stands for its character)."""
    return _ESCAPE.sub(_unescaped, raw) if b"\\" in raw else raw


def _unescaped(match: re.Match[bytes]) -> bytes:
    high, low, code, char = match.groups()
    if high is not None:
        pair = (int(high, 16) - 0xD800) * 0x400 + (int(low, 16) - 0xDC00) + 0x10000
        return chr(pair).encode()
    if code is not None:
        return chr(int(code, 16)).encode("utf-8", "surrogatepass")
    return _SIMPLE.get(char, char)


def json_forms(token: bytes) -> tuple[bytes, ...]:
    """The spellings of ``token`` to mask as bytes: raw, and as JSON writes it escaped."""
    try:
        escaped = orjson.dumps(token.decode())[1:-1]
    except (UnicodeDecodeError, orjson.JSONEncodeError):
        return (token,)
    return (token,) if escaped == token else (token, escaped)


def mask_forms(value: bytes, forms: Iterable[bytes]) -> bytes:
    """``value`` with every occurrence of every form replaced by ``***`` (longest first)."""
    for form in forms:
        if form in value:
            value = value.replace(form, MASK)
    return value


def hides(value: bytes, tokens: Iterable[bytes]) -> bool:
    """Whether ``value`` spells a token with escapes that :func:`mask_forms` does not see."""
    if b"\\u" not in value and b"\\/" not in value:
        return False
    read = unescape(value)
    return any(token in read for token in tokens)


def mask_members(raw: bytes, parsed: bool = False) -> bytes:
    """``raw`` with the string value of every member whose key reads ``token`` masked."""
    if parsed and b'"token"' not in raw and b"\\u" not in raw:
        return raw
    spans: list[tuple[int, int]] = []
    for match in _MEMBER.finditer(raw):
        key = match.group(1)
        if key != TOKEN_KEY and not _reads_token(key):
            continue
        string = _STRING.match(raw, match.start(2))
        if string is not None:
            spans.append((string.start(), string.end()))
    return _replace_spans(raw, spans, b'"***"')


def _reads_token(key: bytes) -> bool:
    """Whether a key's bytes read ``token``, bytes that are not UTF-8 left out (wherever they
    stand: ``tok\\<0xff>u0065n`` is read ``tok\\u0065n``, so ``token``)."""
    if _JUNK_BYTES.sub(b"", unescape(key)) == TOKEN_KEY:
        return True
    return _JUNK_BYTES.sub(b"", unescape(_JUNK_BYTES.sub(b"", key))) == TOKEN_KEY


def mask_strings(raw: bytes, tokens: Iterable[bytes]) -> bytes:
    """``raw`` (not parseable) with every string that spells a token with escapes masked."""
    wanted = tuple(tokens)
    spans = [
        (s.start(), s.end())
        for s in _STRING.finditer(raw)
        if b"\\" in s.group() and any(t in unescape(s.group()) for t in wanted)
    ]
    return _replace_spans(raw, spans, b'"***"')


def _replace_spans(raw: bytes, spans: list[tuple[int, int]], mask: bytes) -> bytes:
    if not spans:
        return raw
    parts: list[bytes] = []
    at = 0
    for start, end in sorted(spans):
        if end <= at:
            continue
        parts += (raw[at : max(at, start)], mask)
        at = end
    parts.append(raw[at:])
    return b"".join(parts)


def mask_fleet(value: bytes, fleet: SecretIndex[bytes] | None) -> bytes:
    """``value`` with every other instance's token (raw or JSON-escaped) masked."""
    if fleet is None:
        return value
    matcher = fleet.matcher()
    return matcher.mask(value) if matcher.finds(value) else value


def scrub_unparsed(raw: bytes, known: KnownTokens) -> bytes:
    """For a dead letter: ``raw`` with every token member and every known token masked, at
    byte level; a token still spelled with escapes outside any string has the bytes read."""
    raw = mask_fleet(mask_forms(mask_members(raw), known.forms), known.fleet)
    if hides(raw, known.tokens):
        raw = mask_strings(raw, known.tokens)
    if hides(raw, known.tokens):
        raw = mask_forms(unescape(raw), known.forms)
    return raw


def scrub_parsed(value: bytes, known: KnownTokens) -> bytes | None:
    """A published value (valid JSON) with every known token and token member masked, still
    valid JSON; None when it must be re-serialised (:func:`mask_document`). (Every frame
    comes here: the usual one costs a few byte scans and one automaton pass.)"""
    screen = known.screen
    if not (suspect(value) if screen is None else screen.find_matches_as_indexes(value)) and not (
        known.fleet is not None and known.fleet.matcher().finds(value)
    ):  # the usual frame: one pass for its own tokens and what is suspect, one for the fleet
        return value
    masked = mask_fleet(mask_forms(value, known.forms), known.fleet)
    escaped = b"\\u" in masked
    if escaped or b'"token"' in masked:
        masked = mask_members(masked, parsed=True)
    if (escaped or b"\\/" in masked) and hides(masked, known.tokens):
        return None
    if masked is not value:
        try:
            orjson.loads(masked)
        except orjson.JSONDecodeError:  # a form began inside an escape
            return None
    return masked


def mask_document(value: Any, known: KnownTokens) -> Any:
    """A parsed document with every ``token`` member's string and every known token in a
    string (key or value) masked."""
    if isinstance(value, str):
        return mask_string(value, known)
    if isinstance(value, list):
        return [mask_document(v, known) for v in value]
    if isinstance(value, dict):
        return {
            mask_string(k, known): (
                MASK_TEXT if k == "token" and isinstance(v, str) else mask_document(v, known)
            )
            for k, v in value.items()
        }
    return value


def mask_string(text: str, known: KnownTokens) -> str:
    """``text`` with every known token masked; wholly masked when its JSON spelling still
    shows a token's bytes (``"\\n"`` + ``abc…`` spells the token ``nabc…``)."""
    text = mask_text(text, known.texts)
    if written_with_escapes(text):
        written = orjson.dumps(text)
        if any(form in written for form in known.forms):
            return MASK_TEXT
    return text


class KnownTokens:
    """One instance's tokens: pinned ones (its socket's) and the last ``MAX_SEEN`` distinct
    ``instanceData.token`` values it sent (:meth:`learn`, called for every frame). ``on_new``
    (the logs) and ``fleet`` (every other instance) hear its first ``MAX_SHARED`` new ones
    while the fleet's ``LEARNED_CAP`` allows (else ``on_cap`` hears the refused count): an
    upstream inventing tokens cannot grow the process's indexes; all stay masked here.

    ``screen`` finds what sends a value the long way: what is suspect, and this instance's
    tokens that the fleet's index does not hold (too short to share, or past a cap). Usually
    the fleet holds them all, and there is no screen (None): :func:`suspect`'s byte scans do
    (an automaton per instance costs ~17 KB: 87 MB over 5,000 instances)."""

    __slots__ = (
        "_in_fleet",
        "_last",
        "_on_cap",
        "_on_new",
        "_pinned",
        "_seen",
        "_shared",
        "fleet",
        "forms",
        "screen",
        "texts",
        "tokens",
    )

    def __init__(
        self,
        on_new: Callable[[str], None] | None = None,
        fleet: SecretIndex[bytes] | None = None,
        on_cap: Callable[[int], None] | None = None,
    ) -> None:
        self._on_new = on_new
        self._on_cap = on_cap
        self.fleet = fleet
        self._pinned: dict[bytes, None] = {}
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._shared = 0
        self._last = ""
        self._in_fleet: set[bytes] = set()  # forms the fleet's index holds
        self.tokens: tuple[bytes, ...] = ()
        self.forms: tuple[bytes, ...] = ()
        self.texts: tuple[str, ...] = ()
        self.screen: ahocorasick_rs.BytesAhoCorasick | None = None

    def pin(self, token: bytes) -> None:
        """Always mask ``token`` (the one the socket authenticates with)."""
        if len(token) >= MIN_TOKEN and token not in self._pinned:
            self._pinned[token] = None
            self._share(token)
            self._rebuild()

    def learn(self, token: str | None) -> None:
        """Remember a token a frame carried (the oldest one goes past ``MAX_SEEN``)."""
        if token is None or token == self._last or len(token) < MIN_TOKEN:
            return
        self._last = token
        raw = token.encode("utf-8", "surrogatepass")
        if raw in self._seen:
            self._seen.move_to_end(raw)
            return
        self._seen[raw] = None
        if len(self._seen) > MAX_SEEN:
            self._seen.popitem(last=False)
        try:
            self._learn_shared(raw, token)
        finally:  # masked here in any case
            self._rebuild()

    def _learn_shared(self, raw: bytes, token: str) -> None:
        if self._shared >= MAX_SHARED:  # an upstream inventing tokens: masked here, not shared
            return
        fleet = self.fleet
        forms = self._fleet_forms(raw)
        if fleet is not None and not fleet.learn(forms):
            if self._on_cap is not None:  # the process's cap: masked here, not shared
                self._on_cap(fleet.refused)
            return
        if fleet is not None:
            self._in_fleet.update(forms)
        self._shared += 1
        if self._on_new is not None:
            self._on_new(token)

    def _share(self, token: bytes) -> None:
        if self.fleet is not None:
            forms = self._fleet_forms(token)
            self.fleet.add_all(forms)
            self._in_fleet.update(forms)

    @staticmethod
    def _fleet_forms(token: bytes) -> tuple[bytes, ...]:
        return json_forms(token) if len(token) >= MIN_FLEET_TOKEN else ()

    def _rebuild(self) -> None:
        tokens = sorted({*self._pinned, *self._seen}, key=len, reverse=True)
        self.tokens = tuple(tokens)
        forms = {form for token in tokens for form in json_forms(token)}
        self.forms = tuple(sorted(forms, key=len, reverse=True))
        self.texts = tuple(t.decode("utf-8", "replace") for t in tokens)
        local = [form for form in self.forms if form not in self._in_fleet]
        self.screen = (
            ahocorasick_rs.BytesAhoCorasick([*local, *_SUSPECT], matchkind=FAST) if local else None
        )
