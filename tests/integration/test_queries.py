"""The analyst queries (storage/queries.py) on one small incident, archived on both backends.

alice has two sessions on 2029-11-08 (a day no other test writes, since the ClickHouse server is
shared): her laptop's cookie is replayed from a hosting provider and revoked, her phone only gets
a step-up. Around it: token guessing, a brute force in another hour, another tenant's brute force.
tests/notebooks seeds the same incident (`archive_incident`) to run the notebooks against.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from integration.conftest import seeded_archives

from producers.contract import (
    Action,
    Event,
    Finding,
    Revocation,
    Scope,
    Severity,
    decode_event,
)
from storage import queries
from storage.clickhouse.rows import event_row, finding_row, revocation_row

pytestmark = pytest.mark.integration  # the ClickHouse 18.16 server

BASE = datetime(2029, 11, 8, 8, 0, tzinfo=UTC)
ACME, GLOBEX = "acme", "globex"

HOME = {"country": "US", "asn": "AS7922", "network_kind": "isp", "client": "Chrome on Windows"}
PHONE = {"country": "US", "asn": "AS21928", "network_kind": "mobile",
         "client": "Mobile Safari on iOS"}
HOSTING = {"country": "DE", "asn": "AS14061", "network_kind": "hosting", "client": "curl on Other"}
SCANNER = {"country": "NL", "asn": "AS49870", "network_kind": "hosting", "client": ""}
TOR = {"country": "DE", "asn": "AS208294", "network_kind": "hosting", "client": ""}
NOWHERE = {"country": "", "asn": "", "network_kind": "", "client": ""}

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/130.0.0.0 Safari/537.36"
SAFARI = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148 Safari/604.1"
CURL = "curl/8.5.0"


class Incident:
    """The incident's contract objects, times relative to `base` (default BASE)."""

    def __init__(self, base: datetime = BASE) -> None:
        self.base = base
        self.rows: dict[str, list[dict]] = {"events": [], "findings": [], "revocations": []}
        ev = self.event
        # alice's laptop: logs in, works, then her cookie is replayed from a hosting provider.
        self.login = ev("e01", 0, "session.authenticated", "s-home", "alice", "73.162.10.20",
                        CHROME, HOME)
        self.phone_login = ev("e02", 30, "session.authenticated", "s-phone", "alice",
                              "172.56.20.30", SAFARI, PHONE)
        ev("e03", 60, "session.activity", "s-home", "alice", "73.162.10.20", CHROME, HOME)
        self.phone_activity = ev("e04", 90, "session.activity", "s-phone", "alice",
                                 "172.56.20.30", SAFARI, PHONE)
        self.hijack = ev("e05", 120.25, "session.activity", "s-home", "alice", "167.99.10.10",
                         CURL, HOSTING)
        # The revoked cookie, tried again.
        ev("e06", 125, "token.rejected", "s-home", None, "167.99.10.10", CURL, HOSTING)
        # An older session of alice's, outside the day.
        ev("e00", -2 * 86_400, "session.authenticated", "s-old", "alice", "73.162.10.20",
           CHROME, HOME)
        # Token guessing: 4 from 167.99.10.10 (with e06), 2 each from two others (a tie).
        for i in range(3):
            ev(f"g1{i}", 200 + i, "token.rejected", f"s-guess-{i}", None, "167.99.10.10", CURL,
               HOSTING)
        for i in range(2):
            ev(f"g2{i}", 300 + i, "token.rejected", f"s-scan-{i}", None, "45.155.205.10", CURL,
               SCANNER)
            ev(f"g3{i}", 400 + i, "token.rejected", "s-scan-0", None, "2001:db8::66", CURL,
               SCANNER)
        # Failed logins: alice mistypes once, a stuffing run at 9:00, another tenant's bigger one.
        ev("a00", 10, "auth.failed", None, "alice", "73.162.10.20", CHROME, HOME)
        for i in range(3):
            ev(f"a1{i}", 500 + i, "auth.failed", None, "alice", "91.240.118.7", CURL, SCANNER)
        stuffing = [ev(f"a2{i}", 3_600 + i, "auth.failed", None, user, "185.220.101.1", CURL, TOR)
                    for i, user in enumerate(["bob", "carol", "dave", "erin", "frank"])]
        other = [ev(f"a3{i}", 3_650 + i, "auth.failed", None, f"user{i}", "203.0.113.9", CURL,
                    NOWHERE, tenant=GLOBEX) for i in range(6)]

        self.ip_change = self.finding(self.hijack, "session.ip_change", Severity.HIGH,
                                      {"from": "73.162.10.20", "to": "167.99.10.10",
                                       "km": 8_900})
        self.ua_change = self.finding(self.hijack, "session.ua_change", Severity.MEDIUM,
                                      {"from": "Chrome", "to": "curl"})
        self.concurrent = self.finding(self.phone_login, "user.concurrent_sessions",
                                       Severity.MEDIUM, {"sessions": 2})
        self.finding(self.phone_activity, "session.new_device", Severity.LOW,
                     {"device": "iPhone"})  # alert only: no revocation
        brute = self.finding(stuffing[-1], "auth.brute_force", Severity.HIGH, {"failures": 5})
        other_brute = self.finding(other[-1], "auth.brute_force", Severity.HIGH, {"failures": 6})

        self.step_up = self.revocation(self.phone_login, Scope.SESSION, Action.STEP_UP,
                                       self.concurrent)
        self.revoke = self.revocation(self.hijack, Scope.SESSION, Action.REVOKE,
                                      self.ip_change, self.ua_change)
        self.block = self.revocation(stuffing[-1], Scope.SOURCE, Action.BLOCK, brute)
        self.other_block = self.revocation(other[-1], Scope.SOURCE, Action.BLOCK, other_brute)

    def at(self, seconds: float) -> datetime:
        return self.base + timedelta(seconds=seconds)

    def event(self, id: str, at: float, type: str, session: str | None, user: str | None,
              ip: str, user_agent: str, enrichment: dict[str, str], tenant: str = ACME) -> Event:
        raw = {"schema": "sessionwatch.event/1", "id": f"{tenant}-{id}", "type": type,
               "time": self.at(at).isoformat(), "tenant": tenant, "ip": ip,
               "user_agent": user_agent, "attrs": {"n": len(self.rows["events"])}}
        raw.update((k, v) for k, v in (("session", session), ("user", user)) if v is not None)
        event = decode_event(json.dumps(raw))
        self.rows["events"].append(event_row(event, enrichment))
        return event

    def finding(self, event: Event, detector: str, severity: Severity,
                evidence: dict) -> Finding:
        finding = Finding(id=f"f-{detector}-{event.id}", tenant=event.tenant,
                          session=event.session, user=event.user, ip=event.ip,
                          detector=detector, severity=severity, summary=f"{detector} fired",
                          evidence=evidence, event_time=event.time, events=[event.id])
        self.rows["findings"].append(finding_row(finding))
        return finding

    def revocation(self, event: Event, scope: Scope, action: Action,
                   *findings: Finding) -> Revocation:
        revocation = Revocation(
            id=f"r-{action.value}-{event.id}", tenant=event.tenant, scope=scope,
            session=event.session if scope is Scope.SESSION else None,
            user=event.user if scope is not Scope.SOURCE else None,
            source=event.ip if scope is Scope.SOURCE else None, action=action,
            not_before=None,
            expires=event.time + timedelta(hours=1) if scope is Scope.SOURCE else None,
            reasons=[f.reason() for f in findings], event_time=event.time,
            # Milliseconds on purpose: 18.16 keeps seconds, the queries must agree anyway.
            decided_at=event.time + timedelta(seconds=1.5), events=[event.id])
        self.rows["revocations"].append(revocation_row(revocation))
        return revocation


