"""The source stage: `<app_id>-by-source` -> in-order windows per network -> floods and blocks.

Quix Streams calls it once per message (keyed tenant + network, so an address, its prefix and its
network are counted on one partition). Each partition has its own `OrderedSource` (event-time
order once final, streams/source_order.py); the engine drops it when the partition is revoked and
calls `tick` between messages so held decisions come out when the input is quiet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from producers.contract import Event, encode
from streams.inputs import Incoming, decode_incoming, log_fields
from streams.outputs import Output, dead_letter, finding_output, revocation_output
from streams.session_stage import NO_METRICS, StageMetrics
from streams.source_order import OrderedSource
from streams.source_pipeline import SourceOutcome
from streams.stats import WorkerStats

log = logging.getLogger("sessionwatch.worker")


class SourceStage:
    def __init__(self, make_source: Callable[[], OrderedSource], stats: WorkerStats,
                 topic: str, metrics: StageMetrics = NO_METRICS) -> None:
        self.make_source = make_source
        self.stats = stats
        self.metrics = metrics
        self.topic = topic
        self.partitions: dict[int, OrderedSource] = {}

    def revoke(self, partition: int) -> None:
        self.partitions.pop(partition, None)

    def __call__(self, value: Any, key: bytes | None, partition: int, offset: int) -> list[Output]:
        self.stats.source_events += 1
        self.metrics.received("source")
        source = self.partitions.get(partition)
        if source is None:
            source = self.partitions[partition] = self.make_source()
        late = source.late
        incoming = value if isinstance(value, Incoming) else decode_incoming(value)
        value = incoming.raw
        try:
            if not isinstance(incoming.message, Event):
                raise incoming.refused or ValueError("not an event")
            released = source.arrive(incoming.message)
        except Exception as exc:  # written by the session stage, so a failure here is a bug
            log.exception("source processing failed at %s[%d]@%d", self.topic, partition, offset,
                          extra=log_fields(self.topic, partition, offset, incoming))
            self.stats.deadlettered += 1
            self.metrics.dead_lettered("source", "processing_error")
            return [dead_letter(self.topic, partition, offset, key, value, "processing_error",
                                f"{type(exc).__name__}: {exc}")]
        self.stats.late += source.late - late
        self.metrics.late("source", source.late - late)
        return self._outputs(released, partition)

    def tick(self) -> list[Output]:
        """Decisions held for lateness whose time has come while the input was quiet."""
        out: list[Output] = []
        for partition, source in list(self.partitions.items()):
            if len(source):
                try:
                    out += self._outputs(source.release(idle=True), partition)
                except Exception:
                    log.exception("source release failed on %s[%d]", self.topic, partition,
                                  extra=log_fields(self.topic, partition))
        return out

    def _outputs(self, released: list[tuple[Any, SourceOutcome]],
                 partition: int) -> list[Output]:
        out: list[Output] = []
        for event, outcome in released:
            if outcome.error is not None:
                log.error("source processing failed on event %s: %s", event.id, outcome.error,
                          extra=log_fields(self.topic, partition, None, event))
                self.stats.deadlettered += 1
                self.metrics.dead_lettered("source", "processing_error")
                # Its input position is long committed (it waited for lateness): name the stage.
                out.append(dead_letter(self.topic, -1, -1, None, encode(event),
                                       "processing_error", outcome.error))
                continue
            out += [finding_output(f) for f in outcome.findings]
            out += [revocation_output(r) for r in outcome.revocations]
            self.stats.findings += len(outcome.findings)
            self.stats.revocations += len(outcome.revocations)
            if outcome.findings or outcome.revocations:
                self.metrics.decided(outcome.findings, outcome.revocations)
        return out

    def waiting(self) -> int:
        return sum(len(s) for s in self.partitions.values())
