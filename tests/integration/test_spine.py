"""The spine end to end: a real Tansu broker, a real `sessionwatch worker` process, and a producer
we did not write (confluent-kafka / librdkafka) sending contract JSON."""

from __future__ import annotations

import json
import secrets
import uuid

import pytest
from factories import (
    CHROME,
    CHROME_NEXT,
    COMCAST,
    COMCAST_OTHER,
    CURL,
    DIGITALOCEAN,
    TMOBILE,
)
from integration.conftest import caught_up, make_event, read_until, send

from producers.client import SessionwatchClient
from producers.contract import decode_revocation
from producers.hashing import TokenHasher

pytestmark = pytest.mark.integration


def sid() -> str:
    return secrets.token_hex(32)


def revocations_for(records, session):
    return [v for t, v in records if t == "sessionwatch.revocations" and v.get("session") == session]


def test_hijack_from_foreign_client_is_revoked(broker, worker, producer):
    session = sid()
    send(producer, [
        make_event("session.authenticated", session=session, ip=COMCAST, at=0),
        make_event(session=session, ip=COMCAST, at=30),
        # the cookie replayed from a hosting provider with a tool
        make_event(session=session, ip=DIGITALOCEAN, user_agent=CURL, at=60, id="hijack-1"),
    ])
    records = read_until(broker.bootstrap, ["sessionwatch.revocations"],
                         lambda r: bool(revocations_for(r, session)))
    (revocation,) = revocations_for(records, session)
    decode_revocation(json.dumps(revocation))  # the contract type accepts it
    assert revocation["schema"] == "sessionwatch.revocation/1"
    assert revocation["scope"] == "session" and revocation["action"] == "revoke"
    assert revocation["user"] == "u-" + session[:12]
    assert revocation["events"] == ["hijack-1"]
    detectors = {r["detector"] for r in revocation["reasons"]}
    # (Saratoga to New Jersey in 30 s is impossible travel as well)
    assert {"session.ua_change", "session.ip_change"} <= detectors
    assert all(r["summary"] and r["evidence"] for r in revocation["reasons"])


def test_benign_changes_are_not_revoked(broker, worker, producer):
    rotation, churn, update = sid(), sid(), sid()
    send(producer, [
        # ISP rotation: another address of the same ISP
        make_event("session.authenticated", session=rotation, ip=COMCAST, at=0),
        make_event(session=rotation, ip=COMCAST_OTHER, at=60),
        # mobile churn: home Wi-Fi -> carrier -> home, same phone
        make_event("session.authenticated", session=churn, ip=COMCAST, at=0),
        make_event(session=churn, ip=TMOBILE, at=60),
        make_event(session=churn, ip=COMCAST, at=120),
        # the browser auto-updates mid-session
        make_event("session.authenticated", session=update, ip=COMCAST, user_agent=CHROME, at=0),
        make_event(session=update, ip=COMCAST, user_agent=CHROME_NEXT, at=60),
    ])
    # The churn session's move to the carrier is a finding (proof the worker judged it) ...
    records = read_until(
        broker.bootstrap, ["sessionwatch.findings"],
        lambda r: any(v.get("session") == churn and v["severity"] == "medium" for _, v in r),
    )
    churn_findings = [v for _, v in records if v.get("session") == churn]
    assert churn_findings and churn_findings[0]["detector"] == "session.ip_change"
    # ... and once the worker has consumed everything, none of the three was revoked.
    caught_up(broker.bootstrap)
    everything = read_until(broker.bootstrap, ["sessionwatch.revocations"], lambda r: False,
                            timeout_s=3)
    for session in (rotation, churn, update):
        assert revocations_for(everything, session) == []


def test_malformed_input_is_dead_lettered_and_the_worker_keeps_going(broker, worker, producer):
    marker = uuid.uuid4().hex
    bad = [
        b"\xff\xfe not utf-8 " + marker.encode(),
        b'{"schema": "sessionwatch.event/1", "id": "' + marker.encode() + b'"',  # truncated
        json.dumps(make_event(schema="sessionwatch.event/2", id=f"{marker}-v2")).encode(),
        json.dumps(make_event(session=None, id=f"{marker}-nosession")).encode(),
        json.dumps(make_event(ip="999.1.1.1", id=f"{marker}-badip")).encode(),
    ]
    send(producer, bad, key=b"bad")
    session = sid()
    send(producer, [
        make_event("session.authenticated", session=session, at=0),
        make_event(session=session, ip=DIGITALOCEAN, user_agent=CURL, at=10),
    ])
    records = read_until(
        broker.bootstrap, ["sessionwatch.deadletter", "sessionwatch.revocations"],
        lambda r: bool(revocations_for(r, session))
        and sum(1 for t, v in r if t == "sessionwatch.deadletter" and marker in v.get("value", "")) == 5,
    )
    dead = [v for t, v in records if t == "sessionwatch.deadletter" and marker in v.get("value", "")]
    assert [d["reason"] for d in dead] == [
        "not_json", "not_json", "unsupported_major", "invalid", "invalid",
    ]
    assert all(d["schema"] == "sessionwatch.deadletter/1" for d in dead)
    assert "$.session" in dead[3]["detail"] and "$.ip" in dead[4]["detail"]
    assert all(d["topic"] == "sessionwatch.events" and d["offset"] >= 0 for d in dead)
    assert revocations_for(records, session), "the worker stopped after bad input"
    assert worker.proc.poll() is None


