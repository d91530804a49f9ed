"""``ryze-bridge topics`` without a broker: which destinations a config writes to, deduplicated,
with the part discovery cannot know marked, and how the listing reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.cli import main
from bridge.settings import Settings
from bridge.topics import Destination, listing, planned


def settings(**sections: Any) -> Settings:
    data: dict[str, Any] = {
        "instances": {
            "shop": {"token_env": "T"},
            "store-2": {"token_env": "T", "events": ["message.exchange", "call.update"]},
        }
    }
    data.update(sections)
    return Settings.model_validate(data)


def names(destinations: list[Destination]) -> list[str]:
    return [d.name for d in destinations]


def test_the_default_layout_lists_each_event_topic_once() -> None:
    """Two instances under ``ryze.{event}``: the six event topics, the gap topic and the DLQ,
    each once, whatever the number of instances."""
    found = planned(settings())
    assert names(found) == [
        "ryze.message.exchange",
        "ryze.message.status",
        "ryze.call.update",
        "ryze.group.flow",
        "ryze.instance.state",
        "ryze.label.update",
        "ryze.bridge.gap",
        "ryze.dlq",
    ]
    assert [d.role for d in found][-2:] == ["gap markers", "dlq"]
    assert all(d.known for d in found)


def test_per_instance_topics_follow_each_instances_events_and_the_local_filter() -> None:
    """Under ``ryze.{instance}.{event}`` each instance lists the events it receives: its own
    ``events`` (or all six) less ``filter.drop_events``; gap markers off list no gap topic."""
    found = planned(
        settings(
            sink={"kafka": {"topic": "ryze.{instance}.{event}"}, "gap_markers": False},
            filter={"drop_events": ["call.update", "group.flow"]},
        )
    )
    assert names(found) == [
        "ryze.shop.message.exchange",
        "ryze.shop.message.status",
        "ryze.shop.instance.state",
        "ryze.shop.label.update",
        "ryze.store-2.message.exchange",
        "ryze.dlq",
    ]


def test_redis_lists_the_stream_template() -> None:
    """A Redis sink lists its streams from ``sink.redis.stream``."""
    found = planned(settings(sink={"kind": "redis", "dlq": "ryze:dlq"}))
    assert names(found)[:2] == ["ryze:message.exchange", "ryze:message.status"]
    assert names(found)[-1] == "ryze:dlq"


def test_discovery_marks_the_per_instance_part_unknown() -> None:
    """With discovery, a template naming ``{instance}`` lists the configured instances'
    topics and the template per event, marked unknown; without ``{instance}`` every
    discovered instance fills the same known topics."""
    discovery = {"token_env": "ACCOUNT", "events": ["message.status"]}
    per_instance = planned(
        settings(discovery=discovery, sink={"kafka": {"topic": "ryze.{instance}.{event}"}})
    )
    unknown = [d for d in per_instance if not d.known]
    assert names(unknown) == ["ryze.{instance}.message.status", "ryze.{instance}.bridge.gap"]
    assert "ryze.shop.message.status" in names(per_instance)
    shared = planned(settings(instances={}, discovery=discovery))
    assert names(shared) == ["ryze.message.status", "ryze.bridge.gap", "ryze.dlq"]
    assert all(d.known for d in shared)


def test_the_listing_aligns_names_roles_and_states() -> None:
    """Unchecked: name and role; checked: present or MISSING ("will be created" when the
    bridge creates missing topics itself), and unknown parts say so."""
    found = [
        Destination("ryze.a", "events"),
        Destination("ryze.dlq", "dlq"),
        Destination("ryze.{instance}.a", "events", known=False),
    ]
    assert listing(found[:2], None) == ["ryze.a    events", "ryze.dlq  dlq"]
    checked = listing(found, {"ryze.dlq"})
    assert checked[0].split() == ["ryze.a", "events", "present"]
    assert checked[1].split() == ["ryze.dlq", "dlq", "MISSING"]
    assert checked[2].endswith("unknown until the account is listed")
    created = listing(found[:2], {"ryze.dlq"}, created=True)
    assert created[1].split()[-3:] == ["will", "be", "created"]


def test_the_command_lists_without_a_broker_and_refuses_a_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``topics`` without ``--check`` needs no broker (exit 0); a bad instance name is a bad
    config (exit 2, naming the key); ``--check`` of a Redis sink has nothing to ask."""
    config = tmp_path / "bridge.yaml"
    config.write_text("instances: {shop: {token_env: T}}\n", encoding="utf-8")
    assert main(["topics", "--config", str(config)]) == 0
    assert "ryze.message.exchange" in capsys.readouterr().out
    config.write_text("instances: {shop: {token_env: T}}\nsink: {kind: redis}\n")
    assert main(["topics", "--config", str(config), "--check"]) == 0
    assert "nothing to check" in capsys.readouterr().out
    config.write_text('instances: {"a.b": {token_env: T}}\n', encoding="utf-8")
    assert main(["topics", "--config", str(config)]) == 2
    assert "instances['a.b']: not an instance name" in capsys.readouterr().err
