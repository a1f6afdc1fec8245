"""The live view's feed: the latest findings and revocations as they happen, from the broker
(`--bootstrap`) or, without one, from the archive; server-sent events carry them to the pages.

One background thread fills a bounded ring of items, each with a sequence number; every open page
reads the ring from the last number it saw, so a slow browser never holds the feed up.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from producers.contract import FINDINGS_TOPIC, REVOCATIONS_TOPIC
from storage import recent

log = logging.getLogger("sessionwatch.console.live")

RING = 1_000
ARCHIVE_POLL_S = 2.0


def finding_item(f: dict[str, Any]) -> dict[str, Any]:
    """A finding as the live table shows it."""
    return {"kind": "finding", "id": f["id"], "tenant": f["tenant"], "time": f["event_time"],
            "detector": f["detector"], "severity": f["severity"], "action": "",
            "scope": "session" if f.get("session") else ("user" if f.get("user") else "source"),
            "session": f.get("session") or "", "user": f.get("user") or "",
            "summary": f["summary"]}


def revocation_item(r: dict[str, Any]) -> dict[str, Any]:
    """A revocation as the live table shows it."""
    return {"kind": "revocation", "id": r["id"], "tenant": r["tenant"], "time": r["event_time"],
            "detector": ", ".join(r["detectors"]), "severity": r["severity"],
            "action": r["action"], "scope": r["scope"], "session": r.get("session") or "",
            "user": r.get("user") or "", "source": r.get("source") or "",
            "summary": "; ".join(x["summary"] for x in r["reasons"])}


def matches(item: dict[str, Any], filters: dict[str, str]) -> bool:
    """The live view's filters: tenant, detector (any of a revocation's), severity, action."""
    for key in ("tenant", "severity", "action"):
        if filters.get(key) and item.get(key) != filters[key]:
            return False
    wanted = filters.get("detector")
    return not wanted or wanted in [d.strip() for d in item["detector"].split(",")]


class LiveFeed:
    """A ring of the latest items; `since(seq)` returns what came after `seq`."""

    def __init__(self, size: int = RING) -> None:
        self._items: deque[tuple[int, dict[str, Any]]] = deque(maxlen=size)
        self._seq = 0
        self._seen: set[str] = set()
        self._order: deque[str] = deque()
        self._lock = threading.Lock()
        self.source = "none"
        self.stop = threading.Event()

    def add(self, item: dict[str, Any]) -> bool:
        """Add an item unless its id was seen (the broker and a redelivery may repeat one)."""
        with self._lock:
            key = f"{item['kind']}:{item['id']}"
            if key in self._seen:
                return False
            self._seen.add(key)
            self._order.append(key)
            while len(self._order) > 20 * RING:
                self._seen.discard(self._order.popleft())
            self._seq += 1
            self._items.append((self._seq, item))
            return True

    @property
    def seq(self) -> int:
        return self._seq

    def since(self, seq: int) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            return [(s, i) for s, i in self._items if s > seq]

    def close(self) -> None:
        self.stop.set()


def follow_archive(feed: LiveFeed, archive: Any, lookback: timedelta = timedelta(hours=1),
                   clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> threading.Thread:
    """Poll the archive every couple of seconds for findings and revocations not yet seen."""
    feed.source = "archive"

    def run() -> None:
        while not feed.stop.is_set():
            since = clock() - lookback
            try:
                items = ([finding_item(f) for f in recent.latest_findings(archive, since=since,
                                                                          limit=500)]
                         + [revocation_item(r) for r in recent.latest_revocations(
                             archive, since=since, limit=500)])
            except Exception as exc:  # the archive down for a moment: try again, say so once
                log.warning("live view: archive not readable (%s); retrying", type(exc).__name__)
                items = []
            for item in sorted(items, key=lambda i: (i["time"], i["id"])):
                feed.add(item)
            feed.stop.wait(ARCHIVE_POLL_S)

    thread = threading.Thread(target=run, name="console-live-archive", daemon=True)
    thread.start()
    return thread


def follow_broker(feed: LiveFeed, bootstrap: str, security: Any = None) -> threading.Thread:
    """Read `sessionwatch.findings` and `.revocations` from their end, without a consumer group
    (every console sees everything; nothing to commit). `security`: a KafkaSecurity or None."""
    from kafka import KafkaConsumer, TopicPartition

    from producers.kafka_options import kafka_python_options

    feed.source = "broker"

    def run() -> None:
        consumer = None
        while not feed.stop.is_set() and consumer is None:
            try:
                consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","),
                                         enable_auto_commit=False, fetch_max_wait_ms=100,
                                         **kafka_python_options(security))
                parts = [TopicPartition(t, p) for t in (FINDINGS_TOPIC, REVOCATIONS_TOPIC)
                         for p in sorted(consumer.partitions_for_topic(t) or ())]
                if not parts:
                    raise LookupError("no output topics yet")
                consumer.assign(parts)
                # Tansu's ListOffsets names the newest batch's start, so the feed may begin
                # with a few items from just before: shown once, like any other.
                consumer.seek_to_end()
            except Exception as exc:
                log.warning("live view: broker %s not ready (%s); retrying", bootstrap,
                            type(exc).__name__)
                if consumer is not None:
                    consumer.close()
                consumer = None
                feed.stop.wait(2.0)
        for record in _records(consumer, feed):
            try:
                data = json.loads(record.value)
                item = (finding_item(_finding_fields(data)) if record.topic == FINDINGS_TOPIC
                        else revocation_item(_revocation_fields(data)))
            except (ValueError, KeyError, TypeError):
                continue  # not ours to judge: the worker dead-letters, the console just skips
            feed.add(item)

    thread = threading.Thread(target=run, name="console-live-broker", daemon=True)
    thread.start()
    return thread


def _records(consumer: Any, feed: LiveFeed) -> Iterator[Any]:
    from storage.consuming import contiguous
    from storage.offset_holes import OffsetHoles

    if consumer is None:
        return
    holes = OffsetHoles()  # the embedded broker's Fetch holes are read again, not skipped
    try:
        while not feed.stop.is_set():
            for batch in contiguous(consumer, holes, consumer.poll(timeout_ms=500)).values():
                yield from batch
    finally:
        consumer.close()


def _finding_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {"id": data["id"], "tenant": data["tenant"], "event_time": data["event_time"],
            "detector": data["detector"], "severity": data["severity"],
            "session": data.get("session"), "user": data.get("user"), "summary": data["summary"]}


def _revocation_fields(data: dict[str, Any]) -> dict[str, Any]:
    reasons = data.get("reasons") or []
    severities = [r["severity"] for r in reasons]
    order = ["low", "medium", "high", "critical"]
    return {"id": data["id"], "tenant": data["tenant"], "event_time": data["event_time"],
            "detectors": [r["detector"] for r in reasons],
            "severity": max(severities, key=order.index) if severities else "low",
            "action": data["action"], "scope": data["scope"], "session": data.get("session"),
            "user": data.get("user"), "source": data.get("source"), "reasons": reasons}
