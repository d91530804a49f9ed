"""Log masking at fleet scale: thousands of registered secrets found in one pass, wherever
they stand in a line, with the automaton rebuilt lazily (correctness; the cost is measured
in bench/masking.py)."""

from __future__ import annotations

import io
import json
import secrets

from bridge.logs import configure_logging, get_logger, mask_secrets, register_secret
from bridge.masking import PENDING_MAX, REBUILD_SECONDS, SecretIndex, merged

FLEET = [f"tok-{n:05d}-{secrets.token_hex(8)}" for n in range(5_000)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_five_thousand_secrets_are_each_masked_anywhere_in_a_text() -> None:
    """With 5,000 secrets registered, any one of them is masked at the start, the middle and
    the end of a text, several in one text, and text without any is left alone."""
    index = SecretIndex("***")
    index.add_all(FLEET)
    matcher = index.matcher()
    for secret in (FLEET[0], FLEET[2_500], FLEET[-1]):
        assert matcher.mask(f"{secret} mid={secret}&x=1 end {secret}") == "*** mid=***&x=1 end ***"
    assert matcher.mask(f"a {FLEET[1]} b {FLEET[2]}") == "a *** b ***"
    assert matcher.mask("tok-00001 but not a whole secret") == "tok-00001 but not a whole secret"


def test_overlapping_secrets_are_masked_as_their_union() -> None:
    """Where two secrets overlap, no part of either survives."""
    index = SecretIndex("***")
    index.add_all(["abcdef", "defghi", "xyzw"])
    assert index.matcher().mask("0abcdefghi1 xyzw") == "0***1 ***"
    assert merged([(5, 7), (0, 2), (1, 3), (3, 4)]) == [(0, 4), (5, 7)]


def test_registering_thousands_builds_the_automaton_a_few_times() -> None:
    """A burst of 5,000 registrations interleaved with log lines builds an automaton about
    once per ``PENDING_MAX`` new secrets, not once per secret; a secret registered and not yet
    built in is masked all the same (the pending list)."""
    clock = Clock()
    index = SecretIndex("***", clock)
    for secret in FLEET:
        index.add(secret)
        assert index.matcher().mask(f"x{secret}y") == "x***y"
    assert index.builds <= 2 * (len(FLEET) // PENDING_MAX + 1)
    clock.now += REBUILD_SECONDS  # what is left pending is built in after a second
    assert index.matcher().pending == ()
    index.add("late-secret-1")
    assert index.matcher().pending == ("late-secret-1",)
    clock.now += REBUILD_SECONDS
    assert index.matcher().pending == ()
    assert index.matcher().mask("late-secret-1") == "***"


def test_short_and_repeated_secrets_do_not_grow_the_index() -> None:
    """Values under 4 characters are not masked (they would mask common words); registering
    the same secret again adds nothing."""
    index = SecretIndex("***")
    index.add("abc")
    index.add("long-secret")
    index.add("long-secret")
    assert index.matcher().pending == ("long-secret",)


def test_a_line_with_five_thousand_secrets_is_masked_everywhere() -> None:
    """Through the configured logging with 5,000 registered secrets: a secret in a value, in
    a key, in nested dicts and lists, in an exception logged and in an exception or another
    object passed as a value is masked; other values are kept as they were."""
    for secret in FLEET:
        register_secret(secret)
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    log = get_logger("test.masking")
    hit = FLEET[4_321]
    log.info(
        "ws.failed",
        url=f"wss://h/ws/shop?token={hit}",
        nested={"a": [1, {"b": f"x{hit}"}], hit: "as a key"},
        error=ValueError(f"refused {hit}"),
        path=type("Holder", (), {"__str__": lambda _self: f"holder {hit}"})(),
        plain="kept",
        count=3,
    )
    try:
        raise RuntimeError(f"boom {hit}")
    except RuntimeError:
        log.exception("ws.crashed")
    output = stream.getvalue()
    assert hit not in output
    first = json.loads(output.splitlines()[0])
    assert first["url"] == "wss://h/ws/shop?token=***"
    assert first["nested"] == {"a": [1, {"b": "x***"}], "***": "as a key"}
    assert first["error"] == "ValueError: refused ***"
    assert first["path"] == "holder ***"
    assert (first["plain"], first["count"]) == ("kept", 3)


def test_a_line_without_a_secret_is_passed_on_unchanged() -> None:
    """The processor hands a line with no secret on as it came (the same object)."""
    register_secret(FLEET[0])
    line = {"event": "ws.connected", "n": 1, "nested": {"a": ["b"]}}
    assert mask_secrets(None, "info", line) is line
