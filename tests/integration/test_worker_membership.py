"""A worker the group coordinator dropped carries on: frozen (SIGSTOP) past its session timeout
while a checkpoint is pending, it finds on waking that its commit is refused ("Unknown member"),
which ends Quix's `run()`; the worker starts itself afresh in the same process (same pid), rejoins
and decides the hijacks sent meanwhile. benchmarks.soak saw both workers die of this when the
embedded broker, on an overloaded machine, left heartbeats unanswered for 6 s."""

from __future__ import annotations

import os
import secrets
import signal
import time

import pytest
from confluent_kafka import Producer
from factories import CURL, DIGITALOCEAN
from integration.conftest import eventually, make_event, read_until, send

from sessionwatch.broker import EmbeddedBroker
from sessionwatch.processes import WorkerProcess

pytestmark = pytest.mark.integration
APP_ID = "sessionwatch-membership"
SESSION_TIMEOUT_S = 3.0


def revoked_sessions(bootstrap: str, wanted: set[str]) -> set[str]:
    records = read_until(bootstrap, ["sessionwatch.revocations"],
                         lambda r: wanted <= {v.get("session") for _, v in r}, timeout_s=90)
    return {v.get("session") for _, v in records}


def hijack(session: str) -> list[dict]:
    return [make_event("session.authenticated", session=session, at=0),
            make_event(session=session, ip=DIGITALOCEAN, user_agent=CURL, at=30)]


@pytest.mark.xfail(strict=False, reason=(
    "open defect: after the restart in place the embedded broker does not always give the new "
    "member partitions in time - passed 4 of 4 runs on a quiet machine (ready again in ~11 s), but "
    "in two CI runs the worker either died (fixed since: 'partition is closed') or, restarted, "
    "got no assignment within 85 s. The classification is unit-tested in "
    "tests/streams/test_engine_consumer.py"))
def test_a_worker_dropped_by_its_group_restarts_in_place_and_decides(tmp_path):
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 1})
        worker = WorkerProcess(broker.bootstrap, tmp_path / "worker.log", app_id=APP_ID,
                               partitions=2, data_dir=str(tmp_path / "state"),
                               session_timeout_s=str(SESSION_TIMEOUT_S))
        try:
            worker.wait_ready()
            before = secrets.token_hex(32)
            send(producer, hijack(before))
            assert before in revoked_sessions(broker.bootstrap, {before})
            pid = worker.proc.pid
            # Freeze it right after it processed something: the checkpoint of what comes next
            # is pending when the coordinator gives up on it.
            during = [secrets.token_hex(32) for _ in range(5)]
            send(producer, [e for s in during for e in hijack(s)])
            os.kill(pid, signal.SIGSTOP)
            time.sleep(SESSION_TIMEOUT_S * 3)
            os.kill(pid, signal.SIGCONT)
            after = secrets.token_hex(32)
            send(producer, hijack(after))
            wanted = {*during, after}
            assert wanted <= revoked_sessions(broker.bootstrap, wanted)
            assert worker.proc.poll() is None and worker.proc.pid == pid
            log = eventually(lambda: worker.tail(400), "the worker's log")
            assert "Traceback" not in log, log
        finally:
            worker.stop()
