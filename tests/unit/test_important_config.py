"""``important`` marks are checked: ``discovery.important`` names must be instance names
(check-config names the key), and a mark that does nothing because ``metrics.per_instance``
is ``all`` or ``none`` is logged at start as ``config.important_ignored``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bridge.compose import assemble
from bridge.errors import ConfigError
from bridge.logs import configure_logging
from bridge.settings import Settings, load_settings

TOKEN = "00000000-0000-4000-8000-0000000000dd"


def test_a_discovery_important_entry_must_be_an_instance_name(tmp_path: Path) -> None:
    """An entry with ``.`` (or anything outside the instance-name pattern) is refused,
    naming ``discovery.important`` and the entry's position."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "discovery: {token_env: RYZE_ACCOUNT, important: [shop, 'shop.main']}\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert [p for p in raised.value.problems if p.startswith("discovery.important.1: ")]


def start_warnings(tmp_path: Path, per_instance: str) -> list[dict[str, object]]:
    """The ``config.important_ignored`` lines the process logs while it is assembled."""
    settings = Settings.model_validate(
        {
            "instances": {"shop": {"token": TOKEN, "important": True}, "other": {"token": TOKEN}},
            "metrics": {"per_instance": per_instance},
            "spool": {"dir": str(tmp_path / "spool")},
        }
    )
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    assemble(settings, environ={}, handle_signals=False)
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line[:1] == "{"]
    return [line for line in lines if line["event"] == "config.important_ignored"]


@pytest.mark.parametrize("per_instance", ["all", "none"])
def test_an_important_mark_that_does_nothing_is_logged_at_start(
    tmp_path: Path, per_instance: str
) -> None:
    """Under ``per_instance`` ``all`` or ``none`` the marked instance is named in a warning."""
    [warning] = start_warnings(tmp_path, per_instance)
    assert warning["level"] == "warning"
    assert warning["instances"] == ["shop"]
    assert warning["per_instance"] == per_instance


def test_an_important_mark_in_force_is_not_warned_about(tmp_path: Path) -> None:
    """Under ``per_instance: important`` the mark chooses the series: no warning."""
    assert start_warnings(tmp_path, "important") == []
