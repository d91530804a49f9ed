"""The pure pipeline: bytes in, a decision out. No asyncio, no logging, no metrics here.

``Pipeline.process(frame)`` returns ``Publish(record)`` for the sink, ``Publish`` of a
dead-letter record (``record.dlq_reason`` set) for what cannot be published as an event, or
``Drop(reason)`` for what the local filter removes. The caller counts what it returns.

An event name that could steer where data goes (outside the safe pattern, or in the
bridge's own ``bridge.`` namespace) is dead-lettered as ``invalid_event`` before the
filter and the router see it: it never names a topic, a stream or a label (names.py). A safe
name whose filled template is a destination the bridge reserves (the DLQ, this instance's gap
markers, the cluster's coordination topic: ``reserved``) is dead-lettered the same way: an
event named ``dlq`` never writes into ``ryze.dlq``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from bridge.masking import mask_text
from bridge.pipeline.events import Decoded, DecodeError, decode, token_cut
from bridge.pipeline.filter import EventFilter, is_known_event
from bridge.pipeline.gap import GAP_EVENT
from bridge.pipeline.names import invalid_event_error, is_safe_event
from bridge.pipeline.records import Drop, Frame, Publish, Record
from bridge.pipeline.route import Router
from bridge.pipeline.tokens import (
    MASK,
    MIN_TOKEN,
    KnownTokens,
    mask_document,
    mask_fleet,
    mask_forms,
    scrub_parsed,
    scrub_unparsed,
)

__all__ = ["Drop", "Frame", "KnownTokens", "Pipeline", "Publish", "Record", "Router"]

UNKNOWN_EVENT = "unknown"
RESERVED_ERROR = "event name fills the template to a destination the bridge reserves"


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Decode → redact → filter → route for one instance. ``token`` is the one its socket uses
    (pinned in ``known``); ``known`` also learns every ``instanceData.token`` its frames carry,
    and every byte that leaves is free of all of them (``bridge.pipeline.tokens``)."""

    router: Router
    dlq: str
    max_value_bytes: int
    event_filter: EventFilter = field(default_factory=EventFilter)
    token: bytes | None = field(default=None, repr=False)
    reserved: frozenset[str] = frozenset()  # destinations no upstream event may fill
    known: KnownTokens = field(default_factory=KnownTokens, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.token:  # (a replace() with the resolved token pins it in the same memory)
            self.known.pin(self.token)

    def process(self, frame: Frame) -> Publish | Drop:
        if len(frame.raw) > self.max_value_bytes:
            return self.dead_letter(frame, "too_large", f"{len(frame.raw)} bytes")
        try:
            decoded = decode(frame.raw, document=self.router.needs_document)
        except DecodeError as exc:
            return self.dead_letter(frame, exc.reason, str(exc))
        self.known.learn(decoded.seen)
        refused = self.refusal(frame.instance, decoded.event)
        if refused is None and not is_known_event(decoded.event):
            refused = "the event name holds a token" if self.carries_token(decoded.event) else None
        if refused is not None:
            return self.dead_letter(frame, "invalid_event", refused)
        if not self.event_filter.keeps(decoded.event):
            return Drop("filtered", decoded.event)
        value, reserialized = self.token_free(decoded)
        if len(value) > self.max_value_bytes:
            return self.dead_letter(frame, "too_large", f"{len(value)} bytes")
        record = Record(
            destination=self.router.destination(frame.instance, decoded.event),
            key=self.key(frame.instance, decoded),
            value=value,
            event=decoded.event,
            instance=frame.instance,
            received_ns=frame.received_ns,
        )  # its id is worked out where it is published
        return Publish(record, is_known_event(decoded.event), reserialized)

    def key(self, instance: str, decoded: Decoded) -> bytes | None:
        """The record key; one read from the frame (a chat id) has every known token masked,
        this instance's and the fleet's."""
        key = self.router.key(instance, decoded.document)
        if key is None or decoded.document is None:
            return key
        return mask_fleet(mask_forms(key, self.known.forms), self.known.fleet)

    def carries_token(self, name: str) -> bool:
        """Whether ``name`` (from the frame) holds a known token, this instance's or another's."""
        if any(token in name for token in self.known.texts):
            return True
        fleet = self.known.fleet
        return fleet is not None and fleet.matcher().finds(name.encode("utf-8", "replace"))

    def token_free(self, decoded: Decoded) -> tuple[bytes, bool]:
        """The decoded value with every known token and token member masked, and whether it
        had to be re-serialised for that."""
        value = scrub_parsed(decoded.value, self.known)
        if value is not None:
            return value, decoded.reserialized
        document = mask_document(orjson.loads(decoded.value), self.known)
        return orjson.dumps(document), True

    def refusal(self, instance: str, event: str) -> str | None:
        """Why an upstream ``event`` may not fill the template (the DLQ error), or None: an
        unsafe name, or one that fills it to a destination the bridge keeps for itself (the gap
        markers' only when the template tells events apart: else all share one by design)."""
        if not is_safe_event(event):
            return invalid_event_error(event)
        destination = self.router.destination(instance, event)
        if (
            destination == self.dlq
            or destination in self.reserved
            or (
                self.router.by_event and destination == self.router.destination(instance, GAP_EVENT)
            )
        ):
            return RESERVED_ERROR
        return None

    def gap_record(self, instance: str, value: bytes, at_ns: int) -> Record:
        """A gap marker (``bridge.gap``) routed like any event of ``instance``."""
        return Record(
            destination=self.router.destination(instance, GAP_EVENT),
            key=self.router.key(instance, None),
            value=value,
            event=GAP_EVENT,
            instance=instance,
            received_ns=at_ns,
        )

    def dead_letter(self, frame: Frame, reason: str, error: str) -> Publish:
        """A DLQ record: the raw bytes without any token, cut to what the sink accepts (a
        frame over it is cut first, then scrubbed: never parsed nor scanned whole)."""
        budget = max(0, self.max_value_bytes - 1024)
        truncated = len(frame.raw) > self.max_value_bytes
        if truncated:
            value = mask_tail(scrub_unparsed(frame.raw[:budget], self.known), self.known.forms)
        else:
            value, seen = token_cut(frame.raw)
            self.known.learn(seen)
            value = scrub_unparsed(value, self.known)
        if len(value) > self.max_value_bytes:  # (masks may lengthen it: cutting is safe now)
            value, truncated = value[:budget], True
        error = mask_text(error, self.known.texts)
        if truncated:
            error = f"{error}; value truncated to {len(value)} bytes"
        record = Record(
            destination=self.dlq,
            key=frame.instance.encode(),
            value=value,
            event=UNKNOWN_EVENT,
            instance=frame.instance,
            received_ns=frame.received_ns,
            dlq_reason=reason,
            dlq_error=error[:500],
        )
        return Publish(record, known_event=False, reserialized=False)


def mask_tail(value: bytes, forms: Iterable[bytes]) -> bytes:
    """A cut ``value`` with a trailing start (4 bytes or more) of a known token form masked."""
    for form in forms:
        for length in range(len(form) - 1, MIN_TOKEN - 1, -1):
            if value.endswith(form[:length]):
                return value[:-length] + MASK
    return value
