"""The user stage: `<app_id>-by-user` -> per-user state -> credential changes, travel, concurrency.

Quix Streams calls it once per message with the user's state (keyed tenant + user, changelogged).
It runs the on-arrival part of the user pipeline at once, queues the message in the user's state
for the in-order part, and puts through every queued event - of this user or any other on the
partition - that has become final (streams/event_clock.py). `state_for(partition, key,
timestamp_ms)` gives the stage another key's state in the same checkpoint; `tick` releases held
decisions while the input is quiet.

What a restart costs: the queued events are in the users' state (nothing is lost), but which
users hold some is kept in memory; after a restart or a rebalance a user's queued events are
decided with that user's next message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.event_clock import DueIndex, EventClock
from streams.inputs import Incoming, decode_user_incoming, log_fields
from streams.outputs import Output, dead_letter, finding_output, revocation_output
from streams.session_stage import NO_METRICS, StageMetrics
from streams.stats import WorkerStats
from streams.user_pipeline import UserOutcome, UserPipeline
from streams.user_state import UserState, dump_user, load_user

log = logging.getLogger("sessionwatch.worker")
STATE_KEY = b"u"


class _Partition:
    __slots__ = ("clock", "due")

    def __init__(self, clock: EventClock) -> None:
        self.clock = clock
        self.due = DueIndex()

    def __len__(self) -> int:
        return len(self.due)


class UserStage:
    def __init__(self, pipeline: UserPipeline, stats: WorkerStats, topic: str,
                 lateness_s: float, state_for: Callable[[int, bytes, int | None], Any],
                 metrics: StageMetrics = NO_METRICS) -> None:
        self.pipeline = pipeline
        self.stats = stats
        self.metrics = metrics
        self.topic = topic
        self.lateness_s = lateness_s
        self.state_for = state_for
        self.partitions: dict[int, _Partition] = {}
        # Quix expires a user's state this long after the record (= event) time of its last write.
        self.ttl = timedelta(seconds=pipeline.user_ttl_s)

    def revoke(self, partition: int) -> None:
        self.partitions.pop(partition, None)

    def _partition(self, partition: int) -> _Partition:
        part = self.partitions.get(partition)
        if part is None:
            part = self.partitions[partition] = _Partition(EventClock(self.lateness_s))
        return part

    def __call__(self, value: Any, key: bytes, partition: int, offset: int,
                 state: Any) -> list[Output]:
        self.stats.user_events += 1
        self.metrics.received("user")
        part = self._partition(partition)
        now = datetime.now(UTC)
        incoming = value if isinstance(value, Incoming) else decode_user_incoming(value)
        value = incoming.raw
        try:
            if incoming.message is None:
                raise incoming.refused or ValueError("no value")
            raw = state.get_bytes(STATE_KEY)
            arrival = self.pipeline.arrive(incoming.message, incoming.raw,
                                           load_user(raw) if raw is not None else None, now)
        except Exception as exc:  # forwarded by the session stage, so this is a bug: go on
            log.exception("user processing failed at %s[%d]@%d", self.topic, partition, offset,
                          extra=log_fields(self.topic, partition, offset, incoming))
            self.stats.deadlettered += 1
            self.metrics.dead_lettered("user", "processing_error")
            return [dead_letter(self.topic, partition, offset, key, value, "processing_error",
                                f"{type(exc).__name__}: {exc}")]
        if arrival.duplicate or arrival.state is None:
            return []
        user = arrival.state
        out = self._outputs(arrival)
        if not part.clock.observe(arrival.at):
            self.stats.late += 1
            self.metrics.late("user")
        if arrival.overflow is not None:
            out += self._finalize(user, [arrival.overflow], partition, key, now)
        out += self._finalize(user, user.take_final(part.clock.final_before(idle=False)),
                              partition, key, now)
        state.set_bytes(STATE_KEY, dump_user(user), ttl=self.ttl)
        part.due.set(key, user.next_due)
        out += self._release(part, partition, part.clock.final_before(idle=False), now)
        return out

    def tick(self) -> list[Output]:
        """Decisions held for lateness whose time has come while the input was quiet."""
        out: list[Output] = []
        now = datetime.now(UTC)
        for partition, part in list(self.partitions.items()):
            if len(part.due):
                out += self._release(part, partition, part.clock.final_before(idle=True), now)
        return out

    def waiting(self) -> int:
        return sum(len(p.due) for p in self.partitions.values())

    def _release(self, part: _Partition, partition: int, before: float,
                 now: datetime) -> list[Output]:
        out: list[Output] = []
        if not part.due.any_due(before):
            return out
        for key in list(part.due.pop_due(before)):
            assert isinstance(key, bytes)
            raw = self.state_for(partition, key, None).get_bytes(STATE_KEY)
            if raw is None:
                continue
            user = load_user(raw)
            out += self._finalize(user, user.take_final(before), partition, key, now)
            # Outside the key's own message: its TTL counts from its newest event time.
            self.state_for(partition, key, int(user.last_seen * 1000)).set_bytes(
                STATE_KEY, dump_user(user), ttl=self.ttl)
            part.due.set(key, user.next_due)
        return out

    def _finalize(self, user: UserState, items: list[Any], partition: int, key: bytes,
                  now: datetime) -> list[Output]:
        if not items:
            return []
        try:
            return self._outputs(self.pipeline.finalize(user, items, now))
        except Exception as exc:
            # Released after its input was committed: no offset; the event is the first held.
            log.exception("user in-order processing failed on %s[%d] key %r", self.topic,
                          partition, key[:40], extra={**log_fields(self.topic, partition),
                                                      "tenant": user.tenant,
                                                      "event_id": items[0].id})
            self.stats.deadlettered += 1
            self.metrics.dead_lettered("user", "processing_error")
            return [dead_letter(self.topic, partition, -1, key, items[0].raw,
                                "processing_error", f"{type(exc).__name__}: {exc}")]

    def _outputs(self, outcome: UserOutcome) -> list[Output]:
        out = [finding_output(f) for f in outcome.findings]
        out += [revocation_output(r) for r in outcome.revocations]
        self.stats.findings += len(outcome.findings)
        self.stats.revocations += len(outcome.revocations)
        if outcome.findings or outcome.revocations:
            self.metrics.decided(outcome.findings, outcome.revocations)
        return out
