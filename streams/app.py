"""The faust app "sessionwatch": topics, the session table and the session agent.

The agent only decodes, looks up state, calls the pure pipeline and publishes; all judgement is
in streams/pipeline.py. One malformed or unprocessable message goes to the dead-letter topic with
its reason and position; the agent never stops for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust
import msgspec

from producers.contract import (
    DEADLETTER_SCHEMA,
    DEADLETTER_TOPIC,
    EVENTS_TOPIC,
    FINDINGS_TOPIC,
    REVOCATIONS_TOPIC,
    decode_event,
    encode,
)
from producers.errors import InvalidEvent
from streams.enrich import Enricher
from streams.faust_tuning import TunedApp
from streams.pipeline import SessionPipeline
from streams.policy import Policy
from streams.session_store import SessionStore
from streams.settings import Settings

log = logging.getLogger("sessionwatch.worker")


class DeadLetter(msgspec.Struct, kw_only=True):
    """What lands on `sessionwatch.deadletter`: the input as received and why it was refused."""

    schema: str = DEADLETTER_SCHEMA
    reason: str          # machine-readable: not_json, invalid, unknown_schema, unsupported_major, …
    detail: str          # what was wrong and where
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str           # the message value, UTF-8 (undecodable bytes replaced)
    received_at: datetime


@dataclass
class WorkerStats:
    received: int = 0
    processed: int = 0
    deadlettered: int = 0
    duplicates: int = 0
    rekeyed: int = 0
    sessionless: int = 0
    findings: int = 0
    revocations: int = 0
    expired: int = 0
    # The latest event time seen (epoch s): "now" for expiry, so replays expire alike.
    watermark: float = 0.0


@dataclass
class Worker:
    app: faust.App
    pipeline: SessionPipeline
    store: SessionStore
    stats: WorkerStats


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
    pipeline = SessionPipeline(enricher, policy, session_ttl_s=settings.session_ttl_s)
    stats = WorkerStats()

    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    events = app.topic(EVENTS_TOPIC, partitions=settings.partitions, **raw)
    findings = app.topic(FINDINGS_TOPIC, **raw)
    revocations = app.topic(REVOCATIONS_TOPIC, **raw)
    deadletter = app.topic(DEADLETTER_TOPIC, **raw)
    # bytes/bytes makes faust use the raw codec both when writing the changelog and when
    # recovering from it (a Schema alone covers only the writes: recovery then decoded JSON).
    table = app.Table("sessions", partitions=settings.partitions, key_type=bytes,
                      value_type=bytes)
    # The store writes table.data (the local store) and hands back changelog records that the
    # agent publishes and awaits itself: see streams/session_store.py for why.
    store = SessionStore(table.data, flush_after_s=settings.state_flush_s)  # type: ignore[arg-type]
    changelog = table.changelog_topic

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
            if event.session is None:
                # auth.failed / credential.changed: the per-user and per-source agents
                # (not in this release) will consume these; validated and counted here.
                stats.sessionless += 1
                continue
            key = event.session.encode()
            if message.key != key:
                # State lives on the session's partition; a producer that keyed by something else
                # would split it, so route the event to where its session lives.
                stats.rekeyed += 1
                await events.send(key=key, value=item.value)
                continue
            try:
                outcome = pipeline.process(event, store.get(key), datetime.now(UTC))
            except Exception as exc:  # a bug in a detector must not stop the worker
                log.exception(
                    "processing failed at %s[%d]@%d", message.topic, message.partition,
                    message.offset,
                )
                await to_deadletter(message, "processing_error", f"{type(exc).__name__}: {exc}")
                continue
            if outcome.duplicate:
                stats.duplicates += 1
                continue
            stats.watermark = max(stats.watermark, event.time.timestamp())
            stats.processed += 1
            # Wait for the broker to confirm this event's state write and outputs before the loop
            # moves on: faust acks (and later commits) the offset when the body ends, and an
            # offset must never be committed ahead of the state or a revocation it caused.
            deliveries = [
                await changelog.send(key=record.key, value=record.value,
                                     partition=record.partition)
                for record in store.put(key, outcome, message.partition)
            ]
            for finding in outcome.findings:
                stats.findings += 1
                deliveries.append(await findings.send(key=key, value=encode(finding)))
            for revocation in outcome.revocations:
                stats.revocations += 1
                deliveries.append(await revocations.send(key=key, value=encode(revocation)))
                log.info(
                    "%s %s %s… (%s) on event %s", revocation.action.value, revocation.scope.value,
                    (revocation.session or revocation.user or revocation.source or "")[:12],
                    ", ".join(r.detector for r in revocation.reasons), event.id,
                )
            if deliveries:
                await asyncio.gather(*deliveries)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        store.clear()

    @app.timer(interval=300.0)
    async def sweep() -> None:
        if stats.watermark:
            tombstones = store.expire(stats.watermark - settings.session_ttl_s)
            stats.expired += len(tombstones)
            for record in tombstones:
                await changelog.send(key=record.key, value=None, partition=record.partition)

    last_log = [time.monotonic(), 0]

    @app.timer(interval=30.0)
    async def report() -> None:
        now = time.monotonic()
        rate = (stats.received - last_log[1]) / max(now - last_log[0], 1e-9)
        last_log[:] = [now, stats.received]
        log.info("stats: %s, %.0f events/s, %d sessions cached, %d state writes",
                 stats, rate, len(store), store.writes)

    return Worker(app=app, pipeline=pipeline, store=store, stats=stats)
