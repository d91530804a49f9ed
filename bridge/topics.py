"""``ryze-bridge topics``: the topics or streams a config writes to, and with ``--check`` the
ones missing on the Kafka broker.

The listing is every configured instance times the documented events it receives (its ``events``,
or all six; less ``filter.drop_events``), the gap markers (``bridge.gap``, when
``sink.gap_markers``) and the DLQ, filled into the sink's template and deduplicated: with the
default ``ryze.{event}`` a fleet of any size writes to eight topics. With discovery, a template
that names ``{instance}`` has a part that is unknown until the account is listed: it is shown
as the template, marked so, and never checked.

Only Kafka needs its topics beforehand (unless ``sink.kafka.create_topics``); a Redis stream
is created by its first XADD and the file sink writes one file, so their ``--check`` has
nothing to look for.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from bridge.errors import SinkConfigError
from bridge.pipeline.events import EVENT_NAMES
from bridge.pipeline.gap import GAP_EVENT
from bridge.settings import InstanceSettings, KafkaSinkSettings, Settings
from bridge.sinks.kafka import diagnose, security_options, start_error
from bridge.wiring import build_router, sink_password

UNKNOWN_INSTANCE = "{instance}"
CHECK_TIMEOUT = 15.0  # seconds for the broker to answer --check


@dataclass(frozen=True, slots=True)
class Destination:
    """A topic or stream the config writes to; ``known`` is False for a template part that
    depends on instances discovery has not listed yet."""

    name: str
    role: str  # "events", "gap markers" or "dlq"
    known: bool = True


def received_events(settings: Settings, instance: InstanceSettings) -> list[str]:
    """The documented events an instance's records carry (pure)."""
    dropped = set(settings.filter.drop_events)
    wanted: list[str] = [*instance.events] or [*EVENT_NAMES]
    return [event for event in wanted if event not in dropped]


def instance_destinations(
    settings: Settings, name: str, instance: InstanceSettings
) -> list[Destination]:
    """The destinations one named instance fills (pure)."""
    router = build_router(settings)
    found = [
        Destination(router.destination(name, event), "events")
        for event in received_events(settings, instance)
    ]
    if settings.sink.gap_markers:
        found.append(Destination(router.destination(name, GAP_EVENT), "gap markers"))
    return found


def unknown_destinations(settings: Settings, discovered: InstanceSettings) -> list[Destination]:
    """The template filled with each event, ``{instance}`` left in (pure)."""
    events = received_events(settings, discovered)
    roles = ["events"] * len(events)
    if settings.sink.gap_markers:
        events, roles = [*events, GAP_EVENT], [*roles, "gap markers"]
    template = template_of(settings)
    return [
        Destination(template.format(instance=UNKNOWN_INSTANCE, event=event), role, known=False)
        for event, role in zip(events, roles, strict=True)
    ]


def template_of(settings: Settings) -> str:
    """The routing template of the configured sink (pure)."""
    sink = settings.sink
    return sink.redis.stream if sink.kind == "redis" else sink.kafka.topic


def planned(settings: Settings) -> list[Destination]:
    """Every destination the config writes to, deduplicated, in a stable order (pure)."""
    found: dict[str, Destination] = {}
    named = dict(sorted(settings.instances.items()))
    discovery = settings.discovery
    discovered = discovery.instance(UNKNOWN_INSTANCE) if discovery is not None else None
    if discovered is not None and UNKNOWN_INSTANCE not in template_of(settings):
        named.setdefault(UNKNOWN_INSTANCE, discovered)  # no {instance}: every name fills alike
        discovered = None
    for name, instance in named.items():
        for destination in instance_destinations(settings, name, instance):
            found.setdefault(destination.name, destination)
    found.setdefault(settings.sink.dlq, Destination(settings.sink.dlq, "dlq"))
    if discovered is not None:
        for shown in unknown_destinations(settings, discovered):
            found.setdefault(shown.name, shown)
    return list(found.values())


def listing(
    destinations: list[Destination], missing: set[str] | None, *, created: bool = False
) -> list[str]:
    """The lines printed: name, role and (when checked) present, or MISSING — "will be
    created" when the bridge creates what is missing (``created``) (pure)."""
    roles = [d.role if d.known else f"{d.role}, per discovered instance" for d in destinations]
    width = max((len(d.name) for d in destinations), default=0)
    role_width = max((len(role) for role in roles), default=0)
    lines = []
    for d, role in zip(destinations, roles, strict=True):
        if missing is None:
            state = ""
        elif not d.known:
            state = "unknown until the account is listed"
        else:
            absent = "will be created" if created else "MISSING"
            state = absent if d.name in missing else "present"
        lines.append(f"{d.name.ljust(width)}  {role.ljust(role_width)}  {state}".rstrip())
    return lines


async def broker_topics(kafka: KafkaSinkSettings, password: SecretStr | None) -> set[str]:
    """The topics the broker has; a broker that cannot be reached or refuses us raises the
    sink's error, naming why."""
    try:
        security = security_options(kafka, password)
    except (OSError, ssl.SSLError) as exc:
        raise SinkConfigError(f"kafka: TLS files unusable: {exc}") from None
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=f"{kafka.client_id}-topics",
        request_timeout_ms=int(CHECK_TIMEOUT * 1000),
        **security,
    )
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await admin.start()
            return set(await admin.list_topics())
    except (KafkaError, ssl.SSLError, OSError, TimeoutError) as exc:
        cause = await diagnose(kafka.bootstrap_servers, security) or exc
        raise start_error(kafka.bootstrap_servers, cause) from None
    finally:
        await admin.close()


def header(settings: Settings) -> str:
    """The first line: which sink, template and key the listing is for (pure)."""
    sink = settings.sink
    if sink.kind == "redis":
        return f"# redis streams of sink.redis.stream {sink.redis.stream!r}"
    what = "kafka topics" if sink.kind == "kafka" else "file sink destinations"
    return f"# {what} of sink.kafka.topic {sink.kafka.topic!r}, key {sink.kafka.key}"


def show_topics(
    settings: Settings, *, check: bool, environ: Mapping[str, str], out: TextIO | None = None
) -> bool:
    """Print the listing (checked against the broker with ``check``); False when a topic is
    missing that the bridge would not create itself. Raises ConfigError (a password that
    cannot be read) or SinkError (broker)."""
    out = out or sys.stdout  # looked up now: a captured stdout is another object
    destinations = planned(settings)
    missing: set[str] | None = None
    created = settings.sink.kind == "kafka" and settings.sink.kafka.create_topics
    note = ""
    if check and settings.sink.kind == "kafka":
        kafka = settings.sink.kafka
        present = asyncio.run(broker_topics(kafka, sink_password(settings, environ)))
        missing = {d.name for d in destinations if d.known and d.name not in present}
        note = f"# {len(missing)} of {sum(d.known for d in destinations)} missing on "
        note += kafka.bootstrap_servers
        if missing:
            note += (
                " (the bridge creates them: sink.kafka.create_topics)"
                if created
                else " (create them, or set sink.kafka.create_topics: true)"
            )
    elif check:
        note = f"# nothing to check: a {settings.sink.kind} sink needs nothing made beforehand"
    print(header(settings), file=out)
    for line in listing(destinations, missing, created=created):
        print(line, file=out)
    if note:
        print(note, file=out)
    return not missing or created
