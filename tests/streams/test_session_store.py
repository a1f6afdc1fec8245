"""The write-behind session store over a plain dict standing in for the faust table.

The table is a dict here because the store's contract is a MutableMapping; the real faust table
and changelog are exercised by tests/integration (worker processes on a real broker).
"""

from __future__ import annotations

from streams.pipeline import Outcome
from streams.session_store import SessionStore
from streams.state import SessionState, load_state


def state(session="s1", last_seen=0.0, ip="198.51.100.1", **kw) -> SessionState:
    return SessionState(tenant="default", session=session, last_seen=last_seen, ip=ip, **kw)


def test_material_changes_are_written_at_once_and_the_rest_throttled():
    table: dict[bytes, bytes] = {}
    store = SessionStore(table, flush_after_s=60)
    store.put(b"s1", Outcome(state=state(last_seen=0.0), material=True))
    assert load_state(table[b"s1"]).last_seen == 0.0
    store.put(b"s1", Outcome(state=state(last_seen=30.0), material=False))
    assert load_state(table[b"s1"]).last_seen == 0.0, "unchanged state within 60 s: not written"
    assert store.get(b"s1").last_seen == 30.0, "but the live state is in the cache"
    store.put(b"s1", Outcome(state=state(last_seen=61.0), material=False))
    assert load_state(table[b"s1"]).last_seen == 61.0, "flushed after 60 s of event time"
    assert store.writes == 2


def test_duplicates_do_not_touch_state():
    table: dict[bytes, bytes] = {}
    store = SessionStore(table)
    store.put(b"s1", Outcome(state=state(), material=True))
    store.put(b"s1", Outcome(state=state(ip="203.0.113.7"), duplicate=True))
    assert store.get(b"s1").ip == "198.51.100.1"


def test_cache_miss_reads_the_table_and_eviction_flushes_dirty_state():
    table: dict[bytes, bytes] = {}
    store = SessionStore(table, flush_after_s=3600, max_cached=2)
    store.put(b"a", Outcome(state=state("a", 0.0), material=True))
    store.put(b"a", Outcome(state=state("a", 10.0), material=False))  # dirty, cached only
    store.put(b"b", Outcome(state=state("b", 0.0), material=True))
    store.put(b"c", Outcome(state=state("c", 0.0), material=True))  # evicts "a"
    assert len(store) == 2
    assert load_state(table[b"a"]).last_seen == 10.0, "evicted dirty state was written"
    assert store.get(b"a").last_seen == 10.0


def test_flush_and_clear_for_rebalance():
    table: dict[bytes, bytes] = {}
    store = SessionStore(table, flush_after_s=3600)
    store.put(b"a", Outcome(state=state("a", 0.0), material=True))
    store.put(b"a", Outcome(state=state("a", 5.0), material=False))
    store.flush()
    store.clear()
    assert len(store) == 0
    assert store.get(b"a").last_seen == 5.0


def test_expire_removes_idle_sessions_from_cache_and_table():
    table: dict[bytes, bytes] = {}
    store = SessionStore(table, max_cached=1)
    store.put(b"old", Outcome(state=state("old", 100.0), material=True))
    store.put(b"new", Outcome(state=state("new", 10_000.0), material=True))  # evicts "old"
    assert store.expire(older_than=5_000.0) == 1
    assert b"old" not in table and b"new" in table
    assert store.get(b"old") is None
