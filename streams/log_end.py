"""The end of a partition's log as Fetch responses report it, not as ListOffsets does.

The embedded broker (Tansu 0.6) answers ListOffsets - librdkafka's `get_watermark_offsets`,
aiokafka's `end_offsets` - with the base offset of the newest record batch + 1, not the log end:
20 records in two batches of 10 report an end of 11 (`benchmarks/tansu_list_offsets.py`
reproduces it). The high watermark in a Fetch response is right, and fetching from inside a batch
works. So anything that compares a position with the end of a log - state recovery, lag,
"caught up" checks - reads the end here: ListOffsets for a lower bound, then one fetch from just
below it, whose response carries the true high watermark. Against Apache Kafka both agree and the
fetch costs one round trip.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from producers.kafka_options import KafkaSecurity, librdkafka_options

LIBRDKAFKA_LOG = logging.getLogger("sessionwatch.librdkafka")


class LogEnds:
    """Reads true log ends with one private, group-less consumer (never commits)."""

    def __init__(self, config: Mapping[str, Any], timeout_s: float = 10.0) -> None:
        conf = {k: v for k, v in config.items()
                if k.startswith(("bootstrap.", "security.", "ssl.", "sasl."))}
        conf.update({"group.id": f"sessionwatch-log-end-{uuid.uuid4()}",
                     "enable.auto.commit": False, "enable.partition.eof": False,
                     "fetch.wait.max.ms": 10, "log_level": 3,
                     # librdkafka's own lines through Python logging (JSON logs, redaction),
                     # not raw text on stderr
                     "logger": LIBRDKAFKA_LOG})
        self._consumer = Consumer(conf)
        self._timeout_s = timeout_s

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        """(low, high) of one partition; high is the offset after the last record."""
        return self.many([(topic, partition)])[(topic, partition)]

    def many(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        listed: dict[tuple[str, int], tuple[int, int]] = {}
        for topic, partition in partitions:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=self._timeout_s)
            listed[(topic, partition)] = (low, high)
        # Only a non-empty partition can hide records past the reported end.
        probe = {tp: lh for tp, lh in listed.items() if lh[1] > lh[0]}
        if not probe:
            return listed
        self._consumer.assign([TopicPartition(t, p, high - 1) for (t, p), (_, high) in probe.items()])
        try:
            waiting = set(probe)
            deadline = time.monotonic() + self._timeout_s
            while waiting and time.monotonic() < deadline:
                for msg in self._consumer.consume(num_messages=500, timeout=0.2):
                    if msg.error() is None:
                        waiting.discard((msg.topic(), msg.partition()))
            for tp, (low, high) in probe.items():
                _, fetched = self._consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
                listed[tp] = (low, max(high, fetched))
        finally:
            self._consumer.unassign()
        return listed

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> LogEnds:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GroupProbe:
    """Reads a group's commits (without joining it) and the true ends of `topics`; one pair of
    clients for as many reads as needed."""

    def __init__(self, bootstrap: str, group: str, topics: Iterable[str],
                 timeout_s: float = 10.0, security: KafkaSecurity | None = None) -> None:
        self._timeout_s = timeout_s
        connection = {"bootstrap.servers": bootstrap, **librdkafka_options(security)}
        self._consumer = Consumer({**connection, "group.id": group,
                                   "enable.auto.commit": False, "log_level": 3,
                                   "logger": LIBRDKAFKA_LOG})
        self._ends = LogEnds(connection, timeout_s)
        metadata = self._consumer.list_topics(timeout=timeout_s)
        self._parts = [(t, p) for t in topics if t in metadata.topics
                       for p in sorted(metadata.topics[t].partitions)]

    def positions(self) -> dict[tuple[str, int], tuple[int, int]]:
        """(committed offset or -1, true log end) for every partition."""
        committed = {(tp.topic, tp.partition): tp.offset for tp in self._consumer.committed(
            [TopicPartition(t, p) for t, p in self._parts], timeout=self._timeout_s)}
        highs = self._ends.many(self._parts)
        return {tp: (max(committed.get(tp, -1), -1), highs[tp][1]) for tp in self._parts}

    def close(self) -> None:
        self._consumer.close()
        self._ends.close()


def group_positions(bootstrap: str, group: str, topics: Iterable[str], timeout_s: float = 10.0,
                    security: KafkaSecurity | None = None,
                    ) -> dict[tuple[str, int], tuple[int, int]]:
    """(committed offset or -1, true log end) for every partition of `topics`, for `group`."""
    probe = GroupProbe(bootstrap, group, topics, timeout_s, security)
    try:
        return probe.positions()
    finally:
        probe.close()


def wait_caught_up(bootstrap: str, group: str, topics: Iterable[str], timeout_s: float = 60.0,
                   settle_s: float = 0.0, security: KafkaSecurity | None = None) -> bool:
    """True once `group` has committed up to the end of every partition of `topics` (and nothing
    moved for `settle_s`); False at the deadline. A partition without data counts as done."""
    probe = GroupProbe(bootstrap, group, topics, security=security)
    deadline = time.monotonic() + timeout_s
    stable_since: float | None = None
    last: dict[tuple[str, int], tuple[int, int]] = {}
    try:
        while time.monotonic() < deadline:
            positions = probe.positions()
            done = all(end == 0 or committed >= end for committed, end in positions.values())
            if done and positions == last:
                stable_since = stable_since or time.monotonic()
                if time.monotonic() - stable_since >= settle_s:
                    return True
            elif done and settle_s <= 0:
                return True
            else:
                stable_since = None
            last = positions
            time.sleep(0.2)
        return False
    finally:
        probe.close()