def archive_incident(backend, base: datetime = BASE) -> Incident:
    """Migrate `backend` and archive the incident into it, some rows twice (redeliveries)."""
    incident = Incident(base)
    backend.migrate()
    for table, rows in incident.rows.items():
        backend.insert(table, rows)
        backend.insert(table, rows[:3])
    return incident


INCIDENT = Incident()
DAY = (BASE, BASE + timedelta(days=1))


# One incident per module, on both backends (a chDB directory of its own: only this incident).
server_url, chdb_path, server, chdb, backend = seeded_archives(archive_incident, "queries")


def ts(seconds: float) -> pd.Timestamp:
    return pd.Timestamp(INCIDENT.at(seconds))


# -- session_timeline ------------------------------------------------------------------------------


def test_session_timeline_puts_findings_and_revocation_after_their_event(backend) -> None:
    timeline = queries.session_timeline(backend, ACME, "s-home")
    assert list(timeline["kind"]) == ["event", "event", "event", "finding", "finding",
                                      "revocation", "event"]
    assert list(timeline["what"]) == [
        "session.authenticated", "session.activity", "session.activity", "session.ip_change",
        "session.ua_change", "revoke", "token.rejected"]
    assert list(timeline["id"]) == ["acme-e01", "acme-e03", "acme-e05",
                                    "f-session.ip_change-acme-e05", "f-session.ua_change-acme-e05",
                                    "r-revoke-acme-e05", "acme-e06"]
    assert list(timeline["time"]) == [ts(0), ts(60)] + [ts(120.25)] * 4 + [ts(125)]
    assert str(timeline["time"].dtype) == "datetime64[ns, UTC]"
    assert timeline["time_ms"].iloc[2] == int(BASE.timestamp()) * 1000 + 120_250

    events = timeline[timeline["kind"] == "event"].set_index("id")
    assert dict(events.loc["acme-e01", ["ip", *HOME]]) == {"ip": "73.162.10.20", **HOME}
    assert dict(events.loc["acme-e05", ["ip", *HOSTING]]) == {"ip": "167.99.10.10", **HOSTING}
    assert events.loc["acme-e05", "user_agent"] == CURL
    assert list(events["user"]) == ["alice", "alice", "alice", ""]

    finding = timeline.iloc[3]
    assert (finding["severity"], finding["summary"], finding["ip"]) == (
        "high", "session.ip_change fired", "167.99.10.10")
    assert finding["evidence"] == {"from": "73.162.10.20", "to": "167.99.10.10", "km": 8_900}
    assert pd.isna(finding["country"])  # enrichment is the events' only
    revocation = timeline.iloc[5]
    assert (revocation["severity"], revocation["user"]) == ("high", "alice")
    assert revocation["summary"] == ("session.ip_change (high): session.ip_change fired; "
                                     "session.ua_change (medium): session.ua_change fired")


