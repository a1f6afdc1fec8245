"""The pure per-user pipeline: an event (or a session revocation) + the user's state -> outcome.

Fed by the user agent from `<app_id>-by-user` (keyed tenant + user). It sees logins, ends,
credential changes, failed logins, a heartbeat of each session's activity (the session agent
forwards at most one activity per session per `HEARTBEAT_S`), and the session revocations the
session agent decided (so a revoked session stops counting as live).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from producers.contract import Action, Event, EventType, Finding, Revocation, Scope
from streams.detectors import USER_DETECTORS, UserContext, UserDetector
from streams.enrich import Enricher, locate, network_prefix
from streams.policy import Detection, Policy
from streams.state import remember
from streams.user_state import (
    MAX_FAILURES,
    MAX_SESSIONS,
    RECENT_IDS,
    Failure,
    Login,
    UserSession,
    UserState,
)

# How often (event time) the session agent forwards a session's activity to the user agent.
HEARTBEAT_S = 300.0
# Failed logins older than this are forgotten (the longest failure window a policy may use).
FAILURE_MEMORY_S = 3600.0
_ENDING = frozenset({EventType.LOGOUT, EventType.EXPIRED})


@dataclass
class UserOutcome:
    state: UserState | None
    findings: list[Finding] = field(default_factory=list)
    revocations: list[Revocation] = field(default_factory=list)
    duplicate: bool = False
    material: bool = False


def user_key(tenant: str, user: str) -> bytes:
    return f"{tenant}\x1f{user}".encode()


class UserPipeline:
    def __init__(
        self,
        enricher: Enricher,
        policy: Policy | None = None,
        detectors: Sequence[UserDetector] | None = None,
        user_ttl_s: float = 86400.0 * 14,
    ) -> None:
        self.enricher = enricher
        self.policy = policy or Policy()
        self.user_ttl_s = user_ttl_s
        self.detectors = list(detectors) if detectors is not None else [
            d() for d in USER_DETECTORS
        ]

    def process(self, event: Event, previous: UserState | None, decided_at: datetime) -> UserOutcome:
        assert event.user is not None, "only events naming a user reach the user pipeline"
        if previous is not None and event.id in previous.recent_ids:
            return UserOutcome(state=previous, duplicate=True)
        now = event.time.timestamp()
        if previous is not None and now - previous.last_seen > self.user_ttl_s:
            previous = None
        network = self.enricher.network(event.ip)
        location = locate(event.attrs, network)
        state = _copy(previous) if previous is not None else UserState(
            tenant=event.tenant, user=event.user)
        remember(state.recent_ids, event.id, RECENT_IDS)  # a new id: redeliveries left above
        state.last_seen = max(state.last_seen, now)
        _record(state, event, now)

        tp = self.policy.for_tenant(event.tenant)
        ctx = UserContext(event=event, network=network, location=location, previous=previous,
                          state=state)
        detections: list[Detection] = []
        for detector in self.detectors:
            if not tp.rule(detector.id).enabled:
                continue
            signal = detector.evaluate(ctx, tp.params(detector))
            if signal is None:
                continue
            if detector.dedup_per_subject:
                last = state.flagged.get(detector.id)
                if last is not None and now - last < tp.dedup_window_s:
                    continue
                state.flagged[detector.id] = now
            detections.append(self.policy.detection(detector, signal, event, event.session,
                                                    event.user))
        revocations = self.policy.decide(event, detections, decided_at, asn=network.asn,
                                         user=event.user) if detections else []
        for revocation in revocations:
            if revocation.scope is Scope.SESSION and revocation.action is Action.REVOKE:
                _drop_session(state, revocation.session)
        if event.type is EventType.AUTHENTICATED:
            # After the detectors: they compare this login with the previous one.
            state.last_login = Login(
                at=now, session=event.session, ip=event.ip,
                lat=location.lat if location and not location.coarse else None,
                lon=location.lon if location and not location.coarse else None,
                accuracy_km=location.accuracy_km if location and not location.coarse else None,
                country=network.country, city=network.city, kind=network.kind)
        material = previous is None or state.material() != previous.material()
        return UserOutcome(state=state, findings=[d.finding for d in detections],
                           revocations=revocations, material=material)

    def session_revoked(self, revocation: Revocation, previous: UserState | None) -> UserOutcome:
        """A session of this user was revoked elsewhere: it no longer counts as live."""
        if previous is None or revocation.session is None or revocation.action is not Action.REVOKE:
            return UserOutcome(state=previous, duplicate=True)
        if all(s.session != revocation.session for s in previous.sessions):
            return UserOutcome(state=previous, duplicate=True)
        state = _copy(previous)
        _drop_session(state, revocation.session)
        return UserOutcome(state=state, material=True)


def _record(state: UserState, event: Event, now: float) -> None:
    """Fold the event into the user's state (before the detectors look)."""
    if event.type is EventType.AUTHENTICATED and event.session is not None:
        _drop_session(state, event.session)
        state.sessions.append(UserSession(session=event.session, authenticated_at=now,
                                          last_seen=now, ip=event.ip))
        if len(state.sessions) > MAX_SESSIONS:
            del state.sessions[0]
    elif event.type in _ENDING and event.session is not None:
        _drop_session(state, event.session)
    elif event.type is EventType.CREDENTIAL_CHANGED:
        state.credential_changed_at = now
    elif event.type is EventType.AUTH_FAILED:
        state.failures = [f for f in state.failures if now - f.at <= FAILURE_MEMORY_S]
        state.failures.append(Failure(now, network_prefix(event.ip)))
        if len(state.failures) > MAX_FAILURES:
            del state.failures[0]
    elif event.session is not None:  # a heartbeat of a live session
        for s in state.sessions:
            if s.session == event.session:
                s.last_seen = max(s.last_seen, now)
                s.ip = event.ip
                break


def _drop_session(state: UserState, session: str | None) -> None:
    state.sessions = [s for s in state.sessions if s.session != session]


def _copy(state: UserState) -> UserState:
    return msgspec.structs.replace(
        state,
        sessions=[msgspec.structs.replace(s) for s in state.sessions],
        failures=list(state.failures),
        flagged=dict(state.flagged),
        recent_ids=list(state.recent_ids),
    )
