"""Wiring of `sessionwatch archive`: settings -> backend (ClickHouse server or chDB) -> archiver."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from producers.contract import Event
from producers.errors import ConfigError
from sessionwatch.shutdown import install_stop_handlers
from storage.archiver import TABLES, ArchiveOptions, Archiver

log = logging.getLogger("sessionwatch.archive")


def open_archive(settings: Any) -> Any:
    from storage.clickhouse import open_backend

    if not settings.clickhouse and not settings.chdb_dir:
        raise ConfigError("no archive configured; give --clickhouse clickhouse://host:9000/"
                          "sessionwatch (SESSIONWATCH_CLICKHOUSE) or --chdb DIR")
    return open_backend(
        settings.clickhouse or None, settings.chdb_dir or None,
        user=settings.clickhouse_user, password=settings.clickhouse_password.reveal(),
        secure=settings.clickhouse.startswith("clickhouses://"),
        ca_certs=settings.clickhouse_ca_certs or None)


def enricher(settings: Any) -> Any:
    """Country, network and client of each event, from the worker's own enrichment."""
    from streams.enrich import Enricher

    enrich = Enricher(settings.city_db or None, settings.asn_db or None)

    @lru_cache(maxsize=65_536)
    def network(ip: str) -> tuple[str, str, str]:
        found = enrich.network(ip)
        return found.country or "", found.asn or "", found.kind or ""

    @lru_cache(maxsize=16_384)
    def client(user_agent: str | None) -> str:
        if not user_agent:
            return ""
        found = enrich.client(user_agent)
        return f"{found.family} on {found.os}"

    def columns(event: Event) -> Mapping[str, str]:
        country, asn, kind = network(event.ip)
        return {"country": country, "asn": asn, "network_kind": kind,
                "client": client(event.user_agent)}

    return columns


def run_archive(settings: Any) -> int:
    # clickhouse-driver logs a traceback per refused connection; the archiver's own line says
    # "unavailable, retrying" once per attempt, which is what an operator needs.
    logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)
    backend = open_archive(settings)
    options = ArchiveOptions(bootstrap=settings.bootstrap, group=settings.archive_group,
                             batch_rows=settings.archive_batch_rows,
                             truncate_ip=bool(settings.archive_truncate_ip),
                             security=settings.kafka_security)
    archiver, server = _observed_archiver(settings, options, backend)
    try:
        return asyncio.run(_main(settings, archiver))
    finally:
        if server is not None:
            server.stop()


def _observed_archiver(settings: Any, options: ArchiveOptions, backend: Any) -> tuple[Archiver, Any]:
    """The archiver, with its metrics and health endpoint when metrics_port is set. Ready when
    its group has given it partitions and the archive answered its last call."""
    if not settings.metrics_port:
        return Archiver(options, backend, enricher(settings)), None
    from prometheus_client import CollectorRegistry

    from sessionwatch.metrics import ArchiverMetrics
    from sessionwatch.observability import Health
    from sessionwatch.run_observe import serve_metrics

    metrics = ArchiverMetrics(CollectorRegistry())
    health = Health()
    archiver = Archiver(options, backend, enricher(settings), metrics=metrics,
                        heartbeat=health.beat)
    health.add_check("joined", lambda: (archiver.ready.is_set(), "partitions assigned"
                                        if archiver.ready.is_set() else "waiting for partitions"))
    health.add_check("archive reachable", lambda: (archiver.available, backend.name))
    return archiver, serve_metrics(settings, metrics.registry, health)


async def _main(settings: Any, archiver: Archiver) -> int:
    from streams.topics import ensure_topics

    await asyncio.to_thread(ensure_topics, settings.bootstrap_servers, settings.partitions,
                            settings.replication, app_id=settings.app_id,
                            security=settings.kafka_security)
    install_stop_handlers(archiver.stop, "archive", loop=asyncio.get_running_loop())
    from storage.retention import parse_tenant_retention

    tenant_days = parse_tenant_retention(settings.archive_tenant_retention)
    retention = None
    if settings.archive_retention_days or any(tenant_days.values()):
        retention = asyncio.create_task(
            _retention(archiver, settings.archive_retention_days, tenant_days))
    try:
        await archiver.run()
    finally:
        if retention is not None:
            retention.cancel()
    return 0


async def _retention(archiver: Archiver, default_days: int, tenant_days: dict[str, int]) -> None:
    """Apply the retention plan (storage/retention.py) at start, then hourly."""
    from storage.retention import plan

    await archiver.ready.wait()
    while True:
        todo = plan(datetime.now(UTC), default_days, tenant_days)
        for table in TABLES.values():
            if todo.drop_before is not None:
                dropped = await archiver.db_call(archiver.backend.drop_partitions_before, table,
                                                 todo.drop_before)
                if dropped:
                    log.info("archive: dropped %d day partitions of %s before %s", dropped,
                             table, todo.drop_before)
            for deletion in todo.deletions:
                await archiver.db_call(lambda t=table, d=deletion: archiver.backend.delete_before(
                    t, d.cutoff_ms, tenants=d.tenants, except_tenants=d.except_tenants))
        await asyncio.sleep(3600)
