"""The `feedback` table arrives as migration 2: a fresh archive gets it with the others, an
archive written before it gets it on the next migrate(), on ClickHouse 18.16 and on chDB."""

from __future__ import annotations

import pytest
from integration.conftest import ClickHouseServer

from storage.clickhouse import MIGRATIONS, ChdbBackend, ServerBackend
from storage.clickhouse.params import quote
from storage.clickhouse.schema import DATABASE, FEEDBACK, MIGRATIONS_TABLE, bootstrap_statements

pytestmark = pytest.mark.integration


def migrate_to_version_1(backend) -> None:
    """The archive as the release before `feedback` left it."""
    caps = backend.capabilities
    for sql in bootstrap_statements() + MIGRATIONS[0].statements(caps):
        backend._execute(sql)
    backend._execute(f"INSERT INTO {DATABASE}.{MIGRATIONS_TABLE} (version, name, applied_at) "
                     f"SELECT 1, {quote(MIGRATIONS[0].name)}, now()")


def tables(backend) -> set[str]:
    found = backend.query("SELECT name FROM system.tables WHERE database = 'sessionwatch'")
    return set(found["name"])


def check_upgrade(backend) -> None:
    migrate_to_version_1(backend)
    assert "feedback" not in tables(backend)
    # 0002 and every migration after it (0003_create_audit, ...).
    assert backend.migrate() == [m.label for m in MIGRATIONS[1:]]
    assert MIGRATIONS[1].label == "0002_create_feedback"
    assert backend.migrate() == []
    assert {"events", "findings", "revocations", "feedback"} <= tables(backend)
    described = backend.query(
        "SELECT name, type FROM system.columns WHERE database = 'sessionwatch' "
        "AND table = 'feedback'")
    types = dict(zip(described["name"], described["type"], strict=True))
    assert list(types) == [name for name, _ in FEEDBACK.columns]
    caps = backend.capabilities
    assert types["at"] == ("DateTime64(3, 'UTC')" if caps.datetime64 else "DateTime('UTC')")
    assert types["verdict"] == ("LowCardinality(String)" if caps.low_cardinality else "String")
    engine = backend.query("SELECT engine, sorting_key FROM system.tables WHERE database = "
                           "'sessionwatch' AND name = 'feedback'")
    assert engine["engine"][0] == "ReplacingMergeTree"
    assert engine["sorting_key"][0].replace(" ", "") == "tenant,target,time_ms,id"


def test_an_older_server_archive_gets_the_feedback_table(tmp_path) -> None:
    server = ClickHouseServer(tmp_path).start()  # a fresh server: the shared one is migrated
    backend = ServerBackend(server.url)
    try:
        check_upgrade(backend)
    finally:
        backend.close()
        server.stop()


def test_an_older_chdb_archive_gets_the_feedback_table(tmp_path) -> None:
    backend = ChdbBackend(str(tmp_path / "archive"))
    try:
        check_upgrade(backend)
    finally:
        backend.close()

