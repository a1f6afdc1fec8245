"""Create the contract's topics when they are missing (the worker does this at start)."""

from __future__ import annotations

import logging
import time

from producers.contract import ALL_TOPICS, EVENTS_TOPIC
from producers.errors import SessionwatchError
from producers.kafka_options import KafkaSecurity, kafka_python_options
from streams.routing import by_source_topic, by_user_topic

log = logging.getLogger("sessionwatch.topics")

# Set on every topic we create. Apache Kafka fills in broker defaults when a client asks for a
# topic's config; the embedded broker (Tansu 0.6) returns only what was given at creation, and
# Quix Streams reads retention.ms/.bytes of the input topics to configure its changelogs.
RETENTION_CONFIG = {"retention.ms": str(7 * 86400 * 1000), "retention.bytes": "-1"}


def ensure_topics(
    bootstrap: list[str], partitions: int, replication: int = 1, timeout_s: float = 30.0,
    app_id: str = "sessionwatch", security: KafkaSecurity | None = None,
) -> int:
    """Create missing sessionwatch topics; returns the partition count of `sessionwatch.events`.

    Also creates the app's repartition topics (`<app_id>-by-user`, `<app_id>-by-source`).

    `sessionwatch.events` gets `partitions` partitions (the worker parallelism); the output topics
    get the same so that per-session order is kept end to end.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sessionwatch-admin",
                                     request_timeout_ms=10_000, **kafka_python_options(security))
            break
        except (KafkaError, OSError):
            if time.monotonic() > deadline:
                raise SessionwatchError(
                    f"bootstrap: no Kafka broker answers at {','.join(bootstrap)}; start one "
                    "(`sessionwatch broker`) or set --bootstrap / SESSIONWATCH_BOOTSTRAP"
                ) from None
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in ALL_TOPICS if t not in existing]
        created = []
        for topic in missing:
            try:
                admin.create_topics([NewTopic(topic, partitions, replication,
                                              topic_configs=RETENTION_CONFIG)])
                created.append(topic)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics %s (%d partitions)", ", ".join(created), partitions)
        described = admin.describe_topics([EVENTS_TOPIC])
        actual = len(described[0]["partitions"]) if described else partitions
        if actual != partitions:
            log.info("%s exists with %d partitions; using that (not %d)", EVENTS_TOPIC, actual,
                     partitions)
        # The repartition topics feed the user and source stages; their state is partitioned
        # like the events topic, so these must be too.
        for topic in (by_user_topic(app_id), by_source_topic(app_id)):
            if topic not in existing:
                try:
                    admin.create_topics([NewTopic(topic, actual, replication,
                                                  topic_configs=RETENTION_CONFIG)])
                except TopicAlreadyExistsError:
                    pass
        return actual
    finally:
        admin.close()
