"""Per-session state on top of a faust table, with a write-behind cache.

Writing the table on every event costs a changelog message per event; measured here that made
a faust worker too slow to finish 200k events in two minutes. So the store keeps the live
`SessionState` objects in an LRU cache and writes the table (hence the changelog) only when
something material changed (new address, network, client, user, end, revocation), or when the
last write is older than `flush_after_s` of event time. What a crash can lose is at most that
much `last_seen`/counter drift and the recent-id ring; reprocessing after it yields the same
deterministic finding and revocation ids, which consumers dedupe.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import MutableMapping

from streams.pipeline import Outcome
from streams.state import SessionState, dump_state, load_state


class SessionStore:
    def __init__(
        self,
        table: MutableMapping[bytes, bytes],
        flush_after_s: float = 60.0,
        max_cached: int = 200_000,
    ) -> None:
        self._table = table
        self._flush_after = flush_after_s
        self._max_cached = max_cached
        self._cache: OrderedDict[bytes, SessionState] = OrderedDict()
        self.writes = 0

    def get(self, key: bytes) -> SessionState | None:
        state = self._cache.get(key)
        if state is not None:
            self._cache.move_to_end(key)
            return state
        raw = self._table.get(key)
        if raw is None:
            return None
        state = load_state(raw)
        self._remember(key, state)
        return state

    def put(self, key: bytes, outcome: Outcome) -> None:
        state = outcome.state
        if outcome.duplicate or state is None:
            return
        if outcome.material or state.last_seen - state.persisted_at >= self._flush_after:
            self._write(key, state)
        self._remember(key, state)

    def flush(self) -> None:
        """Write every cached state that has unwritten changes (on shutdown or rebalance)."""
        for key, state in self._cache.items():
            if state.persisted_at < state.last_seen:
                self._write(key, state)

    def expire(self, older_than: float) -> int:
        """Delete every session whose `last_seen` (event time) is before `older_than`.

        Garbage collection only: the pipeline already ignores such state on its own, so when this
        runs never changes a decision. Returns how many sessions were removed.
        """
        expired = [k for k, st in self._cache.items() if st.last_seen < older_than]
        for key in expired:
            del self._cache[key]
        for key, raw in list(self._table.items()):
            if key not in self._cache and load_state(raw).last_seen < older_than:
                expired.append(key)
        for key in expired:
            self._table.pop(key, None)
        return len(expired)

    def clear(self) -> None:
        """Forget the cache; the table is the truth after a rebalance."""
        self._cache.clear()

    def _write(self, key: bytes, state: SessionState) -> None:
        state.persisted_at = state.last_seen
        self._table[key] = dump_state(state)
        self.writes += 1

    def _remember(self, key: bytes, state: SessionState) -> None:
        self._cache[key] = state
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_cached:
            old_key, old = self._cache.popitem(last=False)
            if old.persisted_at < old.last_seen:
                self._write(old_key, old)

    def __len__(self) -> int:
        return len(self._cache)
