"""The public wire contract v1: event, finding and revocation types, topics, and the decoder.

Other teams produce events from Go, Node or Java against the JSON Schema files in
`producers/schemas/`; these types are the same contract in Python. Extend only additively:
unknown fields are ignored on decode so newer producers keep working with older workers.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from enum import Enum
from functools import lru_cache
from typing import Annotated, Any

import msgspec

from producers.errors import InvalidEvent

EVENT_SCHEMA = "sessionwatch.event/1"
FINDING_SCHEMA = "sessionwatch.finding/1"
REVOCATION_SCHEMA = "sessionwatch.revocation/1"
DEADLETTER_SCHEMA = "sessionwatch.deadletter/1"

# Topic names are part of the contract: other languages' clients use them verbatim.
EVENTS_TOPIC = "sessionwatch.events"
FINDINGS_TOPIC = "sessionwatch.findings"
REVOCATIONS_TOPIC = "sessionwatch.revocations"
DEADLETTER_TOPIC = "sessionwatch.deadletter"
ALL_TOPICS = (EVENTS_TOPIC, FINDINGS_TOPIC, REVOCATIONS_TOPIC, DEADLETTER_TOPIC)

DEFAULT_TENANT = "default"

# "sessionwatch.event/1" or a minor revision such as "sessionwatch.event/1.2".
_SCHEMA_RE = re.compile(r"sessionwatch\.event/([0-9]+)(?:\.([0-9]+))?")


class EventType(str, Enum):
    CREATED = "session.created"
    AUTHENTICATED = "session.authenticated"
    ACTIVITY = "session.activity"
    REFRESHED = "session.refreshed"
    LOGOUT = "session.logout"
    EXPIRED = "session.expired"
    TOKEN_REJECTED = "token.rejected"
    AUTH_FAILED = "auth.failed"
    CREDENTIAL_CHANGED = "credential.changed"


# Types that may come without a session (no token exists yet, or the event is about a user).
SESSIONLESS_TYPES = frozenset({EventType.AUTH_FAILED, EventType.CREDENTIAL_CHANGED})
# Types that must name the user.
USER_REQUIRED_TYPES = frozenset({EventType.AUTHENTICATED, EventType.CREDENTIAL_CHANGED})


class Severity(str, Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}


class Scope(str, Enum):
    SESSION = "session"
    USER = "user"
    SOURCE = "source"


class Action(str, Enum):
    REVOKE = "revoke"
    STEP_UP = "step_up"
    BLOCK = "block"
    # Undoes a source block (scope `source` only): an admin's decision in the console; the
    # policy never emits it. Added to revocation/1 additively: an applier older than it refuses
    # the unknown action at decode and dead-letters the message, so nothing is half-applied.
    LIFT = "lift"


Str128 = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Str256 = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Str1024 = Annotated[str, msgspec.Meta(max_length=1024)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One session lifecycle event, as it travels on `sessionwatch.events`."""

    schema: str
    id: Str128
    type: EventType
    time: AwareDatetime
    ip: str
    tenant: Str128 = DEFAULT_TENANT
    session: Str128 | None = None
    user: Str256 | None = None
    user_agent: Str1024 | None = None
    attrs: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def key(self) -> str:
        """The Kafka message key the contract prescribes: session, else user, else ip."""
        return self.session or self.user or self.ip


class Reason(msgspec.Struct, frozen=True, kw_only=True):
    """Why a detector fired. `summary` is for an admin; users never see it."""

    detector: str
    severity: Severity
    summary: str
    evidence: dict[str, Any] = msgspec.field(default_factory=dict)


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """Every detector finding, published on `sessionwatch.findings` whatever the policy decides."""

    schema: str = FINDING_SCHEMA
    id: str
    tenant: str
    session: str | None
    user: str | None
    ip: str
    detector: str
    severity: Severity
    summary: str
    evidence: dict[str, Any]
    event_time: AwareDatetime
    events: list[str]

    def reason(self) -> Reason:
        return Reason(
            detector=self.detector,
            severity=self.severity,
            summary=self.summary,
            evidence=self.evidence,
        )


class Revocation(msgspec.Struct, frozen=True, kw_only=True):
    """A decision, published on `sessionwatch.revocations` and applied by the apps' stores.

    `id` is deterministic (derived from what caused it), so replaying the same events yields
    the same ids and appliers can dedupe.
    """

    schema: str = REVOCATION_SCHEMA
    id: str
    tenant: str
    scope: Scope
    session: str | None
    user: str | None
    source: str | None
    action: Action
    not_before: AwareDatetime | None
    expires: AwareDatetime | None
    reasons: list[Reason]
    event_time: AwareDatetime
    decided_at: AwareDatetime
    events: list[str]


class DeadLetter(msgspec.Struct, kw_only=True):
    """What lands on `sessionwatch.deadletter`: the input as received and why it was refused."""

    schema: str = DEADLETTER_SCHEMA
    reason: str          # machine-readable: not_json, invalid, unknown_schema, unsupported_major, …
    detail: str          # what was wrong and where
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str           # the message value, UTF-8 (undecodable bytes replaced)
    received_at: datetime


_event_decoder = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()


def decode_event(raw: bytes | str) -> Event:
    """Decode and validate one event, or raise `InvalidEvent` with a reason fit for the dead-letter.

    Checks everything the JSON Schema checks plus the per-type rules a schema expresses badly.
    """
    try:
        event = _event_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidEvent("invalid", str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidEvent("not_json", f"not a UTF-8 JSON object: {exc}") from None
    match = _SCHEMA_RE.fullmatch(event.schema)
    if match is None:
        raise InvalidEvent(
            "unknown_schema",
            f"schema {event.schema!r} is not 'sessionwatch.event/<major>' - `$.schema`",
        )
    if match.group(1) != "1":
        raise InvalidEvent(
            "unsupported_major",
            f"schema {event.schema!r}: this worker reads major version 1 only - `$.schema`",
        )
    if event.session is None and event.type not in SESSIONLESS_TYPES:
        raise InvalidEvent("invalid", f"`$.session` is required for {event.type.value!r}")
    if event.user is None and event.type in USER_REQUIRED_TYPES:
        raise InvalidEvent("invalid", f"`$.user` is required for {event.type.value!r}")
    if not _is_client_address(event.ip):
        raise InvalidEvent("invalid", f"`$.ip` is not an IPv4 or IPv6 address: {event.ip[:64]!r}")
    return event


@lru_cache(maxsize=65_536)
def _is_client_address(ip: str) -> bool:
    # Cached: the same addresses recur for a session's whole life and parsing costs microseconds.
    if "%" in ip:  # IPv6 zone ids name a local interface: never a client address
        return False
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return False
    return True


def encode(obj: msgspec.Struct) -> bytes:
    """Encode any contract object as compact UTF-8 JSON."""
    return _encoder.encode(obj)


def decode_revocation(raw: bytes | str) -> Revocation:
    return msgspec.json.decode(raw, type=Revocation)


def decode_finding(raw: bytes | str) -> Finding:
    return msgspec.json.decode(raw, type=Finding)
