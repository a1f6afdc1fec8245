"""Analyst verdicts (storage/feedback.py) and the training labels built from them, on Debian's
ClickHouse 18.16 server and on chDB.

One small archive on 2031-03-03 (a day no other test writes; the server is shared): alice's
session is hijacked and revoked, carol's new device is a false alarm, bob is revoked as a user
(the revocation names no session, its event does), a source is blocked, 2,000 sessions nobody
flagged. Verdicts on them are seeded; tests that write verdicts use the spare findings, whose
event time is outside the day (so they never change the day's labels).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from integration.conftest import seeded_archives

from producers.contract import Action, Event, Finding, Revocation, Scope, Severity, decode_event
from producers.errors import SessionwatchError
from storage import feedback
from storage.clickhouse.frames import STRING_DTYPE
from storage.clickhouse.rows import event_row, finding_row, revocation_row
from storage.feedback import FeedbackError, InvalidVerdict, UnknownTarget

pytestmark = pytest.mark.integration

BASE = datetime(2031, 3, 3, 8, 0, tzinfo=UTC)
DAY = (BASE, BASE + timedelta(days=1))
ACME, GLOBEX = "fb-acme", "fb-globex"
V = BASE + timedelta(days=2)          # when the seeded verdicts were given
W = BASE + timedelta(days=5)          # when the tests' own verdicts are given
UNFLAGGED = 2_000
SPARES = 6


class Archive:
    """The day's events, findings and revocations as rows."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict]] = {"events": [], "findings": [], "revocations": []}
        ev, find, revoke = self.event, self.finding, self.revocation
        # alice: hijacked from a hosting provider, revoked (two findings, one revocation).
        ev("h1", 0, "session.authenticated", "s-hijack", "alice")
        hijack = ev("h2", 60, "session.activity", "s-hijack", "alice", ip="167.99.10.10")
        revoke(hijack, Scope.SESSION, Action.REVOKE,
               find(hijack, "session.ip_change"), find(hijack, "session.ua_change"))
        # carol: a new device, only a finding (an alert).
        find(ev("n1", 100, "session.authenticated", "s-newdev", "carol"), "session.new_device")
        # bob: two sessions; the second trips a user-scope revocation (no session of its own).
        ev("b1", 200, "session.authenticated", "s-bob-1", "bob")
        travel = ev("b2", 260, "session.authenticated", "s-bob-2", "bob", ip="203.0.113.7")
        revoke(travel, Scope.USER, Action.REVOKE)
        # A stuffing run from one address: blocked; its events name no session.
        failures = [ev(f"f{i}", 300 + i, "auth.failed", None, "dave", ip="185.220.101.1")
                    for i in range(3)]
        revoke(failures[-1], Scope.SOURCE, Action.BLOCK)
        # The day before: erin's flagged session, and the spare findings the tests label.
        find(ev("o1", -86_400, "session.activity", "s-old", "erin"), "session.ip_change")
        for i in range(1, SPARES + 1):
            find(ev(f"spare{i}", -5 * 3_600 + i, "session.activity", f"s-spare-{i}", "frank"),
                 "session.ip_change")
        # Nobody flagged these; s-late is active only the day after.
        for i in range(UNFLAGGED):
            for k in range(2):
                ev(f"u{i}-{k}", 1_000 + i + k, "session.activity", f"u-{i:04d}", f"user{i % 50}")
        ev("shared", 500, "session.activity", "s-shared", "gus")
        ev("late", 86_400 + 10, "session.activity", "s-late", "hal")
        # Another tenant flagged its own s-shared: acme's is still unflagged.
        find(ev("g1", 600, "session.activity", "s-shared", "gina", tenant=GLOBEX),
             "session.ip_change")

    def event(self, id: str, at: float, type: str, session: str | None, user: str | None,
              ip: str = "73.162.10.20", tenant: str = ACME) -> Event:
        raw = {"schema": "sessionwatch.event/1", "id": f"{tenant}-{id}", "type": type,
               "time": (BASE + timedelta(seconds=at)).isoformat(), "tenant": tenant, "ip": ip,
               "user_agent": "curl/8.5.0"}
        raw.update((k, v) for k, v in (("session", session), ("user", user)) if v is not None)
        event = decode_event(json.dumps(raw))
        self.rows["events"].append(event_row(event))
        return event

    def finding(self, event: Event, detector: str) -> Finding:
        found = Finding(id=f"f-{detector}-{event.id}", tenant=event.tenant, session=event.session,
                        user=event.user, ip=event.ip, detector=detector, severity=Severity.HIGH,
                        summary=f"{detector} fired", evidence={"n": 1}, event_time=event.time,
                        events=[event.id])
        self.rows["findings"].append(finding_row(found))
        return found

    def revocation(self, event: Event, scope: Scope, action: Action,
                   *findings: Finding) -> Revocation:
        revocation = Revocation(
            id=f"r-{scope.value}-{event.id}", tenant=event.tenant, scope=scope,
            session=event.session if scope is Scope.SESSION else None,
            user=event.user if scope is not Scope.SOURCE else None,
            source=event.ip if scope is Scope.SOURCE else None, action=action, not_before=None,
            expires=None, reasons=[f.reason() for f in findings], event_time=event.time,
            decided_at=event.time + timedelta(seconds=1), events=[event.id])
        self.rows["revocations"].append(revocation_row(revocation))
        return revocation


