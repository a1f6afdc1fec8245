"""The pure per-user pipeline: what the user stage decides on arrival, and what it decides in order.

Fed from `<app_id>-by-user` (keyed tenant + user): logins, ends, credential changes, failed
logins, a heartbeat of each session's activity (at most one per session per `HEARTBEAT_S`) and
the session revocations the session stage decided (so a revoked session stops counting as live).
These come merged from every session partition, in an order that varies. Two kinds of decision:

- On arrival, for detectors whose decisions more input can only add to (`on_arrival`): a
  credential change ends the sessions that logged in before it, and a login that arrives after
  the change (earlier in event time) is ended as it arrives; a login is compared with every
  earlier login and, when an earlier one arrives late, the later logins are judged again. The
  union of what is decided is the same whatever the order, and ids depend only on the cause.
- In event-time order, once final (streams/event_clock.py), for the rest: the concurrent-session
  count falls when a logout arrives, so a fourth login is judged only when every event before it
  within the allowed lateness is in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from models.features import (
    BEHAVIOUR,
    SCORE_ONLY,
    Population,
    behaviour_from_attr,
    history_for,
    learn,
    observation,
    vector,
)
from models.scoring import AnomalyModel
from producers.contract import (
    EVENT_SCHEMA,
    Action,
    Event,
    EventType,
    Finding,
    Revocation,
    Scope,
    Severity,
    decode_revocation,
)
from streams.detectors import USER_DETECTORS, UserContext, UserDetector
from streams.detectors.anomaly import Anomaly
from streams.enrich import Enricher, Location, Network, locate, network_prefix
from streams.policy import Detection, Policy
from streams.routing import HEARTBEAT_S, REVOCATION_PREFIX, decode_forwarded, user_key
from streams.state import remember
from streams.user_state import (
    MAX_FAILURES,
    MAX_SESSIONS,
    RECENT_IDS,
    Change,
    Failure,
    LoginRecord,
    Pending,
    UserSession,
    UserState,
)

# Failed logins older than this are forgotten (the longest failure window a policy may use).
FAILURE_MEMORY_S = 3600.0
_ENDING = frozenset({EventType.LOGOUT, EventType.EXPIRED})
_SEVERITY = {None: 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


class FeatureRecorder(Protocol):
    """Gets the feature vector of every scored event (the trainer builds its dataset so)."""

    population: Population

    def __call__(self, event: Event, features: list[float]) -> None: ...


@dataclass
class UserOutcome:
    state: UserState | None
    findings: list[Finding] = field(default_factory=list)
    revocations: list[Revocation] = field(default_factory=list)
    duplicate: bool = False
    # An event pushed out of `pending` by its cap: the caller puts it through in order now.
    overflow: Pending | None = None
    at: float = 0.0    # event time of the message that arrived


class UserPipeline:
    def __init__(
        self,
        enricher: Enricher,
        policy: Policy | None = None,
        detectors: Sequence[UserDetector] | None = None,
        user_ttl_s: float = 86400.0 * 14,
        model: AnomalyModel | None = None,
        recorder: FeatureRecorder | None = None,
    ) -> None:
        self.enricher = enricher
        self.policy = policy or Policy()
        self.user_ttl_s = user_ttl_s
        chosen = list(detectors) if detectors is not None else [d() for d in USER_DETECTORS]
        # The learned score: scored on arrival of the events the session stage marked.
        self.anomaly = next((d for d in chosen if isinstance(d, Anomaly)), None)
        if self.anomaly is not None and model is not None:
            self.anomaly.model = model
        self.recorder = recorder
        self.on_arrival = [d for d in chosen if d.on_arrival]
        self.in_order = [d for d in chosen if not d.on_arrival]
        # The in-order detectors that can fire on each event type (most types: none).
        self._in_order_for = {t: [d for d in self.in_order
                                  if d.event_types is None or t in d.event_types]
                              for t in EventType}

    @property
    def scoring(self) -> bool:
        """A model (or a trainer's recorder) is in place: the session stage sends behaviour."""
        return self.recorder is not None or (self.anomaly is not None
                                             and self.anomaly.model is not None)

    # -- arrival ---------------------------------------------------------------------------

    def arrive(self, message: Event | Revocation, raw: bytes, previous: UserState | None,
               decided_at: datetime | None) -> UserOutcome:
        """One message from `<app_id>-by-user` (decoded, and as it came): an event naming a
        user, or a note that one of the user's sessions was revoked.

        Decides what can be decided now and queues the message for the in-order part (the
        caller takes final events off `state.pending` with `finalize`). `decided_at` is the wall
        clock for the decisions' `decided_at` (None: event time).
        """
        if isinstance(message, Revocation):
            if message.user is None or message.session is None \
                    or message.action is not Action.REVOKE:
                return UserOutcome(previous, duplicate=True)
            at, message_id, event = message.event_time.timestamp(), message.id, None
            tenant, user = message.tenant, message.user
        else:
            event = message
            assert event.user is not None, "only events naming a user reach the user stage"
            at, message_id, tenant, user = event.time.timestamp(), event.id, event.tenant, event.user
        if previous is not None and message_id in previous.recent_ids:
            return UserOutcome(previous, duplicate=True)
        if previous is not None and at - previous.last_seen > self.user_ttl_s:
            previous = None  # decided on event time, not on when expiry ran: replays alike
        state = previous if previous is not None else UserState(tenant=tenant, user=user)
        remember(state.recent_ids, message_id, RECENT_IDS)
        state.last_seen = max(state.last_seen, at)
        out = UserOutcome(state, at=at)
        if event is not None:
            if event.type is EventType.AUTHENTICATED and event.session is not None:
                self._login_arrived(state, event, decided_at, out)
            elif event.type is EventType.CREDENTIAL_CHANGED:
                self._change_arrived(state, event, decided_at, out)
            if (event.session is not None and event.attrs and BEHAVIOUR in event.attrs
                    and self.scoring):
                self._behaviour_arrived(state, event, at, decided_at, out)
                if event.attrs.get(SCORE_ONLY) is True:
                    return out  # nothing for the in-order detectors
        out.overflow = state.add_pending(Pending(at, message_id, raw))
        return out

    def _login_arrived(self, state: UserState, event: Event, decided_at: datetime | None,
                       out: UserOutcome) -> None:
        network = self.enricher.network(event.ip)
        location = locate(event.attrs, network)
        fine = location is not None and not location.coarse
        login = LoginRecord(
            at=event.time.timestamp(), event_id=event.id, session=event.session, ip=event.ip,
            lat=location.lat if fine and location else None,
            lon=location.lon if fine and location else None,
            accuracy_km=location.accuracy_km if fine and location else None,
            country=network.country, city=network.city, kind=network.kind)
        state.add_login(login)
        if login not in state.logins:
            return  # older than every login kept: beyond what the state remembers
        # The new login against earlier ones; later logins against it (it may arrive late).
        self._judge_login(state, login, decided_at, out)
        for later in [x for x in state.logins if (x.at, x.event_id) > (login.at, login.event_id)]:
            if later.reported != "high":
                self._judge_login(state, later, decided_at, out)
        # A credential change after this login (in event time) ends it, however late it came.
        for change in state.changes:
            if change.at > login.at:
                self._decide_change(state, change, (login,), decided_at, out)

    def _change_arrived(self, state: UserState, event: Event, decided_at: datetime | None,
                        out: UserOutcome) -> None:
        what = str(event.attrs.get("credential", "credential"))[:32] if event.attrs \
            else "credential"
        change = Change(at=event.time.timestamp(), event_id=event.id, session=event.session,
                        ip=event.ip, credential=what)
        state.add_change(change)
        before = tuple(x for x in state.logins if x.at < change.at)
        self._decide_change(state, change, before, decided_at, out, whole=True)

    def set_model(self, model: AnomalyModel | None) -> None:
        """Swap the learned score's model (a reload); None turns it off."""
        if self.anomaly is not None:
            self.anomaly.model = model

    def _behaviour_arrived(self, state: UserState, event: Event, at: float,
                           decided_at: datetime | None, out: UserOutcome) -> None:
        """Score the event if the session stage marked it, then count it into the user's
        history. Counting commutes and a score reads only earlier days (models/features.py), so
        arrival order does not change a score."""
        behaviour = behaviour_from_attr(event.attrs.get(BEHAVIOUR))
        if behaviour is None:
            return
        network = self.enricher.network(event.ip)
        client = self.enricher.client(event.user_agent)
        path = event.attrs.get("path")
        obs = observation(ip=event.ip, now=at, asn=network.asn, country=network.country,
                          city=network.city, user_agent=event.user_agent, ua_family=client.family,
                          os=client.os, path=path if isinstance(path, str) else None)
        detector = self.anomaly
        if behaviour.changed and detector is not None:
            tp = self.policy.for_tenant(state.tenant)
            params = tp.params(detector)
            model = detector.model_for(params)
            population = model.population if model is not None else (
                self.recorder.population if self.recorder is not None else None)
            if population is not None:
                x = vector(obs=obs, behaviour=behaviour, history=history_for(state.profile, at),
                           population=population, event_type=event.type.value, now=at)
                if self.recorder is not None:
                    self.recorder(event, x)
                if model is not None and tp.rule(detector.id).enabled:
                    self._score(state, event, x, network, decided_at, out)
        state.profile = learn(state.profile, obs, at, behaviour)

    def _score(self, state: UserState, event: Event, x: list[float], network: Network,
               decided_at: datetime | None, out: UserOutcome) -> None:
        detector = self.anomaly
        assert detector is not None and event.session is not None
        tp = self.policy.for_tenant(state.tenant)
        params = tp.params(detector)
        model = detector.model_for(params)
        assert model is not None
        # One finding per session and severity: report again only when the score's severity rose
        # (a session's events reach this stage in order: they share its partition). Checked
        # before the detector explains itself: most scores above a threshold repeat one.
        override = tp.rule(detector.id).severity
        quick = model.severity(model.scorer.score(x))
        if quick is None:
            return
        if _SEVERITY[override.value if override else quick] <= state.anomaly_reported.get(
                event.session, 0):
            return
        ctx = UserContext(event=event, network=network, location=None, previous=None, state=state,
                          features=x)
        signal = detector.evaluate(ctx, params)
        if signal is None:
            return
        severity = (override or signal.severity).value
        state.note_anomaly(event.session, _SEVERITY[severity])
        detection = self.policy.detection(detector, signal, event, event.session, event.user)
        self._decide(event, [detection], decided_at, network.asn, out)

    def _judge_login(self, state: UserState, login: LoginRecord, decided_at: datetime | None,
                     out: UserOutcome) -> None:
        """Run the on-arrival login detectors for `login`; report it when its severity rose.

        The event is rebuilt from the record whether the login just arrived or is judged again,
        so its decisions are the same records either way."""
        event = _login_event(state, login)
        network = self.enricher.network(login.ip)
        location = None if login.lat is None or login.lon is None else Location(
            login.lat, login.lon, login.accuracy_km or 0.0, coarse=False, source="state")
        ctx = UserContext(event=event, network=network, location=location, previous=None,
                          state=state)
        tp = self.policy.for_tenant(state.tenant)
        detections: list[Detection] = []
        for detector in self.on_arrival:
            if detector.judges is not EventType.AUTHENTICATED or not tp.rule(detector.id).enabled:
                continue
            signal = detector.evaluate(ctx, tp.params(detector))
            if signal is None:
                continue
            severity = (tp.rule(detector.id).severity or signal.severity).value
            if _SEVERITY[severity] <= _SEVERITY[login.reported]:
                continue  # already reported at this severity or higher
            login.reported = severity
            detections.append(self.policy.detection(detector, signal, event, event.session,
                                                    event.user))
        self._decide(event, detections, decided_at, network.asn, out)

    def _decide_change(self, state: UserState, change: Change, logins: Sequence[LoginRecord],
                       decided_at: datetime | None, out: UserOutcome, whole: bool = False) -> None:
        """The credential-change detectors for `change` over `logins` (all logins before it when
        the change arrives - `whole` - or one login that arrived after it)."""
        event = _change_event(state, change)
        tp = self.policy.for_tenant(state.tenant)
        network = self.enricher.network(change.ip)
        ctx = UserContext(event=event, network=network, location=None, previous=None,
                          state=state, logins=tuple(logins))
        detections: list[Detection] = []
        for detector in self.on_arrival:
            if detector.judges is not EventType.CREDENTIAL_CHANGED \
                    or not tp.rule(detector.id).enabled:
                continue
            signal = detector.evaluate(ctx, tp.params(detector))
            if signal is None or (not whole and not signal.sessions):
                continue
            detections.append(self.policy.detection(detector, signal, event, event.session,
                                                    event.user))
        decided = self.policy.decide(event, detections, decided_at or event.time,
                                     asn=network.asn, user=event.user) if detections else []
        if not whole:
            # A late login only adds its own session; a user-wide revocation (`revoke_user`,
            # not_before = the change) already covers it and went out with the change.
            decided = [r for r in decided if r.scope is Scope.SESSION]
            if not decided:
                return
        out.findings += [d.finding for d in detections]
        out.revocations += decided

    # -- in order --------------------------------------------------------------------------

    def finalize(self, state: UserState, items: Sequence[Pending],
                 decided_at: datetime | None) -> UserOutcome:
        """Fold final events into the in-order view, in (event time, id) order, and run the
        in-order detectors on each."""
        out = UserOutcome(state)
        for item in items:
            if item.raw.startswith(REVOCATION_PREFIX):
                _drop_session(state, decode_revocation(item.raw).session)
                continue
            event = decode_forwarded(item.raw)
            now = item.at
            _record(state, event, now)
            detectors = self._in_order_for[event.type]
            if not detectors:
                continue
            network = self.enricher.network(event.ip)
            ctx = UserContext(event=event, network=network,
                              location=locate(event.attrs, network), previous=None, state=state)
            tp = self.policy.for_tenant(event.tenant)
            detections: list[Detection] = []
            for detector in detectors:
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
            self._decide(event, detections, decided_at, network.asn, out)
            for revocation in out.revocations:
                if revocation.scope is Scope.SESSION and revocation.action is Action.REVOKE:
                    _drop_session(state, revocation.session)
        return out

    def _decide(self, event: Event, detections: list[Detection], decided_at: datetime | None,
                asn: str | None, out: UserOutcome) -> None:
        if not detections:
            return
        out.findings += [d.finding for d in detections]
        # No wall clock given (the in-process runner): stamp decisions with event time.
        out.revocations += self.policy.decide(event, detections, decided_at or event.time,
                                              asn=asn, user=event.user)


def _record(state: UserState, event: Event, now: float) -> None:
    """Fold a final event into the in-order view (before the in-order detectors look)."""
    if event.type is EventType.AUTHENTICATED and event.session is not None:
        _drop_session(state, event.session)
        state.sessions.append(UserSession(session=event.session, authenticated_at=now,
                                          last_seen=now, ip=event.ip))
        if len(state.sessions) > MAX_SESSIONS:
            del state.sessions[0]
    elif event.type in _ENDING and event.session is not None:
        _drop_session(state, event.session)
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


def _login_event(state: UserState, login: LoginRecord) -> Event:
    """The login as an event again (a decision about it names its id, time and address)."""
    return Event(schema=EVENT_SCHEMA, id=login.event_id, type=EventType.AUTHENTICATED,
                 time=datetime.fromtimestamp(login.at, UTC), tenant=state.tenant,
                 session=login.session, user=state.user, ip=login.ip)


def _change_event(state: UserState, change: Change) -> Event:
    return Event(schema=EVENT_SCHEMA, id=change.event_id, type=EventType.CREDENTIAL_CHANGED,
                 time=datetime.fromtimestamp(change.at, UTC), tenant=state.tenant,
                 session=change.session, user=state.user, ip=change.ip,
                 attrs={"credential": change.credential})


__all__ = ["HEARTBEAT_S", "Severity", "UserOutcome", "UserPipeline", "user_key"]
