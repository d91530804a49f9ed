"""How the Redis sink frames a call and reads its replies back: each stream's two or more
records go inside MULTI … EXEC (applied whole or not at all, so a record refused for memory
and retried can never land after a later one of its stream), a lone record goes bare, and
every command gets exactly one result whatever the server or the connection did."""

from __future__ import annotations

import time
from typing import Any

from redis._parsers.base import BaseParser

from bridge.errors import SinkUnavailableError
from bridge.pipeline import Record
from bridge.sinks.base import Failed
from bridge.sinks.redis import by_stream, framed, results, transaction_results

LOST = Failed(SinkUnavailableError("redis: ConnectionError (3 replies not read)"))


def server_error(line: str) -> Exception:
    """The exception redis-py's parser builds for the server's error ``line``."""
    error: Exception = BaseParser.parse_error(line)  # type: ignore[no-untyped-call]
    return error


def record(destination: str, size: int = 10) -> Record:
    return Record(destination, b"k", b"x" * size, "message.exchange", "shop", time.time_ns())


def xadd(stream: str, n: int) -> tuple[Any, ...]:
    return ("XADD", stream, "*", "n", n)


def test_records_group_by_stream_in_order_of_first_record() -> None:
    """Each stream's records in their order; streams in the order their first record came;
    records over the size limit left out (they are refused before anything is sent)."""
    batch = [record("a"), record("b"), record("a", 99), record("c"), record("a"), record("b")]
    assert by_stream(batch, limit=50) == [[0, 4], [1, 5], [3]]


def test_a_stream_of_two_or_more_goes_in_a_transaction_a_lone_one_bare() -> None:
    """MULTI … EXEC around each group of two or more, nothing around a group of one."""
    groups = [[xadd("a", 1), xadd("a", 2)], [xadd("b", 1)]]
    assert framed(groups) == [("MULTI",), xadd("a", 1), xadd("a", 2), ("EXEC",), xadd("b", 1)]


def test_an_applied_transaction_gives_exec_replies_per_command() -> None:
    """EXEC's array is the commands' results, errors inside it included (a WRONGTYPE found
    when the command ran is that command's alone)."""
    wrong = server_error("WRONGTYPE Operation against a key holding the wrong kind of value")
    replies = [b"OK", b"QUEUED", b"QUEUED", [b"1-0", wrong]]
    assert transaction_results(replies, 2, LOST) == [b"1-0", wrong]


def test_a_discarded_transaction_fails_every_command_and_keeps_the_refusals() -> None:
    """A command refused as it was queued (OOM here) makes the server discard the
    transaction: that command keeps its own error, the others a transient failure naming
    why; none is reported delivered."""
    oom = server_error("OOM command not allowed when used memory > 'maxmemory'.")
    aborted = server_error("EXECABORT Transaction discarded because of previous errors.")
    out = transaction_results([b"OK", b"QUEUED", oom, b"QUEUED", aborted], 3, LOST)
    assert out[1] is oom
    for other in (out[0], out[2]):
        assert isinstance(other, Failed)
        assert isinstance(other.error, SinkUnavailableError)
        assert "transaction not applied" in str(other.error)
        assert "EXECABORT" in str(other.error)
        assert "first refused: OOM" in str(other.error)  # the root cause on every record


def test_exec_refused_fails_every_command() -> None:
    """EXEC itself refused (out of memory when it came): every command failed, transient."""
    refused = server_error("EXECABORT Transaction discarded because of: OOM command not allowed")
    out = transaction_results([b"OK", b"QUEUED", b"QUEUED", refused], 2, LOST)
    assert all(isinstance(o, Failed) and "OOM" in str(o.error) for o in out)


def test_exec_refused_by_the_acl_names_what_to_grant() -> None:
    """EXEC refused by an ACL changed since the start: every command failed and held (not
    the DLQ: nothing is wrong with the records), the error saying what to grant."""
    refused = server_error(
        "EXECABORT Transaction discarded because of: NOPERM this user has no permissions to "
        "run the 'exec' command"
    )
    out = transaction_results([b"OK", b"QUEUED", b"QUEUED", refused], 2, LOST)
    assert all(isinstance(o, Failed) and "+multi +exec" in str(o.error) for o in out)


def test_exec_reply_not_read_fails_every_command_as_lost() -> None:
    """The connection lost before EXEC's reply: applied whole or not at all, not known, so
    every command is failed with the loss (retried: at least once)."""
    assert transaction_results([b"OK", b"QUEUED"], 3, LOST) == [LOST, LOST, LOST]
    assert transaction_results([], 2, LOST) == [LOST, LOST]


def test_multi_refused_means_the_commands_ran_one_by_one() -> None:
    """MULTI refused (an ACL changed since the start): the commands were not queued but
    run, so their replies are their results; EXEC's error is not a result."""
    noperm = server_error("NOPERM this user has no permissions to run the 'multi' command")
    exec_error = server_error("ERR EXEC without MULTI")
    assert transaction_results([noperm, b"1-0", b"2-0", exec_error], 2, LOST) == [b"1-0", b"2-0"]
    assert transaction_results([noperm, b"1-0"], 3, LOST) == [b"1-0", LOST, LOST]


def test_results_walk_bare_commands_and_transactions_alike() -> None:
    """One result per command, in the groups' order, across bare commands and transactions;
    whatever was not read is the loss."""
    groups = [[xadd("a", 1)], [xadd("b", 1), xadd("b", 2)], [xadd("c", 1)]]
    replies = [b"1-0", b"OK", b"QUEUED", b"QUEUED", [b"2-0", b"3-0"], b"4-0"]
    assert results(groups, replies, LOST) == ([b"1-0", b"2-0", b"3-0", b"4-0"], None)
    assert results(groups, replies[:3], LOST) == ([b"1-0", LOST, LOST, LOST], None)
    assert results(groups, [], LOST) == ([LOST] * 4, None)


def test_a_refused_multi_is_found_among_the_replies() -> None:
    """A MULTI the server refused is reported (to be logged: the stream's records then went
    one by one); a bare command's error is not a MULTI's refusal."""
    noperm = server_error("NOPERM this user has no permissions to run the 'multi' command")
    wrongtype = server_error("WRONGTYPE Operation against a key holding the wrong kind of value")
    groups = [[xadd("a", 1)], [xadd("b", 1), xadd("b", 2)]]
    assert results(groups, [wrongtype, noperm, b"1-0", b"2-0", noperm], LOST)[1] is noperm
    assert results(groups, [wrongtype, b"OK", b"QUEUED", b"QUEUED", [b"1", b"2"]], LOST)[1] is None
    assert results(groups, [b"1-0"], LOST)[1] is None
