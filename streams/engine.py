"""The stream engine wiring: one Quix Streams application, three stages, the topics between them.

    sessionwatch.events ──► session stage (state per session) ──► findings, revocations
                                 ├──► <app_id>-by-user   ──► user stage (state per tenant+user)
                                 └──► <app_id>-by-source ──► source stage (windows per network)

Kafka consumer groups are the distributed engine: every worker process with the same `app_id`
takes a share of the partitions (at most one process per partition). Quix Streams gives each
stage's state a RocksDB (or memory) store per partition with a changelog topic, recovers it when
a partition moves, and commits input offsets only after the outputs and changelog records of a
checkpoint are confirmed (at-least-once). The stages are plain callables (streams/*_stage.py) that
this module hands to Quix; all judgement is in the pure pipelines they call.

Three things Quix does not do the way this deployment needs, done here in one place:
- the embedded broker under-reports log ends in ListOffsets, which Quix's recovery compares
  positions with; the consumer reads true ends instead (streams/log_end.py);
- the embedded broker can leave a hole in a Fetch at a partition's tail (a batch not stored yet
  while the one after it is); the consumer reads the hole again instead of skipping those
  events (storage/offset_holes.py);
- the stages keep per-partition memory (the source windows) that must be dropped when a
  partition is revoked; the application calls the stages' hooks on assign and revoke.
"""

from __future__ import annotations

import gc
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import KafkaError, TopicPartition
from quixstreams import Application, message_context
from quixstreams.internal_consumer import InternalConsumer
from quixstreams.kafka.configuration import ConnectionConfig
from quixstreams.models import TopicConfig
from quixstreams.state.memory import MemoryStore
from quixstreams.state.rocksdb import RocksDBOptions, RocksDBStore

from models.load import load_model
from producers.contract import EVENTS_TOPIC
from producers.kafka_options import librdkafka_options
from storage.offset_holes import OffsetHoles
from streams.enrich import Enricher
from streams.inputs import (
    Incoming,
    IncomingDeserializer,
    decode_forwarded_incoming,
    decode_incoming,
    decode_user_incoming,
    event_time_ms,
    log_fields,
)
from streams.log_end import LogEnds
from streams.model_reload import ModelReloader
from streams.outputs import Output, dead_letter
from streams.pipeline import SessionPipeline
from streams.policy import Policy
from streams.routing import by_source_topic, by_user_topic
from streams.session_stage import NO_METRICS, SessionStage, StageMetrics
from streams.settings import Settings
from streams.source_order import OrderedSource
from streams.source_pipeline import SourcePipeline
from streams.source_stage import SourceStage
from streams.state_size import StateGauges
from streams.stats import WorkerStats
from streams.topics import RETENTION_CONFIG
from streams.user_pipeline import UserPipeline
from streams.user_stage import UserStage

log = logging.getLogger("sessionwatch.worker")

# Quix's RocksDB defaults are sized for few, large partitions: 64 MB write buffers (x3) per store
# partition and a 1 GiB block cache. With two stores over many partitions that alone passes a
# gigabyte; our records are ~0.5 KB and read mostly once per event. Measured with 1M sessions
# (benchmarks/state_scale.py): see README "State, memory and recovery".
ROCKSDB_OPTIONS = RocksDBOptions(write_buffer_size=8 * 2**20, max_write_buffer_number=2,
                                 block_cache_size=128 * 2**20)


