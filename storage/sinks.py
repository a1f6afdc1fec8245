"""What a revocation sink is: Redis session stores, a webhook, CAEP receivers (`sessionwatch apply`).

Each sink runs its own consumer group (`<group>-<sink.name>`), so a receiver that is down delays
only itself: Redis enforcement never waits for a webhook. The apply loop (`storage/applier.py`)
commits a sink's offsets only after `deliver` returned, retries `RetryableError` with backoff
for as long as it takes, and dead-letters a revocation a receiver refused for good.
"""

from __future__ import annotations

from typing import Protocol

from producers.contract import Revocation
from producers.errors import SessionwatchError


class SinkError(SessionwatchError):
    """A sink could not take a revocation."""


class RetryableError(SinkError):
    """The receiver is unavailable (down, timed out, 5xx, 429): retry later, commit nothing."""


class RejectedError(SinkError):
    """The receiver refused this revocation for good (e.g. HTTP 400): dead-letter it, move on."""


class Sink(Protocol):
    # Short and stable: it names the consumer group (`sessionwatch-apply-redis`) and the logs.
    name: str

    async def start(self) -> None:
        """Open connections. Called once before the first `deliver`."""

    async def deliver(self, revocation: Revocation, raw: bytes) -> bool:
        """Deliver one revocation (`raw` is the message as it came off the topic).

        Returns True if something was written or sent, False if there was nothing to do
        (already applied, or not for this sink, e.g. a source block for a CAEP receiver).
        Must be idempotent: at-least-once delivery means the same revocation can come again.
        Raises RetryableError or RejectedError; anything else counts as retryable.
        """

    async def close(self) -> None:
        """Release connections."""
