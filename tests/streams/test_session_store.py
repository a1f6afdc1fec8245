"""The write-behind session store over a plain dict standing in for the faust table's store.

The local store is a dict here because the session store's contract is a MutableMapping plus
the changelog records it returns; the real faust table, its changelog and recovery are exercised
by tests/integration (worker processes on a real broker, including a rebalance).
"""

from __future__ import annotations

from streams.pipeline import Outcome
from streams.session_store import ChangelogRecord, SessionStore
from streams.state import SessionState, load_state


def state(session="s1", last_seen=0.0, ip="198.51.100.1", **kw) -> SessionState:
    return SessionState(tenant="default", session=session, last_seen=last_seen, ip=ip, **kw)


def test_material_changes_are_written_at_once_and_the_rest_throttled():
    data: dict[bytes, bytes] = {}
    store = SessionStore(data, flush_after_s=60)
    (record,) = store.put(b"s1", Outcome(state=state(last_seen=0.0), material=True), partition=3)
    assert record.key == b"s1" and record.partition == 3
    assert load_state(record.value) == load_state(data[b"s1"])
    assert store.put(b"s1", Outcome(state=state(last_seen=30.0)), partition=3) == []
    assert load_state(data[b"s1"]).last_seen == 0.0, "unchanged state within 60 s: not written"
    assert store.get(b"s1").last_seen == 30.0, "but the live state is in the cache"
    (record,) = store.put(b"s1", Outcome(state=state(last_seen=61.0)), partition=3)
    assert load_state(record.value).last_seen == 61.0, "written after 60 s of event time"
    assert store.writes == 2


def test_duplicates_do_not_touch_state():
    store = SessionStore({})
    store.put(b"s1", Outcome(state=state(), material=True), partition=0)
    assert store.put(b"s1", Outcome(state=state(ip="203.0.113.7"), duplicate=True), 0) == []
    assert store.get(b"s1").ip == "198.51.100.1"


def test_cache_miss_reads_the_local_store_and_eviction_is_bounded():
    data: dict[bytes, bytes] = {}
    store = SessionStore(data, flush_after_s=3600, max_cached=2)
    store.put(b"a", Outcome(state=state("a", 0.0), material=True), 0)
    store.put(b"b", Outcome(state=state("b", 0.0), material=True), 0)
    store.put(b"c", Outcome(state=state("c", 0.0), material=True), 1)  # evicts "a"
    assert len(store) == 2
    assert store.get(b"a").session == "a", "read back from the local store"


def test_clear_keeps_what_was_written():
    data: dict[bytes, bytes] = {}
    store = SessionStore(data, flush_after_s=3600)
    store.put(b"a", Outcome(state=state("a", 0.0), material=True), 0)
    store.put(b"a", Outcome(state=state("a", 5.0)), 0)  # drift, not written
    store.clear()
    assert len(store) == 0
    assert store.get(b"a").last_seen == 0.0


def test_expire_removes_idle_sessions_and_returns_tombstones():
    data: dict[bytes, bytes] = {}
    store = SessionStore(data, max_cached=1)
    store.put(b"old", Outcome(state=state("old", 100.0), material=True), 2)
    store.put(b"new", Outcome(state=state("new", 10_000.0), material=True), 1)  # evicts "old"
    assert store.expire(older_than=5_000.0) == [ChangelogRecord(b"old", None, 2)]
    assert b"old" not in data and b"new" in data
    assert store.get(b"old") is None