class _TrueEndConsumer(InternalConsumer):
    """Quix's consumer, reading log ends from Fetch responses rather than ListOffsets.

    Quix recovers a state partition up to its changelog's high watermark and refuses to start
    when the local store claims an offset at or past it. With Tansu's ListOffsets (the newest
    batch's base offset + 1) recovery would stop before the last batch - losing state updates -
    and a warm restart would be refused as "invalid offset".
    """

    log_ends: LogEnds | None = None
    # Offsets missing between two input records (not changelogs: compacted on a real Kafka, and
    # read only when recovering, when no one writes them) are read again.
    holes: OffsetHoles | None = None

    def poll(self, timeout: float | None = None) -> Any:
        msg = super().poll(timeout)
        if msg is None or msg.error() is not None or self._follows_on(msg):
            return msg
        return None   # a hole before it: sought back; this one comes again after the hole

    def consume(self, num_messages: int = 1, timeout: float | None = None) -> list[Any]:
        messages = super().consume(num_messages=num_messages, timeout=timeout)
        holed: set[tuple[str, int]] = set()
        kept = []
        for msg in messages:
            if msg.error() is None and (msg.topic(), msg.partition()) in holed:
                continue
            if msg.error() is not None or self._follows_on(msg):
                kept.append(msg)
            else:
                holed.add((msg.topic(), msg.partition()))
        return kept

    def _follows_on(self, msg: Any) -> bool:
        """False after seeking back to the first missing offset of a hole before `msg`."""
        topic = self._topics.get(msg.topic())
        if self.holes is None or topic is None or topic.is_changelog:
            return True
        missing_from = self.holes.check((msg.topic(), msg.partition()), msg.offset())
        if missing_from is None:
            return True
        try:
            self.seek(TopicPartition(msg.topic(), msg.partition(), missing_from))
        except Exception as exc:  # noqa: BLE001 - cannot seek (revoked meanwhile): go on with it
            log.warning("worker: %s[%d]: could not seek back to %d (%s); going on from %d",
                        msg.topic(), msg.partition(), missing_from, exc, msg.offset())
            return True
        return False

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]:
        low, high = super().get_watermark_offsets(partition, timeout=timeout, cached=cached)
        if cached or high <= low or self.log_ends is None:
            return low, high
        return self.log_ends.watermarks(partition.topic, partition.partition)


class TrueEndApplication(Application):
    """Quix's Application with the true-end consumer (also used by benchmarks/_engine_job.py,
    so the engine comparison recovers state the way the worker does)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        consumer = self._consumer
        assert isinstance(consumer, _TrueEndConsumer)
        consumer.log_ends = LogEnds(self.config.broker_address.as_librdkafka_dict())
        consumer.holes = OffsetHoles()

    def _get_internal_consumer(self, on_error: Any = None,
                               extra_config_overrides: dict[str, Any] | None = None) -> Any:
        extra = {**self._config.consumer_extra_config, **(extra_config_overrides or {})}
        return _TrueEndConsumer(
            broker_address=self._config.broker_address,
            consumer_group=self._config.consumer_group,
            auto_offset_reset=self._config.auto_offset_reset,
            auto_commit_enable=False,
            max_partition_buffer_size=self._config.max_partition_buffer_size,
            extra_config=extra,
            on_error=on_error,
        )


class _Application(TrueEndApplication):
    """The worker's application: the true-end consumer, assign/revoke hooks, periodic tasks."""

    def __init__(self, *args: Any, on_assign: Callable[[list[TopicPartition]], None],
                 on_revoke: Callable[[list[TopicPartition]], None], **kwargs: Any) -> None:
        self._sw_on_assign = on_assign
        self._sw_on_revoke = on_revoke
        # When the group last took partitions without a revoke (session timed out): see run().
        self.partitions_lost_at: float | None = None
        super().__init__(*args, **kwargs)

    def _on_assign(self, consumer: Any, topic_partitions: list[TopicPartition]) -> None:
        self._forget_positions(topic_partitions)
        super()._on_assign(consumer, topic_partitions)
        self._sw_on_assign(topic_partitions)

    def _on_revoke(self, consumer: Any, topic_partitions: list[TopicPartition]) -> None:
        self._forget_positions(topic_partitions)
        try:
            super()._on_revoke(consumer, topic_partitions)
        finally:
            self._sw_on_revoke(topic_partitions)

    def _on_lost(self, consumer: Any, topic_partitions: list[TopicPartition]) -> None:
        self.partitions_lost_at = time.monotonic()
        self._forget_positions(topic_partitions)
        try:
            super()._on_lost(consumer, topic_partitions)
        finally:
            self._sw_on_revoke(topic_partitions)

    def _on_sigterm(self, *_: Any) -> None:
        """The first SIGTERM stops gracefully (the message in hand, a checkpoint, leaving the
        group); a second one, while that runs, ends the process at once."""
        log.info("worker: stopping (SIGTERM); send it again to exit at once")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        super()._on_sigterm()

    def _forget_positions(self, topic_partitions: list[TopicPartition]) -> None:
        holes = self.consumer.holes
        if holes is not None:
            holes.forget([(tp.topic, tp.partition) for tp in topic_partitions])

    def add_periodic_task(self, task: Callable[[], None]) -> None:
        """Run `task` on every pass of the processing loop (between messages)."""
        self._dataframe_registry.register_periodic_task(task)

    @property
    def recovering(self) -> bool:
        return bool(self._state_manager.recovery_required)

    @property
    def consumer(self) -> _TrueEndConsumer:
        consumer = self._consumer
        assert isinstance(consumer, _TrueEndConsumer)
        return consumer


