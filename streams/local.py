"""The whole detection pipeline in one process, without a broker: session, user and source stages.

Routes events exactly as the faust agents do (streams/routing.py) and keeps state in dicts. Used
by `sessionwatch evaluate --offline`, the backtest, tests and the benchmark; the worker is the
same code behind Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from producers.contract import Event, Finding, Revocation, Scope, decode_event
from streams.enrich import Enricher
from streams.pipeline import SessionPipeline
from streams.policy import Policy
from streams.routing import for_source, for_user, revocation_for_user
from streams.source_pipeline import SourcePipeline
from streams.state import SessionState
from streams.user_pipeline import UserPipeline
from streams.user_state import UserState


@dataclass
class LocalStats:
    events: int = 0
    duplicates: int = 0
    findings: int = 0
    revocations: int = 0


@dataclass
class LocalRunner:
    policy: Policy = field(default_factory=Policy)
    enricher: Enricher | None = None
    session_ttl_s: float = 86400.0

    def __post_init__(self) -> None:
        enricher = self.enricher or Enricher()
        self.enricher = enricher
        self.sessions = SessionPipeline(enricher, self.policy, session_ttl_s=self.session_ttl_s)
        self.users = UserPipeline(enricher, self.policy)
        self.sources = SourcePipeline(enricher, self.policy)
        self.session_states: dict[str, SessionState] = {}
        self.user_states: dict[bytes, UserState] = {}
        self.stats = LocalStats()

    def process(
        self, event: Event, decided_at: datetime | None = None
    ) -> tuple[list[Finding], list[Revocation]]:
        """One event through every stage; returns its findings and revocations."""
        decided_at = decided_at or event.time
        findings: list[Finding] = []
        revocations: list[Revocation] = []
        state: SessionState | None = None
        if event.session is not None:
            outcome = self.sessions.process(event, self.session_states.get(event.session),
                                            decided_at)
            if outcome.duplicate:
                self.stats.duplicates += 1
                return [], []
            state = outcome.state
            assert state is not None
            self.session_states[event.session] = state
            findings += outcome.findings
            revocations += outcome.revocations
        forwarded = for_user(event, b"", state)
        if forwarded is not None:
            key = forwarded[0]
            user_event = event if event.user else decode_event(forwarded[1])
            out = self.users.process(user_event, self.user_states.get(key), decided_at)
            if not out.duplicate and out.state is not None:
                self.user_states[key] = out.state
                findings += out.findings
                revocations += out.revocations
        for revocation in list(revocations):
            note = revocation_for_user(revocation) if revocation.scope is Scope.SESSION else None
            if note is not None:
                out = self.users.session_revoked(revocation, self.user_states.get(note[0]))
                if out.state is not None and not out.duplicate:
                    self.user_states[note[0]] = out.state
        if for_source(event, state):
            source = self.sources.process(event, decided_at)
            findings += source.findings
            revocations += source.revocations
        self.stats.events += 1
        self.stats.findings += len(findings)
        self.stats.revocations += len(revocations)
        return findings, revocations
