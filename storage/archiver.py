"""`sessionwatch archive`: events, findings and revocations from Kafka into ClickHouse or chDB.

One consumer group reads the three topics and writes batched, columnar inserts. Offsets are
committed only after the insert of everything read up to them succeeded; when the archive is
unavailable the same batch is retried with capped backoff for as long as it takes (nothing
lost; a redelivered batch collapses by `id` in the ReplacingMergeTree tables). A message the
contract does not accept never reaches a table: it is counted and skipped (the worker already
dead-letters malformed events with the reason). Every `report_every_s` the log shows rows/s per
table and the group's lag per topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from producers.contract import (
    EVENTS_TOPIC,
    FINDINGS_TOPIC,
    REVOCATIONS_TOPIC,
    Event,
    decode_event,
    decode_finding,
    decode_revocation,
)
from producers.errors import InvalidEvent
from producers.kafka_options import KafkaSecurity
from storage.clickhouse import ArchiveBackend, ArchiveUnavailable
from storage.clickhouse.rows import event_row, finding_row, revocation_row, truncate_ip
from storage.consuming import Backoff, commit, contiguous, group_consumer, report_lag
from storage.offset_holes import OffsetHoles

log = logging.getLogger("sessionwatch.archive")

TABLES = {EVENTS_TOPIC: "events", FINDINGS_TOPIC: "findings", REVOCATIONS_TOPIC: "revocations"}


@dataclass(frozen=True)
class ArchiveOptions:
    bootstrap: str
    group: str = "sessionwatch-archive"
    # A batch is written when it holds this many rows or is this old, whichever comes first.
    batch_rows: int = 50_000
    batch_age_s: float = 1.0
    truncate_ip: bool = False          # privacy: keep /24 (IPv4) or /48 (IPv6) only
    backoff_s: float = 0.2
    backoff_max_s: float = 10.0
    report_every_s: float = 30.0
    session_timeout_ms: int = 6000
    fetch_max_wait_ms: int = 50
    # TLS/SASL to the broker (producers/kafka_options.py); plaintext by default.
    security: KafkaSecurity = field(default_factory=KafkaSecurity)


class ArchiveMetrics(Protocol):
    """What the archiver reports for Prometheus (sessionwatch/metrics.py: ArchiverMetrics)."""

    def inserted(self, table: str, rows: int, seconds: float) -> None: ...
    def insert_failed(self, table: str) -> None: ...
    def set_lag(self, topic: str, partition: int, high_watermark: int, position: int,
                group: str = "") -> None: ...
    def forget_partition(self, topic: str, partition: int, group: str = "") -> None: ...
    def offset_hole(self, topic: str, outcome: str) -> None: ...


class NoArchiveMetrics:
    """The default: counts nothing (tests, an archiver without a metrics port)."""

    def inserted(self, table: str, rows: int, seconds: float) -> None:
        pass

    def insert_failed(self, table: str) -> None:
        pass

    def set_lag(self, topic: str, partition: int, high_watermark: int, position: int,
                group: str = "") -> None:
        pass

    def forget_partition(self, topic: str, partition: int, group: str = "") -> None:
        pass

    def offset_hole(self, topic: str, outcome: str) -> None:
        pass


# How often the observe task asks the archive `SELECT 1` (readiness: the archive reachable).
PROBE_EVERY_S = 10.0


@dataclass
class ArchiveStats:
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES.values(), 0))
    skipped: int = 0        # not contract-valid: never reaches a table
    batches: int = 0
    retries: int = 0
    lag: dict[str, int] = field(default_factory=dict)


class _Batch:
    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES.values()}
        self.offsets: dict[Any, int] = {}   # TopicPartition -> next offset to commit
        self.started = time.monotonic()

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows.values())


class Archiver:
    """Consume, convert, insert, then commit: until `stop()`."""

    def __init__(self, options: ArchiveOptions, backend: ArchiveBackend,
                 enrich: Callable[[Event], Mapping[str, str]] | None = None, *,
                 metrics: ArchiveMetrics | None = None,
                 heartbeat: Callable[[], None] | None = None) -> None:
        """`metrics`: rows, inserts and lag for Prometheus; `heartbeat`: called every second
        while the event loop turns (liveness; an archive down for an hour is not death)."""
        self.options = options
        self.backend = backend
        self.enrich = enrich
        self.metrics: ArchiveMetrics = metrics or NoArchiveMetrics()
        self.heartbeat = heartbeat
        # The archive answered the last call (insert, migrate or probe): readiness.
        self.available = False
        self.stats = ArchiveStats()
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()
        # Offsets missing between records handed over are read again (storage/offset_holes.py).
        self.holes = OffsetHoles(on_hole=lambda tp, outcome: self.metrics.offset_hole(
            tp.topic, outcome))
        # Backends are blocking clients and chDB wants one thread: all calls go through this one.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-db")

    def stop(self) -> None:
        self._stopping.set()

    async def db_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def run(self) -> None:
        applied = await self._retrying(self.backend.migrate, "migrate")
        if applied:
            log.info("archive: migrations applied: %s", ", ".join(applied))
        opts = self.options
        consumer, joined = group_consumer(
            opts.bootstrap, opts.group, list(TABLES), "sessionwatch-archive",
            fetch_max_wait_ms=opts.fetch_max_wait_ms, session_timeout_ms=opts.session_timeout_ms,
            security=opts.security, holes=self.holes, max_partition_fetch_bytes=8 * 1024 * 1024)
        await consumer.start()
        reporter = asyncio.create_task(self._report(consumer))
        observer = asyncio.create_task(self._observe(consumer))
        try:
            await joined.wait()
            self.ready.set()
            log.info("archive: ready; %s -> %s", ", ".join(TABLES), self.backend.name)
            batch = _Batch()
            # One batch is written while the next is read and converted: the insert's time on
            # the server overlaps our decoding. Batches are written and committed in order.
            writing: asyncio.Task[None] | None = None
            while not self._stopping.is_set():
                records = contiguous(consumer, self.holes,
                                     await consumer.getmany(timeout_ms=200, max_records=10_000))
                for tp, messages in records.items():
                    table = TABLES[tp.topic]
                    for message in messages:
                        row = self._row(tp.topic, message.value)
                        if row is not None:
                            batch.rows[table].append(row)
                    batch.offsets[tp] = messages[-1].offset + 1
                due = (len(batch) >= opts.batch_rows
                       or (batch.offsets and time.monotonic() - batch.started >= opts.batch_age_s))
                if due:
                    if writing is not None:
                        await writing
                    writing = asyncio.create_task(self._write(consumer, batch))
                    batch = _Batch()
            if writing is not None:
                await writing
            if batch.offsets:
                await self._write(consumer, batch)
        finally:
            reporter.cancel()
            observer.cancel()
            await consumer.stop()
            await self.db_call(self.backend.close)
            self._db.shutdown(wait=True)

    def _row(self, topic: str, value: bytes | None) -> dict[str, Any] | None:
        try:
            if topic == EVENTS_TOPIC:
                event = decode_event(value or b"")
                row = event_row(event, self.enrich(event) if self.enrich else None)
            elif topic == FINDINGS_TOPIC:
                row = finding_row(decode_finding(value or b""))
            else:
                row = revocation_row(decode_revocation(value or b""))
        except (InvalidEvent, msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            self.stats.skipped += 1
            return None
        if self.options.truncate_ip and row.get("ip"):
            row["ip"] = truncate_ip(row["ip"])
        return row

    async def _write(self, consumer: Any, batch: _Batch) -> None:
        await self._flush(batch)
        await commit(consumer, batch.offsets, log, "archive")

    async def _flush(self, batch: _Batch) -> None:
        for table, rows in batch.rows.items():
            if rows:
                await self._retrying(lambda t=table, r=rows: self._insert(t, r),
                                     f"insert into {table}", table)
                self.stats.rows[table] += len(rows)
        self.stats.batches += 1

    def _insert(self, table: str, rows: list[dict[str, Any]]) -> int:
        started = time.perf_counter()
        inserted = self.backend.insert(table, rows)
        self.metrics.inserted(table, len(rows), time.perf_counter() - started)
        return inserted

    async def _retrying(self, fn: Callable[[], Any], what: str, table: str | None = None) -> Any:
        backoff = Backoff(self.options.backoff_s, self.options.backoff_max_s)
        down_since: float | None = None
        while True:
            try:
                result = await self.db_call(fn)
            except ArchiveUnavailable as exc:
                self.available = False
                if table is not None:
                    self.metrics.insert_failed(table)
                self.stats.retries += 1
                if down_since is None:
                    down_since = time.monotonic()
                delay = backoff.next()
                log.warning("archive: %s: unavailable (%s); retrying in %.1f s", what, exc, delay)
                await asyncio.sleep(delay)
                continue
            if down_since is not None:
                log.info("archive: available again after %.1f s", time.monotonic() - down_since)
            self.available = True
            return result

    async def _observe(self, consumer: Any) -> None:
        """Every second: the heartbeat and the lag per partition (the high watermark of the last
        Fetch minus the position); every PROBE_EVERY_S a `SELECT 1` to the archive."""
        group = self.options.group
        reported: set[Any] = set()
        last_probe = time.monotonic()
        while True:
            if self.heartbeat is not None:
                self.heartbeat()
            reported = await report_lag(consumer, self.metrics, group, reported)
            if time.monotonic() - last_probe >= PROBE_EVERY_S:
                last_probe = time.monotonic()
                try:
                    await self.db_call(self.backend.query, "SELECT 1")
                    self.available = True
                except Exception as exc:  # noqa: BLE001 - any failure: not reachable
                    if self.available:
                        log.warning("archive: probe failed (%s: %s)", type(exc).__name__, exc)
                    self.available = False
            await asyncio.sleep(1.0)

    async def _report(self, consumer: Any) -> None:
        last = dict(self.stats.rows)
        last_t = time.monotonic()
        while True:
            await asyncio.sleep(self.options.report_every_s)
            now = time.monotonic()
            rates = {t: (n - last[t]) / (now - last_t) for t, n in self.stats.rows.items()}
            last, last_t = dict(self.stats.rows), now
            lag: dict[str, int] = {}
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is not None:
                    position = await consumer.position(tp)
                    lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - position)
            self.stats.lag = lag
            holes = self.holes.stats
            log.info("archive: rows/s %s; total %s; lag %s; %d skipped, %d retries, "
                     "%d holes read again, %d offsets missing",
                     ", ".join(f"{t} {r:.0f}" for t, r in rates.items()),
                     ", ".join(f"{t} {n}" for t, n in self.stats.rows.items()),
                     ", ".join(f"{t} {n}" for t, n in lag.items()) or "-",
                     self.stats.skipped, self.stats.retries, holes.filled, holes.accepted)