def test_session_timeline_of_an_unknown_session_is_empty(backend) -> None:
    timeline = queries.session_timeline(backend, ACME, "s-nobody")
    assert timeline.empty and {"kind", "time", "what", "id"} <= set(timeline.columns)


# -- user_sessions ---------------------------------------------------------------------------------


def test_user_sessions_aggregates_each_session_and_flags_the_revoked_one(backend) -> None:
    sessions = queries.user_sessions(backend, ACME, "alice", *DAY)
    assert list(sessions.columns) == ["session", "first", "last", "events", "addresses",
                                      "countries", "networks", "clients", "revoked"]
    home, phone = (row for _, row in sessions.iterrows())
    assert (home["session"], phone["session"]) == ("s-home", "s-phone")
    # The rejected cookie (e06) names no user; redelivered rows count once.
    assert (home["first"], home["last"], home["events"], home["addresses"]) == (
        ts(0), ts(120.25), 3, 2)
    assert home["countries"] == ["DE", "US"]
    assert home["networks"] == ["AS14061", "AS7922"]
    assert home["clients"] == ["Chrome on Windows", "curl on Other"]
    assert (phone["first"], phone["last"], phone["events"], phone["addresses"]) == (
        ts(30), ts(90), 2, 1)
    assert (phone["countries"], phone["networks"], phone["clients"]) == (
        ["US"], ["AS21928"], ["Mobile Safari on iOS"])
    assert list(sessions["revoked"]) == [True, False]  # a step-up is not a revocation
    assert str(sessions["revoked"].dtype) == "bool"


def test_user_sessions_honours_the_range(backend) -> None:
    earlier = queries.user_sessions(backend, ACME, "alice", BASE - timedelta(days=3), BASE)
    assert list(earlier["session"]) == ["s-old"] and list(earlier["revoked"]) == [False]
    assert queries.user_sessions(backend, GLOBEX, "alice", *DAY).empty
    late = queries.user_sessions(backend, ACME, "alice", BASE + timedelta(seconds=60), DAY[1])
    assert list(late["session"]) == ["s-home", "s-phone"]
    assert list(late["events"]) == [2, 1]


# -- revocations -----------------------------------------------------------------------------------


