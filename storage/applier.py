"""`sessionwatch apply`: consume `sessionwatch.revocations` and deliver each to every sink.

At least once, nothing lost: each sink has its own consumer group (`<group>-<sink>`) and commits
a partition's offsets only after every revocation up to there was delivered (or dead-lettered
because a receiver refused it for good). A sink that is unavailable is retried with capped,
jittered backoff for as long as it takes; its loop stops there, the other sinks' loops go on.
A message that is not a revocation goes to `sessionwatch.deadletter` with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from producers.contract import (
    DEADLETTER_TOPIC,
    REVOCATIONS_TOPIC,
    DeadLetter,
    Revocation,
    decode_revocation,
    encode,
)
from producers.kafka_options import KafkaSecurity, aiokafka_options
from storage.consuming import Backoff, commit, contiguous, group_consumer, report_lag
from storage.offset_holes import OffsetHoles
from storage.sinks import RejectedError, RetryableError, Sink

log = logging.getLogger("sessionwatch.apply")


@dataclass(frozen=True)
class ApplyOptions:
    bootstrap: str
    group: str = "sessionwatch-apply"
    topic: str = REVOCATIONS_TOPIC
    # Backoff while a sink is unavailable: first wait, doubling up to the cap, +-25 % jitter.
    backoff_s: float = 0.1
    backoff_max_s: float = 10.0
    # How often each sink's counters are logged.
    report_every_s: float = 30.0
    # aiokafka group timeouts, short as for the worker (Tansu holds JoinGroup that long).
    session_timeout_ms: int = 6000
    fetch_max_wait_ms: int = 20
    # TLS / SASL of the consumers and the dead-letter producer.
    security: KafkaSecurity = field(default_factory=KafkaSecurity)


class ApplyMetrics(Protocol):
    """What the applier reports for Prometheus (sessionwatch/metrics.py: ApplierMetrics)."""

    def delivered(self, sink: str, outcome: str = "delivered",
                  delay_s: float | None = None) -> None: ...
    def retried(self, sink: str) -> None: ...
    def set_unavailable(self, sink: str, unavailable: bool) -> None: ...
    def set_lag(self, topic: str, partition: int, high_watermark: int, position: int,
                group: str = "") -> None: ...
    def forget_partition(self, topic: str, partition: int, group: str = "") -> None: ...
    def offset_hole(self, topic: str, outcome: str) -> None: ...


class NoApplyMetrics:
    """The default: counts nothing (tests, an applier without a metrics port)."""

    def delivered(self, sink: str, outcome: str = "delivered",
                  delay_s: float | None = None) -> None:
        pass

    def retried(self, sink: str) -> None:
        pass

    def set_unavailable(self, sink: str, unavailable: bool) -> None:
        pass

    def set_lag(self, topic: str, partition: int, high_watermark: int, position: int,
                group: str = "") -> None:
        pass

    def forget_partition(self, topic: str, partition: int, group: str = "") -> None:
        pass

    def offset_hole(self, topic: str, outcome: str) -> None:
        pass


@dataclass
class SinkStats:
    delivered: int = 0        # written or sent
    unchanged: int = 0        # nothing to do: already applied, or not for this sink
    retries: int = 0          # attempts that failed and were retried
    dead_lettered: int = 0    # refused for good by the receiver, or not a revocation
    unavailable_since: float | None = None
    # decided_at -> delivered, wall clock, the last 1,000 deliveries (seconds)
    delays: list[float] = field(default_factory=list)

    def delay_p50_ms(self) -> float | None:
        if not self.delays:
            return None
        ordered = sorted(self.delays)
        return 1000 * ordered[len(ordered) // 2]


class Applier:
    """Runs one consumer loop per sink until `stop()`."""

    def __init__(self, options: ApplyOptions, sinks: Sequence[Sink], *,
                 metrics: ApplyMetrics | None = None,
                 heartbeat: Callable[[], None] | None = None) -> None:
        """`metrics`: counters and lag for Prometheus; `heartbeat`: called every second while
        the event loop turns (liveness; a sink retrying for an hour is alive, just not ready)."""
        if not sinks:
            raise ValueError("at least one sink is needed")
        self.options = options
        self.sinks = list(sinks)
        self.stats = {sink.name: SinkStats() for sink in self.sinks}
        self.metrics: ApplyMetrics = metrics or NoApplyMetrics()
        self.heartbeat = heartbeat
        self.joined: set[str] = set()           # sinks whose consumer has its partitions
        self._consumers: dict[str, Any] = {}
        self.holes: dict[str, OffsetHoles] = {}
        self._stopping = asyncio.Event()
        self._producer: Any = None
        self.ready = asyncio.Event()   # set once every sink's consumer has its partitions

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        from aiokafka import AIOKafkaProducer

        self._producer = AIOKafkaProducer(bootstrap_servers=self.options.bootstrap,
                                          client_id="sessionwatch-apply",
                                          **aiokafka_options(self.options.security))
        await self._producer.start()
        joined = [asyncio.Event() for _ in self.sinks]
        try:
            tasks = [asyncio.create_task(self._run_sink(sink, done), name=f"apply-{sink.name}")
                     for sink, done in zip(self.sinks, joined, strict=True)]
            tasks.append(asyncio.create_task(self._report(), name="apply-report"))
            tasks.append(asyncio.create_task(self._observe(), name="apply-observe"))
            ready = asyncio.create_task(self._wait_ready(joined))
            stopping = asyncio.create_task(self._stopping.wait())
            # A sink loop that dies (a bug, a broker gone for good) stops the process: a
            # supervisor restarting it beats an applier that silently stopped applying.
            done, _ = await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            stopping.cancel()
            if stopping in done:
                # Graceful: each sink loop finishes the revocation in hand, commits it and
                # leaves its group; a sink that never comes back waits for a second SIGTERM.
                sink_tasks = tasks[:len(self.sinks)]
                await asyncio.wait(sink_tasks)
                done = set(sink_tasks)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for task, result in zip(tasks, results, strict=True):
                if task in done and isinstance(result, BaseException):
                    raise result
        finally:
            await self._producer.stop()

    async def _wait_ready(self, joined: list[asyncio.Event]) -> None:
        await asyncio.gather(*(e.wait() for e in joined))
        self.ready.set()
        log.info("apply: ready; sinks %s", ", ".join(s.name for s in self.sinks))

    async def _run_sink(self, sink: Sink, joined: asyncio.Event) -> None:
        opts = self.options
        # Each sink's group reads its partitions without holes (storage/offset_holes.py).
        holes = self.holes[sink.name] = OffsetHoles(
            on_hole=lambda tp, outcome: self.metrics.offset_hole(tp.topic, outcome))
        consumer, assigned = group_consumer(
            opts.bootstrap, f"{opts.group}-{sink.name}", [opts.topic],
            f"sessionwatch-apply-{sink.name}", fetch_max_wait_ms=opts.fetch_max_wait_ms,
            session_timeout_ms=opts.session_timeout_ms, security=opts.security, holes=holes)
        await sink.start()
        await consumer.start()
        self._consumers[sink.name] = consumer
        self.metrics.set_unavailable(sink.name, False)
        try:
            if not await self._joined_or_stopping(assigned):
                return
            joined.set()
            self.joined.add(sink.name)
            while not self._stopping.is_set():
                batches = contiguous(consumer, holes,
                                     await consumer.getmany(timeout_ms=500, max_records=500))
                for tp, messages in batches.items():
                    for message in messages:
                        await self._handle(sink, message)
                        if self._stopping.is_set():
                            break  # commit up to the revocation in hand; the rest is redelivered
                    await commit(consumer, {tp: message.offset + 1}, log, f"apply {sink.name}")
                    if self._stopping.is_set():
                        break
        finally:
            self.joined.discard(sink.name)
            self._consumers.pop(sink.name, None)
            await consumer.stop()
            await sink.close()

    async def _joined_or_stopping(self, assigned: asyncio.Event) -> bool:
        """Wait for the group's partitions, or for stop() (a SIGTERM while the embedded broker
        holds the JoinGroup, or with the broker down); True if joined."""
        waits = [asyncio.ensure_future(assigned.wait()),
                 asyncio.ensure_future(self._stopping.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        return assigned.is_set() and not self._stopping.is_set()

    async def _handle(self, sink: Sink, message: Any) -> None:
        stats = self.stats[sink.name]
        try:
            revocation = decode_revocation(message.value)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            await self._dead_letter(sink, message, "not_a_revocation", str(exc))
            return
        backoff = Backoff(self.options.backoff_s, self.options.backoff_max_s)
        while True:
            try:
                changed = await sink.deliver(revocation, message.value)
            except RejectedError as exc:
                await self._dead_letter(sink, message, f"rejected_by_{sink.name}", str(exc),
                                        revocation)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - anything else: the receiver may recover
                stats.retries += 1
                self.metrics.retried(sink.name)
                if stats.unavailable_since is None:
                    stats.unavailable_since = time.monotonic()
                    self.metrics.set_unavailable(sink.name, True)
                kind = "unavailable" if isinstance(exc, RetryableError) else "failed"
                delay = backoff.next()
                log.warning("apply %s: %s %s[%d]@%d (%s: %s); retrying in %.1f s", sink.name, kind,
                            message.topic, message.partition, message.offset,
                            type(exc).__name__, exc, delay,
                            extra=_log_fields(message, revocation))
                await asyncio.sleep(delay)
                continue
            break
        if stats.unavailable_since is not None:
            log.info("apply %s: available again after %.1f s", sink.name,
                     time.monotonic() - stats.unavailable_since)
            stats.unavailable_since = None
            self.metrics.set_unavailable(sink.name, False)
        if changed:
            stats.delivered += 1
            delay = time.time() - revocation.decided_at.timestamp()
            stats.delays.append(delay)
            del stats.delays[:-1000]
            self.metrics.delivered(sink.name, "delivered", delay)
        else:
            stats.unchanged += 1
            self.metrics.delivered(sink.name, "unchanged")

    async def _dead_letter(self, sink: Sink, message: Any, reason: str, detail: str,
                           revocation: Revocation | None = None) -> None:
        self.stats[sink.name].dead_lettered += 1
        self.metrics.delivered(sink.name, "dead_lettered")
        record = DeadLetter(
            reason=reason, detail=detail[:2000], topic=message.topic,
            partition=message.partition, offset=message.offset,
            key=message.key.decode("utf-8", "replace") if message.key else None,
            value=bytes(message.value or b"").decode("utf-8", "replace"),
            received_at=datetime.now(UTC),
        )
        log.warning("apply %s: dead-lettered %s[%d]@%d: %s: %s", sink.name, message.topic,
                    message.partition, message.offset, reason, detail[:200],
                    extra=_log_fields(message, revocation))
        # Awaited before the offset can be committed: a refused revocation is never lost.
        await self._producer.send_and_wait(DEADLETTER_TOPIC, encode(record), key=message.key)

    async def _observe(self) -> None:
        """Every second: the heartbeat, and each sink group's lag per partition from the high
        watermark of its last Fetch (aiokafka's `highwater`) minus its position."""
        reported: dict[str, set[Any]] = {}
        while True:
            if self.heartbeat is not None:
                self.heartbeat()
            for name, consumer in list(self._consumers.items()):
                reported[name] = await report_lag(consumer, self.metrics,
                                                  f"{self.options.group}-{name}",
                                                  reported.get(name, set()))
            await asyncio.sleep(1.0)

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.options.report_every_s)
            for name, s in self.stats.items():
                p50 = s.delay_p50_ms()
                log.info("apply %s: %d delivered, %d unchanged, %d retries, %d dead-lettered%s%s",
                         name, s.delivered, s.unchanged, s.retries, s.dead_lettered,
                         "" if p50 is None else f", decided->applied p50 {p50:.0f} ms",
                         "" if s.unavailable_since is None else
                         f", UNAVAILABLE for {time.monotonic() - s.unavailable_since:.0f} s")


def _log_fields(message: Any, revocation: Revocation | None) -> dict[str, Any]:
    """`extra=` for a line about one message (sessionwatch/logs.py, CONTEXT_KEYS): where it was
    and, when it decoded, the revocation's tenant and id."""
    fields: dict[str, Any] = {"topic": message.topic, "partition": message.partition,
                              "offset": message.offset}
    if revocation is not None:
        fields["tenant"] = revocation.tenant
        fields["event_id"] = revocation.id
    return fields