class WorkerObserver(Protocol):
    """Hooks for the process's metrics and health (sessionwatch/run_worker.py): `tick` on every
    pass of the processing loop (between messages; not during state recovery, which blocks the
    loop), `revoked` for every partition taken away."""

    def tick(self, worker: Worker) -> None: ...
    def revoked(self, topic: str, partition: int) -> None: ...


@dataclass
class Worker:
    app: _Application
    stats: WorkerStats
    session_stage: SessionStage
    user_stage: UserStage
    source_stage: SourceStage
    assignment: set[tuple[str, int]] = field(default_factory=set)
    # The topics the stages read (not the changelogs): what consumer lag is measured on.
    input_topics: tuple[str, ...] = ()

    @property
    def recovering(self) -> bool:
        return self.app.recovering

    def input_partitions(self) -> list[tuple[str, int]]:
        owned = set(self.assignment)  # one C-level copy: readable from another thread (/readyz)
        return sorted((t, p) for t, p in owned if t in self.input_topics)

    def run(self) -> None:
        """Until stopped. Raises GroupMembershipLost when the coordinator dropped this member
        (its checkpoint could not commit): the caller starts afresh (sessionwatch/run_worker.py)."""
        from quixstreams.checkpointing.exceptions import CheckpointConsumerCommitError

        from streams import diagnostics

        diagnostics.install(self)
        try:
            self.app.run()
        except Exception as exc:
            refused = isinstance(exc, CheckpointConsumerCommitError) and exc.code in MEMBERSHIP_LOST
            lost_at = self.app.partitions_lost_at
            # Or the group took the partitions (on_lost closes their stores) while a checkpoint
            # was pending, and flushing it then failed ("partition is closed").
            if not refused and (lost_at is None or time.monotonic() - lost_at > LOST_WINDOW_S):
                raise
            raise GroupMembershipLost(f"{type(exc).__name__}: {exc}") from exc


# Commit errors that mean the group coordinator no longer counts this process as a member (its
# heartbeats went unanswered for the session timeout: the embedded broker on an overloaded
# machine did that for 6 s in benchmarks.soak). Quix ends `run()` on any failed commit; the
# partitions already went to the other members, which re-read from the last commit.
MEMBERSHIP_LOST = frozenset({
    KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.FENCED_INSTANCE_ID,
})


# A failure this soon after the group took our partitions away is taken as caused by it.
LOST_WINDOW_S = 60.0


class GroupMembershipLost(RuntimeError):
    """The worker's checkpoint could not commit because the group had dropped it."""