REVOKE = f"r-session-{ACME}-h2"
UA_CHANGE = f"f-session.ua_change-{ACME}-h2"
NEW_DEVICE = f"f-session.new_device-{ACME}-n1"
USER_REVOKE = f"r-user-{ACME}-b2"
BLOCK = f"r-source-{ACME}-f2"
OLD = f"f-session.ip_change-{ACME}-o1"
GLOBEX_FINDING = f"f-session.ip_change-{GLOBEX}-g1"
# (target, verdict, analyst, seconds after V): latest per target decides.
SEEDED = [
    (REVOKE, "dismissed", "ann", 0), (REVOKE, "confirmed", "ben", 60),
    (UA_CHANGE, "dismissed", "ann", 120),
    (NEW_DEVICE, "confirmed", "ann", 0), (NEW_DEVICE, "dismissed", "ben", 30),
    (USER_REVOKE, "confirmed", "ann", 10),
    (BLOCK, "dismissed", "ann", 20),
    (OLD, "confirmed", "ann", 40),
    (GLOBEX_FINDING, "dismissed", "gwen", 50),
]


def spare(i: int) -> str:
    return f"f-session.ip_change-{ACME}-spare{i}"


def seed(backend) -> None:
    backend.migrate()
    for table, rows in Archive().rows.items():
        backend.insert(table, rows)
        backend.insert(table, rows[:5])  # redelivered
    for _ in range(2):  # every verdict written twice: one row each
        for target, verdict, analyst, after in SEEDED:
            feedback.record_verdict(backend, target, verdict, analyst, note=f"by {analyst}",
                                    at=V + timedelta(seconds=after))


server_url, chdb_path, server, chdb, backend = seeded_archives(seed, "feedback")


def unflagged() -> set[tuple[str, str]]:
    return {(ACME, f"u-{i:04d}") for i in range(UNFLAGGED)} | {(ACME, "s-shared"),
                                                               (ACME, "s-bob-1")}


def sessions(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["tenant"], frame["session"], strict=True))


# -- record_verdict / verdicts --------------------------------------------------------------------


def test_a_verdict_is_recorded_with_its_targets_subjects_and_read_back(backend) -> None:
    at = W + timedelta(seconds=1, microseconds=123_456)
    recorded = feedback.record_verdict(backend, f"  {spare(1)} ", "confirmed", "  ann  ",
                                       note="cookie replayed from a hosting provider", at=at)
    assert (recorded.target, recorded.target_kind, recorded.tenant, recorded.session,
            recorded.user, recorded.verdict, recorded.analyst) == (
        spare(1), "finding", ACME, "s-spare-1", "frank", "confirmed", "ann")
    assert recorded.at == at.replace(microsecond=123_000)  # kept to the millisecond
    assert recorded.target_time == BASE - timedelta(seconds=5 * 3_600 - 1)
    assert recorded.id == feedback.verdict_id(spare(1), "confirmed", "ann", at)
    assert len(recorded.id) == 64

    read = feedback.verdicts(backend, target=spare(1))
    assert list(read.columns) == ["id", "at", "target", "target_kind", "verdict", "tenant",
                                  "session", "user", "analyst", "note", "target_time"]
    assert read.to_dict("records") == [{
        "id": recorded.id, "at": pd.Timestamp(recorded.at), "target": spare(1),
        "target_kind": "finding", "verdict": "confirmed", "tenant": ACME, "session": "s-spare-1",
        "user": "frank", "analyst": "ann", "note": "cookie replayed from a hosting provider",
        "target_time": pd.Timestamp(recorded.target_time)}]
    assert str(read["at"].dtype) == "datetime64[ns, UTC]"


