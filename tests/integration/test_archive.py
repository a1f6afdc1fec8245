"""`sessionwatch archive` as a process: the real broker into Debian's clickhouse-server 18.16 and
into chDB. Rows equal distinct ids after duplicates and malformed input; a server killed
mid-stream and restarted loses nothing and, after dedup, doubles nothing."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from producers.contract import EVENTS_TOPIC, FINDINGS_TOPIC, REVOCATIONS_TOPIC
from sessionwatch.demo import wait_group_caught_up
from sessionwatch.processes import ArchiverProcess

pytestmark = pytest.mark.integration
TOPICS = [EVENTS_TOPIC, FINDINGS_TOPIC, REVOCATIONS_TOPIC]


def events(tenant: str, n: int, start: int = 0) -> list[dict]:
    from factories import make_event

    out = []
    for i in range(start, start + n):
        ip = "73.162.10.20" if i % 2 else "2001:db8::5"
        out.append(make_event("session.activity", session=f"s{i % 17}", user=f"u{i % 5}",
                              ip=ip, at=i, tenant=tenant, id=f"{tenant}-e{i}"))
    return out


def send_events(producer, batch: list[dict], duplicates: int = 0, garbage: int = 0) -> None:
    for event in batch + batch[:duplicates]:
        producer.produce(EVENTS_TOPIC, json.dumps(event).encode(), key=event["session"].encode())
    for i in range(garbage):
        producer.produce(EVENTS_TOPIC, b'{"not": "an event", "i": %d}' % i, key=b"garbage")
    producer.flush(10)


def counts(backend, tenant: str) -> tuple[int, int]:
    df = backend.query("SELECT count() AS n, uniqExact(id) AS ids FROM sessionwatch.events FINAL "
                       "WHERE tenant = %(tenant)s", {"tenant": tenant})
    return int(df["n"][0]), int(df["ids"][0])


def caught_up(broker, group: str) -> None:
    assert wait_group_caught_up(broker.bootstrap, group, TOPICS, timeout_s=90), \
        f"the archiver ({group}) did not catch up"


def test_server_rows_equal_distinct_events_through_an_outage(broker, producer,
                                                               clickhouse_server, tmp_path):
    from storage.clickhouse import ServerBackend

    tenant = f"archive-{uuid.uuid4().hex[:8]}"
    group = f"it-archive-{tenant}"
    archiver = ArchiverProcess(broker.bootstrap, tmp_path / "archive.log", archive_group=group,
                               clickhouse=clickhouse_server.url)
    try:
        archiver.wait_ready(90)
        send_events(producer, events(tenant, 300), duplicates=50, garbage=10)
        caught_up(broker, group)
        backend = ServerBackend(clickhouse_server.url)
        assert counts(backend, tenant) == (300, 300)
        backend.close()

        clickhouse_server.stop()      # killed mid-stream
        send_events(producer, events(tenant, 200, start=300), duplicates=20)
        deadline = time.monotonic() + 60
        while b"unavailable" not in archiver.log_path.read_bytes():
            assert time.monotonic() < deadline, archiver.tail()
            time.sleep(0.1)
        clickhouse_server.start()
        caught_up(broker, group)
        backend = ServerBackend(clickhouse_server.url)
        assert counts(backend, tenant) == (500, 500)   # nothing lost, nothing doubled
        malformed = backend.query("SELECT count() AS n FROM sessionwatch.events "
                                  "WHERE tenant = '' OR id = ''")
        assert int(malformed["n"][0]) == 0
        backend.close()
    finally:
        archiver.stop()


def test_chdb_rows_equal_distinct_events(broker, producer, tmp_path):
    from storage.clickhouse import ChdbBackend

    tenant = f"archive-{uuid.uuid4().hex[:8]}"
    group = f"it-archive-{tenant}"
    chdb_dir = tmp_path / "chdb"
    archiver = ArchiverProcess(broker.bootstrap, tmp_path / "archive.log", archive_group=group,
                               chdb_dir=str(chdb_dir))
    try:
        archiver.wait_ready(90)
        send_events(producer, events(tenant, 300), duplicates=50, garbage=10)
        caught_up(broker, group)
    finally:
        archiver.stop()   # chDB's directory belongs to one process at a time
    backend = ChdbBackend(str(chdb_dir))
    try:
        assert counts(backend, tenant) == (300, 300)
        ips = set(backend.query("SELECT DISTINCT ip FROM sessionwatch.events WHERE tenant = "
                                "%(tenant)s", {"tenant": tenant})["ip"])
        assert ips == {"73.162.10.20", "2001:db8::5"}
    finally:
        backend.close()
