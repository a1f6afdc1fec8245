"""The pure pipeline and the policy: what gets revoked, what only gets a finding, and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from producers.contract import Action, Event, EventType, Severity
from streams.detectors.ip_change import IpChange
from streams.detectors.ua_change import UaChange
from streams.pipeline import SessionPipeline
from streams.policy import DetectorRule, Policy, TenantPolicy

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/130.0.0.0 Safari/537.36")
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
HOME, HOSTING = "73.162.10.20", "167.99.10.10"
OTHER_ISP = "68.173.1.1"  # Spectrum, New York: a new residential network (medium, not high)


def two() -> list:
    """The policy logic is tested with the network and client detectors only (the other
    detectors have their own examples); Saratoga -> New Jersey in 10 s is impossible travel too."""
    return [IpChange(), UaChange()]


def ev(n: int, ip: str = HOME, ua: str | None = CHROME, type: str = "session.activity",
       at: float | None = None, tenant: str = "default", session: str = "s1") -> Event:
    return Event(schema="sessionwatch.event/1", id=f"e{n}", type=EventType(type),
                 time=T0 + timedelta(seconds=n * 10 if at is None else at), tenant=tenant,
                 session=session, user="alice", ip=ip, user_agent=ua)


def run(pipeline: SessionPipeline, events: list[Event]):
    state, outcomes = None, []
    for event in events:
        outcome = pipeline.process(event, state, T0)
        state = outcome.state
        outcomes.append(outcome)
    return outcomes


@pytest.fixture
def pipeline(enricher) -> SessionPipeline:
    return SessionPipeline(enricher, detectors=two())


def test_a_move_into_a_datacenter_is_revoked_even_with_the_same_browser(pipeline):
    *_, last = run(pipeline, [ev(1, type="session.authenticated"), ev(2, ip=HOSTING)])
    assert last.revocation is not None
    assert [r.detector for r in last.revocation.reasons] == ["session.ip_change"]


def test_new_network_alone_is_a_finding_not_a_revocation(pipeline):
    *_, last = run(pipeline, [ev(1, type="session.authenticated"), ev(2, ip=OTHER_ISP)])
    assert [f.detector for f in last.findings] == ["session.ip_change"]
    assert last.findings[0].severity is Severity.MEDIUM
    assert last.revocation is None


def test_new_network_plus_new_browser_corroborate_into_a_revocation(pipeline):
    *_, last = run(pipeline, [ev(1, type="session.authenticated"), ev(2, ip=HOSTING, ua=FIREFOX)])
    assert last.revocation is not None
    assert last.revocation.action is Action.REVOKE
    assert {r.detector for r in last.revocation.reasons} == {"session.ip_change",
                                                             "session.ua_change"}


def test_new_browser_on_the_same_network_alone_is_not_revoked(pipeline):
    *_, last = run(pipeline, [ev(1, type="session.authenticated"), ev(2, ua=FIREFOX)])
    assert last.findings and last.revocation is None


def test_one_revocation_per_session(pipeline):
    outcomes = run(pipeline, [ev(1), ev(2, ip=HOSTING, ua="curl/8.5.0"),
                              ev(3, ip=HOSTING, ua="python-requests/2.32")])
    assert outcomes[1].revocation is not None
    assert outcomes[2].revocation is None and outcomes[2].findings == []
    assert outcomes[2].state.revocation == outcomes[1].revocation.id


def test_redelivered_event_is_a_duplicate(pipeline):
    first = run(pipeline, [ev(1), ev(2, ip=HOSTING, ua="curl/8.5.0")])
    again = pipeline.process(ev(2, ip=HOSTING, ua="curl/8.5.0"), first[-1].state, T0)
    assert again.duplicate and again.revocation is None


def test_monitor_only_tenant_gets_findings_but_no_revocation(enricher):
    policy = Policy(tenants={"bank": TenantPolicy(monitor_only=True)})
    pipeline = SessionPipeline(enricher, policy, detectors=two())
    *_, last = run(pipeline, [ev(1, tenant="bank"), ev(2, ip=HOSTING, ua="curl/8.5.0",
                                                         tenant="bank")])
    assert len(last.findings) == 2 and last.revocation is None


def test_alert_only_detector_and_step_up_action(enricher):
    alert_ua = Policy(default=TenantPolicy(detectors={"session.ua_change":
                                                      DetectorRule(action="alert")}))
    *_, last = run(SessionPipeline(enricher, alert_ua, detectors=two()),
                   [ev(1), ev(2, ip=OTHER_ISP, ua="curl/8.5.0")])
    assert last.findings and last.revocation is None
    step_up = Policy(default=TenantPolicy(detectors={
        "session.ua_change": DetectorRule(action="step_up"),
        "session.ip_change": DetectorRule(action="step_up")}))
    *_, last = run(SessionPipeline(enricher, step_up, detectors=two()),
                   [ev(1), ev(2, ip=HOSTING, ua="curl/8.5.0")])
    assert last.revocation is not None and last.revocation.action is Action.STEP_UP


def test_disabled_detector_does_not_run(enricher):
    policy = Policy(default=TenantPolicy(detectors={"session.ua_change":
                                                    DetectorRule(enabled=False)}))
    *_, last = run(SessionPipeline(enricher, policy, detectors=two()), [ev(1), ev(2, ua="curl/8.5.0")])
    assert last.findings == []


def test_revocation_id_is_deterministic_and_depends_on_the_cause(enricher):
    events = [ev(1), ev(2, ip=HOSTING, ua="curl/8.5.0")]
    a = run(SessionPipeline(enricher, detectors=two()), events)[-1].revocation
    b = run(SessionPipeline(enricher, detectors=[UaChange(), IpChange()]), events)[-1].revocation
    assert a.id == b.id
    other_session = [ev(1, session="s2"), ev(2, ip=HOSTING, ua="curl/8.5.0", session="s2")]
    assert run(SessionPipeline(enricher, detectors=two()), other_session)[-1].revocation.id != a.id


def test_state_older_than_the_ttl_is_ignored(enricher):
    pipeline = SessionPipeline(enricher, session_ttl_s=3600, detectors=two())
    outcomes = run(pipeline, [ev(1, at=0), ev(2, ip=HOSTING, ua="curl/8.5.0", at=7200)])
    assert outcomes[1].findings == [], "a day-old session's state no longer judges new events"
    assert outcomes[1].state.first_seen == 7200 + T0.timestamp()


def test_logout_ends_judgement(pipeline):
    outcomes = run(pipeline, [ev(1), ev(2, type="session.logout"),
                              ev(3, ip=HOSTING, ua="curl/8.5.0")])
    assert outcomes[1].state.ended_at is not None
    assert outcomes[2].revocation is None  # replay after logout: the replay detector's job
