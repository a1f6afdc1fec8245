"""The session stage: `sessionwatch.events` -> per-session state -> findings, revocations, forwards.

Quix Streams calls it once per message with the session's state (RocksDB or memory, keyed by the
message key = the session hash, changelogged by Quix). It decodes, calls the pure session pipeline
(streams/pipeline.py), and returns the records to produce: findings, revocations, and what the
user and source stages need (streams/routing.py). Malformed input and processing errors become
dead-letter records; nothing here raises for one message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from producers.contract import EVENTS_TOPIC, Event, Finding, Revocation, Scope
from producers.errors import InvalidEvent
from streams.enrich import Enricher
from streams.inputs import Incoming, decode_incoming, log_fields
from streams.outputs import Output, dead_letter, finding_output, revocation_output
from streams.pipeline import SessionPipeline
from streams.routing import for_source, for_user, revocation_for_user
from streams.source_pipeline import source_key
from streams.state import dump_state, load_state
from streams.stats import LogLimiter, WorkerStats

log = logging.getLogger("sessionwatch.worker")

STATE_KEY = b"s"   # the session's state under its message key


class StageMetrics(Protocol):
    """What the stages count for Prometheus (sessionwatch/metrics.py: WorkerMetrics). The
    stages keep feeding `WorkerStats` too: that is the periodic stats line."""

    def received(self, stage: str) -> None: ...
    def processed(self) -> None: ...
    def duplicate(self) -> None: ...
    def late(self, stage: str, n: int = 1) -> None: ...
    def dead_lettered(self, stage: str, reason: str) -> None: ...
    def decided(self, findings: Sequence[Finding], revocations: Sequence[Revocation],
                now: float | None = None) -> None: ...


class NoMetrics:
    """The default: counts nothing (a worker built without a metrics endpoint, tests)."""

    def received(self, stage: str) -> None:
        pass

    def processed(self) -> None:
        pass

    def duplicate(self) -> None:
        pass

    def late(self, stage: str, n: int = 1) -> None:
        pass

    def dead_lettered(self, stage: str, reason: str) -> None:
        pass

    def decided(self, findings: Sequence[Finding], revocations: Sequence[Revocation],
                now: float | None = None) -> None:
        pass


NO_METRICS: StageMetrics = NoMetrics()


class SessionStage:
    def __init__(self, pipeline: SessionPipeline, enricher: Enricher, stats: WorkerStats,
                 by_user: str, by_source: str, metrics: StageMetrics = NO_METRICS) -> None:
        self.pipeline = pipeline
        self.enricher = enricher
        self.stats = stats
        self.metrics = metrics
        self.by_user = by_user
        self.by_source = by_source
        self.dead_letter_log = LogLimiter()
        self.ttl = timedelta(seconds=pipeline.session_ttl_s) if pipeline is not None else None

    def __call__(self, value: Any, key: bytes | None, partition: int, offset: int,
                 state: Any) -> list[Output]:
        stats, metrics = self.stats, self.metrics
        stats.received += 1
        metrics.received("session")
        # Decoded by the consumer (streams/inputs.py); a tombstone (no value) arrives as None.
        incoming = value if isinstance(value, Incoming) else decode_incoming(value)
        event, value = incoming.message, incoming.raw
        if not isinstance(event, Event):
            exc = incoming.refused or InvalidEvent("invalid", "not an event")
            stats.deadlettered += 1
            metrics.dead_lettered("session", exc.code)
            if self.dead_letter_log.allow(time.monotonic()):
                more = self.dead_letter_log.take_suppressed()
                log.warning("dead-lettered %s[%d]@%d: %s: %s%s", EVENTS_TOPIC, partition, offset,
                            exc.code, exc.detail[:200],
                            f" (and {more} more not logged)" if more else "",
                            extra=log_fields(EVENTS_TOPIC, partition, offset))
            return [dead_letter(EVENTS_TOPIC, partition, offset, key, value, exc.code, exc.detail)]
        out: list[Output] = []
        session_state = None
        if event.session is not None:
            session_key = event.session.encode()
            if key != session_key:
                # State lives on the session's partition; a producer that keyed by something
                # else would split it, so the event goes back under its session's key.
                stats.rekeyed += 1
                return [Output(EVENTS_TOPIC, session_key, value)]
            try:
                raw = state.get_bytes(STATE_KEY)
                previous = load_state(raw) if raw is not None else None
                outcome = self.pipeline.process(event, previous, datetime.now(UTC))
            except Exception as exc:  # a bug in a detector must not stop the worker
                log.exception("processing failed at %s[%d]@%d", EVENTS_TOPIC, partition, offset,
                              extra=log_fields(EVENTS_TOPIC, partition, offset, event))
                stats.deadlettered += 1
                metrics.dead_lettered("session", "processing_error")
                return [dead_letter(EVENTS_TOPIC, partition, offset, key, value,
                                    "processing_error", f"{type(exc).__name__}: {exc}")]
            if outcome.duplicate:
                stats.duplicates += 1
                metrics.duplicate()
                return out
            session_state = outcome.state
            stats.processed += 1
            metrics.processed()
            for finding in outcome.findings:
                out.append(finding_output(finding))
            for revocation in outcome.revocations:
                out.append(revocation_output(revocation))
                log.info("%s %s %s… (%s) on event %s", revocation.action.value,
                         revocation.scope.value,
                         (revocation.session or revocation.user or revocation.source or "")[:12],
                         ", ".join(r.detector for r in revocation.reasons), event.id,
                         extra=log_fields(EVENTS_TOPIC, partition, offset, event))
                note = revocation_for_user(revocation) if revocation.scope is Scope.SESSION \
                    else None
                if note is not None:
                    out.append(Output(self.by_user, note[0], note[1]))
            stats.findings += len(outcome.findings)
            stats.revocations += len(outcome.revocations)
            if outcome.findings or outcome.revocations:
                metrics.decided(outcome.findings, outcome.revocations)
        else:
            stats.sessionless += 1
            stats.processed += 1
            metrics.processed()
        # for_user / for_source may mark a heartbeat in the state: write it after them.
        forward = for_user(event, value, session_state)
        if forward is not None:
            out.append(Output(self.by_user, forward[0], forward[1]))
        if for_source(event, session_state):
            network = self.enricher.network(event.ip)
            out.append(Output(self.by_source, source_key(event, network.asn), value))
        if session_state is not None:
            # Quix expires it by record (= event) time: `ttl` after the session's last event.
            state.set_bytes(STATE_KEY, dump_state(session_state), ttl=self.ttl)
        return out
