"""The user stage through Kafka: decisions by event time, whatever order the events arrive in.

The session stage forwards each session's events from its own partition, so a user's events
reach the user stage in an order that depends on the partitions' pace. Here the late one is sent
last on purpose. Its own broker and worker: on the shared worker other tests' events (hours of
event time) would make these "late" - beyond the allowed lateness nothing is promised.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer
from integration.conftest import make_event, read_until, send

from sessionwatch.broker import EmbeddedBroker
from sessionwatch.processes import WorkerProcess

pytestmark = pytest.mark.integration
LATENESS_S = 5.0


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory):
    where = tmp_path_factory.mktemp("user-stage")
    with EmbeddedBroker(log_path=where / "tansu.log") as broker:
        # A short lateness keeps the in-order test quick: it waits for it to pass.
        worker = WorkerProcess(broker.bootstrap, where / "worker.log", app_id="user-stage",
                               partitions=2, data_dir=str(where / "state"),
                               allowed_lateness_s=str(LATENESS_S))
        try:
            worker.wait_ready()
            yield broker, Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 1})
        finally:
            worker.stop()


def _decided_by(records, detector: str) -> dict[str, str]:
    return {v["session"]: v["action"] for t, v in records if t == "sessionwatch.revocations"
            and v.get("session") and any(r["detector"] == detector for r in v["reasons"])}


def test_a_password_change_ends_a_session_whose_login_arrives_after_it(own):
    broker, producer = own
    user = f"late-login-{secrets.token_hex(4)}"
    laptop, phone = secrets.token_hex(32), secrets.token_hex(32)
    send(producer, [
        make_event("session.authenticated", session=laptop, user=user, at=0),
        make_event("credential.changed", session=laptop, user=user, at=100,
                   attrs={"credential": "password"}),
        # The phone logged in before the change; its login reaches the user stage after it.
        make_event("session.authenticated", session=phone, user=user, at=50),
    ])
    records = read_until(broker.bootstrap, ["sessionwatch.revocations"],
                         lambda r: phone in _decided_by(r, "user.credential_change"),
                         timeout_s=30)
    ended = _decided_by(records, "user.credential_change")
    assert ended.get(phone) == "revoke"
    assert laptop not in ended  # the session the change came from stays signed in


def test_a_late_logout_keeps_a_fourth_login_within_the_limit(own):
    """Four logins, the first logged out before the fourth in event time but arriving after it:
    three live sessions, within the default limit of three - no step-up. A fifth login, after
    everything, goes over the limit and is stepped up (the detector is on)."""
    broker, producer = own
    user = f"late-logout-{secrets.token_hex(4)}"
    s = [secrets.token_hex(32) for _ in range(5)]
    # Live event times (now): the stage holds them until the lateness has passed in wall time,
    # whatever pauses there are between these sends.
    now = datetime.now(UTC)
    send(producer, [make_event("session.authenticated", session=s[i], user=user, at=i, t0=now)
                    for i in range(4)])
    send(producer, [make_event("session.logout", session=s[0], user=user, at=2.5, t0=now)])
    send(producer, [make_event("session.authenticated", session=s[4], user=user, at=6, t0=now)])
    records = read_until(broker.bootstrap, ["sessionwatch.revocations"],
                         lambda r: s[4] in _decided_by(r, "user.concurrent_sessions"),
                         timeout_s=30)
    stepped = _decided_by(records, "user.concurrent_sessions")
    assert stepped.get(s[4]) == "step_up"
    assert s[3] not in stepped, "the late logout was not taken into account"
