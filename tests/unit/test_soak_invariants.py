"""The soak's invariant checks over collected data (pure): loss and its explanations,
duplicates and their bound, order per key, isolation, liveness, accounting, tokens."""

from __future__ import annotations

from soak.bridges import published_of
from soak.invariants import (
    Collected,
    Counts,
    FaultRun,
    KillWindow,
    Seen,
    Sent,
    frame_id_of,
    verdict,
)

A, B = "k00", "k01"


def sent(instance: str, seq: int, at: float) -> Sent:
    return Sent(instance, f"{instance}-{seq:09d}", at)


def seen(
    instance: str,
    seq: int,
    offset: int,
    *,
    received: float = 10.0,
    acked: float = 10.1,
    reason: str | None = None,
    ryze_id: str | None = None,
) -> Seen:
    frame_id = f"{instance}-{seq:09d}"
    where = "ryze.dlq" if reason else f"ryze.{instance}.message.status"
    return Seen(instance, frame_id, ryze_id or f"h-{frame_id}", where, (0, 0, offset),
                received, acked, reason)  # fmt: skip


def collected(sends: list[Sent], seens: list[Seen], **extra: object) -> Collected:
    values: dict[str, object] = {
        "faults": [],
        "kills": [],
        "counts": {},
        "bridge_of": {A: "kafka", B: "kafka"},
        "batch_max_records": 2,
    }
    values.update(extra)
    return Collected(sends, seens, **values)  # type: ignore[arg-type]


def check(data: Collected, name: str) -> bool:
    return next(c.ok for c in verdict(data).checks if c.name == name)


def test_frame_ids_are_found_in_whole_truncated_and_binary_values() -> None:
    """The simulator's id is read from a parsed frame, a truncated one and raw bytes; a value
    without one gives None."""
    assert frame_id_of(b'{"event":"x","data":{"id":"k00-000000012"}}') == "k00-000000012"
    assert frame_id_of(b'{"data":{"id": "r01-000000003","tok') == "r01-000000003"
    assert frame_id_of(b'{"data":{"id":"no-number"}}') is None


def test_everything_delivered_passes_every_check() -> None:
    """Frames all published once, in order, fast: every check passes, nothing is lost."""
    data = collected([sent(A, n, n) for n in range(1, 4)], [seen(A, n, n) for n in range(1, 4)])
    result = verdict(data)
    assert result.ok, [c for c in result.checks if not c.ok]
    assert result.losses == []


def test_a_frame_found_nowhere_is_an_unexplained_loss() -> None:
    """A sent frame in neither sink nor DLQ, with no counted drop and no kill window, fails
    no_loss and is listed as unexplained under the fault it was sent during."""
    fault = FaultRun(0, "disk_full", "kafka", A, 5.0, 6.0, 7.0)
    data = collected([sent(A, 1, 1), sent(A, 2, 5.5)], [seen(A, 1, 1)], faults=[fault])
    result = verdict(data)
    assert not check(data, "no_loss")
    assert result.losses[0]["why"] == "unexplained"
    row = next(r for r in result.rows if r.kind == "disk_full")
    assert (row.sent, row.delivered, row.lost) == (1, 0, {"unexplained": 1})


def test_counted_drops_dead_letters_and_kill_tails_explain_losses() -> None:
    """A loss covered by the instance's counted drop, a frame in the DLQ with a reason, and a
    loss inside a bridge's kill window are all explained: no_loss passes."""
    sends = [sent(A, 1, 1), sent(A, 2, 2), sent(B, 1, 3), sent(B, 2, 9)]
    seens = [seen(A, 1, 1), seen(B, 1, 1, reason="malformed_json")]
    counts = {A: Counts(received=2, published=1, drops={"spool_full": 1}), B: Counts()}
    data = collected(sends, seens, counts=counts, kills=[KillWindow("kafka", 8.5, 9.5)])
    result = verdict(data)
    assert check(data, "no_loss")
    assert sorted(x["why"] for x in result.losses) == [
        "counted_drop:spool_full",
        "tail_at_bridge_kill",
    ]


def test_duplicates_over_the_bound_or_with_differing_ids_fail() -> None:
    """Copies beyond what was sent count as duplicates; more than batch_max_records under one
    fault fails; so does a duplicate whose copies carry different ryze-ids. A byte-identical
    frame sent twice and published twice is no duplicate."""
    sends = [sent(A, n, 1) for n in range(1, 4)] + [sent(B, 1, 1), sent(B, 1, 1)]
    within = [seen(A, n, n) for n in range(1, 4)] + [seen(B, 1, 1), seen(B, 1, 2)]
    assert check(collected(sends, [*within, seen(A, 1, 9), seen(A, 2, 10)]), "duplicates_bounded")
    too_many = [*within, seen(A, 1, 9), seen(A, 2, 10), seen(A, 3, 11)]
    assert not check(collected(sends, too_many), "duplicates_bounded")
    differing = [*within, seen(A, 1, 9, ryze_id="other")]
    assert not check(collected(sends, differing), "duplicates_bounded")


def test_order_is_checked_on_first_occurrences_per_key() -> None:
    """A re-published earlier frame after later ones is fine (only first occurrences count);
    a first occurrence of an earlier frame after a later one is a violation."""
    sends = [sent(A, n, n) for n in range(1, 4)]
    redelivered = [seen(A, 1, 1), seen(A, 2, 2), seen(A, 1, 3), seen(A, 3, 4)]
    assert check(collected(sends, redelivered), "order")
    swapped = [seen(A, 1, 1), seen(A, 3, 2), seen(A, 2, 3)]
    assert not check(collected(sends, swapped), "order")