def create_worker(settings: Settings, policy: Policy | None = None, *,
                  metrics: StageMetrics = NO_METRICS,
                  observer: WorkerObserver | None = None) -> Worker:
    """`metrics`: what the stages count (sessionwatch/metrics.py: WorkerMetrics); `observer`:
    lag and health hooks. Both default to nothing (tests, benchmarks)."""
    policy = policy or Policy()
    # The learned score: verified before anything else starts (a bad artefact is refused with
    # a message naming the file), then reloadable (streams/model_reload.py).
    model = load_model(settings.model) if settings.model else None
    if model is None:
        log.info("session.anomaly: off (no model; `sessionwatch worker --model DIR` turns it on)")
    else:
        log.info("session.anomaly: model %s from %s (thresholds medium %.3f, high %.3f)",
                 model.version, settings.model, model.thresholds["medium"],
                 model.thresholds["high"])
    enricher = Enricher(city_db=settings.city_db or None, asn_db=settings.asn_db or None)
    # GeoIP files and ua-parser's matchers load now, not on the first event (~0.5 s measured).
    enricher.client("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0.0.0 Safari/537.36")
    enricher.network("8.8.8.8")
    # What is loaded by now (GeoIP tables: millions of objects) lives as long as the process:
    # keep the garbage collector from walking it on every full collection (~30 ms each).
    gc.freeze()
    stats = WorkerStats()
    by_user, by_source = by_user_topic(settings.app_id), by_source_topic(settings.app_id)
    assignment: set[tuple[str, int]] = set()
    ready = {"pending": False}

    def on_assign(tps: list[TopicPartition]) -> None:
        assignment.update((tp.topic, tp.partition) for tp in tps)
        ready["pending"] = True

    def on_revoke(tps: list[TopicPartition]) -> None:
        for tp in tps:
            assignment.discard((tp.topic, tp.partition))
            # The stages are built below, after the app; a revocation comes only once it runs.
            if tp.topic == by_source:
                source_stage.revoke(tp.partition)
            elif tp.topic == by_user:
                user_stage.revoke(tp.partition)
            if observer is not None:
                observer.revoked(tp.topic, tp.partition)
        ready["pending"] = True

    # One connection config (TLS, SASL) for Quix's consumer, producer and admin, and the
    # true-end reader (TrueEndApplication copies it).
    broker = ConnectionConfig.from_librdkafka_dict({
        "bootstrap.servers": ",".join(settings.bootstrap_servers),
        **librdkafka_options(settings.kafka_security)})
    app = _Application(
        broker_address=broker,
        consumer_group=settings.app_id,
        auto_offset_reset="earliest",
        commit_interval=settings.commit_interval_s,
        state_dir=str(settings.data_dir / "state"),
        rocksdb_options=ROCKSDB_OPTIONS,
        processing_guarantee="at-least-once",
        loglevel=None,  # our logging config applies (sessionwatch/cli.py)
        consumer_poll_timeout=0.05,
        consumer_extra_config={
            # Tansu holds a fetch that finds no data for the whole wait: bound it (latency).
            "fetch.wait.max.ms": settings.fetch_max_wait_ms,
            "session.timeout.ms": int(settings.session_timeout_s * 1000),
            "heartbeat.interval.ms": max(int(settings.session_timeout_s * 200), 100),
            "max.poll.interval.ms": int(settings.rebalance_timeout_s * 1000),
        },
        producer_extra_config={"linger.ms": 1},
        on_processing_error=lambda exc, row, _log: _processing_error(produce, exc, row),
        on_assign=on_assign,
        on_revoke=on_revoke,
    )
    topic_config = TopicConfig(num_partitions=settings.partitions,
                               replication_factor=settings.replication,
                               extra_config=dict(RETENTION_CONFIG))
    # Inputs are decoded once, by the consumer, and stamped with their event time (state TTLs
    # run on it: streams/inputs.py). Outputs are produced by name (`produce` below); the
    # worker created every topic at start (streams/topics.py).
    topics = {name: app.topic(name, value_deserializer=IncomingDeserializer(decode),
                              key_deserializer="bytes", config=topic_config,
                              timestamp_extractor=event_time_ms)
              for name, decode in ((EVENTS_TOPIC, decode_incoming),
                                   (by_user, decode_user_incoming),
                                   (by_source, decode_forwarded_incoming))}
    store_type = MemoryStore if settings.store == "memory" else RocksDBStore
    sessions = app.dataframe(topics[EVENTS_TOPIC])
    users = app.dataframe(topics[by_user])
    sources = app.dataframe(topics[by_source])
    for sdf in (sessions, users):
        sdf.register_store(store_type=store_type)
    # Outputs go to Quix's own producer: flushed, like the changelogs, before a checkpoint
    # commits the input offsets (at-least-once), without a Row and serializer per record.
    producer = sessions.processing_context.producer

    def produce(outputs: list[Output]) -> None:
        for out in outputs:
            producer.produce(topic=out.topic, key=out.key, value=out.value)

    def user_state_for(partition: int, key: bytes, timestamp_ms: int | None) -> Any:
        tx = users.processing_context.checkpoint.get_store_transaction(
            stream_id=users.stream_id, partition=partition)
        return tx.as_state(prefix=key, timestamp=timestamp_ms)

    session_stage = SessionStage(
        SessionPipeline(enricher, policy, session_ttl_s=settings.session_ttl_s,
                        track_behaviour=model is not None), enricher, stats,
        by_user, by_source, metrics=metrics)
    user_pipeline = UserPipeline(enricher, policy, model=model)
    reloader = ModelReloader(settings.model, model, user_pipeline.set_model) \
        if model is not None else None
    if reloader is not None:
        reloader.install()
    user_stage = UserStage(user_pipeline, stats, by_user,
                           settings.allowed_lateness_s, user_state_for, metrics=metrics)
    source_stage = SourceStage(
        lambda: OrderedSource(SourcePipeline(enricher, policy), settings.allowed_lateness_s),
        stats, by_source, metrics=metrics)

    def session_step(value: Any, key: Any, _ts: int, _headers: Any, state: Any) -> None:
        ctx = message_context()
        produce(session_stage(value, key, ctx.partition, ctx.offset, state))

    def user_step(value: Any, key: Any, _ts: int, _headers: Any, state: Any) -> None:
        ctx = message_context()
        produce(user_stage(value, key, ctx.partition, ctx.offset, state))

    def source_step(value: Any, key: Any, _ts: int, _headers: Any) -> None:
        ctx = message_context()
        produce(source_stage(value, key, ctx.partition, ctx.offset))

    sessions.update(session_step, stateful=True, metadata=True)
    users.update(user_step, stateful=True, metadata=True)
    sources.update(source_step, metadata=True)

    count_hole = getattr(metrics, "offset_hole", None)
    if callable(count_hole) and app.consumer.holes is not None:
        app.consumer.holes.on_hole = lambda key, outcome: count_hole(key[0], outcome)
    worker = Worker(app=app, stats=stats, session_stage=session_stage, user_stage=user_stage,
                    source_stage=source_stage, assignment=assignment,
                    input_topics=(EVENTS_TOPIC, by_user, by_source))
    last = {"at": time.monotonic(), "received": 0, "tick": 0.0}
    # sessionwatch_state_{entries,bytes}{store}: read from the stores every few seconds.
    set_state = getattr(metrics, "set_state", None)
    state_gauges = StateGauges(app._state_manager, {EVENTS_TOPIC: "session", by_user: "user"},
                               set_state) if callable(set_state) else None

    def periodic() -> None:
        now = time.monotonic()
        if ready["pending"] and not app.recovering:
            ready["pending"] = False
            inputs = sorted(f"{t}[{p}]" for t, p in assignment
                            if t in (EVENTS_TOPIC, by_user, by_source))
            log.info("worker: ready, %d input partition(s): %s", len(inputs),
                     ", ".join(inputs) or "none")
        if now - last["tick"] >= 0.05 and not app.recovering:
            last["tick"] = now
            produce(user_stage.tick())
            produce(source_stage.tick())
        if reloader is not None:
            reloader.poll(now)
        if observer is not None:
            observer.tick(worker)
        if state_gauges is not None:
            state_gauges.poll(now)
        if now - last["at"] >= 30.0:
            rate = (stats.received - last["received"]) / (now - last["at"])
            last.update(at=now, received=stats.received)
            holes = app.consumer.holes.stats if app.consumer.holes is not None else None
            log.info("stats: %s, %.0f events/s, waiting for lateness: %d users, %d source "
                     "events, holes read again %d, offsets missing %d", stats.line(), rate,
                     user_stage.waiting(), source_stage.waiting(),
                     holes.filled if holes else 0, holes.accepted if holes else 0)

    app.add_periodic_task(periodic)
    return worker


def _processing_error(produce: Callable[[list[Output]], None], exc: Exception, row: Any) -> bool:
    """Last line of defence: the stages catch their own errors, so anything that still escapes
    (a bug in the wiring) is logged with its position and the message dead-lettered; the
    worker goes on."""
    if row is None:
        log.error("unhandled processing error: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return True
    log.error("unhandled processing error at %s[%d]@%d: %s: %s", row.topic, row.partition,
              row.offset, type(exc).__name__, exc, exc_info=exc,
              extra=log_fields(row.topic, row.partition, row.offset, row.value))
    # The value was decoded by the consumer: dead-letter the bytes it came as.
    raw = row.value.raw if isinstance(row.value, Incoming) else row.value
    produce([dead_letter(row.topic, row.partition, row.offset, row.key, raw,
                         "processing_error", f"{type(exc).__name__}: {exc}")])
    return True
