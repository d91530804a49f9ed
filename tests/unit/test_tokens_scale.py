"""Token masking at scale and across the fleet: linear in the frame, bounded rebuilds of the
shared indexes, and another instance's token kept out of the record key too."""

from __future__ import annotations

import math
import time

import orjson
import pytest

from bridge.masking import PENDING_MAX, SecretIndex
from bridge.pipeline import Frame, KnownTokens, Pipeline, Publish, Record, Router
from bridge.pipeline.token_key import MEMBER
from bridge.pipeline.tokens import _SUSPECT, MAX_SHARED, suspect


def record(result: object) -> Record:
    assert isinstance(result, Publish)
    return result.record


def test_a_chat_key_holding_another_instances_token_is_masked() -> None:
    """The chat id read for the key is masked with the fleet's tokens, not only this
    instance's: another instance's learned token never goes out in the key."""
    fleet: SecretIndex[bytes] = SecretIndex(b"***")
    shop = Pipeline(
        Router("r", key_mode="chat"),
        "dlq",
        1 << 20,
        token=b"tok-shop-0001",
        known=KnownTokens(fleet=fleet),
    )
    cafe = Pipeline(Router("r"), "dlq", 1 << 20, known=KnownTokens(fleet=fleet))
    seen = b'{"event":"label.update","instanceData":{"token":"tok-cafe-learned-1"}}'
    record(cafe.process(Frame("cafe", seen, 1)))
    raw = orjson.dumps({"event": "message.exchange", "data": {"chat": "c-tok-cafe-learned-1"}})
    published = record(shop.process(Frame("shop", raw, 1)))
    assert published.key is not None
    assert b"tok-cafe-learned-1" not in published.key
    assert published.key == b"shop/c-***"


def test_registering_ten_thousand_secrets_costs_n_log_n_building() -> None:
    """Registering 10,000 secrets interleaved with checks builds each secret into an automaton
    O(log n) times (tiers growing geometrically), not once per ``PENDING_MAX`` batch over all
    of them (156 full rebuilds: ~780,000 secrets built); every secret is found all along."""
    index: SecretIndex[str] = SecretIndex("***", learned_cap=1 << 20)
    count = 10_000
    for n in range(count):
        secret = f"secret-{n:06d}"
        index.add(secret)
        assert index.matcher().finds(f"x {secret} y")
    assert index.built_secrets <= count * (math.log2(count / PENDING_MAX) + 2)
    assert len(index.matcher().tiers) <= math.log2(count / PENDING_MAX) + 2
    assert all(index.matcher().finds(f"secret-{n:06d}") for n in range(0, count, 97))


def test_learned_tokens_past_the_process_cap_are_counted_and_still_masked_locally() -> None:
    """Past the fleet's cap on learned tokens, a new learned token is refused by the fleet
    (counted, ``on_cap`` hears the count, the logs are not told) but still masked in its own
    instance's frames; configured tokens are not capped."""
    fleet: SecretIndex[bytes] = SecretIndex(b"***", learned_cap=3)
    heard: list[str] = []
    refused: list[int] = []
    pipelines = [
        Pipeline(
            Router("r"),
            "dlq",
            1 << 20,
            token=f"tok-configured-{n}".encode(),
            known=KnownTokens(heard.append, fleet, refused.append),
        )
        for n in range(5)
    ]
    for n, pipeline in enumerate(pipelines):
        seen = b'{"event":"label.update","instanceData":{"token":"tok-learned-%d"}}' % n
        record(pipeline.process(Frame(f"i{n}", seen, 1)))
    assert heard == ["tok-learned-0", "tok-learned-1", "tok-learned-2"]
    assert (fleet.learned, fleet.refused, refused) == (3, 2, [1, 2])
    raw = b'{"event":"label.update","data":{"a":"tok-learned-4 tok-configured-4"}}'
    assert record(pipelines[4].process(Frame("i4", raw, 1))).value.count(b"***") == 2
    other = b'{"event":"label.update","data":{"a":"tok-configured-4 tok-learned-0"}}'
    assert record(pipelines[1].process(Frame("i1", other, 1))).value.count(b"***") == 2


def best_time(pipeline: Pipeline, raw: bytes) -> float:
    """The quickest of three runs of ``raw`` through ``pipeline`` (seconds)."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        pipeline.process(Frame("shop", raw, 1))
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.mark.parametrize(
    ("event", "instance_data"),
    [("label.update", True), ("label.update", False), ("bad/name", True)],
    ids=["published", "published-without-instance-data", "dead-lettered"],
)
def test_a_frame_of_many_token_members_costs_linear_time(event: str, instance_data: bool) -> None:
    """A frame holding thousands of ``"token"`` members (published, or dead-lettered as an
    ``invalid_event``) costs time linear in its size: 8x the members cost well under 20x the
    time (the quadratic cut cost ~64x), and every member's value is masked."""
    pipeline = Pipeline(Router("r"), "dlq", 1 << 24, token=b"tok-shop-0001")
    head = b'{"event":"%s",' % event.encode()
    if instance_data:
        head += b'"instanceData":{"token":"tok-shop-0001"},'

    def frame(n: int) -> bytes:
        return head + b'"data":[' + b",".join([b'{"token":"x"}'] * n) + b"]}"

    small, big = frame(500), frame(4_000)
    value = record(pipeline.process(Frame("shop", big, 1))).value
    assert b'"x"' not in value
    assert b"tok-shop-0001" not in value
    assert best_time(pipeline, big) < 20 * best_time(pipeline, small)