def test_the_same_verdict_written_twice_is_one_row_and_later_ones_come_first(backend) -> None:
    first = feedback.record_verdict(backend, spare(2), "dismissed", "ann", at=W)
    again = feedback.record_verdict(backend, spare(2), "dismissed", "ann", at=W)
    assert again == first
    assert list(feedback.verdicts(backend, target=spare(2))["id"]) == [first.id]
    later = feedback.record_verdict(backend, spare(2), "confirmed", "ben",
                                    at=W + timedelta(minutes=5))
    read = feedback.verdicts(backend, target=spare(2))
    assert list(read["id"]) == [later.id, first.id]
    assert list(read["verdict"]) == ["confirmed", "dismissed"]


def test_verdicts_by_when_they_were_given_and_by_tenant(backend) -> None:
    given = feedback.verdicts(backend, since=V, until=V + timedelta(hours=1))
    assert len(given) == len(SEEDED)  # each seeded twice, one row each
    assert list(given["at"]) == sorted(given["at"], reverse=True)
    assert given["target"].iloc[0] == UA_CHANGE  # the latest
    assert list(feedback.verdicts(backend, tenant=GLOBEX)["target"]) == [GLOBEX_FINDING]
    assert list(feedback.verdicts(backend, since=V + timedelta(seconds=60),
                                  until=V + timedelta(seconds=61))["target"]) == [REVOKE]
    assert set(feedback.verdicts(backend, until=V + timedelta(seconds=1))["target"]) == {
        REVOKE, NEW_DEVICE}
    assert feedback.verdicts(backend, target="nothing-like-it").empty


def test_a_user_scope_revocation_takes_the_session_of_its_event(backend) -> None:
    user = feedback.verdicts(backend, target=USER_REVOKE).iloc[0]
    assert (user["target_kind"], user["session"], user["user"]) == ("revocation", "s-bob-2", "bob")
    block = feedback.verdicts(backend, target=BLOCK).iloc[0]
    assert (block["session"], block["user"]) == ("", "dave")  # its events named no session
    revoke = feedback.verdicts(backend, target=REVOKE).iloc[0]
    assert (revoke["target_kind"], revoke["session"], revoke["user"]) == (
        "revocation", "s-hijack", "alice")


def test_an_unknown_target_is_refused_and_says_how_to_list_ids(backend) -> None:
    with pytest.raises(UnknownTarget, match="not found in the archive") as caught:
        feedback.record_verdict(backend, "r-nope", "confirmed", "ann", at=W)
    assert "storage.queries.revocations" in str(caught.value)
    assert isinstance(caught.value, FeedbackError) and isinstance(caught.value, SessionwatchError)
    # Asked for as a revocation, a finding's id is unknown.
    with pytest.raises(UnknownTarget, match=r"revocation 'f-session\.ip_change"):
        feedback.record_verdict(backend, spare(3), "confirmed", "ann", at=W, kind="revocation")
    assert feedback.verdicts(backend, target="r-nope").empty
    assert feedback.verdicts(backend, target=spare(3)).empty


def test_bad_verdicts_analysts_and_notes_are_refused_and_write_nothing(backend) -> None:
    for verdict in ("maybe", "Confirmed", ""):
        with pytest.raises(InvalidVerdict, match="confirmed, dismissed"):
            feedback.record_verdict(backend, spare(4), verdict, "ann", at=W)
    with pytest.raises(FeedbackError, match="analyst"):
        feedback.record_verdict(backend, spare(4), "confirmed", "   ", at=W)
    with pytest.raises(FeedbackError, match="2000"):
        feedback.record_verdict(backend, spare(4), "confirmed", "ann", note="x" * 2_001, at=W)
    with pytest.raises(ValueError, match="timezone-aware"):
        feedback.record_verdict(backend, spare(4), "confirmed", "ann", at=datetime(2031, 3, 9))
    assert feedback.verdicts(backend, target=spare(4)).empty
    longest = feedback.record_verdict(backend, spare(4), "confirmed", "ann", note="y" * 2_000, at=W)
    assert feedback.verdicts(backend, target=spare(4))["note"].iloc[0] == longest.note


