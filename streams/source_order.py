"""The source pipeline fed in event-time order: one per source-stage partition.

Every source decision is taken in order once final (streams/event_clock.py): a flood's share of
valid traffic falls when a late request arrives, and which level of a source crosses first, and
when, depends on everything before it. Events wait in memory, like the windows they feed
(streams/source_state.py): both are minutes long and rebuilt from traffic after a restart.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime

from producers.contract import Event
from streams.event_clock import EventClock
from streams.source_pipeline import SourceOutcome, SourcePipeline

# Events held per partition at most; beyond, the oldest go through ahead of their lateness
# (a flood must not grow memory without bound - it is the flood that fills this).
MAX_WAITING = 200_000


class OrderedSource:
    def __init__(self, pipeline: SourcePipeline, lateness_s: float, idle_s: float = 1.0,
                 wall: Callable[[], float] = time.time, max_waiting: int = MAX_WAITING,
                 decided_by_event_time: bool = False) -> None:
        self.pipeline = pipeline
        self.clock = EventClock(lateness_s, idle_s, wall)
        self.max_waiting = max_waiting
        # The in-process runner stamps decisions with event time, so runs compare exactly.
        self.decided_by_event_time = decided_by_event_time
        self._waiting: list[tuple[float, str, int, Event]] = []
        self._seq = itertools.count()
        self.late = 0

    def arrive(self, event: Event) -> list[tuple[Event, SourceOutcome]]:
        """Queue one event; returns what became final (this one too, if it came too late)."""
        at = event.time.timestamp()
        if not self.clock.observe(at):
            self.late += 1
        heapq.heappush(self._waiting, (at, event.id, next(self._seq), event))
        return self.release(idle=False)

    def release(self, idle: bool = True, everything: bool = False) -> list[tuple[Event, SourceOutcome]]:
        """Put final events through the pipeline, in (event time, id) order.

        An event the pipeline fails on is returned with `SourceOutcome.error` set (the stage
        dead-letters it); the others still go through.
        """
        before = float("inf") if everything else self.clock.final_before(idle=idle)
        waiting = self._waiting
        out: list[tuple[Event, SourceOutcome]] = []
        while waiting and (waiting[0][0] < before or len(waiting) > self.max_waiting):
            _, _, _, event = heapq.heappop(waiting)
            decided_at = event.time if self.decided_by_event_time else datetime.now(UTC)
            try:
                outcome = self.pipeline.process(event, decided_at)
            except Exception as exc:  # a detector bug: keep the others going
                out.append((event, SourceOutcome(error=f"{type(exc).__name__}: {exc}")))
                continue
            if outcome.findings or outcome.revocations:
                out.append((event, outcome))
        return out

    def __len__(self) -> int:
        return len(self._waiting)
