"""The soak's end checks: every event archived exactly once, every injected hijack enforced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks._soak_apps import sent_ids

TENANT = "default"


def archive_counts(svc: Any, table: str) -> dict[str, int]:
    from clickhouse_driver import Client

    client = Client("127.0.0.1", port=svc.clickhouse.tcp_port)
    try:
        distinct, rows = client.execute(f"SELECT uniqExact(id), count() FROM sessionwatch.{table}")[0]
        final = client.execute(f"SELECT count() FROM sessionwatch.{table} FINAL")[0][0]
    finally:
        client.disconnect()
    return {"distinct_ids": int(distinct), "rows": int(rows), "rows_final": int(final)}


def missing_from_archive(svc: Any, paths: list[Path]) -> dict[str, Any]:
    """The sent ids the archive lacks, and how many of them the events topic holds (lost by the
    broker or the SDK, or by the archiver)."""
    from clickhouse_driver import Client
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from producers.contract import EVENTS_TOPIC

    client = Client("127.0.0.1", port=svc.clickhouse.tcp_port)
    try:
        archived = {r[0] for r in client.execute("SELECT DISTINCT id FROM sessionwatch.events")}
    finally:
        client.disconnect()
    missing = sent_ids(paths) - archived
    consumer = Consumer({"bootstrap.servers": svc.broker.bootstrap, "group.id": "soak-scan",
                         "enable.auto.commit": False})
    meta = consumer.list_topics(EVENTS_TOPIC, timeout=10)
    consumer.assign([TopicPartition(EVENTS_TOPIC, p, OFFSET_BEGINNING)
                     for p in meta.topics[EVENTS_TOPIC].partitions])
    in_topic: set[str] = set()
    while batch := consumer.consume(10_000, timeout=3.0):  # read to the end: no ListOffsets
        for m in batch:
            if m.error() is None and (i := json.loads(m.value()).get("id")) in missing:
                in_topic.add(i)
    consumer.close()
    return {"count": len(missing), "in_topic": len(in_topic), "sample": sorted(missing)[:5]}


def redis_enforced(svc: Any, hijacks: list[Any]) -> tuple[int, int]:
    """(hijacks whose session key exists, those enforced only through a user key)."""
    from producers.revocation_keys import session_key, user_key

    client = svc.redis.client()
    pipe = client.pipeline(transaction=False)
    for h in hijacks:
        pipe.exists(session_key(TENANT, h.session))
        pipe.exists(user_key(TENANT, h.user))
    flags = pipe.execute()
    client.close()
    by_session = sum(1 for i in range(0, len(flags), 2) if flags[i])
    by_user = sum(1 for i in range(0, len(flags), 2) if not flags[i] and flags[i + 1])
    return by_session, by_user
