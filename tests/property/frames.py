"""Hypothesis strategies for hostile upstream frames that carry a token: valid JSON of any
shape and formatting, cut short, with invalid UTF-8, duplicate keys, escaped spellings of the
``token`` key, the token inside texts, URLs and nested objects."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import strategies as st

from bridge.pipeline.events import EVENT_NAMES

# Tokens as upstreams issue them (base64url/base64 characters); the "~" in the middle keeps a
# token from being a piece of what the bridge itself writes (header names, times, reasons).
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./+="
tokens = st.builds(
    lambda head, tail: f"{head}~{tail}",
    st.text(_ALPHABET, min_size=4, max_size=20),
    st.text(_ALPHABET, min_size=4, max_size=20),
)


def holding(token: str) -> st.SearchStrategy[str]:
    """A text with the token inside: pasted in prose, in a URL's query, alone."""
    around = st.text(max_size=12)
    return st.one_of(
        st.just(token),
        st.builds(lambda a, b: f"{a}{token}{b}", around, around),
        st.builds(lambda q: f"https://h.example/m?{q}={token}&x=1", st.sampled_from(["t", "k"])),
    )


def json_values(token: str | None) -> st.SearchStrategy[Any]:
    """Any JSON value; texts (keys too) may hold ``token``."""
    text = st.text(max_size=10)
    if token is not None:
        text = st.one_of(text, holding(token))
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False,
        allow_infinity=False), text,
    )  # fmt: skip
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)
        ),
        max_leaves=8,
    )


@st.composite
def documents(draw: st.DrawFn, token: str, pasted: bool) -> Any:
    """A frame's document: mostly the upstream's object (an event, data, ``instanceData``
    with the token), sometimes any JSON at all; ``pasted``: the token also in texts."""
    values = json_values(token if pasted else None)
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    event = draw(st.one_of(st.sampled_from(EVENT_NAMES), st.text(max_size=12)))
    document: dict[str, Any] = {"event": event, "data": draw(values)}
    if draw(st.booleans()):
        document["instanceData"] = {"token": token, "name": draw(st.text(max_size=8))}
    if draw(st.booleans()):
        document["extra"] = draw(values)
    keys = list(document)
    order = draw(st.permutations(keys))
    return {k: document[k] for k in order}


def spelled_key(draw: st.DrawFn) -> bytes:
    """``"token"`` with any of its letters written as a ``\\u`` escape (either case)."""
    letters = []
    for char in "token":
        if draw(st.booleans()):
            digits = f"{ord(char):04x}"
            letters.append("\\u" + (digits.upper() if draw(st.booleans()) else digits))
        else:
            letters.append(char)
    return ('"' + "".join(letters) + '"').encode()


@st.composite
def frames(draw: st.DrawFn, token: str, pasted: bool = True) -> bytes:
    """A frame's bytes: a document written compactly, spaced, ASCII-escaped, with escaped
    ``token`` keys or a duplicate ``instanceData``; then perhaps cut short, given invalid
    UTF-8 or put in a list."""
    document = draw(documents(token, pasted))
    style = draw(st.sampled_from(["orjson", "spaced", "ascii", "escaped-key", "duplicate"]))
    if style == "spaced":
        raw = json.dumps(document, indent=draw(st.sampled_from([None, 1, 2]))).encode()
    elif style == "ascii":
        raw = json.dumps(document, ensure_ascii=True, separators=(",", ":")).encode()
    else:
        raw = orjson.dumps(document)
    if style == "escaped-key":
        raw = raw.replace(b'"token"', spelled_key(draw))
    if style == "duplicate" and raw.startswith(b"{") and len(raw) > 2:
        member = b'"instanceData":{"token":' + orjson.dumps(token) + b"}"
        raw = b"{" + member + b"," + raw[1:-1] + b',"instanceData":{}}'
    return draw(damaged(raw))


@st.composite
def damaged(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` as sent, or cut short, with a byte that is not UTF-8, or inside a list."""
    how = draw(st.sampled_from(["whole", "whole", "cut", "invalid-utf8", "list"]))
    if how == "cut" and raw:
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if how == "invalid-utf8":
        at = draw(st.integers(0, len(raw)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]))
        return raw[:at] + bad + raw[at:]
    if how == "list":
        return b"[" + raw + b"]"
    return raw
