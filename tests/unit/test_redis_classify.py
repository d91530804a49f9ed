"""How a Redis reply is judged, for errors exactly as redis-py's parser builds them from the
server's error line (it strips known codes such as ``OOM`` off the message): what passes
with time is retried, what an ACL refuses is ``not_authorized``, the rest goes to the DLQ."""

from __future__ import annotations

import pytest
from redis._parsers.base import BaseParser

from bridge.errors import SinkUnavailableError
from bridge.sinks.base import Delivered, Failed, Rejected
from bridge.sinks.redis import classify


def server_error(line: str) -> Exception:
    """The exception redis-py raises for the server's error ``line``."""
    error: Exception = BaseParser.parse_error(line)  # type: ignore[no-untyped-call]
    return error


@pytest.mark.parametrize(
    "line",
    [
        "OOM command not allowed when used memory > 'maxmemory'.",
        "READONLY You can't write against a read only replica.",
        "LOADING Redis is loading the dataset in memory",
        "BUSY Redis is busy running a script.",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
    ],
)
def test_what_passes_with_time_is_retried(line: str) -> None:
    """Out of memory, a read-only replica, loading, busy, a lost primary: Failed (retried),
    the server's code kept in the message."""
    outcome = classify(server_error(line))
    assert isinstance(outcome, Failed)
    assert isinstance(outcome.error, SinkUnavailableError)
    assert line.split(maxsplit=1)[0] in str(outcome.error)


def test_an_acl_refusal_is_not_authorized() -> None:
    """NOPERM (the user may not write that key) goes to the DLQ as ``not_authorized``."""
    outcome = classify(server_error("NOPERM No permissions to access a key"))
    assert isinstance(outcome, Rejected)
    assert outcome.reason == "not_authorized"
    assert outcome.error.startswith("redis: NOPERM")


def test_other_errors_and_replies() -> None:
    """WRONGTYPE is refused for good (``rejected_by_broker``); a fencing refusal is
    ``fenced``; an entry id is Delivered."""
    wrong = classify(
        server_error("WRONGTYPE Operation against a key holding the wrong kind of value")
    )
    assert isinstance(wrong, Rejected)
    assert wrong.reason == "rejected_by_broker"
    fenced = classify(server_error("FENCED shard owned by a newer lease holder"))
    assert isinstance(fenced, Rejected)
    assert fenced.reason == "fenced"
    assert isinstance(classify(b"1700000000000-0"), Delivered)