def test_revocations_carry_reasons_and_evidence(backend) -> None:
    revs = queries.revocations(backend, *DAY)
    assert list(revs["id"]) == ["r-step_up-acme-e02", "r-revoke-acme-e05", "r-block-acme-a24",
                                "r-block-globex-a35"]
    assert list(revs["time"]) == [ts(30), ts(120.25), ts(3_604), ts(3_655)]
    revoke = revs.set_index("id").loc["r-revoke-acme-e05"]
    assert (revoke["tenant"], revoke["scope"], revoke["action"], revoke["session"],
            revoke["user"], revoke["source"], revoke["severity"]) == (
        ACME, "session", "revoke", "s-home", "alice", "", "high")
    assert revoke["detectors"] == ["session.ip_change", "session.ua_change"]
    assert revoke["reasons"] == [
        {"detector": "session.ip_change", "severity": "high",
         "summary": "session.ip_change fired"},
        {"detector": "session.ua_change", "severity": "medium",
         "summary": "session.ua_change fired"}]
    assert revoke["evidence"] == {
        "session.ip_change": {"from": "73.162.10.20", "to": "167.99.10.10", "km": 8_900},
        "session.ua_change": {"from": "Chrome", "to": "curl"}}
    assert revoke["events"] == ["acme-e05"]
    assert revoke["decided_at"] == ts(121)  # 121.75 s, to the second
    block = revs.set_index("id").loc["r-block-acme-a24"]
    assert (block["scope"], block["source"], block["session"], block["user"]) == (
        "source", "185.220.101.1", "", "")
    assert block["evidence"] == {"auth.brute_force": {"failures": 5}}
    # The new-device finding caused nothing; the step-up's evidence is its own finding only.
    step_up = revs.set_index("id").loc["r-step_up-acme-e02"]
    assert step_up["evidence"] == {"user.concurrent_sessions": {"sessions": 2}}


def test_revocations_range_is_exclusive_at_until_and_filters_the_tenant(backend) -> None:
    hijack = INCIDENT.hijack.time
    assert list(queries.revocations(backend, BASE, hijack)["id"]) == ["r-step_up-acme-e02"]
    assert list(queries.revocations(backend, BASE, hijack + timedelta(milliseconds=1))["id"]) == [
        "r-step_up-acme-e02", "r-revoke-acme-e05"]
    assert list(queries.revocations(backend, hijack, DAY[1], tenant=GLOBEX)["id"]) == [
        "r-block-globex-a35"]
    nothing = queries.revocations(backend, BASE - timedelta(days=1), BASE)
    assert nothing.empty and {"time", "reasons", "evidence"} <= set(nothing.columns)


# -- detector_stats --------------------------------------------------------------------------------


def test_detector_stats_per_hour(backend) -> None:
    stats = queries.detector_stats(backend, *DAY)
    nine = pd.Timestamp(BASE + timedelta(hours=1))
    eight = pd.Timestamp(BASE)
    assert list(stats.columns) == ["hour", "detector", "low", "medium", "high", "critical",
                                   "findings", "sessions", "revocations"]
    rows = {(r.hour, r.detector): (r.low, r.medium, r.high, r.critical, r.findings, r.sessions,
                                   r.revocations) for r in stats.itertuples()}
    assert rows == {
        (eight, "session.ip_change"): (0, 0, 1, 0, 1, 1, 1),
        (eight, "session.new_device"): (1, 0, 0, 0, 1, 1, 0),
        (eight, "session.ua_change"): (0, 1, 0, 0, 1, 1, 1),
        (eight, "user.concurrent_sessions"): (0, 1, 0, 0, 1, 1, 1),
        # Sessionless findings flag no session; both tenants' blocks count.
        (nine, "auth.brute_force"): (0, 0, 2, 0, 2, 0, 2),
    }
    assert list(stats["hour"]) == [eight] * 4 + [nine]
    assert str(stats["hour"].dtype) == "datetime64[ns, UTC]"
    assert all(str(stats[c].dtype) == "int64" for c in stats.columns[2:])


def test_detector_stats_per_day_and_tenant(backend) -> None:
    stats = queries.detector_stats(backend, *DAY, bucket="day", tenant=GLOBEX)
    assert list(stats.columns)[:2] == ["day", "detector"]
    assert stats.to_dict("records") == [
        {"day": pd.Timestamp(BASE.replace(hour=0)), "detector": "auth.brute_force", "low": 0,
         "medium": 0, "high": 1, "critical": 0, "findings": 1, "sessions": 0, "revocations": 1}]
    # One millisecond: the hijack's findings and its revocation.
    after = queries.detector_stats(backend, INCIDENT.hijack.time,
                                   INCIDENT.hijack.time + timedelta(milliseconds=1), tenant=ACME)
    assert after[["detector", "findings", "revocations"]].to_dict("records") == [
        {"detector": "session.ip_change", "findings": 1, "revocations": 1},
        {"detector": "session.ua_change", "findings": 1, "revocations": 1}]
    with pytest.raises(ValueError, match="bucket"):
        queries.detector_stats(backend, *DAY, bucket="week")


