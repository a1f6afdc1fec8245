"""The pure per-session pipeline: event + previous state -> new state, findings, revocation.

No faust, no broker, no wall clock in decisions: the agent (streams/agents.py) feeds it and
publishes what it returns, and tests and the benchmark call it directly. `decided_at` is the only
wall-clock field and it is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from producers.contract import Event, EventType, Finding, Revocation
from streams.detectors import SESSION_DETECTORS, Context, SessionDetector
from streams.enrich import Client, Enricher, Network, network_prefix
from streams.policy import Policy, finding_id
from streams.state import SessionState, remember


@dataclass
class Outcome:
    state: SessionState | None
    findings: list[Finding] = field(default_factory=list)
    revocation: Revocation | None = None
    duplicate: bool = False
    # True when the state changed in a way that must reach the changelog now.
    material: bool = False


_ENDING = frozenset({EventType.LOGOUT, EventType.EXPIRED})


class SessionPipeline:
    def __init__(
        self,
        enricher: Enricher,
        policy: Policy | None = None,
        detectors: Sequence[SessionDetector] | None = None,
        session_ttl_s: float = 86400.0,
    ) -> None:
        self.enricher = enricher
        self.session_ttl_s = session_ttl_s
        self.policy = policy or Policy()
        self.detectors = list(detectors) if detectors is not None else [
            d() for d in SESSION_DETECTORS
        ]

    def process(
        self, event: Event, previous: SessionState | None, decided_at: datetime
    ) -> Outcome:
        """Run one event with a session through the detectors and the policy.

        `previous` is the state before the event (None for a new session); it is not mutated.
        """
        assert event.session is not None, "session-less events do not reach the session pipeline"
        if previous is not None and event.id in previous.recent_ids:
            return Outcome(state=previous, duplicate=True)
        if previous is not None and event.time.timestamp() - previous.last_seen > self.session_ttl_s:
            # Decided on event time, not on whether the sweep ran yet: replays stay identical.
            previous = None
        network = self.enricher.network(event.ip)
        client = self.enricher.client(event.user_agent)
        prefix = network_prefix(event.ip)
        ctx = Context(event=event, network=network, client=client, prefix=prefix,
                      previous=previous)

        findings: list[Finding] = []
        # A session that was revoked or ended is not judged again here: what happens on it after
        # the end is the replay detector's business, and one revocation per session is enough.
        if previous is None or (previous.revocation is None and previous.ended_at is None):
            for detector in self.detectors:
                if not self.policy.enabled(event.tenant, detector.id):
                    continue
                signal = detector.evaluate(ctx)
                if signal is None:
                    continue
                findings.append(
                    Finding(
                        id=finding_id(detector.id, event.tenant, event.id),
                        tenant=event.tenant,
                        session=event.session,
                        user=event.user or (previous.user if previous else None),
                        ip=event.ip,
                        detector=detector.id,
                        severity=signal.severity,
                        summary=signal.summary,
                        evidence=signal.evidence,
                        event_time=event.time,
                        events=[event.id],
                    )
                )
        revocation = self.policy.decide(event, findings, decided_at) if findings else None

        state = _advance(previous, event, network, client, prefix, revocation)
        material = previous is None or state.material() != previous.material()
        return Outcome(state=state, findings=findings, revocation=revocation, material=material)


def _advance(
    previous: SessionState | None,
    event: Event,
    network: Network,
    client: Client,
    prefix: str,
    revocation: Revocation | None,
) -> SessionState:
    """The state after `event`; `previous` is left as it was (the store may still hold it)."""
    now = event.time.timestamp()
    if previous is None:
        state = SessionState(tenant=event.tenant, session=event.session or "", first_seen=now)
    else:
        state = msgspec.structs.replace(
            previous,
            networks=list(previous.networks),
            prefixes=list(previous.prefixes),
            recent_ids=list(previous.recent_ids),
        )
    state.remember_id(event.id)
    state.events += 1
    state.last_seen = max(state.last_seen, now)
    if event.user:
        state.user = event.user
    if event.type is EventType.CREATED and state.created_at is None:
        state.created_at = now
    elif event.type is EventType.AUTHENTICATED:
        state.authenticated_at = now
    elif event.type in _ENDING and state.ended_at is None:
        state.ended_at = now
    state.ip = event.ip
    state.prefix = prefix
    state.asn = network.asn
    state.country = network.country
    remember(state.networks, network.asn)
    remember(state.prefixes, prefix)
    if event.user_agent:
        state.user_agent = event.user_agent
        state.client_family = client.family
        state.client_os = client.os
        state.client_major = client.major
        state.client_is_tool = client.is_tool
    if revocation is not None and state.revocation is None:
        state.revocation = revocation.id
    return state
