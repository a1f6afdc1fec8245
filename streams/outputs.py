"""What a stage hands back to the engine: records to produce, each naming its topic.

A stage returns a list of `Output`s for one input message; the engine produces them through Quix
Streams' producer (`StreamingDataFrame.to_topic` with a topic chosen per record), so they are
flushed before the input's offset is committed (at-least-once). Values are already encoded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from producers.contract import (
    DEADLETTER_TOPIC,
    FINDINGS_TOPIC,
    REVOCATIONS_TOPIC,
    DeadLetter,
    Finding,
    Revocation,
    encode,
)
from streams.routing import output_key


class Output(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes


def finding_output(finding: Finding) -> Output:
    return Output(FINDINGS_TOPIC, (finding.session or finding.user or finding.ip).encode(),
                  encode(finding))


def revocation_output(revocation: Revocation) -> Output:
    return Output(REVOCATIONS_TOPIC, output_key(revocation), encode(revocation))


def dead_letter(topic: str, partition: int, offset: int, key: bytes | None, value: Any,
                reason: str, detail: str) -> Output:
    """The input as received, with why it was refused and where it was (nothing is lost)."""
    raw = value if isinstance(value, bytes) else b""
    record = DeadLetter(
        reason=reason,
        detail=detail[:2000],
        topic=topic,
        partition=partition,
        offset=offset,
        key=key.decode("utf-8", "replace") if key else None,
        value=raw.decode("utf-8", "replace"),
        received_at=datetime.now(UTC),
    )
    return Output(DEADLETTER_TOPIC, key, encode(record))
