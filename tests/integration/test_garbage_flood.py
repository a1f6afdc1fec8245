"""A flood of garbage is an attack too: 20,000 malformed messages, then a hijack behind them.

Every one is dead-lettered with its reason and position, the worker stays up, and the hijack
queued behind them on the same partition is still revoked. Its own broker and worker, so the
flood does not sit in the shared topic the other tests replay. The time is printed, not
asserted (benchmarks measure; tests check behaviour).
"""

from __future__ import annotations

import json
import secrets
import time

import pytest
from confluent_kafka import Producer
from factories import CURL, DIGITALOCEAN
from integration.conftest import make_event, read_until

from sessionwatch.broker import EmbeddedBroker
from sessionwatch.processes import WorkerProcess

pytestmark = pytest.mark.integration
GARBAGE = 20_000


def test_twenty_thousand_malformed_messages_then_a_hijack(tmp_path):
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        worker = WorkerProcess(broker.bootstrap, tmp_path / "worker.log", app_id="garbage",
                               partitions=1, data_dir=str(tmp_path / "state"))
        try:
            worker.wait_ready()
            producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5,
                                 "queue.buffering.max.messages": 100_000})
            session = secrets.token_hex(32)
            login = make_event("session.authenticated", session=session, at=0)
            producer.produce("sessionwatch.events", json.dumps(login).encode(), key=session.encode())
            kinds = [b"{not json", b'{"schema": "sessionwatch.event/1"}', b"\xff\xfe", b"[]"]
            for i in range(GARBAGE):
                producer.produce("sessionwatch.events", kinds[i % 4] + str(i).encode()
                                 if i % 4 == 0 else kinds[i % 4], key=session.encode())
            hijack = make_event(session=session, ip=DIGITALOCEAN, user_agent=CURL, at=30)
            producer.produce("sessionwatch.events", json.dumps(hijack).encode(), key=session.encode())
            producer.flush(30)
            began = time.monotonic()
            # The hijack sits behind the garbage on the same partition: once it is revoked,
            # everything before it was handled.
            revoked = [v for _, v in read_until(broker.bootstrap, ["sessionwatch.revocations"],
                                                lambda r: bool(r), timeout_s=120)]
            took = time.monotonic() - began
            dead = [v for _, v in read_until(broker.bootstrap, ["sessionwatch.deadletter"],
                                             lambda r: len(r) >= GARBAGE, timeout_s=60)]
            assert len(dead) == GARBAGE, len(dead)
            assert {d["reason"] for d in dead} == {"not_json", "invalid"}
            assert len({d["offset"] for d in dead}) == GARBAGE  # each one, with its position
            assert [r["session"] for r in revoked] == [session]
            assert worker.proc.poll() is None
            log = (tmp_path / "worker.log").read_text(errors="replace")
            assert log.count("dead-lettered") < 100, "the log is rate-limited under a flood"
            print(f"{GARBAGE:,} malformed messages dead-lettered and the hijack behind them "
                  f"revoked {took:.1f} s after they were all sent")
        finally:
            worker.stop()