def test_the_note_is_never_logged(backend, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    feedback.record_verdict(backend, spare(5), "dismissed", "ann", note="PRIVATE-NOTE-31337",
                            at=W)
    assert spare(5) in caplog.text  # what was recorded is logged...
    assert "PRIVATE-NOTE-31337" not in caplog.text  # ...its note is not


# -- session_labels --------------------------------------------------------------------------------


def test_session_labels_take_each_targets_latest_verdict(backend) -> None:
    labels = feedback.session_labels(backend, *DAY)
    assert list(labels.columns) == ["tenant", "session", "user", "label", "source"]
    assert labels.to_dict("records") == [
        # Revocation confirmed last; its ua_change finding dismissed: still a hijack.
        {"tenant": ACME, "session": "s-bob-2", "user": "bob", "label": "confirmed",
         "source": "feedback"},
        {"tenant": ACME, "session": "s-hijack", "user": "alice", "label": "confirmed",
         "source": "feedback"},
        {"tenant": ACME, "session": "s-newdev", "user": "carol", "label": "dismissed",
         "source": "feedback"},
        {"tenant": GLOBEX, "session": "s-shared", "user": "gina", "label": "dismissed",
         "source": "feedback"},
    ]  # the block names no session; erin's and the spares' targets are the day before
    assert all(labels[c].dtype == STRING_DTYPE for c in labels.columns)


def test_session_labels_by_target_time_and_tenant(backend) -> None:
    assert list(feedback.session_labels(backend, *DAY, tenant=GLOBEX)["session"]) == ["s-shared"]
    before = feedback.session_labels(backend, BASE - timedelta(days=1), BASE, tenant=ACME)
    assert ("s-old", "confirmed") in set(zip(before["session"], before["label"], strict=True))
    nothing = feedback.session_labels(backend, BASE + timedelta(days=3), BASE + timedelta(days=4))
    assert nothing.empty and list(nothing.columns) == ["tenant", "session", "user", "label",
                                                        "source"]


# -- audit_sample ----------------------------------------------------------------------------------


def test_the_whole_audit_population_is_the_sessions_nobody_flagged(backend) -> None:
    everything = feedback.audit_sample(backend, *DAY, fraction=1.0, seed=1)
    assert list(everything.columns) == ["tenant", "session", "user"]
    # Not s-hijack, s-newdev (findings), s-bob-2 (its event caused a user revocation), the
    # spares and erin's (findings), globex's s-shared (flagged there), s-late (the day after).
    assert sessions(everything) == unflagged()
    assert len(everything) == len(unflagged())  # one row each, redelivered events or not
    users = dict(zip(everything["session"], everything["user"], strict=True))
    assert (users["u-0007"], users["s-shared"], users["s-bob-1"]) == ("user7", "gus", "bob")
    assert list(everything["session"]) == sorted(everything["session"])
    assert feedback.audit_sample(backend, *DAY, fraction=1.0, seed=1, tenant=GLOBEX).empty


def test_the_audit_sample_is_deterministic_and_about_the_fraction(backend) -> None:
    tenth = feedback.audit_sample(backend, *DAY, fraction=0.1, seed=42, tenant=ACME)
    pd.testing.assert_frame_equal(
        tenth, feedback.audit_sample(backend, *DAY, fraction=0.1, seed=42, tenant=ACME))
    assert 0.07 * len(unflagged()) <= len(tenth) <= 0.13 * len(unflagged())
    assert sessions(tenth) <= unflagged()
    other_seed = feedback.audit_sample(backend, *DAY, fraction=0.1, seed=43, tenant=ACME)
    assert sessions(other_seed) != sessions(tenth)
    # A smaller fraction of the same seed is inside the larger one.
    twentieth = feedback.audit_sample(backend, *DAY, fraction=0.05, seed=42, tenant=ACME)
    assert sessions(twentieth) < sessions(tenth)
    later = feedback.audit_sample(backend, BASE + timedelta(days=1), BASE + timedelta(days=2),
                                  fraction=1.0, seed=42)
    assert sessions(later) == {(ACME, "s-late")}


def test_audit_sample_refuses_bad_arguments() -> None:
    for fraction in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="fraction"):
            feedback.audit_sample(None, *DAY, fraction=fraction, seed=1)
    with pytest.raises(ValueError, match="seed"):
        feedback.audit_sample(None, *DAY, fraction=0.1, seed="1")
    with pytest.raises(ValueError, match="must be after"):
        feedback.audit_sample(None, DAY[1], DAY[0], fraction=0.1, seed=1)
    with pytest.raises(ValueError, match="timezone-aware"):
        feedback.session_labels(None, datetime(2031, 3, 3), DAY[1])


def test_labels_and_samples_are_the_same_dataframes_on_both_backends(server, chdb) -> None:
    for call in (lambda b: feedback.session_labels(b, *DAY),
                 lambda b: feedback.audit_sample(b, *DAY, fraction=0.1, seed=7),
                 lambda b: feedback.verdicts(b, since=V, until=V + timedelta(hours=1))):
        pd.testing.assert_frame_equal(call(server), call(chdb), check_exact=True)
