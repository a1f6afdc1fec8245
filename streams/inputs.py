"""What the stages read: each message decoded once, as the consumer hands it over.

The engine gives Quix Streams these as value deserializers, so a message is decoded once and its
event time becomes the record's timestamp (`event_time_ms`): Quix expires idle state by record
time, so state expires by event time and a replay expires alike. Decoding never raises here: a
message that is not a valid event arrives as `Incoming` with `refused` set, and the stage
dead-letters it with its position (`log_fields`: what its log line names).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from quixstreams.models.serializers import Deserializer

from producers.contract import Event, Revocation, decode_event, decode_revocation
from producers.errors import InvalidEvent
from streams.routing import REVOCATION_PREFIX, decode_forwarded


class Incoming:
    """One decoded message: the event (or, on the user topic, a session-revocation note), the
    bytes it came as, and why it was refused if it was."""

    __slots__ = ("message", "raw", "refused")

    def __init__(self, message: Event | Revocation | None, raw: bytes,
                 refused: InvalidEvent | None = None) -> None:
        self.message = message
        self.raw = raw
        self.refused = refused

    @property
    def event_time_ms(self) -> int | None:
        message = self.message
        if isinstance(message, Event):
            return int(message.time.timestamp() * 1000)
        if isinstance(message, Revocation):
            return int(message.event_time.timestamp() * 1000)
        return None


def decode_incoming(raw: Any) -> Incoming:
    """An event from `sessionwatch.events` or a repartition topic."""
    if raw is None:
        return Incoming(None, b"", InvalidEvent("not_json", "the message has no value (a tombstone)"))
    try:
        return Incoming(decode_event(raw), raw)
    except InvalidEvent as exc:
        return Incoming(None, raw, exc)


def decode_forwarded_incoming(raw: Any) -> Incoming:
    """An event from a repartition topic (`<app_id>-by-source`)."""
    if raw is None:
        return Incoming(None, b"", InvalidEvent("not_json", "the message has no value (a tombstone)"))
    try:
        return Incoming(decode_forwarded(raw), raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:  # only we write these topics
        return Incoming(None, raw, InvalidEvent("invalid", f"forwarded event: {exc}"))


def decode_user_incoming(raw: Any) -> Incoming:
    """An event naming a user, or a session revocation (`<app_id>-by-user`)."""
    if raw is not None and raw.startswith(REVOCATION_PREFIX):
        try:
            return Incoming(decode_revocation(raw), raw)
        except Exception as exc:  # written by the session stage: a bug, but not a crash
            return Incoming(None, raw, InvalidEvent("invalid", f"revocation note: {exc}"))
    return decode_forwarded_incoming(raw)


def log_fields(topic: str, partition: int | None = None, offset: int | None = None,
               message: Any = None) -> dict[str, Any]:
    """`extra=` for a log line about one message (sessionwatch/logs.py, CONTEXT_KEYS): where it
    was, and the tenant and id of what it carried when it decoded (`event_id`: the event's id; a
    revocation note's own id). A position not known (-1: a decision released after its input
    was committed) is left out, and so are tenant and id of what did not decode."""
    fields: dict[str, Any] = {"topic": topic}
    if partition is not None and partition >= 0:
        fields["partition"] = partition
    if offset is not None and offset >= 0:
        fields["offset"] = offset
    if isinstance(message, Incoming):
        message = message.message
    if isinstance(message, (Event, Revocation)):
        fields["tenant"] = message.tenant
        fields["event_id"] = message.id
    return fields


class IncomingDeserializer(Deserializer):
    def __init__(self, decode: Any = decode_incoming) -> None:
        super().__init__()
        self._decode = decode

    def __call__(self, value: bytes, ctx: Any) -> Incoming:
        return self._decode(value)


# How far ahead of this machine's clock an event's time may run before it is taken as now.
MAX_CLOCK_AHEAD_MS = 5 * 60 * 1000


def event_time_ms(value: Any, headers: Any, timestamp: int, timestamp_type: Any) -> int:
    """Quix's timestamp extractor: the event's own time (the Kafka timestamp if refused).

    Quix expires state against the newest record time its partition has seen, so one event from
    a clock years ahead would make every session on the partition read as expired - a way to
    blind the detectors. Times more than `MAX_CLOCK_AHEAD_MS` ahead of the wall clock count as
    now here (decisions still use the event's own time)."""
    at = value.event_time_ms if isinstance(value, Incoming) else None
    if at is None:
        return timestamp
    return min(at, int(time.time() * 1000) + MAX_CLOCK_AHEAD_MS)
