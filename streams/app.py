"""The faust app "sessionwatch": topics, tables and the session, user and source agents.

Agents only decode, look up state, call pure code and publish; all judgement is in the pipelines
(streams/pipeline.py, user_pipeline.py, source_pipeline.py). The session agent reads
`sessionwatch.events` and forwards to the user and source agents through the repartition topics
`<app_id>-by-user` and `<app_id>-by-source` (streams/routing.py). One malformed or
unprocessable message goes to the dead-letter topic with its reason and position; no agent ever
stops for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust

from producers.contract import (
    DEADLETTER_TOPIC,
    EVENTS_TOPIC,
    FINDINGS_TOPIC,
    REVOCATIONS_TOPIC,
    DeadLetter,
    Event,
    Finding,
    Revocation,
    Scope,
    decode_event,
    decode_revocation,
    encode,
)
from producers.errors import InvalidEvent
from streams.enrich import Enricher
from streams.faust_tuning import TunedApp
from streams.pipeline import SessionPipeline
from streams.policy import Policy
from streams.routing import (
    REVOCATION_PREFIX,
    by_source_topic,
    by_user_topic,
    for_source,
    for_user,
    output_key,
    revocation_for_user,
)
from streams.session_store import SessionStore
from streams.settings import Settings
from streams.source_pipeline import SourcePipeline, source_key
from streams.user_pipeline import UserPipeline
from streams.user_state import dump_user, load_user

log = logging.getLogger("sessionwatch.worker")


@dataclass
class WorkerStats:
    received: int = 0
    processed: int = 0
    deadlettered: int = 0
    duplicates: int = 0
    rekeyed: int = 0
    sessionless: int = 0
    user_events: int = 0
    source_events: int = 0
    findings: int = 0
    revocations: int = 0
    expired: int = 0
    # Seconds the session agent spent waiting for the broker to confirm its sends (where the
    # time goes: the rest is decoding, detectors, faust's own machinery and idle time).
    confirm_wait_s: float = 0.0
    # The latest event time seen (epoch s): "now" for expiry, so replays expire alike.
    watermark: float = 0.0


@dataclass
class Worker:
    app: faust.App
    pipeline: SessionPipeline
    store: SessionStore
    stats: WorkerStats
    users: UserPipeline | None = None
    sources: SourcePipeline | None = None


def create_app(settings: Settings, policy: Policy | None = None) -> Worker:
    broker = ";".join(f"kafka://{host}" for host in settings.bootstrap_servers)
    app = TunedApp(
        settings.app_id,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        broker=broker,
        store="memory://" if settings.store == "memory" else "rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=settings.max_poll_records,
        stream_buffer_maxsize=settings.stream_buffer_maxsize,
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        web_bind="127.0.0.1",
        # The agent awaits each state write and output: a linger would add to every one.
        producer_linger=0.0,
        broker_session_timeout=settings.session_timeout_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_heartbeat_interval=max(settings.session_timeout_s / 5, 0.5),
    )
    enricher = Enricher(city_db=settings.city_db or None, asn_db=settings.asn_db or None)
    policy = policy or Policy()
    pipeline = SessionPipeline(enricher, policy, session_ttl_s=settings.session_ttl_s)
    users = UserPipeline(enricher, policy)
    sources = SourcePipeline(enricher, policy)
    stats = WorkerStats()

    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    events = app.topic(EVENTS_TOPIC, partitions=settings.partitions, **raw)
    by_user = app.topic(by_user_topic(settings.app_id), partitions=settings.partitions,
                        internal=True, **raw)
    by_source = app.topic(by_source_topic(settings.app_id), partitions=settings.partitions,
                          internal=True, **raw)
    findings = app.topic(FINDINGS_TOPIC, **raw)
    revocations = app.topic(REVOCATIONS_TOPIC, **raw)
    deadletter = app.topic(DEADLETTER_TOPIC, **raw)
    # bytes/bytes makes faust use the raw codec both when writing the changelog and when
    # recovering from it (a Schema alone covers only the writes: recovery then decoded JSON).
    table = app.Table("sessions", partitions=settings.partitions, key_type=bytes,
                      value_type=bytes)
    user_table = app.Table("users", partitions=settings.partitions, key_type=bytes,
                           value_type=bytes)
    # The stores write table.data (the local store) and hand back changelog records that the
    # agents publish and await themselves: see streams/session_store.py for why.
    store = SessionStore(table.data, flush_after_s=settings.state_flush_s)  # type: ignore[arg-type]
    user_store = SessionStore(user_table.data, flush_after_s=settings.state_flush_s,  # type: ignore[arg-type]
                              dump=dump_user, load=load_user)
    changelog = table.changelog_topic
    user_changelog = user_table.changelog_topic

    async def to_deadletter(message: Any, reason: str, detail: str) -> None:
        stats.deadlettered += 1
        value = message.value if isinstance(message.value, bytes) else b""
        record = DeadLetter(
            reason=reason,
            detail=detail[:2000],
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key.decode("utf-8", "replace") if message.key else None,
            value=value.decode("utf-8", "replace"),
            received_at=datetime.now(UTC),
        )
        log.warning(
            "dead-lettered %s[%d]@%d: %s: %s",
            message.topic, message.partition, message.offset, reason, detail[:200],
        )
        # Confirmed before the offset can be committed: dead-lettered input is never lost.
        await (await deadletter.send(key=message.key, value=encode(record)))

    async def publish(key: bytes, found: Iterable[Finding], decided: Iterable[Revocation],
                      event: Event) -> list[Awaitable[Any]]:
        """Send findings and revocations; returns the deliveries to await."""
        deliveries: list[Awaitable[Any]] = []
        for finding in found:
            stats.findings += 1
            deliveries.append(await findings.send(
                key=(finding.session or finding.user or finding.ip).encode(), value=encode(finding)))
        for revocation in decided:
            stats.revocations += 1
            deliveries.append(await revocations.send(key=output_key(revocation),
                                                     value=encode(revocation)))
            log.info(
                "%s %s %s… (%s) on event %s", revocation.action.value, revocation.scope.value,
                (revocation.session or revocation.user or revocation.source or "")[:12],
                ", ".join(r.detector for r in revocation.reasons), event.id,
            )
        return deliveries

    pending = app.pending_deliveries

    async def confirm_later(deliveries: list[Awaitable[Any]]) -> None:
        """The sends an event caused must be confirmed before its offset is committed: the
        consumer waits for them before each commit (streams/faust_tuning.py), so the agent moves
        on at once; it waits here only when too many are outstanding (backpressure)."""
        pending.add(deliveries)  # type: ignore[arg-type]
        if pending.full:
            began = time.perf_counter()
            await pending.drain()
            stats.confirm_wait_s += time.perf_counter() - began

    @app.agent(events, name="sessionwatch.session_agent")
    async def session_agent(stream: faust.StreamT[bytes]) -> None:
        async for item in stream.events():
            message = item.message
            stats.received += 1
            try:
                event = decode_event(item.value)
            except InvalidEvent as exc:
                await to_deadletter(message, exc.code, exc.detail)
                continue
            deliveries: list[Awaitable[Any]] = []
            state = None
            if event.session is not None:
                key = event.session.encode()
                if message.key != key:
                    # State lives on the session's partition; a producer that keyed by something
                    # else would split it, so route the event to where its session lives.
                    stats.rekeyed += 1
                    await events.send(key=key, value=item.value)
                    continue
                try:
                    outcome = pipeline.process(event, store.get(key), datetime.now(UTC))
                except Exception as exc:  # a bug in a detector must not stop the worker
                    log.exception("processing failed at %s[%d]@%d", message.topic,
                                  message.partition, message.offset)
                    await to_deadletter(message, "processing_error",
                                        f"{type(exc).__name__}: {exc}")
                    continue
                if outcome.duplicate:
                    stats.duplicates += 1
                    continue
                state = outcome.state
                stats.processed += 1
                # Wait for the broker to confirm this event's state write, outputs and forwards
                # before the loop moves on: faust acks (and later commits) the offset when the
                # body ends, and an offset must never be committed ahead of what it caused.
                # (for_user below may mark a heartbeat in the state: put it after routing.)
                forward = for_user(event, item.value, state)
                deliveries = [
                    await changelog.send(key=record.key, value=record.value,
                                         partition=record.partition)
                    for record in store.put(key, outcome, message.partition)
                ]
                deliveries += await publish(key, outcome.findings, outcome.revocations, event)
                for revocation in outcome.revocations:
                    note = revocation_for_user(revocation) if revocation.scope is Scope.SESSION \
                        else None
                    if note is not None:
                        deliveries.append(await by_user.send(key=note[0], value=note[1]))
            else:
                stats.sessionless += 1
                stats.processed += 1
                forward = for_user(event, item.value, None)
            stats.watermark = max(stats.watermark, event.time.timestamp())
            if forward is not None:
                deliveries.append(await by_user.send(key=forward[0], value=forward[1]))
            if for_source(event, state):
                network = enricher.network(event.ip)
                deliveries.append(await by_source.send(key=source_key(event, network.asn),
                                                       value=item.value))
            await confirm_later(deliveries)

    @app.agent(by_user, name="sessionwatch.user_agent")
    async def user_agent(stream: faust.StreamT[bytes]) -> None:
        async for item in stream.events():
            message = item.message
            stats.user_events += 1
            key = message.key
            try:
                if item.value.startswith(REVOCATION_PREFIX):
                    outcome = users.session_revoked(decode_revocation(item.value),
                                                    user_store.get(key))
                    event = None
                else:
                    event = decode_event(item.value)
                    outcome = users.process(event, user_store.get(key), datetime.now(UTC))
            except Exception as exc:  # forwarded by us, so a failure here is a bug: keep going
                log.exception("user processing failed at %s[%d]@%d", message.topic,
                              message.partition, message.offset)
                await to_deadletter(message, "processing_error", f"{type(exc).__name__}: {exc}")
                continue
            if outcome.duplicate:
                continue
            deliveries = [
                await user_changelog.send(key=record.key, value=record.value,
                                          partition=record.partition)
                for record in user_store.put(key, outcome, message.partition)
            ]
            if event is not None:
                deliveries += await publish(key, outcome.findings, outcome.revocations, event)
            await confirm_later(deliveries)

    @app.agent(by_source, name="sessionwatch.source_agent")
    async def source_agent(stream: faust.StreamT[bytes]) -> None:
        async for item in stream.events():
            message = item.message
            stats.source_events += 1
            try:
                event = decode_event(item.value)
                outcome = sources.process(event, datetime.now(UTC))
            except Exception as exc:
                log.exception("source processing failed at %s[%d]@%d", message.topic,
                              message.partition, message.offset)
                await to_deadletter(message, "processing_error", f"{type(exc).__name__}: {exc}")
                continue
            if outcome.findings or outcome.revocations:
                deliveries = await publish(message.key, outcome.findings, outcome.revocations,
                                           event)
                await confirm_later(deliveries)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        store.clear()
        user_store.clear()

    @app.timer(interval=300.0)
    async def sweep() -> None:
        if stats.watermark:
            tombstones = store.expire(stats.watermark - settings.session_ttl_s)
            stats.expired += len(tombstones)
            for record in tombstones:
                await changelog.send(key=record.key, value=None, partition=record.partition)
            for record in user_store.expire(stats.watermark - users.user_ttl_s):
                await user_changelog.send(key=record.key, value=None, partition=record.partition)

    @app.task
    async def install_task_dump() -> None:
        """`kill -USR1 <worker pid>` logs every asyncio task's stack: what an on-call engineer
        needs when a worker stops consuming without an error."""
        import io
        import signal

        def dump() -> None:
            out = io.StringIO()
            for task in asyncio.all_tasks():
                out.write(f"--- {task.get_name()}\n")
                coro: Any = task.get_coro()
                while coro is not None:  # the await chain, outermost first
                    frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                    if frame is not None:
                        out.write(f"    {frame.f_code.co_filename}:{frame.f_lineno} "
                                  f"{frame.f_code.co_name}\n")
                    coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
            try:  # what the consumer believes it may fetch (faust and aiokafka views)
                consumer: Any = app.consumer
                out.write(f"faust active={sorted(map(tuple, consumer._active_partitions or ()))} "
                          f"paused={sorted(map(tuple, consumer._paused_partitions))}\n")
                kafka = consumer._thread._consumer
                assignment = kafka._subscription.subscription.assignment
                for tp in sorted(kafka.assignment()):
                    st = assignment.state_value(tp)
                    ftp = next((t for t in consumer._read_offset if t.topic == tp.topic
                                and t.partition == tp.partition), None)
                    out.write(f"  {tp.topic}[{tp.partition}] paused={st.paused} "
                              f"position={getattr(st, '_position', None)} "
                              f"highwater={st.highwater} valid={st.has_valid_position} "
                              f"faust read={consumer._read_offset.get(ftp)} "
                              f"committed={consumer._committed_offset.get(ftp)} "
                              f"acked={list(consumer._acked.get(ftp, []))[-3:]} "
                              f"gap={sorted(consumer._gap.get(ftp, ()))[:3]}\n")
            except Exception as exc:  # diagnostics must never hurt
                out.write(f"(consumer state unavailable: {exc!r})\n")
            log.warning("asyncio tasks:\n%s", out.getvalue())

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)

    last_log = [time.monotonic(), 0]

    @app.timer(interval=30.0)
    async def report() -> None:
        now = time.monotonic()
        rate = (stats.received - last_log[1]) / max(now - last_log[0], 1e-9)
        last_log[:] = [now, stats.received]
        log.info("stats: %s, %.0f events/s, %d sessions cached, %d users cached, %d sources, "
                 "%d state writes", stats, rate, len(store), len(user_store), len(sources.state),
                 store.writes + user_store.writes)

    return Worker(app=app, pipeline=pipeline, store=store, stats=stats, users=users,
                  sources=sources)