# -- top sources -----------------------------------------------------------------------------------


def test_top_rejected_token_sources(backend) -> None:
    top = queries.top_rejected_token_sources(backend, *DAY)
    assert list(top.columns) == ["ip", "network", "network_kind", "country", "events", "tokens",
                                 "users", "first", "last"]
    # The tie (2 each) in the order of the address's text, whatever the column's type.
    assert list(top["ip"]) == ["167.99.10.10", "2001:db8::66", "45.155.205.10"]
    assert list(top["events"]) == [4, 2, 2]
    assert list(top["tokens"]) == [4, 1, 2]
    assert list(top["users"]) == [0, 0, 0]
    first = top.iloc[0]
    assert (first["network"], first["network_kind"], first["country"]) == (
        "AS14061", "hosting", "DE")
    assert (first["first"], first["last"]) == (ts(125), ts(202))
    assert list(queries.top_rejected_token_sources(backend, *DAY, limit=2)["ip"]) == [
        "167.99.10.10", "2001:db8::66"]
    assert queries.top_rejected_token_sources(backend, *DAY, tenant=GLOBEX).empty


def test_top_failed_login_sources(backend) -> None:
    top = queries.top_failed_login_sources(backend, *DAY)
    assert list(zip(top["ip"], top["events"], top["users"], top["tokens"], strict=True)) == [
        ("203.0.113.9", 6, 6, 0), ("185.220.101.1", 5, 5, 0), ("91.240.118.7", 3, 1, 0),
        ("73.162.10.20", 1, 1, 0)]
    assert list(queries.top_failed_login_sources(backend, *DAY, tenant=ACME, limit=2)["ip"]) == [
        "185.220.101.1", "91.240.118.7"]
    assert list(queries.top_failed_login_sources(backend, *DAY, tenant=GLOBEX)["ip"]) == [
        "203.0.113.9"]
    tor = top.set_index("ip").loc["185.220.101.1"]
    assert (tor["network"], tor["country"], tor["first"], tor["last"]) == (
        "AS208294", "DE", ts(3_600), ts(3_604))
    nine = queries.top_failed_login_sources(backend, BASE + timedelta(hours=1), DAY[1])
    assert list(nine["ip"]) == ["203.0.113.9", "185.220.101.1"]


# -- both backends, and the callers' mistakes --------------------------------------------------------


CALLS = {
    "session_timeline": lambda b: queries.session_timeline(b, ACME, "s-home"),
    "empty_timeline": lambda b: queries.session_timeline(b, ACME, "s-nobody"),
    "user_sessions": lambda b: queries.user_sessions(b, ACME, "alice", *DAY),
    "revocations": lambda b: queries.revocations(b, *DAY),
    "detector_stats": lambda b: queries.detector_stats(b, *DAY),
    "detector_stats_day": lambda b: queries.detector_stats(b, *DAY, bucket="day", tenant=ACME),
    "rejected_tokens": lambda b: queries.top_rejected_token_sources(b, *DAY, limit=2),
    "failed_logins": lambda b: queries.top_failed_login_sources(b, *DAY),
}


def test_the_same_call_gives_the_same_dataframe_on_both_backends(server, chdb) -> None:
    for label, call in CALLS.items():
        pd.testing.assert_frame_equal(call(server), call(chdb), check_exact=True, obj=label)


@pytest.mark.parametrize(("label", "call", "empty"), [
    ("user_sessions", lambda b, t: queries.user_sessions(b, ACME, "alice", t, DAY[1]), DAY[1]),
    ("revocations", lambda b, t: queries.revocations(b, DAY[0], t), DAY[0]),
    ("detector_stats", lambda b, t: queries.detector_stats(b, t, DAY[1]), DAY[1]),
    ("rejected_tokens", lambda b, t: queries.top_rejected_token_sources(b, t, DAY[1]), DAY[1]),
    ("failed_logins", lambda b, t: queries.top_failed_login_sources(b, DAY[0], t), DAY[0]),
])
def test_naive_times_and_empty_ranges_are_refused(label, call, empty) -> None:
    # Refused before any query: no archive needed.
    with pytest.raises(ValueError, match="timezone-aware"):
        call(None, datetime(2029, 11, 8, 12))
    with pytest.raises(ValueError, match="must be after"):
        call(None, empty)