def test_an_oversized_frame_is_cut_before_it_is_scrubbed() -> None:
    """A frame over the value budget is cut to it first and only the cut is scrubbed: 16x the
    frame costs well under 4x the time (scrubbing it whole cost 16x)."""
    pipeline = Pipeline(Router("r"), "dlq", 1 << 16, token=b"tok-shop-0001")
    filler = b'{"a":"\\u0041 token"},' * 4096  # escapes and token bytes: the slow scan's diet

    def frame(copies: int) -> bytes:
        return b'{"event":"label.update","data":[' + filler * copies + b"{}]}"

    small, big = frame(8), frame(128)
    dead = record(pipeline.process(Frame("shop", big, 1)))
    assert dead.dlq_reason == "too_large"
    assert len(dead.value) <= 1 << 16
    assert min(best_time(pipeline, big) for _ in range(2)) < 4 * best_time(pipeline, small)


@pytest.mark.parametrize(
    "tail",
    [b'"instanceData":{"token":"tok-shop-0001', b'"a":"x tok-shop-00', b'"token":"other-secr'],
    ids=["own-token-member", "own-token-prefix", "any-token-member"],
)
def test_a_cut_dead_letter_ends_without_part_of_a_token(tail: bytes) -> None:
    """An oversized frame cut where a token member's value or a known token begins has that
    unterminated value, or the token's start, masked."""
    budget = (1 << 16) - 1024
    pipeline = Pipeline(Router("r"), "dlq", 1 << 16, token=b"tok-shop-0001")
    head = b'{"event":"label.update","data":{"pad":"'
    pad = b"p" * (budget - len(head) - len(b'",') - len(tail))
    raw = head + pad + b'",' + tail + b"-rest" * 20_000 + b'"}}'
    value = record(pipeline.process(Frame("shop", raw, 1))).value
    assert value.endswith((b"***", b'***"')), value[-40:]
    assert b"tok-shop-00" not in value
    assert b"other-secr" not in value


def test_only_keys_that_may_read_token_are_candidates() -> None:
    """The byte-level member scan hands Python only keys that may read ``token`` (its letters
    in order, as is or escaped, junk between): a frame of other keys costs no Python call."""
    others = b'{"tokenn":"x","abcdef":"y","tokens":"z","\\u0041\\u0041\\u0041\\u0041\\u0041":"w"}'
    assert list(MEMBER.finditer(others)) == []
    for key in (b"token", b"\\u0074oken", b"\xfftok\xc3en", b"tok\\\xffu0065n", b"to ken"):
        assert [m.group(1) for m in MEMBER.finditer(b'{"' + key + b'" : "v"}')] == [key]


def test_an_instance_whose_tokens_the_fleet_holds_shares_one_screen() -> None:
    """Instances whose tokens the fleet's index holds keep no automaton of their own (the
    byte scans for what is suspect do; one of their own costs ~17 KB each), yet their frames
    are masked as before; a token too short to share, or learned past ``MAX_SHARED``, gets
    one."""
    fleet: SecretIndex[bytes] = SecretIndex(b"***")
    long = KnownTokens(fleet=fleet)
    long.pin(b"tok-long-0001")
    long.learn("tok-learned-0001")
    assert long.screen is None
    short = KnownTokens(fleet=fleet)
    short.pin(b"tk-1")  # masked locally, too short for the fleet
    assert short.screen is not None
    alone = KnownTokens()  # no fleet: its own screen
    alone.pin(b"tok-alone-0001")
    assert alone.screen is not None
    for known, token in ((long, "tok-long-0001"), (long, "tok-learned-0001"), (short, "tk-1")):
        pipeline = Pipeline(Router("r"), "dlq", 1 << 20, known=known)
        raw = orjson.dumps({"event": "label.update", "data": {"a": f"x {token} y"}})
        assert token.encode() not in record(pipeline.process(Frame("i", raw, 1))).value
    for n in range(MAX_SHARED + 1):
        long.learn(f"tok-rotated-{n:04d}")
    assert long.screen is not None  # the last one stayed local


def test_the_byte_scans_find_everything_the_suspect_screen_would() -> None:
    """:func:`suspect` finds each suspect pattern wherever it stands, and nothing in a frame
    without one (it replaces the shared automaton over the same patterns)."""
    for pattern in _SUSPECT:
        for raw in (pattern, b"x" + pattern, pattern + b"y", b'{"a":"' + pattern + b'"}'):
            assert suspect(raw)
    assert not suspect(b'{"event":"message.exchange","data":{"text":"tok\\\\ en u/"}}')