def test_redelivered_events_are_processed_once(broker, worker, producer):
    session = sid()
    events = [
        make_event("session.authenticated", session=session, at=0, id=f"{session}-1"),
        make_event(session=session, ip=DIGITALOCEAN, user_agent=CURL, at=10, id=f"{session}-2"),
    ]
    send(producer, events)
    send(producer, events)  # at-least-once delivery: the same ids again
    caught_up(broker.bootstrap)
    records = read_until(broker.bootstrap, ["sessionwatch.revocations"], lambda r: False,
                         timeout_s=3)
    assert len(revocations_for(records, session)) == 1


def test_mis_keyed_event_is_routed_to_its_session(broker, worker, producer):
    session = sid()
    send(producer, [make_event("session.authenticated", session=session, at=0)], key=b"x")
    send(producer, [make_event(session=session, ip=DIGITALOCEAN, user_agent=CURL, at=5)],
         key=b"y")
    records = read_until(broker.bootstrap, ["sessionwatch.revocations"],
                         lambda r: bool(revocations_for(r, session)))
    assert len(revocations_for(records, session)) == 1


def test_sdk_hashes_tokens_and_no_raw_token_reaches_any_topic(broker, worker):
    hasher = TokenHasher({"k1": secrets.token_bytes(32)})
    token, pre_login = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with SessionwatchClient(broker.bootstrap, hasher) as client:
        client.created(session_token=pre_login, ip=COMCAST, user_agent=CHROME)
        client.authenticated(session_token=token, previous_session_token=pre_login,
                             user="carol", ip=COMCAST, user_agent=CHROME)
        client.activity(session_token=token, user="carol", ip=DIGITALOCEAN, user_agent=CURL)
        assert client.flush(10)
    session = hasher.hash(token)
    records = read_until(broker.bootstrap, ["sessionwatch.revocations"],
                         lambda r: bool(revocations_for(r, session)))
    assert revocations_for(records, session)[0]["user"] == "carol"
    everything = read_until(
        broker.bootstrap,
        ["sessionwatch.events", "sessionwatch.findings", "sessionwatch.revocations",
         "sessionwatch.deadletter"],
        lambda r: False, timeout_s=4,
    )
    blob = json.dumps([v for _, v in everything])
    assert session in blob
    assert token not in blob and pre_login not in blob


def decided(records: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Revocations a worker decided: not the garbage and hand-made ones the applier tests
    publish on the same topic (tenant apply-it)."""
    return [(t, v) for t, v in records if "id" in v and v.get("tenant") != "apply-it"]


def test_replay_gives_the_same_revocation_ids(broker, worker, tmp_path):
    """A second worker (a new consumer group) replaying the topic decides exactly the same."""
    from sessionwatch.processes import WorkerProcess

    caught_up(broker.bootstrap)
    first = read_until(broker.bootstrap, ["sessionwatch.revocations"], lambda r: False,
                       timeout_s=3)
    from collections import Counter

    # Other workers on this broker (the evaluate test's) may have decided some of them already.
    before = Counter(v["id"] for _, v in decided(first))
    ids_before = sorted(before)
    assert ids_before, "earlier tests should have produced revocations"
    replayer = WorkerProcess(broker.bootstrap, tmp_path / "replay.log", app_id="replayer",
                             partitions=2, data_dir=str(tmp_path / "state"))
    try:
        replayer.wait_ready()
        caught_up(broker.bootstrap, "replayer")
    finally:
        replayer.stop()
    after = read_until(broker.bootstrap, ["sessionwatch.revocations"], lambda r: False,
                       timeout_s=3)
    ids = Counter(v["id"] for _, v in decided(after))
    what = {v["id"]: (v["scope"], v["action"], tuple(sorted(r["detector"] for r in v["reasons"])))
            for _, v in decided(after)}
    # Every decision of the session stage was made once more (by the replaying group) with an
    # identical id. The user and source stages decide identically only for input within the
    # allowed lateness (streams/event_clock.py); this topic holds every test's traffic, each
    # test starting again at the same event time, far outside it. The stages' order
    # independence is tested in process (tests/streams/test_order_independence.py) and across
    # a rebalance and a crash (tests/integration/test_failover.py).
    differing = {what[i] for i in set(ids) | set(before) if ids[i] - before[i] != 1
                 and all(d.startswith("session.") for d in what[i][2])}
    assert not differing, differing
    assert any(all(d.startswith("session.") for d in w[2]) for w in what.values())


def test_the_worker_never_crashed(worker):
    """The engine skips (and dead-letters) a message a stage fails on rather than stop; any
    such failure on the input above is still a bug.

    Runs last in this module, after every kind of input above went through the same worker.
    """
    from integration.conftest import worker_log

    log = worker_log(worker)
    assert "unhandled processing error" not in log, log[-3000:]
    assert "processing failed" not in log, log[-3000:]
    assert worker.proc.poll() is None
