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

from dataclasses import dataclass, field

from bridge.pipeline.events import DecodeError, decode, mask_token, token_free_bytes
from bridge.pipeline.filter import EventFilter, is_known_event
from bridge.pipeline.gap import GAP_EVENT
from bridge.pipeline.names import invalid_event_error, is_safe_event
from bridge.pipeline.records import Drop, Frame, Publish, Record
from bridge.pipeline.route import Router

__all__ = ["Drop", "Frame", "Pipeline", "Publish", "Record", "Router"]

UNKNOWN_EVENT = "unknown"
RESERVED_ERROR = "event name fills the template to a destination the bridge reserves"


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Decode → redact → filter → route for one instance (its token is known, to redact it)."""

    router: Router
    dlq: str
    max_value_bytes: int
    event_filter: EventFilter = field(default_factory=EventFilter)
    token: bytes | None = field(default=None, repr=False)
    reserved: frozenset[str] = frozenset()  # destinations no upstream event may fill

    def process(self, frame: Frame) -> Publish | Drop:
        if len(frame.raw) > self.max_value_bytes:
            return self.dead_letter(frame, "too_large", f"{len(frame.raw)} bytes")
        try:
            decoded = decode(frame.raw, document=self.router.needs_document)
        except DecodeError as exc:
            return self.dead_letter(frame, exc.reason, str(exc))
        refused = self.refusal(frame.instance, decoded.event)
        if refused is not None:
            return self.dead_letter(frame, "invalid_event", refused)
        if not self.event_filter.keeps(decoded.event):
            return Drop("filtered", decoded.event)
        value = decoded.value
        if decoded.free_of != self.token:  # not checked for this token yet
            value = mask_token(value, self.token)
        if len(value) > self.max_value_bytes:
            return self.dead_letter(frame, "too_large", f"{len(value)} bytes")
        record = Record(
            destination=self.router.destination(frame.instance, decoded.event),
            key=self.router.key(frame.instance, decoded.document),
            value=value,
            event=decoded.event,
            instance=frame.instance,
            received_ns=frame.received_ns,
        )  # its id is worked out where it is published
        return Publish(record, is_known_event(decoded.event), decoded.reserialized)

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
        """A DLQ record: the raw bytes without the token, cut to what the sink accepts."""
        value = token_free_bytes(frame.raw, self.token)
        if len(value) > self.max_value_bytes:
            value = value[: max(0, self.max_value_bytes - 1024)]
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
