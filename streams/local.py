"""The whole detection pipeline in one process, without a broker: session, user and source stages.

Routes events exactly as the worker's stages do (streams/routing.py) and keeps state in dicts;
the user and source stages hold decisions for the allowed lateness and take them in event-time
order (streams/event_clock.py), as in the worker, so shuffling how partitions interleave (within
the lateness) does not change what is decided. Decisions are stamped with event time
(`decided_at`), so two runs compare exactly. Used by `sessionwatch evaluate --offline`, the
backtest, tests and the benchmarks; the worker is the same code behind Kafka.

Call `finish()` after the last event: it takes the decisions still held for lateness.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from models.scoring import AnomalyModel
from producers.contract import Event, Finding, Revocation, Scope, encode
from streams.enrich import Enricher
from streams.event_clock import DueIndex, EventClock
from streams.pipeline import SessionPipeline
from streams.policy import Policy
from streams.routing import decode_forwarded, for_source, for_user, revocation_for_user
from streams.source_order import OrderedSource
from streams.source_pipeline import SourcePipeline
from streams.state import SessionState
from streams.user_pipeline import FeatureRecorder, UserOutcome, UserPipeline
from streams.user_state import UserState


@dataclass
class LocalStats:
    events: int = 0
    duplicates: int = 0
    findings: int = 0
    revocations: int = 0
    late: int = 0


def _never_idle() -> float:
    return 0.0


@dataclass
class LocalRunner:
    policy: Policy = field(default_factory=Policy)
    enricher: Enricher | None = None
    session_ttl_s: float = 86400.0
    allowed_lateness_s: float = 60.0
    # The learned score (models/): a verified model to score with, and/or a recorder that gets
    # every scored event's feature vector (the trainer's dataset).
    model: AnomalyModel | None = None
    recorder: FeatureRecorder | None = None

    def __post_init__(self) -> None:
        enricher = self.enricher or Enricher()
        self.enricher = enricher
        scoring = self.model is not None or self.recorder is not None
        self.sessions = SessionPipeline(enricher, self.policy, session_ttl_s=self.session_ttl_s,
                                        track_behaviour=scoring)
        self.users = UserPipeline(enricher, self.policy, model=self.model,
                                  recorder=self.recorder)
        # A constant wall clock: the in-process clocks never idle, only events move them.
        self.sources = OrderedSource(SourcePipeline(enricher, self.policy),
                                     self.allowed_lateness_s, wall=_never_idle,
                                     decided_by_event_time=True)
        self.user_clock = EventClock(self.allowed_lateness_s, wall=_never_idle)
        self.user_due = DueIndex()
        self.session_states: dict[str, SessionState] = {}
        self.user_states: dict[bytes, UserState] = {}
        self.stats = LocalStats()

    def process(
        self, event: Event, decided_at: datetime | None = None
    ) -> tuple[list[Finding], list[Revocation]]:
        """One event through every stage; returns the findings and revocations decided while
        handling it (its own, and held ones of earlier events that became final)."""
        findings: list[Finding] = []
        revocations: list[Revocation] = []
        state: SessionState | None = None
        if event.session is not None:
            outcome = self.sessions.process(event, self.session_states.get(event.session),
                                            decided_at or event.time)
            if outcome.duplicate:
                self.stats.duplicates += 1
                return [], []
            state = outcome.state
            assert state is not None
            self.session_states[event.session] = state
            findings += outcome.findings
            revocations += outcome.revocations
        # To the user stage: notes of session revocations first, then the event (the session
        # stage emits them in this order, on the same key).
        for revocation in list(revocations):
            note = revocation_for_user(revocation) if revocation.scope is Scope.SESSION else None
            if note is not None:
                self._to_user(note[0], revocation, note[1], decided_at, findings, revocations)
        forwarded = for_user(event, b"", state)
        if forwarded is not None:
            # for_user re-encodes an event that did not name its user (the session knew it) or
            # that carries the session's behaviour.
            raw = forwarded[1] or encode(event)
            message = decode_forwarded(raw) if forwarded[1] else event
            self._to_user(forwarded[0], message, raw, decided_at, findings, revocations)
        self._release_users(self.user_clock.final_before(idle=False), decided_at, findings,
                            revocations)
        if for_source(event, state):
            late = self.sources.late
            self._from_sources(self.sources.arrive(event), findings, revocations)
            self.stats.late += self.sources.late - late
        self.stats.events += 1
        self.stats.findings += len(findings)
        self.stats.revocations += len(revocations)
        return findings, revocations

    def finish(self, decided_at: datetime | None = None) -> tuple[list[Finding], list[Revocation]]:
        """Take every decision still held for lateness (the input has ended)."""
        findings: list[Finding] = []
        revocations: list[Revocation] = []
        self._release_users(float("inf"), decided_at, findings, revocations)
        self._from_sources(self.sources.release(everything=True), findings, revocations)
        self.stats.findings += len(findings)
        self.stats.revocations += len(revocations)
        return findings, revocations

    def _to_user(self, key: bytes, message: Event | Revocation, raw: bytes,
                 decided_at: datetime | None, findings: list[Finding],
                 revocations: list[Revocation]) -> None:
        out = self.users.arrive(message, raw, self.user_states.get(key), decided_at)
        if out.duplicate or out.state is None:
            return
        if not self.user_clock.observe(out.at):
            self.stats.late += 1
        user = self.user_states[key] = out.state
        _collect(out, findings, revocations)
        if out.overflow is not None:
            _collect(self.users.finalize(user, [out.overflow], decided_at), findings, revocations)
        self.user_due.set(key, user.next_due)

    def _release_users(self, before: float, decided_at: datetime | None,
                       findings: list[Finding], revocations: list[Revocation]) -> None:
        if not self.user_due.any_due(before):
            return
        for key in list(self.user_due.pop_due(before)):
            user = self.user_states[key]  # type: ignore[index]
            _collect(self.users.finalize(user, user.take_final(before), decided_at), findings,
                     revocations)
            self.user_due.set(key, user.next_due)

    def _from_sources(self, released: list, findings: list[Finding],
                      revocations: list[Revocation]) -> None:
        for _, outcome in released:
            if outcome.error is not None:
                raise RuntimeError(outcome.error)  # in process, a detector bug is a test failure
            findings += outcome.findings
            revocations += outcome.revocations


def _collect(out: UserOutcome, findings: list[Finding], revocations: list[Revocation]) -> None:
    findings += out.findings
    revocations += out.revocations
