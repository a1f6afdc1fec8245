"""Event time for the stages that merge partitions: what is final, and what waits for it.

The user and source stages read repartition topics written by every session partition; how those
partitions interleave depends on their pace (a replayed backlog, a rebalance, a slow worker).
Decisions that more input could still change - four live sessions, where a later logout of one
of them arrives late; a flood whose share of valid traffic a late request would lower - are taken
only once every event that could change them has arrived: when the stage's newest event time is
more than `lateness` past them. Events then go through in (event time, id) order, so any
interleaving within the allowed lateness gives the same decisions (ARCHITECTURE principle 7).

When a stage's input has been quiet for a while its clock is at least the wall clock, so held
decisions come out without waiting for more traffic. How long "a while" is depends on the
events: live ones (the newest is within the lateness of the wall clock) carry about the current
time, so nothing older than the wall clock minus the lateness can still come unless an upstream
partition lags by more than that - `idle_s` (1 s) of quiet is enough. Past events (a backlog, a
replay, the evaluation's simulated day) say nothing about the wall clock, and a quiet second may
be a rebalance rather than the end: they need `lateness` of quiet first. That is the only place
the wall clock enters; a replay at full speed never idles.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Hashable, Iterator


class EventClock:
    """The newest event time one stage task has seen; what is final is older than `lateness`."""

    __slots__ = ("lateness", "idle_s", "newest", "_input_at", "_wall")

    def __init__(self, lateness_s: float, idle_s: float = 1.0,
                 wall: Callable[[], float] = time.time) -> None:
        self.lateness = lateness_s
        self.idle_s = idle_s
        self.newest = float("-inf")
        self._wall = wall
        self._input_at = wall()

    def observe(self, at: float) -> bool:
        """Record an input's event time; False if it is late (older than what is final)."""
        self._input_at = self._wall()
        late = at < self.newest - self.lateness
        if at > self.newest:
            self.newest = at
        return not late

    def final_before(self, idle: bool = True) -> float:
        """Events strictly older than this are final. With `idle`, a quiet input's clock is at
        least the wall clock (see the module docstring)."""
        now = self.newest
        if idle:
            wall = self._wall()
            live = now >= wall - self.lateness
            if wall - self._input_at >= (self.idle_s if live else max(self.idle_s, self.lateness)):
                now = max(now, wall)
        return now - self.lateness


class DueIndex:
    """Which keys hold events waiting to become final, earliest first (one entry per key).

    Lives in memory beside a stage's state; the events themselves live in the keys' state.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, Hashable]] = []
        self._due: dict[Hashable, float] = {}

    def set(self, key: Hashable, at: float | None) -> None:
        """The earliest waiting event of `key` is at `at` (None: nothing waits)."""
        if at is None:
            self._due.pop(key, None)
            return
        if self._due.get(key) == at:
            return
        self._due[key] = at
        heapq.heappush(self._heap, (at, key))

    def any_due(self, before: float) -> bool:
        """Cheap check before `pop_due` (the heap may hold superseded entries)."""
        return bool(self._heap) and self._heap[0][0] < before

    def pop_due(self, before: float) -> Iterator[Hashable]:
        """Keys whose earliest waiting event is older than `before`, earliest first. Each key is
        removed from the index; the caller `set`s it again if something still waits."""
        heap, due = self._heap, self._due
        while heap and heap[0][0] < before:
            at, key = heapq.heappop(heap)
            if due.get(key) != at:
                continue  # superseded by a later set()
            del due[key]
            yield key

    def __len__(self) -> int:
        return len(self._due)

    def clear(self) -> None:
        self._heap.clear()
        self._due.clear()
