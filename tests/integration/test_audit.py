"""The console's storage on both backends (Debian's ClickHouse 18.16 and chDB): the audit table
(migration 3, storage/audit.py) and manual revocations (storage/manual.py) in the archive.

The server and the chDB directory are shared with other tests: each test writes under its own
actor or tenant and reads only those.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from integration.conftest import ClickHouseServer

from producers.contract import Action, Scope, decode_revocation, encode
from storage import feedback, queries
from storage.audit import AuditError, audit_log, record_action
from storage.clickhouse import MIGRATIONS, ChdbBackend, ServerBackend
from storage.clickhouse.params import quote
from storage.clickhouse.rows import revocation_row
from storage.clickhouse.schema import AUDIT, DATABASE, MIGRATIONS_TABLE, bootstrap_statements
from storage.manual import manual_revocation
from storage.replay import read_revocations

pytestmark = pytest.mark.integration

AT = datetime(2031, 7, 1, 10, 0, tzinfo=UTC)   # a day of their own: retention tests drop older






@pytest.fixture(params=["clickhouse", "chdb"])
def backend(request: pytest.FixtureRequest):
    return request.getfixturevalue("server_backend" if request.param == "clickhouse"
                                   else "chdb_backend")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- the audit trail -------------------------------------------------------------------------------


def test_actions_are_recorded_and_read_newest_first(backend) -> None:
    ann, ben = unique("ann"), unique("ben")
    written = [
        record_action(backend, actor=ann, role="", action="sign_in_failed", result="refused",
                      client="::ffff:127.0.0.1", at=AT, detail={"reason": "bad credentials"}),
        record_action(backend, actor=ann, role="responder", action="sign_in", client="127.0.0.1",
                      at=AT + timedelta(seconds=1)),
        record_action(backend, actor=ann, role="responder", action="lift_block",
                      target="r-lift-1", tenant="shop", client="127.0.0.1",
                      detail={"source": "203.0.113.0/24", "revocation": "r-lift-1",
                              "action": Action.LIFT},
                      at=AT + timedelta(seconds=2, milliseconds=250)),
        record_action(backend, actor=ben, role="viewer", action="revoke_session",
                      target="ab12", tenant="shop", result="refused", client="2001:DB8::7",
                      detail={"why": "viewers cannot act"}, at=AT + timedelta(seconds=3)),
    ]
    # Written twice (a retried request): still one row each.
    backend.insert("audit", [e.row() for e in written])

    mine = audit_log(backend, actor=ann)
    assert list(mine["action"]) == ["lift_block", "sign_in", "sign_in_failed"]
    assert list(mine["id"]) == [e.id for e in reversed(written[:3])]
    first = mine.iloc[0]
    assert first["at"] == AT + timedelta(seconds=2, milliseconds=250)  # ms survive on 18.16
    assert first["detail"] == {"action": "lift", "revocation": "r-lift-1",
                               "source": "203.0.113.0/24"}
    assert (first["target"], first["tenant"], first["role"], first["result"]) == (
        "r-lift-1", "shop", "responder", "ok")
    assert list(mine["client"]) == ["127.0.0.1"] * 3            # IPv4-mapped as IPv4
    assert mine.iloc[2]["role"] == "" and mine.iloc[2]["result"] == "refused"

    assert list(audit_log(backend, actor=ann, action="sign_in")["id"]) == [written[1].id]
    window = audit_log(backend, since=AT + timedelta(seconds=1), until=AT + timedelta(seconds=3))
    assert {written[1].id, written[2].id} <= set(window["id"])
    assert written[0].id not in set(window["id"]) and written[3].id not in set(window["id"])
    assert list(audit_log(backend, actor=ann, limit=1)["id"]) == [written[2].id]
    refused = audit_log(backend, actor=ben, tenant="shop")
    assert list(refused["client"]) == ["2001:db8::7"]
    assert list(refused["target"]) == ["ab12"]
    assert list(audit_log(backend, target="r-lift-1", actor=ann)["id"]) == [written[2].id]


def test_an_empty_log_has_the_columns(backend) -> None:
    empty = audit_log(backend, actor=unique("nobody"))
    assert empty.empty
    assert list(empty.columns) == ["id", "at", "actor", "role", "action", "target", "tenant",
                                   "result", "detail", "client"]
    assert str(empty["at"].dtype) == "datetime64[ns, UTC]"


def test_secrets_never_reach_the_table(backend) -> None:
    actor = unique("eve")
    for detail in ({"password": "hunter2"}, {"csrf_token": "x"}, {"cookie": "sid=1"},
                   {"form": {"note": "free text"}}, {"headers": [{"Authorization": "Bearer x"}]}):
        with pytest.raises(AuditError, match="never holds passwords"):
            record_action(backend, actor=actor, role="responder", action="verdict",
                          detail=detail, at=AT)
    assert audit_log(backend, actor=actor).empty


# -- the migration ---------------------------------------------------------------------------------


def migrate_to(backend, version: int) -> None:
    """The archive as the release with migrations 1..version left it."""
    caps = backend.capabilities
    for sql in bootstrap_statements():
        backend._execute(sql)
    for migration in MIGRATIONS[:version]:
        for sql in migration.statements(caps):
            backend._execute(sql)
        backend._execute(f"INSERT INTO {DATABASE}.{MIGRATIONS_TABLE} (version, name, applied_at) "
                         f"SELECT {migration.version}, {quote(migration.name)}, now()")


def tables(backend) -> set[str]:
    found = backend.query("SELECT name FROM system.tables WHERE database = 'sessionwatch'")
    return set(found["name"])


def check_upgrade(backend, from_version: int) -> None:
    migrate_to(backend, from_version)
    assert "audit" not in tables(backend)
    assert backend.migrate() == [m.label for m in MIGRATIONS[from_version:]]
    assert backend.migrate() == []
    assert {"events", "findings", "revocations", "feedback", "audit"} <= tables(backend)
    described = backend.query(
        "SELECT name, type FROM system.columns WHERE database = 'sessionwatch' "
        "AND table = 'audit'")
    types = dict(zip(described["name"], described["type"], strict=True))
    assert list(types) == [name for name, _ in AUDIT.columns]
    caps = backend.capabilities
    assert types["at"] == ("DateTime64(3, 'UTC')" if caps.datetime64 else "DateTime('UTC')")
    assert types["action"] == ("LowCardinality(String)" if caps.low_cardinality else "String")
    assert types["client"] == "String" and types["detail"] == "String"
    engine = backend.query("SELECT engine, sorting_key FROM system.tables WHERE database = "
                           "'sessionwatch' AND name = 'audit'")
    assert engine["engine"][0] == "ReplacingMergeTree"
    assert engine["sorting_key"][0].replace(" ", "") == "time_ms,id"
    entry = record_action(backend, actor="ann", role="responder", action="sign_in", at=AT)
    assert list(audit_log(backend)["id"]) == [entry.id]


@pytest.mark.parametrize("from_version", [1, 2])
def test_an_older_server_archive_gets_the_audit_table(tmp_path, from_version: int) -> None:
    server = ClickHouseServer(tmp_path).start()  # a fresh server: the shared one is migrated
    backend = ServerBackend(server.url)
    try:
        check_upgrade(backend, from_version)
    finally:
        backend.close()
        server.stop()


@pytest.mark.parametrize("from_version", [1, 2])
def test_an_older_chdb_archive_gets_the_audit_table(tmp_path, from_version: int) -> None:
    backend = ChdbBackend(str(tmp_path / "archive"))
    try:
        check_upgrade(backend, from_version)
    finally:
        backend.close()


# -- manual revocations in the archive --------------------------------------------------------------


def test_manual_revocations_archive_and_read_back_without_events(backend) -> None:
    tenant = unique("console")
    revoke = manual_revocation(tenant=tenant, scope=Scope.SESSION, action=Action.REVOKE,
                               session="ab12", user="alice", admin="ann", note="looked bad",
                               now=AT)
    user = manual_revocation(tenant=tenant, scope="user", action="revoke", user="bob",
                             admin="ann", note="", now=AT + timedelta(seconds=1))
    lift = manual_revocation(tenant=tenant, scope="source", action="lift",
                             source="203.0.113.0/24", admin="ann", note="",
                             now=AT + timedelta(seconds=2))
    made = [revoke, user, lift]
    assert all(decode_revocation(encode(r)) == r for r in made)  # what the topic carries
    backend.insert("revocations", [revocation_row(r) for r in made])

    listed = queries.revocations(backend, AT, AT + timedelta(minutes=1), tenant)
    assert list(listed["id"]) == [r.id for r in made]
    assert list(listed["action"]) == ["revoke", "revoke", "lift"]
    assert list(listed["events"]) == [[], [], []]
    assert list(listed["evidence"]) == [{}, {}, {}]
    assert [r[0]["detector"] for r in listed["reasons"]] == ["console.manual"] * 3
    assert "looked bad" not in json.dumps(list(listed["reasons"]))

    # A verdict on a manual revocation finds its target with no events to look through.
    verdict = feedback.record_verdict(backend, user.id, "confirmed", "ben", at=AT)
    assert (verdict.tenant, verdict.session, verdict.user) == (tenant, None, "bob")
    verdict = feedback.record_verdict(backend, lift.id, "dismissed", "ben", at=AT)
    assert (verdict.session, verdict.user) == (None, None)

    # A backtest leaves them out (no policy reproduces a person's decision); asked, it reads them.
    assert read_revocations(backend, AT, AT + timedelta(minutes=1), tenant) == []
    archived = read_revocations(backend, AT, AT + timedelta(minutes=1), tenant, include_manual=True)
    assert [(r["id"], r["detectors"]) for r in archived] == [
        (r.id, ["console.manual"]) for r in made]


def test_a_bad_limit_or_range_is_refused(backend) -> None:
    for limit in (0, 10_001, True, "5"):
        with pytest.raises(AuditError, match="limit"):
            audit_log(backend, limit=limit)  # type: ignore[arg-type]
    with pytest.raises(AuditError, match="must be after"):
        audit_log(backend, since=AT, until=AT)
    with pytest.raises(AuditError, match="aware"):
        audit_log(backend, since=datetime(2031, 7, 1))
