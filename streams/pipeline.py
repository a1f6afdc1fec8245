"""The pure per-session pipeline: event + previous state -> new state, findings, revocation.

No stream engine, no broker, no wall clock in decisions: the session stage
(streams/session_stage.py) feeds it and
publishes what it returns, and tests and the benchmark call it directly. `decided_at` is the only
wall-clock field and it is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from models.features import SENSITIVE_PATHS, observe
from producers.contract import Action, Event, EventType, Finding, Revocation, Scope
from streams.detectors import SESSION_DETECTORS, Context, SessionDetector
from streams.enrich import Client, Enricher, Location, Network, locate, network_prefix
from streams.policy import Detection, DetectorPlans, Policy
from streams.state import SessionState, remembered


# A msgspec Struct rather than a dataclass: one is built for every event, at a fifth of the cost.
class Outcome(msgspec.Struct):
    state: SessionState | None
    findings: list[Finding] = msgspec.field(default_factory=list)
    revocations: list[Revocation] = msgspec.field(default_factory=list)
    duplicate: bool = False

    @property
    def revocation(self) -> Revocation | None:
        """The revocation of this session, if the event caused one."""
        return next((r for r in self.revocations if r.scope is Scope.SESSION), None)


_ENDING = {EventType.LOGOUT: "logout", EventType.EXPIRED: "expired"}


class SessionPipeline:
    def __init__(
        self,
        enricher: Enricher,
        policy: Policy | None = None,
        detectors: Sequence[SessionDetector] | None = None,
        session_ttl_s: float = 86400.0,
        track_behaviour: bool = False,
        sensitive_paths: Sequence[str] = SENSITIVE_PATHS,
    ) -> None:
        self.enricher = enricher
        # Only when a learned score runs (or a trainer records): what it needs of every request.
        self.track_behaviour = track_behaviour
        self.sensitive_paths = tuple(sensitive_paths)
        self.session_ttl_s = session_ttl_s
        self.policy = policy or Policy()
        self.detectors = list(detectors) if detectors is not None else [
            d() for d in SESSION_DETECTORS
        ]
        # Per tenant and event type, what runs on a live session and what on one that ended;
        # worked out once (a pipeline's policy and detectors are fixed when it is built).
        self._live = DetectorPlans(self.policy, self.detectors)
        self._ended = DetectorPlans(self.policy, [d for d in self.detectors if d.after_end])

    def process(
        self, event: Event, previous: SessionState | None, decided_at: datetime
    ) -> Outcome:
        """Run one event with a session through the detectors and the policy.

        `previous` is the state before the event (None for a new session); it is not mutated.
        """
        assert event.session is not None, "session-less events do not reach the session pipeline"
        if previous is not None and event.id in previous.recent_ids:
            return Outcome(state=previous, duplicate=True)
        now = event.time.timestamp()
        if previous is not None and now - previous.last_seen > self.session_ttl_s:
            # Decided on event time, not on whether the sweep ran yet: replays stay identical.
            previous = None
        network = self.enricher.network(event.ip)
        client = self.enricher.client(event.user_agent)
        prefix = network_prefix(event.ip)
        location = locate(event.attrs, network)
        ctx = Context(event=event, network=network, client=client, prefix=prefix,
                      location=location, previous=previous, now=now)
        user = event.user or (previous.user if previous else None)

        # A session that was revoked or ended is judged only by the detectors made for that
        # (replay after the end): one revocation per session is enough.
        ended = previous is not None and (
            previous.revocation is not None or previous.ended_at is not None)
        plan = (self._ended if ended else self._live).for_event(event.tenant, event.type)
        detections: list[Detection] = []
        flagged: dict[str, float] = {}
        for detector, params in plan.detectors:
            signal = detector.evaluate(ctx, params)
            if signal is None:
                continue
            if ended:
                last = previous.flagged.get(detector.id)  # type: ignore[union-attr]
                if last is not None and now - last < plan.policy.dedup_window_s:
                    continue  # the same replay again: already reported
            flagged[detector.id] = now
            detections.append(self.policy.detection(detector, signal, event, event.session, user))
        revocations: list[Revocation] = []
        if detections and (previous is None or previous.revocation is None):
            revocations = self.policy.decide(event, detections, decided_at, asn=network.asn,
                                             user=user)
        state = _advance(previous, event, now, network, client, prefix, location, revocations,
                         flagged)
        if self.track_behaviour:
            state.behaviour = observe(
                previous.behaviour if previous is not None else None, now=now, ip=event.ip,
                user_agent=event.user_agent, event_type=event.type.value, attrs=event.attrs,
                prefix=prefix, sensitive=self.sensitive_paths)
        return Outcome(state=state, findings=[d.finding for d in detections] if detections else [],
                       revocations=revocations)


def _advance(
    previous: SessionState | None,
    event: Event,
    now: float,
    network: Network,
    client: Client,
    prefix: str,
    location: Location | None,
    revocations: Sequence[Revocation],
    flagged: dict[str, float],
) -> SessionState:
    """The state after `event`; `previous` is left as it was (the store may still hold it).

    A shallow copy: its collections are immutable (streams/state.py), so what did not change
    stays shared with `previous` and what did is replaced.
    """
    if previous is None:
        state = SessionState(tenant=event.tenant, session=event.session or "", first_seen=now)
    else:
        state = msgspec.structs.replace(previous)
    state.remember_id(event.id)
    state.events += 1
    if now > state.last_seen:
        state.last_seen = now
    if event.user:
        state.user = event.user
    kind = event.type
    if kind is EventType.CREATED:
        if state.created_at is None:
            state.created_at = now
    elif kind is EventType.AUTHENTICATED:
        state.authenticated_at = now
    elif kind in _ENDING and state.ended_at is None:
        state.ended_at = now
        state.end_reason = _ENDING[kind]
        state.ended_ip = event.ip
        state.ended_user_agent = event.user_agent
    state.ip = event.ip
    state.prefix = prefix
    state.asn = network.asn
    state.country = network.country
    state.networks = remembered(state.networks, network.asn)
    if network.kind in ("hosting", "tor"):
        state.datacenter = True
    state.prefixes = remembered(state.prefixes, prefix)
    if event.user_agent:
        state.user_agent = event.user_agent
        state.client_family = client.family
        state.client_os = client.os
        state.client_major = client.major
        state.client_is_tool = client.is_tool
    if location is not None and not location.coarse:
        state.lat, state.lon = location.lat, location.lon
        state.accuracy_km = location.accuracy_km
        state.located_at = now
    if flagged:
        state.flagged = {**state.flagged, **flagged}
    if revocations and state.revocation is None:
        own = next((r for r in revocations if r.scope is Scope.SESSION
                    and r.session == state.session and r.action is Action.REVOKE), None)
        if own is not None:
            state.revocation = own.id
            state.revoked_at = now
            if state.ended_at is None:
                state.end_reason = "revoked"
    return state
