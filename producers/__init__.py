"""The part of sessionwatch that lives inside web apps: the event contract, token hashing, the SDK.

Light on dependencies on purpose (kafka-python, crc32c, msgspec): a web app that emits events
must not pull in the stream engine, scikit-learn or chDB.
"""

from producers.client import ClientStats, SessionwatchClient
from producers.contract import (
    ALL_TOPICS,
    DEADLETTER_TOPIC,
    EVENTS_TOPIC,
    FINDINGS_TOPIC,
    REVOCATIONS_TOPIC,
    Action,
    Event,
    EventType,
    Finding,
    Reason,
    Revocation,
    Scope,
    Severity,
    decode_event,
    decode_finding,
    decode_revocation,
    encode,
)
from producers.errors import ConfigError, InvalidEvent, SessionwatchError
from producers.hashing import TokenHasher, mint_session_token

__all__ = [
    "ALL_TOPICS", "DEADLETTER_TOPIC", "EVENTS_TOPIC", "FINDINGS_TOPIC", "REVOCATIONS_TOPIC",
    "Action", "ClientStats", "ConfigError", "Event", "EventType", "Finding", "InvalidEvent",
    "Reason", "Revocation", "Scope", "SessionwatchClient", "SessionwatchError", "Severity",
    "TokenHasher", "decode_event", "decode_finding", "decode_revocation", "encode",
    "mint_session_token",
]
