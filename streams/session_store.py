"""Per-session state on top of a faust table's local store, with a write-behind cache.

faust creates the table's changelog topic and recovers from it (and keeps standbys), but the
store does not let `table[key] = value` write the changelog: faust queues those writes in a
producer buffer that nothing ties to the offset commit. Measured: after 30 sessions were processed
and their offsets committed, the changelog held 2 of the 30 writes, so a rebalance or crash lost
state for events already committed. Instead the store writes the local store (`table.data`) and
returns the changelog records; the agent sends them to the source event's partition and awaits
delivery before the event's offset can be committed, as it does for findings and revocations.

Writes are also sparse: the store keeps live `SessionState` objects in an LRU cache and writes
only when something material changed (address, network, client, user, end, revocation) or the
last write is older than `flush_after_s` of event time. What a crash can lose is at most that
much `last_seen`/counter drift and the recent-id ring; reprocessing yields the same deterministic
finding and revocation ids, which consumers dedupe.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from typing import Any, NamedTuple, Protocol

from streams.state import dump_state, load_state


class Stored(Protocol):
    """What the store needs of a state object (SessionState, UserState)."""

    partition: int
    last_seen: float
    persisted_at: float


class StoredOutcome(Protocol):
    @property
    def state(self) -> Any: ...
    @property
    def duplicate(self) -> bool: ...
    @property
    def material(self) -> bool: ...


class ChangelogRecord(NamedTuple):
    """A write for the table's changelog topic; `value` None is a tombstone."""

    key: bytes
    value: bytes | None
    partition: int


class SessionStore:
    """Write-behind cache over a table's local store; any msgspec state with the `Stored` fields."""

    def __init__(
        self,
        data: MutableMapping[bytes, bytes],
        flush_after_s: float = 60.0,
        max_cached: int = 200_000,
        dump: Callable[[Any], bytes] = dump_state,
        load: Callable[[bytes], Any] = load_state,
    ) -> None:
        self._dump = dump
        self._load = load
        self._data = data
        self._flush_after = flush_after_s
        self._max_cached = max_cached
        self._cache: OrderedDict[bytes, Any] = OrderedDict()
        self.writes = 0

    def get(self, key: bytes) -> Any:
        state = self._cache.get(key)
        if state is not None:
            self._cache.move_to_end(key)
            return state
        raw = self._data.get(key)
        if raw is None:
            return None
        state = self._load(raw)
        self._remember(key, state)
        return state

    def put(self, key: bytes, outcome: StoredOutcome, partition: int) -> list[ChangelogRecord]:
        """Keep the outcome's state; returns the changelog records to publish for it."""
        state = outcome.state
        if outcome.duplicate or state is None:
            return []
        state.partition = partition
        records: list[ChangelogRecord] = []
        if outcome.material or state.last_seen - state.persisted_at >= self._flush_after:
            records.append(self._write(key, state))
        self._remember(key, state)
        return records

    def expire(self, older_than: float) -> list[ChangelogRecord]:
        """Forget every session whose `last_seen` (event time) is before `older_than`.

        Garbage collection only: the pipeline already ignores such state on its own, so when this
        runs never changes a decision. Returns the tombstones to publish.
        """
        expired = {k: st.partition for k, st in self._cache.items() if st.last_seen < older_than}
        for key in expired:
            del self._cache[key]
        for key, raw in list(self._data.items()):
            if key not in expired and key not in self._cache:
                state = self._load(raw)
                if state.last_seen < older_than:
                    expired[key] = state.partition
        for key in expired:
            self._data.pop(key, None)
        return [ChangelogRecord(key, None, p) for key, p in expired.items() if p >= 0]

    def clear(self) -> None:
        """Forget the cache (after a rebalance the local store, recovered by faust, is the truth).

        Unwritten drift (at most `flush_after_s` of `last_seen`) is dropped rather than written
        here: outside the stream there is no source offset to tie a write to.
        """
        self._cache.clear()

    def _write(self, key: bytes, state: Stored) -> ChangelogRecord:
        state.persisted_at = state.last_seen
        raw = self._dump(state)
        self._data[key] = raw
        self.writes += 1
        return ChangelogRecord(key, raw, state.partition)

    def _remember(self, key: bytes, state: Stored) -> None:
        # An evicted session's unwritten drift is dropped, as in clear(): writing it here would
        # put it in the current event's partition (faust's RocksDB store picks the partition from
        # the event being processed), not the evicted session's.
        self._cache[key] = state
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)

    def __len__(self) -> int:
        return len(self._cache)
