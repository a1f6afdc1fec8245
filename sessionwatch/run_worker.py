"""`sessionwatch worker`: topics, policy, the engine (streams/engine.py), and its metrics,
health and lag (the engine knows nothing of sessionwatch/: it gets these objects passed in)."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from confluent_kafka import TopicPartition

from sessionwatch.observability import Health
from sessionwatch.run_observe import serve_metrics, setup_logging

log = logging.getLogger("sessionwatch")

# Ready once every input partition is at most this many messages behind its log end: a few
# seconds of one partition's traffic at the rates measured (README "Metrics, health and logs").
READY_LAG_MESSAGES = 5_000
# State recovery blocks the processing loop (1M sessions: ~60 s from the changelog), and no
# heartbeat comes meanwhile: liveness allows for it; readiness says "recovering".
WORKER_ALIVE_S = 120.0
LAG_EVERY_S = 1.0
# librdkafka's "no offset yet" (OFFSET_INVALID): a position or watermark not known.
_INVALID = -1001


def run_worker(settings: Any) -> None:
    setup_logging(settings)  # first: importing the engine (Quix) already warns
    from sessionwatch.cli import kafka_preflight
    from streams.engine import GroupMembershipLost, create_worker
    from streams.topics import ensure_topics

    kafka_preflight(settings)
    observer = metrics = server = None
    if settings.metrics_port:
        from prometheus_client import CollectorRegistry

        from sessionwatch.metrics import WorkerMetrics

        metrics = WorkerMetrics(CollectorRegistry())
        observer = WorkerObserver(metrics, settings.app_id)
        # Bound before Kafka is touched: a taken port stops the worker at once.
        server = serve_metrics(settings, metrics.registry, observer.health)
    # The session table must have as many partitions as the events topic, whatever was asked.
    partitions = ensure_topics(settings.bootstrap_servers, settings.partitions,
                               settings.replication, app_id=settings.app_id,
                               security=settings.kafka_security)
    settings = settings.replace(partitions=partitions)
    policy = None
    if settings.policy:
        from streams.policy_file import describe_policy, load_policy

        policy = load_policy(settings.policy)
        log.info("policy: %s", describe_policy(policy))
    kwargs: dict[str, Any] = {} if metrics is None else {"metrics": metrics, "observer": observer}
    worker = create_worker(settings, policy, **kwargs)
    if observer is not None:
        observer.watch(worker)
    try:
        worker.run()
    except GroupMembershipLost as exc:
        if server is not None:
            server.stop()
            server = None
        restart_in_place(exc)
    finally:
        if server is not None:
            server.stop()


def restart_in_place(exc: Exception) -> None:
    """Start this same command afresh in this process (same pid, arguments and environment):
    Quix cannot rejoin a group from inside a failed `run()`, and a worker that exits on a
    coordinator's hiccup leaves detection to whatever supervisor there is. The new process
    rejoins, recovers its state (RocksDB: from the local store plus the changelog tail) and
    re-reads from the last commit; outputs are idempotent by id, so nothing is lost or doubled."""
    log.warning("worker: the group dropped this member (%s): the last checkpoint's offsets were "
                "not committed and will be re-read; restarting in place", exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.execv(sys.executable, list(sys.orig_argv))


class WorkerObserver:
    """streams.engine.WorkerObserver: heartbeat and lag on the loop's passes, readiness checks
    read what the loop last saw (the checks run in the HTTP server's thread)."""

    def __init__(self, metrics: Any, group: str, clock: Any = time.monotonic) -> None:
        self.metrics = metrics
        self.group = group
        self.clock = clock
        self.health = Health(max_age_s=WORKER_ALIVE_S)
        self._last_lag = 0.0
        # (topic, partition) -> messages behind; None until a Fetch told us the log end.
        self.lag: dict[tuple[str, int], int | None] = {}
        self._worker: Any = None
        # Registered now, before the endpoint serves: a worker still starting is not ready.
        self.health.add_check("owns partitions", self._owns)
        self.health.add_check("state recovered", self._recovered)
        self.health.add_check("caught up", self._caught_up)

    def watch(self, worker: Any) -> None:
        self._worker = worker

    def tick(self, worker: Any) -> None:
        self.health.beat()
        now = self.clock()
        if now - self._last_lag < LAG_EVERY_S:
            return
        self._last_lag = now
        consumer = worker.app.consumer
        lag: dict[tuple[str, int], int | None] = {}
        for topic, partition in worker.input_partitions():
            tp = TopicPartition(topic, partition)
            # cached=True: the high watermark of the last Fetch response, no broker round trip
            # (and not ListOffsets, which the embedded broker under-reports).
            low, high = consumer.get_watermark_offsets(tp, cached=True)
            (position,) = consumer.position([tp])
            if high < 0:
                lag[(topic, partition)] = None
                continue
            # No position yet (nothing consumed since the assignment): an empty partition is
            # caught up; otherwise count it as caught up too - librdkafka has no position to
            # compare until the first message, which a backlog delivers within a fetch.
            offset = position.offset if position.offset >= 0 else high
            self.metrics.set_lag(topic, partition, high, offset, self.group)
            lag[(topic, partition)] = max(high - offset, 0)
        self.lag = lag

    def revoked(self, topic: str, partition: int) -> None:
        self.metrics.forget_partition(topic, partition, self.group)
        self.lag.pop((topic, partition), None)

    def _owns(self) -> tuple[bool, str]:
        if self._worker is None:
            return False, "starting (creating topics, loading enrichment data)"
        owned = self._worker.input_partitions()
        return bool(owned), f"{len(owned)} input partition(s) assigned"

    def _recovered(self) -> tuple[bool, str]:
        if self._worker is None:
            return False, "starting"
        recovering = self._worker.recovering
        return not recovering, "recovering state from the changelogs" if recovering else "yes"

    def _caught_up(self) -> tuple[bool, str]:
        lag = dict(self.lag)
        if not lag:
            return False, "lag not measured yet"
        unknown = sorted(f"{t}[{p}]" for (t, p), n in lag.items() if n is None)
        if unknown:
            return False, f"log end not fetched yet: {', '.join(unknown[:5])}"
        worst = max(n or 0 for n in lag.values())
        return worst <= READY_LAG_MESSAGES, (f"at most {worst} message(s) behind "
                                             f"(bound {READY_LAG_MESSAGES})")
