"""What the applier and the archiver share: a manual-commit consumer group that reads each
partition's offsets without holes (storage/offset_holes.py), a commit that survives rebalances,
and capped jittered backoff for a destination that is down."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any

from producers.kafka_options import KafkaSecurity, aiokafka_options
from storage.offset_holes import OffsetHoles

# A destination can be retried for a long time between polls (a receiver or ClickHouse down for
# an hour): staying in the group meanwhile beats handing the partitions to a peer that would be
# stuck on the same destination.
MAX_POLL_INTERVAL_MS = 24 * 3600 * 1000

def group_consumer(bootstrap: str, group: str, topics: Sequence[str], client_id: str, *,
                   fetch_max_wait_ms: int, session_timeout_ms: int,
                   security: KafkaSecurity | None = None, holes: OffsetHoles | None = None,
                   **overrides: Any) -> tuple[Any, asyncio.Event]:
    """An aiokafka consumer subscribed to `topics` (not started; offsets committed by hand, from
    the earliest offset for a new group) and an event set once the group gave it partitions.
    `security` None: plaintext. `holes`: forgets a partition's next offset at each rebalance
    (read the records through `contiguous`)."""
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

    joined = asyncio.Event()

    class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            if holes is not None:
                holes.forget(revoked)

        async def on_partitions_assigned(self, assigned: Any) -> None:
            if holes is not None:
                holes.forget(assigned)
            joined.set()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, client_id=client_id,
        enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms, session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(1000, session_timeout_ms // 3),
        max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
        **aiokafka_options(security), **overrides,
    )
    consumer.subscribe(list(topics), listener=_Listener())
    return consumer, joined


def contiguous(consumer: Any, holes: OffsetHoles,
               records: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
    """`getmany`'s records with each partition cut at its first hole, the consumer sought back
    to the first missing offset so that the next `getmany` reads it again."""
    kept: dict[Any, list[Any]] = {}
    for tp, messages in records.items():
        for i, message in enumerate(messages):
            missing_from = holes.check(tp, message.offset)
            if missing_from is not None:
                consumer.seek(tp, missing_from)
                messages = messages[:i]
                break
        if messages:
            kept[tp] = messages
    return kept


async def commit(consumer: Any, offsets: dict[Any, int], log: logging.Logger, who: str) -> None:
    """Commit, or say why not: a rebalance took the partitions, the new owner re-reads them,
    and every destination is idempotent, so a failed commit costs a redelivery only."""
    from aiokafka.errors import CommitFailedError, KafkaError

    try:
        await consumer.commit(offsets)
    except (CommitFailedError, KafkaError) as exc:
        log.warning("%s: commit failed (%s); those messages will be redelivered", who, exc)


async def report_lag(consumer: Any, metrics: Any, group: str, reported: set[Any]) -> set[Any]:
    """Set each owned partition's lag: the high watermark of its last Fetch (aiokafka's
    `highwater`; never ListOffsets, which the embedded broker under-reports) minus the position.
    Partitions in `reported` no longer owned are forgotten; returns the ones owned now."""
    owned = set(consumer.assignment())
    for tp in reported - owned:
        metrics.forget_partition(tp.topic, tp.partition, group)
    for tp in owned:
        high = consumer.highwater(tp)
        if high is None:
            continue
        try:
            position = await asyncio.wait_for(consumer.position(tp), 0.5)
        except Exception:  # noqa: BLE001 - revoked or not known yet: next time
            continue
        metrics.set_lag(tp.topic, tp.partition, high, position, group)
    return owned


class Backoff:
    """Delays for retrying one thing: `first` seconds doubling up to `cap`, each +-25 %."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        delay = self._next * random.uniform(0.75, 1.25)
        self._next = min(self._next * 2, self.cap)
        return delay
