"""The published contract holds for what the bridge really writes: JSON Schemas validate every
record of a run (and reject corrupted ones); CloudEvents consumers read the topics."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bridge.settings import EVENT_NAMES
from bridge.simulator import SimConfig, Simulator
from tests.integration.harness import counter, eventually, running_bridge, settings_for
from tests.services import consume, create_topics, unique

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {"shop": "tok-contract-shop-1", "desk": "tok-contract-desk-2"}


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "docs" / "schema" / name).read_text())
    return loaded


def headers_of(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


def dlq_object(record: Any) -> dict[str, Any]:
    """A Kafka DLQ record in the shape of dlq-record.schema.json."""
    headers = headers_of(record)
    return {
        "reason": headers["ryze-dlq-reason"],
        "error": headers["ryze-dlq-error"],
        "instance": headers["ryze-instance"],
        "received_at": headers["ryze-received-at"],
        "id": headers["ryze-id"],
        "data_text": record.value.decode("utf-8", "replace"),
    }


async def run_to_kafka(kafka_bootstrap: str, tmp_path: Path) -> tuple[list[Any], list[Any]]:
    """A run with CloudEvents on, gap markers on, a reconnect and two bad frames."""
    prefix = unique("contract")
    events = [f"{prefix}.{i}.{e}" for i in TOKENS for e in (*EVENT_NAMES, "bridge.gap")]
    await create_topics(kafka_bootstrap, [*events, f"{prefix}.dlq"])
    async with Simulator(SimConfig(instances=TOKENS, rate=100, seed=11)) as sim:
        settings = settings_for(
            sim.base_url,
            tmp_path,
            instances={n: {"token": t} for n, t in TOKENS.items()},
            sink={
                "kind": "kafka",
                "dlq": f"{prefix}.dlq",
                "gap_markers": True,
                "kafka": {
                    "bootstrap_servers": kafka_bootstrap,
                    "topic": prefix + ".{instance}.{event}",
                    "cloudevents": "binary",
                },
            },
        )
        async with running_bridge(settings) as bridge:
            await eventually(lambda: sim.stats("shop")["frames_sent"] > 100)
            await sim.drop("desk")
            await eventually(lambda: sim.stats("desk")["upgrades"] == 2)
            await sim.send_malformed("shop")
            await sim.send_without_event("desk")
            for name in TOKENS:
                sim.pause(name)
            sent = sum(sim.stats(n)["frames_sent"] for n in TOKENS)
            await eventually(
                lambda: (
                    counter(bridge.metrics, "ryze_bridge_events_published_total")
                    + counter(bridge.metrics, "ryze_bridge_dlq_records_total")  # dead letters apart
                    >= sent + 3
                )
            )
    records = await consume(kafka_bootstrap, events, sent + 3 - 2, 20)
    dead = await consume(kafka_bootstrap, [f"{prefix}.dlq"], 2, 20)
    return records, dead


async def test_schemas_validate_every_record_and_reject_corrupted_ones(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Every event value, gap marker, header set and DLQ record of a run validates against
    docs/schema; a value with its token put back, a marker with an unknown reason, a header
    set with a malformed id and a DLQ record without reason are rejected."""
    records, dead = await run_to_kafka(kafka_bootstrap, tmp_path)
    envelope, gap = schema("envelope.schema.json"), schema("gap-marker.schema.json")
    headers_schema, dlq = schema("record-headers.schema.json"), schema("dlq-record.schema.json")
    markers = [r for r in records if r.topic.endswith(".bridge.gap")]
    assert len(markers) == 3  # two starts, one reconnect
    for record in records:
        value = json.loads(record.value)
        jsonschema.validate(value, gap if record.topic.endswith(".bridge.gap") else envelope)
        jsonschema.validate(headers_of(record), headers_schema)
    assert sorted(dlq_object(r)["reason"] for r in dead) == ["malformed_json", "unknown_shape"]
    for record in dead:
        jsonschema.validate(dlq_object(record), dlq)

    value = json.loads(next(r for r in records if not r.topic.endswith(".bridge.gap")).value)
    value["instanceData"]["token"] = "leaked"
    bad_marker = json.loads(markers[0].value)
    bad_marker["data"]["reason"] = "because"
    bad_headers = {**headers_of(records[0]), "ryze-id": "not-an-id"}
    bad_dlq = {k: v for k, v in dlq_object(dead[0]).items() if k != "reason"}
    for document, against in (
        (value, envelope),
        (bad_marker, gap),
        (bad_headers, headers_schema),
        (bad_dlq, dlq),
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(document, against)


async def test_a_cloudevents_consumer_reads_every_record(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Parsing headers by the CloudEvents 1.0 Kafka binding (binary mode) alone, every event
    record is a valid CloudEvent whose id, source, type, time and data agree with it."""
    records, _ = await run_to_kafka(kafka_bootstrap, tmp_path)
    for record in records:
        headers = dict(record.headers)
        attributes = {k[3:]: v.decode() for k, v in headers.items() if k.startswith("ce_")}
        assert attributes["specversion"] == "1.0"
        for required in ("id", "source", "type"):
            assert attributes[required]
        assert headers["content-type"] == b"application/json"
        data = json.loads(record.value)
        assert attributes["type"] == f"ryze.{data['event']}"
        assert attributes["source"] == f"ryze://{data['instanceData']['instance']}"
        assert attributes["id"] == headers["ryze-id"].decode()
        datetime.fromisoformat(attributes["time"].replace("Z", "+00:00"))
