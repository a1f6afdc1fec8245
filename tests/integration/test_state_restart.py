"""State survives a restart with the RocksDB store: stopped cleanly, killed, or on a new disk.

Sessions log in, the worker goes away, the hijacks come after it is back: only the state from
before the restart can connect a hijack to its login. Three ways back:
- SIGTERM, the same data directory (RocksDB opens warm; Quix checks it against the changelog -
  whose end the embedded broker under-reports in ListOffsets, streams/log_end.py);
- SIGKILL, the same data directory (what was not committed is processed again, deduped by id);
- SIGTERM, an empty data directory (the state comes back from the changelog topic alone).
"""

from __future__ import annotations

import secrets
import time
import uuid

import pytest
from factories import CURL, DIGITALOCEAN
from integration.conftest import caught_up, make_event, read_until, send

from sessionwatch.processes import WorkerProcess

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("how", ["sigterm", "sigkill", "new-disk"])
def test_rocksdb_state_survives_a_restart(broker, producer, tmp_path, how):
    app_id = f"restart-{how}-{uuid.uuid4().hex[:6]}"

    def worker(disk: str, name: str) -> WorkerProcess:
        return WorkerProcess(broker.bootstrap, tmp_path / f"{name}.log", app_id=app_id,
                             partitions=2, store="rocksdb", data_dir=str(tmp_path / disk))

    sessions = [secrets.token_hex(32) for _ in range(30)]
    first = worker("disk-1", "first")
    try:
        first.wait_ready()
        send(producer, [make_event("session.authenticated", session=s, at=0) for s in sessions])
        caught_up(broker.bootstrap, app_id)
    finally:
        first.kill() if how == "sigkill" else first.stop()
    assert any((tmp_path / "disk-1").rglob("CURRENT")), "no RocksDB store on disk"

    second = worker("disk-2" if how == "new-disk" else "disk-1", "second")
    try:
        second.wait_ready()
        send(producer, [make_event(session=s, ip=DIGITALOCEAN, user_agent=CURL, at=30)
                        for s in sessions])
        records = read_until(broker.bootstrap, ["sessionwatch.revocations"],
                             lambda r: set(sessions) <= {v.get("session") for _, v in r},
                             timeout_s=60)
        revoked = {v.get("session") for _, v in records}
        assert set(sessions) <= revoked, (len(set(sessions) - revoked), second.tail(30))
        log = (tmp_path / "second.log").read_text(errors="replace")
        assert "InvalidStoreChangelogOffset" not in log and "Traceback" not in log, log[-3000:]
    finally:
        second.stop()


def test_idle_session_state_expires_by_event_time(tmp_path):
    """A session idle for longer than `session_ttl_s` of *event* time is swept from the store,
    with a tombstone on its changelog, as soon as later events move that partition's clock -
    however little wall time passed (a replay expires like the live run)."""
    import json

    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    from sessionwatch.broker import EmbeddedBroker

    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as own:
        w = WorkerProcess(own.bootstrap, tmp_path / "worker.log", app_id="ttl", partitions=1,
                          data_dir=str(tmp_path / "state"), session_ttl_s="3600")
        try:
            w.wait_ready()
            producer = Producer({"bootstrap.servers": own.bootstrap, "linger.ms": 1})
            old = secrets.token_hex(32)
            later = [[make_event("session.authenticated", session=secrets.token_hex(32),
                                 at=2 * 3600 + 10 * n + i) for i in range(10)] for n in range(2)]
            # Quix sweeps expired keys when a checkpoint is written (every commit_interval_s):
            # the old session is written in one checkpoint, swept in a later one.
            for batch in ([make_event("session.authenticated", session=old, at=0)], *later):
                for event in batch:
                    producer.produce("sessionwatch.events", json.dumps(event).encode(),
                                     key=event["session"].encode())
                producer.flush(10)
                time.sleep(2.5)
            changelog = "changelog__ttl--sessionwatch.events--default"
            consumer = Consumer({"bootstrap.servers": own.bootstrap, "group.id": "ttl-probe",
                                 "enable.auto.commit": False})
            consumer.assign([TopicPartition(changelog, 0, OFFSET_BEGINNING)])
            tombstones: set[bytes] = set()
            deadline = time.monotonic() + 30
            while old.encode() not in b"".join(tombstones) and time.monotonic() < deadline:
                for m in consumer.consume(500, timeout=0.5):
                    if m.error() is None and m.value() is None:
                        tombstones.add(m.key())
            consumer.close()
            assert any(old.encode() in k for k in tombstones), "the idle session was not swept"
            assert len(tombstones) == 1, "only the idle one: the others are 2 h newer"
        finally:
            w.stop()


def test_an_event_from_a_clock_years_ahead_does_not_expire_everyone(tmp_path):
    """State expires against the newest event time of its partition; an app whose clock runs
    years ahead must not make every other session read as expired (blinding the detectors)."""
    import json

    from confluent_kafka import Producer

    from sessionwatch.broker import EmbeddedBroker

    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as own:
        w = WorkerProcess(own.bootstrap, tmp_path / "worker.log", app_id="clock", partitions=1,
                          data_dir=str(tmp_path / "state"))
        try:
            w.wait_ready()
            producer = Producer({"bootstrap.servers": own.bootstrap, "linger.ms": 1})
            victim = secrets.token_hex(32)
            batch = [make_event("session.authenticated", session=victim, at=0),
                     make_event("session.authenticated", session=secrets.token_hex(32),
                                at=10 * 365 * 86400),  # ten years ahead
                     make_event(session=victim, ip=DIGITALOCEAN, user_agent=CURL, at=30)]
            for event in batch:
                producer.produce("sessionwatch.events", json.dumps(event).encode(),
                                 key=event["session"].encode())
                producer.flush(10)
                time.sleep(1.5)  # across checkpoints, where Quix sweeps
            records = read_until(own.bootstrap, ["sessionwatch.revocations"],
                                 lambda r: any(v.get("session") == victim for _, v in r),
                                 timeout_s=20)
            assert any(v.get("session") == victim for _, v in records)
        finally:
            w.stop()
