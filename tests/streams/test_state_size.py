"""streams/state_size.py on real Quix stores - RocksDB in a temp dir and memory - written the way
the worker writes them: the session stage's state through Quix partition transactions, and the
gauges fed through WorkerMetrics.set_state."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from factories import CURL, DIGITALOCEAN, make_event
from prometheus_client import CollectorRegistry
from quixstreams.state.manager import StateStoreManager
from quixstreams.state.memory import MemoryStore
from quixstreams.state.rocksdb import RocksDBStore

from producers.contract import EVENTS_TOPIC
from sessionwatch.metrics import WorkerMetrics
from streams.engine import ROCKSDB_OPTIONS
from streams.inputs import decode_incoming
from streams.pipeline import SessionPipeline
from streams.policy import Policy
from streams.routing import by_user_topic
from streams.session_stage import STATE_KEY, SessionStage
from streams.state_size import StateGauges, state_sizes
from streams.stats import WorkerStats

BY_USER = by_user_topic("sw-state")
STORES = {EVENTS_TOPIC: "session", BY_USER: "user"}
PARTITIONS = (0, 1)


class Worker:
    """The session stage over a real StateStoreManager (no changelogs): one checkpoint per
    `send` batch, as Quix runs it - a transaction per partition, prepared and flushed."""

    def __init__(self, enricher: Any, store_type: type, state_dir: Path) -> None:
        self.manager = StateStoreManager(group_id="sw-state", state_dir=state_dir,
                                         rocksdb_options=ROCKSDB_OPTIONS,
                                         default_store_type=store_type)
        for stream_id in STORES:
            self.manager.register_store(stream_id)
            for p in PARTITIONS:
                self.manager.on_partition_assign(stream_id, p, {})
        self.store = self.manager.get_store(EVENTS_TOPIC, "default")
        self.stage = SessionStage(SessionPipeline(enricher, Policy()), enricher, WorkerStats(),
                                  BY_USER, "sw-state-by-source")
        self.offset = 0

    def send(self, events: list[dict[str, Any]]) -> None:
        txs: dict[int, Any] = {}
        for event in events:
            key = event["session"].encode()
            partition = PARTITIONS[sum(key) % len(PARTITIONS)]
            tx = txs.get(partition) or txs.setdefault(
                partition, self.store.start_partition_transaction(partition))
            incoming = decode_incoming(json.dumps(event).encode())
            self.offset += 1
            self.stage(incoming, key, partition, self.offset,
                       tx.as_state(prefix=key, timestamp=incoming.event_time_ms))
        for tx in txs.values():
            tx.prepare()
            tx.flush()

    def value_bytes(self, sessions: list[str]) -> int:
        """What the stage stored for these sessions, read back through Quix."""
        total = 0
        for s in sessions:
            for p in PARTITIONS:
                tx = self.store.start_partition_transaction(p)
                raw = tx.as_state(prefix=s.encode()).get_bytes(STATE_KEY)
                total += len(raw) if raw is not None else 0
        return total

    def close(self) -> None:
        self.manager.close()


def logins(n: int) -> tuple[list[str], list[dict[str, Any]]]:
    sessions = [secrets.token_hex(32) for _ in range(n)]
    return sessions, [make_event("session.authenticated", session=s, user=f"u-{s[:8]}", at=i)
                      for i, s in enumerate(sessions)]


@pytest.fixture(params=[RocksDBStore, MemoryStore], ids=["rocksdb", "memory"])
def worker(request, enricher, tmp_path):
    w = Worker(enricher, request.param, tmp_path / "state")
    yield w
    w.close()


def test_entries_count_the_sessions_and_bytes_cover_their_state(worker):
    sessions, events = logins(300)
    worker.send(events)
    sizes = state_sizes(worker.manager, STORES)
    assert set(sizes) == {"session", "user"}
    entries, size = sizes["session"]
    assert entries == 300   # each written once: even RocksDB's estimate is exact here
    # Nothing reached the user stage here: an empty store (RocksDB: its memtables' first block)
    assert sizes["user"][0] == 0 and sizes["user"][1] < 64 * 1024
    data = worker.value_bytes(sessions)
    assert data > 300 * 100
    if isinstance(worker.store, MemoryStore):
        # keys + values of the data, plus the TTL index beside it; no more than a few times that
        assert data <= size <= 4 * data
    else:
        assert size >= data   # still in the memtables: their allocation, at least the data


def test_rewrites_of_a_session_do_not_add_entries_once_on_disk(worker):
    sessions, events = logins(200)
    worker.send(events)
    # Each session's cookie again, from a datacenter with curl: its state is written again.
    worker.send([make_event(session=s, user=f"u-{s[:8]}", ip=DIGITALOCEAN, user_agent=CURL,
                            at=1000 + i) for i, s in enumerate(sessions)])
    entries, _ = state_sizes(worker.manager, STORES)["session"]
    if isinstance(worker.store, MemoryStore):
        assert entries == 200
        return
    # RocksDB estimates from its memtables, where a rewrite is one more entry ...
    assert 200 <= entries <= 400
    # ... and after a flush to SST files the estimate is the keys.
    for partition in worker.store.partitions.values():
        partition._db.flush()
        for cf in partition._cf_cache.values():
            cf.flush()
    entries, size = state_sizes(worker.manager, STORES)["session"]
    assert entries == 200
    on_disk = sum(f.stat().st_size for p in worker.store.partitions.values()
                  for f in Path(p.path).glob("*.sst"))
    assert on_disk > 0 and 0.3 * on_disk <= size <= 1.2 * on_disk, (size, on_disk)


def test_a_revoked_partition_no_longer_counts(worker):
    sessions, events = logins(200)
    worker.send(events)
    before, _ = state_sizes(worker.manager, STORES)["session"]
    kept = {s for s in sessions if sum(s.encode()) % 2 == 0}
    worker.manager.on_partition_revoke(EVENTS_TOPIC, 1)
    after, size = state_sizes(worker.manager, STORES)["session"]
    assert before == 200 and after == len(kept) and 0 < len(kept) < 200
    assert size > 0


def test_gauges_are_fed_at_most_every_interval_and_survive_a_failed_reading(enricher, tmp_path,
                                                                              caplog):
    w = Worker(enricher, RocksDBStore, tmp_path / "state")
    try:
        registry = CollectorRegistry()
        metrics = WorkerMetrics(registry, process_collector=False)
        gauges = StateGauges(w.manager, STORES, metrics.set_state, every_s=10.0)

        def gauge(name: str, store: str) -> float | None:
            return registry.get_sample_value(name, {"store": store})

        gauges.poll(100.0)
        assert gauge("sessionwatch_state_entries", "session") == 0
        assert gauge("sessionwatch_state_bytes", "user") is not None
        w.send(logins(50)[1])
        gauges.poll(105.0)   # within the interval: not read again
        assert gauge("sessionwatch_state_entries", "session") == 0
        gauges.poll(110.0)
        assert gauge("sessionwatch_state_entries", "session") == 50
        assert (gauge("sessionwatch_state_bytes", "session") or 0) > 0

        # A partition closed under the store's feet (a Quix change): the reading raises inside,
        # the gauges keep their last values, one warning, and the caller is not disturbed.
        w.store.partitions[0].close()
        with caplog.at_level("WARNING", logger="sessionwatch.worker"):
            gauges.poll(120.0)
            gauges.poll(130.0)
        assert gauge("sessionwatch_state_entries", "session") == 50
        assert len([r for r in caplog.records if "state gauges" in r.getMessage()]) == 1
    finally:
        for p in list(w.store.partitions):
            w.store.partitions.pop(p)
        w.close()
