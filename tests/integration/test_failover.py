"""Failover, strictly: workers join, leave and crash while traffic flows; nothing is lost or doubled.

Its own embedded broker (4 partitions, so partitions really move between three workers) and its
own consumer group, so nothing here can hold up the other integration tests. Phases:

1. two workers share the partitions;
2. a third joins (partitions move to it, state recovered from the changelogs);
3. it leaves with SIGTERM (its partitions come back);
4. one of the two is killed with SIGKILL mid-stream (the group notices at the session timeout).

In every phase, hijacks of new sessions and of sessions that logged in during an earlier phase
(their state must have moved with the partition) must be revoked, each with exactly one
revocation id (at-least-once may repeat a decision, always with the same id); a password change
after a move must end the user's other sessions (user state moved too). Nothing may be
dead-lettered and no worker may log an unhandled error.
"""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from factories import CURL, DIGITALOCEAN
from integration.conftest import make_event, read_until, send

from sessionwatch.broker import EmbeddedBroker
from sessionwatch.processes import WorkerProcess

pytestmark = pytest.mark.integration
APP_ID = "sessionwatch-failover"
PARTITIONS = 4


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory):
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("failover") / "tansu.log") as b:
        yield b


class Phase:
    """Sessions logged in now (hijacked later) and sessions hijacked now."""

    def __init__(self, name: str, n: int = 20) -> None:
        self.name = name
        self.fresh = [secrets.token_hex(32) for _ in range(n)]   # login + hijack in this phase
        self.parked = [secrets.token_hex(32) for _ in range(n)]  # login now, hijack later
        self.user = f"pw-{name}-{secrets.token_hex(4)}"
        self.user_sessions = [secrets.token_hex(32) for _ in range(2)]

    def logins(self) -> list[dict]:
        out = [make_event("session.authenticated", session=s, at=0)
               for s in self.fresh + self.parked]
        out += [make_event("session.authenticated", session=s, user=self.user, at=0)
                for s in self.user_sessions]
        return out

    def hijacks_of_fresh(self) -> list[dict]:
        return [make_event(session=s, ip=DIGITALOCEAN, user_agent=CURL, at=30) for s in self.fresh]

    def hijacks_of_parked(self) -> list[dict]:
        return [make_event(session=s, ip=DIGITALOCEAN, user_agent=CURL, at=60)
                for s in self.parked]

    def password_change(self) -> list[dict]:
        """From the first session: the second must end (user state recovered after a move)."""
        return [make_event("credential.changed", session=self.user_sessions[0], user=self.user,
                           at=90, attrs={"credential": "password"})]


def describe(missing: set[str], phases: list[Phase]) -> dict[str, int]:
    """How many of each kind of session are missing (for the failure message)."""
    kinds: dict[str, int] = {}
    for p in phases:
        for kind, sessions in (("fresh", p.fresh), ("parked", p.parked),
                               ("password", p.user_sessions)):
            n = len(missing & set(sessions))
            if n:
                kinds[f"{p.name}/{kind}"] = n
    rest = len(missing) - sum(kinds.values())
    if rest:
        kinds["background"] = rest
    return kinds


def revocations_by_session(records) -> dict[str, set[str]]:
    ids: dict[str, set[str]] = {}
    for topic, v in records:
        if topic == "sessionwatch.revocations" and v.get("session"):
            ids.setdefault(v["session"], set()).add(v["id"])
    return ids


def wait_revoked(bootstrap: str, wanted: set[str], timeout_s: float = 60.0):
    records = read_until(bootstrap, ["sessionwatch.revocations"],
                         lambda r: wanted <= set(revocations_by_session(r)), timeout_s=timeout_s)
    return revocations_by_session(records)


def start(broker, tmp_path: Path, name: str) -> WorkerProcess:
    return WorkerProcess(broker.bootstrap, tmp_path / f"{name}.log", app_id=APP_ID,
                         partitions=PARTITIONS, data_dir=str(tmp_path / name))


def test_join_leave_and_crash_lose_nothing(own_broker, tmp_path):
    broker = own_broker
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 1})
    phases = [Phase(n) for n in ("two", "joined", "left", "killed")]
    expected: set[str] = set()
    a, b = start(broker, tmp_path, "a"), start(broker, tmp_path, "b")
    workers = [a, b]
    try:
        a.wait_ready()
        b.wait_ready()
        timeline = []

        def run_phase(i: int, phase: Phase) -> None:
            send(producer, phase.logins() + phase.hijacks_of_fresh())
            if i > 0:  # sessions parked in the previous phase, hijacked after the change
                send(producer, phases[i - 1].hijacks_of_parked() + phases[i - 1].password_change())
                expected.update(phases[i - 1].parked)
                expected.add(phases[i - 1].user_sessions[1])
            expected.update(phase.fresh)
            began = time.monotonic()
            revoked = wait_revoked(broker.bootstrap, expected)
            missing = expected - set(revoked)
            timeline.append((phase.name, len(expected), len(missing), time.monotonic() - began))
            assert not missing, (phase.name, describe(missing, phases), [w.tail(30) for w in workers])

        run_phase(0, phases[0])
        c = start(broker, tmp_path, "c")
        workers.append(c)
        c.wait_ready()
        run_phase(1, phases[1])
        c.stop()  # SIGTERM: commits, leaves the group
        run_phase(2, phases[2])

        # A steady stream while B is killed: nothing in flight may be lost.
        stream_stop = threading.Event()
        background = [secrets.token_hex(32) for _ in range(200)]

        def stream() -> None:
            for i, s in enumerate(background):
                if stream_stop.is_set():
                    return
                send(producer, [make_event("session.authenticated", session=s, at=0),
                                make_event(session=s, ip=DIGITALOCEAN, user_agent=CURL, at=30)])
                time.sleep(0.01 if i % 10 else 0.05)

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        time.sleep(0.5)
        b.kill()
        streamer.join(60)
        expected.update(background)
        run_phase(3, phases[3])
        send(producer, phases[3].hijacks_of_parked() + phases[3].password_change())
        expected.update(phases[3].parked)
        expected.add(phases[3].user_sessions[1])
        revoked = wait_revoked(broker.bootstrap, expected)
        assert expected <= set(revoked), len(expected - set(revoked))
        # at-least-once may re-emit a decision after a move or a crash, always with the same id
        doubled = {s: ids for s, ids in revoked.items() if s in expected and len(ids) > 1}
        assert not doubled, doubled
        # The change came from the first session: it is kept (keep_current).
        assert not {p.user_sessions[0] for p in phases} & set(revoked)
        dead = read_until(broker.bootstrap, ["sessionwatch.deadletter"], lambda r: False,
                          timeout_s=2)
        assert not dead, dead[:3]
        for w in workers:
            log = Path(w.log_path).read_text(errors="replace")
            assert "unhandled processing error" not in log and "Traceback" not in log, w.tail(40)
        print("failover phases (name, sessions expected, missing, seconds to all revoked):",
              timeline)
    finally:
        for w in workers:
            w.stop()
