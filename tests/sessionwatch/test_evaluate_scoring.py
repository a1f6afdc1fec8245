"""`sessionwatch.evaluate.score` on hand-made truth and decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from producers.contract import (
    EVENT_SCHEMA,
    Action,
    Event,
    EventType,
    Finding,
    Reason,
    Revocation,
    Scope,
    Severity,
)
from sessionwatch.evaluate import Observed, covers, percentile, score
from sessionwatch.simulation.truth import AttackTruth, BenignTruth, Truth

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def ev(i: int, session: str | None = "s-victim", ip: str = "203.0.113.5") -> Event:
    return Event(schema=EVENT_SCHEMA, id=f"e{i}", type=EventType.ACTIVITY, ip=ip,
                 time=T0 + timedelta(seconds=i), session=session)


def rev(rid: str, scope: Scope, *, session: str | None = None, user: str | None = None,
        source: str | None = None, action: Action = Action.REVOKE, at: int = 5,
        events: list[str] | None = None, detector: str = "session.ua_change",
        not_before: datetime | None = None, expires: datetime | None = None) -> Revocation:
    return Revocation(id=rid, tenant="default", scope=scope, session=session, user=user, source=source,
                      action=action, not_before=not_before, expires=expires,
                      reasons=[Reason(detector=detector, severity=Severity.HIGH, summary="x")],
                      event_time=T0 + timedelta(seconds=at), decided_at=T0,
                      events=events or [f"e{at}"])


def finding(fid: str, event: str, detector: str = "session.ip_change") -> Finding:
    return Finding(id=fid, tenant="default", session=None, user=None, ip="203.0.113.5",
                   detector=detector, severity=Severity.MEDIUM, summary="x", evidence={},
                   event_time=T0, events=[event])


def truth() -> Truth:
    ts = T0.timestamp()
    return Truth(seed=1, users=3, start=T0, attacks=[
        AttackTruth(id="replay-0", cls="replay", tenant="default", first_event="e3", start=ts + 3,
                    sessions=["s-victim"], victims=["alice"], sources=["198.51.100.7"],
                    events=["e3", "e4", "e5"], catch=["session", "user", "source"]),
        AttackTruth(id="guess-0", cls="guess", tenant="default", first_event="e6", start=ts + 6,
                    sources=["192.0.2.9"], events=["e6", "e7"], catch=["source"]),
    ], benign=[
        BenignTruth(session="s-bob", user="bob", kind="steady", tenant="default", hashes=["s-pre", "s-bob"],
                    addresses={"192.0.2.50": [ts, ts + 100]}, start=ts, end=ts + 100,
                    authenticated_at=ts + 1),
        BenignTruth(session="s-carol", user="carol", kind="vpn_toggle", tenant="default",
                    hashes=["s-carol"], addresses={"203.0.113.80": [ts, ts + 2]}, start=ts, end=ts + 2,
                    authenticated_at=ts),
    ])


EVENTS = [ev(i) for i in range(10)]


def test_session_revocation_catches_the_attack_and_measures_delay():
    obs = Observed(revocations=[(100.5, rev("r1", Scope.SESSION, session="s-victim", at=4))])
    report = score(truth(), EVENTS, obs, sent={"e4": 100.0})
    c = report["classes"]["replay"]
    assert (c["caught"], c["instances"], c["recall"]) == (1, 1, 1.0)
    assert c["delay_events_p50"] == 2  # e3 and e4
    assert c["delay_ms_p50"] == 500.0
    assert report["classes"]["guess"]["caught"] == 0
    assert report["benign"]["revoked"] == 0


def test_revocation_before_the_attack_does_not_count():
    obs = Observed(revocations=[(1.0, rev("r1", Scope.SESSION, session="s-victim", at=1))])
    assert score(truth(), EVENTS, obs)["classes"]["replay"]["caught"] == 0


def test_source_block_by_cidr_catches_and_harms_benign_in_its_window():
    block = rev("b1", Scope.SOURCE, source="192.0.2.0/24", action=Action.BLOCK, at=7,
                detector="source.token_guess", expires=T0 + timedelta(hours=1))
    report = score(truth(), EVENTS, Observed(revocations=[(1.0, block)]))
    assert report["classes"]["guess"]["caught"] == 1
    assert report["benign"]["revoked"] == 1  # bob used 192.0.2.50 while the block was on
    assert report["benign"]["by_kind"]["steady"]["revoked"] == 1
    assert report["benign"]["by_how"] == {"block": 1}
    d = report["detectors"]["source.token_guess"]
    assert (d["revocations_on_attacks"], d["revocations_on_benign"], d["precision"]) == (1, 1, 0.5)


def test_expired_block_does_not_harm_later_use():
    block = rev("b1", Scope.SOURCE, source="192.0.2.50", action=Action.BLOCK, at=200,
                expires=T0 + timedelta(seconds=300), events=["e9"])
    assert score(truth(), EVENTS, Observed(revocations=[(1.0, block)]))["benign"]["revoked"] == 0


def test_user_revocation_hits_sessions_authenticated_before_not_before():
    early = rev("u1", Scope.USER, user="bob", at=5, not_before=T0 + timedelta(seconds=5))
    late = rev("u2", Scope.USER, user="carol", at=5, not_before=T0 - timedelta(seconds=5))
    victim = rev("u3", Scope.USER, user="alice", at=5)
    report = score(truth(), EVENTS, Observed(revocations=[(1.0, early), (1.0, late), (1.0, victim)]))
    assert report["benign"]["revoked"] == 1
    assert report["benign"]["by_kind"]["steady"]["revoked"] == 1
    assert report["classes"]["replay"]["caught"] == 1


def test_step_up_on_benign_is_reported_apart_and_duplicates_count_once():
    step = rev("s1", Scope.SESSION, session="s-pre", action=Action.STEP_UP, at=2)
    obs = Observed(revocations=[(1.0, step), (2.0, step)])
    report = score(truth(), EVENTS, obs)
    assert report["benign"]["revoked"] == 0 and report["benign"]["stepped_up"] == 1
    assert report["benign"]["by_kind"]["steady"]["stepped_up"] == 1
    assert report["revocations"] == 1


def test_findings_are_split_by_the_event_that_caused_them():
    obs = Observed(findings=[(1.0, finding("f1", "e3")), (1.0, finding("f2", "e1")),
                             (1.0, finding("f3", "e2"))])
    d = score(truth(), EVENTS, obs)["detectors"]["session.ip_change"]
    assert (d["findings"], d["findings_on_attacks"], d["findings_on_benign"]) == (3, 1, 2)
    assert abs(d["finding_precision"] - 1 / 3) < 1e-9


def test_benign_revoked_percentage_and_target():
    report = score(truth(), EVENTS, Observed(revocations=[
        (1.0, rev("r", Scope.SESSION, session="s-carol", at=1))]))
    assert report["benign"]["revoked_pct"] == 50.0
    assert report["benign"]["meets_target"] is False


def test_helpers():
    assert covers("192.0.2.0/24", "192.0.2.9") and not covers("192.0.2.0/24", "192.0.3.9")
    assert covers("2001:db8::/32", "2001:db8::1") and not covers("192.0.2.0/24", "2001:db8::1")
    assert not covers("not-an-address", "192.0.2.1")
    assert percentile([], 50) is None
    assert percentile([5, 1, 3], 50) == 3 and percentile([1, 2, 3, 4], 95) == 4


def test_user_revocation_long_after_a_session_expired_harms_nothing():
    later = rev("u1", Scope.USER, user="carol", at=4000, not_before=T0 + timedelta(seconds=4000),
                events=["e9"])
    assert score(truth(), EVENTS, Observed(revocations=[(1.0, later)]))["benign"]["revoked"] == 0
