"""The test runs' token ledger: with ``RYZE_TOKEN_LEDGER`` set, every token a simulator is given
(instance and account tokens, in this process or a ``ryze-bridge simulate`` child) is appended
to that file, one a line, so that CI can grep every output of the run for each of them
(``scripts/token_grep.py``). Unset — demos, benchmarks, production — it does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

LEDGER_ENV = "RYZE_TOKEN_LEDGER"


def record_tokens(tokens: Iterable[str], environ: Mapping[str, str] = os.environ) -> None:
    """Append ``tokens`` to the ledger named by ``RYZE_TOKEN_LEDGER`` (created 0600)."""
    path = environ.get(LEDGER_ENV)
    lines = "".join(f"{token}\n" for token in tokens if token and "\n" not in token)
    if not path or not lines:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as ledger:
        ledger.write(lines)