def test_isolation_fails_when_others_wait_or_reach_the_dlq() -> None:
    """During a fault on A's topic, B's records received in the window must be acked within
    5 s at p99 and none of them dead-lettered."""
    fault = FaultRun(0, "topic_recreate", "kafka", A, 10.0, 20.0, 21.0)
    sends = [sent(B, n, 10 + n) for n in range(1, 3)]
    fast = [seen(B, n, n, received=10 + n, acked=10.5 + n) for n in range(1, 3)]
    assert check(collected(sends, fast, faults=[fault]), "isolation")
    slow = [seen(B, n, n, received=10 + n, acked=17 + n) for n in range(1, 3)]
    assert not check(collected(sends, slow, faults=[fault]), "isolation")
    dead = [seen(B, 1, 1, received=11), seen(B, 2, 2, received=12, reason="rejected_by_broker")]
    assert not check(collected(sends, dead, faults=[fault]), "isolation")


def test_liveness_needs_recovery_within_60_s_and_no_restart() -> None:
    """A fault recovered 30 s after it ended passes; one recovered after 61 s, one never
    recovered, and one that needed the bridge restarted fail."""
    ok = FaultRun(0, "redis_oom", "redis", A, 0.0, 10.0, 40.0)
    assert check(collected([], [], faults=[ok]), "liveness")
    for bad in (
        FaultRun(0, "redis_oom", "redis", A, 0.0, 10.0, 71.0),
        FaultRun(0, "redis_oom", "redis", A, 0.0, 10.0, None),
        FaultRun(0, "redis_oom", "redis", A, 0.0, 10.0, 12.0, restarted=True),
    ):
        assert not check(collected([], [], faults=[bad]), "liveness")


def test_accounting_adds_up_received_against_published_dlq_and_drops() -> None:
    """received - filtered = published + DLQ + counted drops passes, within the instance's
    duplicates (the counter counts a re-publish again); a difference larger than its
    duplicates and kill tail fails."""
    sends = [sent(A, n, n) for n in range(1, 5)]
    seens = [seen(A, 1, 1), seen(A, 2, 2), seen(A, 2, 3), seen(A, 3, 4, reason="too_large")]
    exact = Counts(received=5, filtered=1, published=2, drops={"spool_full": 1})
    assert check(collected(sends, seens, counts={A: exact}), "accounting")
    republished = Counts(received=5, filtered=1, published=3, drops={"spool_full": 1})
    assert check(collected(sends, seens, counts={A: republished}), "accounting")
    short = Counts(received=7, filtered=1, published=2, drops={"spool_full": 1})
    assert not check(collected(sends, seens, counts={A: short}), "accounting")


def test_accounting_is_per_bridge_with_its_published_total_from_the_scrape() -> None:
    """The bridge's published total is read off ``events_published_total{sink, event}``
    (the gap markers left out) and balances the received counts of all its instances; a
    bridge that published less than its instances received, beyond their duplicates, fails."""
    scrape = {
        'ryze_bridge_events_published_total{event="message.status",sink="kafka"}': 3.0,
        'ryze_bridge_events_published_total{event="other",sink="kafka"}': 1.0,
        'ryze_bridge_events_published_total{event="bridge.gap",sink="kafka"}': 5.0,
        'ryze_bridge_events_received_total{event="other",ryze_instance="k00"}': 9.0,
    }
    assert published_of(scrape) == 4.0
    counts = {A: Counts(received=3, drops={"spool_full": 1}), B: Counts(received=2)}
    assert check(collected([], [], counts=counts, published={"kafka": 4.0}), "accounting")
    assert not check(collected([], [], counts=counts, published={"kafka": 2.0}), "accounting")


def test_accounting_counts_a_dlq_record_once_from_the_dlq_topic() -> None:
    """A frame the pipeline dead-lettered is read from the DLQ topic and is not in the
    bridge's published total (``events_published_total`` leaves DLQ records out): received
    = published + DLQ balances; a published total that still held the DLQ record (counted
    twice) is off by more than the instance's duplicates and fails."""
    seens = [seen(A, 1, 1), seen(A, 2, 2), seen(A, 3, 3, reason="malformed_json")]
    counts = {A: Counts(received=3)}
    assert check(collected([], seens, counts=counts, published={"kafka": 2.0}), "accounting")
    assert not check(collected([], seens, counts=counts, published={"kafka": 3.0}), "accounting")


def test_a_token_found_anywhere_fails() -> None:
    """Any place reported holding a token fails no_token_leak."""
    assert not check(collected([], [], leaks=["kafka: token of length 32"]), "no_token_leak")


def test_a_record_the_dlq_refused_and_dropped_fails() -> None:
    """A counted drop explains a loss, but a drop because the DLQ refused the record breaks
    the contract (a failed DLQ write keeps the record in the spool): dlq_writes_kept fails."""
    sends = [sent(A, 1, 1), sent(A, 2, 2)]
    counts = {A: Counts(received=2, published=1, drops={"dlq_rejected": 1})}
    data = collected(sends, [seen(A, 1, 1)], counts=counts)
    assert check(data, "no_loss")
    assert not check(data, "dlq_writes_kept")
    ok = {A: Counts(received=2, published=1, drops={"spool_full": 1})}
    assert check(collected(sends, [seen(A, 1, 1)], counts=ok), "dlq_writes_kept")
