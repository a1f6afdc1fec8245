"""storage/fleet.py on the incident of tests/integration/test_queries.py (ClickHouse 18.16 and
chDB), with verdicts:
alice's revoked laptop session confirmed, her phone's step-up and new-device finding dismissed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from integration.conftest import seeded_archives
from integration.test_queries import ACME, BASE, GLOBEX, archive_incident

from storage import fleet
from storage.feedback import record_verdict

pytestmark = pytest.mark.integration

DAY = (BASE, BASE + timedelta(days=1))
EIGHT, NINE = pd.Timestamp(BASE), pd.Timestamp(BASE + timedelta(hours=1))


def seed(backend) -> None:
    incident = archive_incident(backend)
    at = BASE + timedelta(hours=2)
    record_verdict(backend, incident.revoke.id, "confirmed", "ann", at=at)
    record_verdict(backend, incident.step_up.id, "confirmed", "ann", at=at)
    # Changed her mind a minute later: the latest verdict counts.
    record_verdict(backend, incident.step_up.id, "dismissed", "ann", at=at + timedelta(minutes=1))
    record_verdict(backend, "f-session.new_device-acme-e04", "dismissed", "ann", at=at)


# Both backends, Debian's ClickHouse 18.16 and chDB: the same answers from either.
server_url, chdb_path, server, chdb, backend = seeded_archives(seed, "fleet")


def test_activity_per_hour_counts_events_findings_and_revocations(backend) -> None:
    activity = fleet.activity_per_hour(backend, *DAY)
    assert list(activity.columns) == fleet.ACTIVITY_COLUMNS
    assert str(activity["hour"].dtype) == "datetime64[ns, UTC]"
    rows = {(r.hour, r.kind, r.tenant, r.what, r.action): r.count for r in activity.itertuples()}
    # Redelivered rows count once: 3 activity events at 8:00, 8 rejected tokens.
    assert rows[(EIGHT, "event", ACME, "session.activity", "")] == 3
    assert rows[(EIGHT, "event", ACME, "token.rejected", "")] == 8
    assert rows[(NINE, "event", GLOBEX, "auth.failed", "")] == 6
    assert rows[(EIGHT, "finding", ACME, "session.new_device", "")] == 1
    # The revoke two detectors caused counts once for each.
    assert rows[(EIGHT, "revocation", ACME, "session.ip_change", "revoke")] == 1
    assert rows[(EIGHT, "revocation", ACME, "session.ua_change", "revoke")] == 1
    assert rows[(NINE, "revocation", GLOBEX, "auth.brute_force", "block")] == 1
    assert activity.groupby("kind")["count"].sum().to_dict() == {
        "event": 28, "finding": 6, "revocation": 5}
    only = fleet.activity_per_hour(backend, *DAY, tenant=GLOBEX)
    assert set(only["tenant"]) == {GLOBEX} and only["count"].sum() == 6 + 1 + 1
    empty = fleet.activity_per_hour(backend, BASE - timedelta(days=5), BASE - timedelta(days=4))
    assert empty.empty and list(empty.columns) == fleet.ACTIVITY_COLUMNS


def test_revocation_reasons_count_each_reason_with_its_own_severity(backend) -> None:
    reasons = fleet.revocation_reasons(backend, *DAY)
    assert reasons.to_dict("records") == [
        {"detector": "auth.brute_force", "severity": "high", "action": "block", "revocations": 2,
         "subjects": 2},
        {"detector": "session.ip_change", "severity": "high", "action": "revoke", "revocations": 1,
         "subjects": 1},
        {"detector": "session.ua_change", "severity": "medium", "action": "revoke",
         "revocations": 1, "subjects": 1},
        {"detector": "user.concurrent_sessions", "severity": "medium", "action": "step_up",
         "revocations": 1, "subjects": 1}]
    assert list(fleet.revocation_reasons(backend, *DAY, tenant=GLOBEX)["revocations"]) == [1]
    assert fleet.revocation_reasons(backend, BASE - timedelta(days=1), BASE).empty


def test_decision_latency_is_to_the_second(backend) -> None:
    latency = fleet.decision_latency(backend, *DAY)
    assert list(latency["id"]) == ["r-step_up-acme-e02", "r-revoke-acme-e05", "r-block-acme-a24",
                                   "r-block-globex-a35"]
    # Decided 1.5 s after each event, kept to the second: 121.75 s -> 121 s for the 120.25 s event.
    assert list(latency["decided_s"]) == [1.0, 0.75, 1.0, 1.0]
    assert (latency["decided_at"] == latency["decided_at"].dt.floor("s")).all()
    assert latency.set_index("id").loc["r-revoke-acme-e05", "detectors"] == [
        "session.ip_change", "session.ua_change"]


def test_user_logins_by_place_and_client(backend) -> None:
    logins = fleet.user_logins(backend, ACME, "alice", BASE - timedelta(days=3), DAY[1])
    assert list(logins.columns) == ["country", "asn", "network_kind", "client", "logins",
                                    "sessions", "addresses", "first", "last"]
    assert logins[["asn", "client", "logins", "sessions"]].to_dict("records") == [
        {"asn": "AS7922", "client": "Chrome on Windows", "logins": 2, "sessions": 2},
        {"asn": "AS21928", "client": "Mobile Safari on iOS", "logins": 1, "sessions": 1}]
    assert logins["first"].iloc[0] == pd.Timestamp(BASE - timedelta(days=2))
    assert fleet.user_logins(backend, GLOBEX, "alice", *DAY).empty


def test_detector_verdicts_and_the_benign_rate(backend) -> None:
    verdicts = fleet.detector_verdicts(backend, *DAY).set_index("detector")
    assert list(verdicts.columns) == ["findings", "revocations", "confirmed", "dismissed",
                                      "benign_rate"]
    assert verdicts.loc["session.ip_change", ["confirmed", "dismissed"]].tolist() == [1, 0]
    assert verdicts.loc["session.ua_change", "benign_rate"] == 0.0
    # The step-up's latest verdict is "dismissed"; the new-device finding is dismissed too.
    assert verdicts.loc["user.concurrent_sessions", ["confirmed", "dismissed"]].tolist() == [0, 1]
    assert verdicts.loc["user.concurrent_sessions", "benign_rate"] == 1.0
    assert verdicts.loc["session.new_device", ["findings", "revocations", "dismissed"]].tolist() == [
        1, 0, 1]
    assert verdicts.loc["auth.brute_force", ["findings", "revocations"]].tolist() == [2, 2]
    assert pd.isna(verdicts.loc["auth.brute_force", "benign_rate"])
    assert fleet.detector_verdicts(backend, BASE - timedelta(days=5), BASE - timedelta(days=4)).empty


def test_subject_verdicts_name_what_was_decided_about(backend) -> None:
    subjects = fleet.subject_verdicts(backend, *DAY)
    assert subjects.to_dict("records") == [
        {"tenant": ACME, "scope": "session", "subject": "s-home", "verdict": "confirmed"},
        {"tenant": ACME, "scope": "session", "subject": "s-phone", "verdict": "dismissed"}]
    assert fleet.subject_verdicts(backend, *DAY, tenant=GLOBEX).empty


@pytest.mark.parametrize("call", [
    lambda t: fleet.activity_per_hour(None, t, DAY[1]),
    lambda t: fleet.revocation_reasons(None, t, DAY[1]),
    lambda t: fleet.decision_latency(None, t, DAY[1]),
    lambda t: fleet.user_logins(None, ACME, "alice", t, DAY[1]),
    lambda t: fleet.detector_verdicts(None, t, DAY[1]),
])
def test_naive_times_are_refused_before_any_query(call) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        call(datetime(2029, 11, 8, 12))
    with pytest.raises(ValueError, match="must be after"):
        call(DAY[1].astimezone(UTC))
