"""Offsets missing between two records a consumer was handed: read them again before moving on.

Tansu 0.6 (the embedded broker) can answer a Fetch at the tail of a partition that several
producers write with a hole: a batch whose offsets were assigned but not yet stored is left out
while the batch after it is returned. Reproduced in `benchmarks/tansu_fetch_holes.py` (3
producers, about one hole per 60,000 records; every hole was there when read again a moment
later). Kafka clients accept a hole silently - compaction and transaction markers make
legitimate ones - so aiokafka and librdkafka alike skipped those records: the soak saw events
never archived, and a skipped event is a detection that never ran.

So every consumer of ours (the worker's, the applier's, the archiver's) checks that each
partition's offsets follow on. At a hole it seeks back to the first missing offset and reads
again; a hole still there after `wait_s` is taken as real (compaction, a transaction marker on
a real Kafka), logged and counted, and reading goes on past it. On a real Kafka with our
non-transactional producers and uncompacted topics no hole ever shows, so this costs nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

log = logging.getLogger("sessionwatch.consuming")

# How long a hole is read again before it is taken as real. Tansu's holes filled at the first
# re-read (a few ms) in every case measured; a second is far beyond that and still short enough
# that a real gap (compaction on a real Kafka) costs one second once.
HOLE_WAIT_S = 1.0


@dataclass
class HoleStats:
    reread: int = 0      # times a hole made the consumer seek back and read again
    filled: int = 0      # holes that were there at first and then read
    accepted: int = 0    # offsets given up on after `wait_s` (counted once each)


class OffsetHoles:
    """Per partition, the offset that should come next. `check(partition, offset)` says whether
    a record may be handed on (None) or where to seek back to (the first missing offset; drop
    this record and the partition's later ones from the same poll).

    `on_hole(partition, outcome)`: called with "reread" at each seek back, "filled" when the
    missing record arrives, "accepted" when the hole is given up on (metrics)."""

    def __init__(self, wait_s: float = HOLE_WAIT_S, *,
                 on_hole: Callable[[Hashable, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.wait_s = wait_s
        self.on_hole = on_hole
        self.clock = clock
        self.stats = HoleStats()
        self._next: dict[Hashable, int] = {}
        self._hole: dict[Hashable, tuple[int, float]] = {}   # partition -> (missing from, since)

    def check(self, partition: Hashable, offset: int) -> int | None:
        expected = self._next.get(partition)
        if expected is not None and offset > expected:
            start, since = self._hole.get(partition, (expected, self.clock()))
            if start != expected:           # another hole than the one waited for
                start, since = expected, self.clock()
            if self.clock() - since < self.wait_s:
                self._hole[partition] = (start, since)
                self.stats.reread += 1
                self._tell(partition, "reread")
                return expected
            self._hole.pop(partition, None)
            self.stats.accepted += offset - expected
            self._tell(partition, "accepted")
            log.warning("%s: offsets %d..%d were still missing after %.1f s of reading again; "
                        "going on without them (compaction or a transaction marker on Kafka; "
                        "on the embedded broker a lost record)",
                        _name(partition), expected, offset - 1, self.wait_s,
                        extra=_fields(partition, expected))
        elif partition in self._hole and offset == self._hole[partition][0]:
            start, since = self._hole.pop(partition)
            self.stats.filled += 1
            self._tell(partition, "filled")
            log.info("%s: offset %d arrived when read again, %.0f ms after the hole showed",
                     _name(partition), start, (self.clock() - since) * 1000,
                     extra=_fields(partition, start))
        # Lower than expected: a re-read (a rebalance, a seek back); follow it.
        self._next[partition] = offset + 1
        return None

    def forget(self, partitions: object = None) -> None:
        """Partitions (re)assigned or revoked: their next offset is not known any more. None: all."""
        if partitions is None:
            self._next.clear()
            self._hole.clear()
            return
        for p in partitions:  # type: ignore[attr-defined]
            self._next.pop(p, None)
            self._hole.pop(p, None)

    def _tell(self, partition: Hashable, outcome: str) -> None:
        if self.on_hole is not None:
            self.on_hole(partition, outcome)


def _fields(partition: Hashable, offset: int) -> dict[str, object]:
    """`extra=` for JSON logs (sessionwatch/logs.py): the partition's topic and number, the offset."""
    if isinstance(partition, tuple) and len(partition) == 2:
        return {"topic": partition[0], "partition": partition[1], "offset": offset}
    topic = getattr(partition, "topic", None)
    if topic is None:
        return {"offset": offset}
    return {"topic": topic, "partition": getattr(partition, "partition", None), "offset": offset}


def _name(partition: Hashable) -> str:
    fields = _fields(partition, 0)
    return f"{fields['topic']}[{fields['partition']}]" if "topic" in fields else str(partition)
