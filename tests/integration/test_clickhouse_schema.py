"""The archive schema on both backends: Debian's ClickHouse 18.16 server and chDB (modern).

Rows come from the contract structs through storage/clickhouse/rows.py. Tests share one server
and one chDB directory, so each writes under its own tenant (or its own old days).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from factories import T0, make_event
from integration.conftest import ClickHouseServer

from producers.contract import (
    Action,
    Event,
    Finding,
    Reason,
    Revocation,
    Scope,
    Severity,
    decode_event,
)
from producers.errors import ConfigError
from storage.clickhouse import (
    MIGRATIONS,
    ArchiveUnavailable,
    ChdbBackend,
    ServerBackend,
    open_backend,
)
from storage.clickhouse.frames import STRING_DTYPE
from storage.clickhouse.rows import (
    check_enrichment,
    event_row,
    finding_row,
    revocation_row,
    truncate_ip,
)
from storage.clickhouse.schema import TABLES

pytestmark = pytest.mark.integration

ALL_MIGRATIONS = [m.label for m in MIGRATIONS]






@pytest.fixture(params=["clickhouse", "chdb"])
def backend(request: pytest.FixtureRequest):
    return request.getfixturevalue("server_backend" if request.param == "clickhouse"
                                   else "chdb_backend")


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def event(tenant: str, at: float = 0.0, **kw) -> Event:
    kw.setdefault("session", f"s-{uuid.uuid4().hex[:8]}")
    return decode_event(json.dumps(make_event(tenant=tenant, at=at, **kw)))


def finding(ev: Event, detector: str = "session.ip_change",
            severity: Severity = Severity.HIGH) -> Finding:
    return Finding(id=f"f-{detector}-{ev.id}", tenant=ev.tenant, session=ev.session, user=ev.user,
                   ip=ev.ip, detector=detector, severity=severity, summary=f"{detector} fired",
                   evidence={"ip": ev.ip, "score": 0.9}, event_time=ev.time, events=[ev.id])


def revocation(ev: Event, *reasons: Reason, scope: Scope = Scope.SESSION,
               not_before: datetime | None = None, expires: datetime | None = None) -> Revocation:
    return Revocation(
        id=f"r-{scope.value}-{ev.id}", tenant=ev.tenant, scope=scope,
        session=ev.session if scope is Scope.SESSION else None, user=ev.user,
        source=ev.ip if scope is Scope.SOURCE else None,
        action=Action.BLOCK if scope is Scope.SOURCE else Action.REVOKE,
        not_before=not_before, expires=expires, reasons=list(reasons), event_time=ev.time,
        decided_at=ev.time + timedelta(seconds=2), events=[ev.id])


def scenario(name: str) -> tuple[list[Event], list[Finding], list[Revocation]]:
    """A few sessions' events (whole seconds), their findings and revocations."""
    events = [event(name, at=i * 7, ip=ip, user=f"u{i % 3}",
                    attrs={"path": f"/p/{i}", "n": i})
              for i, ip in enumerate(["73.162.10.20", "2001:db8::7", "172.56.20.30",
                                      "::ffff:167.99.10.10", "73.162.11.5", "2001:db8:0:1::9"])]
    findings = [finding(events[1]), finding(events[3], "session.ua_change", Severity.MEDIUM)]
    revocations = [
        revocation(events[1], findings[0].reason()),
        revocation(events[3], findings[1].reason(), findings[0].reason(), scope=Scope.USER,
                   not_before=events[3].time),
        revocation(events[3], findings[1].reason(), scope=Scope.SOURCE,
                   expires=events[3].time + timedelta(hours=1)),
    ]
    return events, findings, revocations


def insert_scenario(backend, events, findings, revocations) -> None:
    assert backend.insert("events", [event_row(e) for e in events]) == len(events)
    assert backend.insert("findings", [finding_row(f) for f in findings]) == len(findings)
    assert backend.insert("revocations", [revocation_row(r) for r in revocations]) == len(revocations)


# -- schema and migrations -------------------------------------------------------------------------


def test_migrate_twice_applies_nothing_the_second_time(backend) -> None:
    backend.migrate()
    assert backend.migrate() == []
    recorded = backend.query("SELECT version, name FROM sessionwatch.schema_migrations FINAL "
                             "ORDER BY version")
    assert [tuple(r) for r in recorded.itertuples(index=False)] == [
        (m.version, m.name) for m in MIGRATIONS]
    tables = backend.query(
        "SELECT name, engine, sorting_key FROM system.tables WHERE database = 'sessionwatch' "
        "AND name IN %(names)s ORDER BY name", {"names": tuple(TABLES)})
    assert list(tables["name"]) == sorted(TABLES)
    assert set(tables["engine"]) == {"ReplacingMergeTree"}
    for key in tables["sorting_key"]:
        assert key.replace(" ", "").split(",")[-1] == "id"


def test_a_fresh_chdb_directory_migrates_once_and_keeps_its_tables(tmp_path) -> None:
    backend = ChdbBackend(str(tmp_path / "archive"))
    try:
        assert backend.migrate() == ALL_MIGRATIONS
        assert backend.migrate() == []
    finally:
        backend.close()
    reopened = ChdbBackend(str(tmp_path / "archive"))
    try:
        assert reopened.migrate() == []
        assert reopened.query("SELECT count() AS n FROM sessionwatch.events")["n"][0] == 0
    finally:
        reopened.close()


def test_capabilities_are_detected(backend) -> None:
    caps = backend.capabilities
    if backend.name == "clickhouse":
        assert caps.server_version.startswith("18.16")
        assert (caps.ipv6_type, caps.datetime64, caps.low_cardinality) == (False, False, False)
    else:
        assert int(caps.server_version.split(".")[0]) >= 23
        assert (caps.ipv6_type, caps.datetime64, caps.low_cardinality) == (True, True, True)
    types = backend.query("SELECT name, type FROM system.columns WHERE database = 'sessionwatch' "
                          "AND table = 'events'")
    types = dict(zip(types["name"], types["type"], strict=True))
    assert list(types) == [name for name, _ in TABLES["events"].columns]
    assert types["ip"] == ("IPv6" if caps.ipv6_type else "String")
    assert types["time"] == ("DateTime64(3, 'UTC')" if caps.datetime64 else "DateTime('UTC')")
    assert types["tenant"] == ("LowCardinality(String)" if caps.low_cardinality else "String")
    assert types["session"] == "String"


# -- rows in, rows out -----------------------------------------------------------------------------


def test_duplicates_by_id_collapse(backend) -> None:
    name = tenant()
    events, findings, revocations = scenario(name)
    insert_scenario(backend, events, findings, revocations)
    # Redeliveries, in later inserts (other parts) and within one insert.
    backend.insert("events", [event_row(e) for e in events[:4] + events[:2]])
    backend.insert("findings", [finding_row(f) for f in findings])
    backend.insert("revocations", [revocation_row(r) for r in revocations[:2]])
    for table, rows in (("events", events), ("findings", findings), ("revocations", revocations)):
        counts = backend.query(
            f"SELECT count() AS n, uniqExact(id) AS ids FROM sessionwatch.{table} FINAL "
            "WHERE tenant = %(tenant)s", {"tenant": name})
        assert (counts["n"][0], counts["ids"][0]) == (len(rows), len(rows)), table
        ids = backend.query(f"SELECT uniqExact(id) AS ids FROM sessionwatch.{table} "
                            "WHERE tenant = %(tenant)s", {"tenant": name})
        assert ids["ids"][0] == len(rows)


ANALYST_QUERIES = {
    "events": "SELECT * FROM sessionwatch.events FINAL WHERE tenant = %(tenant)s "
              "ORDER BY time_ms, id",
    "findings": "SELECT * FROM sessionwatch.findings FINAL WHERE tenant = %(tenant)s "
                "ORDER BY time_ms, id",
    "revocations": "SELECT * FROM sessionwatch.revocations FINAL WHERE tenant = %(tenant)s "
                   "ORDER BY time_ms, id",
    "per_user": "SELECT user, count() AS events, uniqExact(session) AS sessions, "
                "min(time) AS first, max(time_ms) AS last_ms, toDate(min(time)) AS day "
                "FROM sessionwatch.events FINAL WHERE tenant = %(tenant)s AND time >= %(since)s "
                "GROUP BY user ORDER BY user",
    "by_ip": "SELECT id, ip FROM sessionwatch.events FINAL WHERE tenant = %(tenant)s "
             "AND ip IN %(ips)s ORDER BY id",
    # A DateTime without a zone is in the server's zone (Europe/Berlin here, UTC in chDB).
    "zoneless": "SELECT id, toDateTime(intDiv(time_ms, 1000)) AS t FROM sessionwatch.events "
                "FINAL WHERE tenant = %(tenant)s ORDER BY id",
    "literals": "SELECT %(tenant)s AS tenant, %(quote)s AS quote, %(n)s AS n, %(x)s AS x, "
                "%(day)s AS day, %(since)s AS since, %(none)s AS nothing, 'a%%' AS percent, "
                "%(tenant)s IN %(empty)s AS in_empty",
}


def test_the_same_query_gives_the_same_dataframe_on_both_backends(server_backend,
                                                                  chdb_backend) -> None:
    name = tenant()
    events, findings, revocations = scenario(name)
    for backend in (server_backend, chdb_backend):
        insert_scenario(backend, events, findings, revocations)
    params = {"tenant": name, "since": T0, "ips": ("73.162.10.20", "2001:db8::7"),
              "quote": "it's a \\ test", "n": 42, "x": 1.5, "day": date(2026, 3, 2), "none": None,
              "empty": ()}
    for label, sql in ANALYST_QUERIES.items():
        server = server_backend.query(sql, params)
        chdb = chdb_backend.query(sql, params)
        assert len(server) > 0, label
        pd.testing.assert_frame_equal(server, chdb, check_exact=True, obj=label)

    frame = server_backend.query(ANALYST_QUERIES["events"], params)
    assert frame["ip"].dtype == STRING_DTYPE and frame["id"].dtype == STRING_DTYPE
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    assert list(frame["time"]) == [e.time for e in events]
    assert json.loads(frame["attrs"][0]) == {"n": 0, "path": "/p/0"}
    revoked = server_backend.query(ANALYST_QUERIES["revocations"], params)
    assert str(revoked["not_before"].dtype) == "datetime64[ns, UTC]"
    assert revoked["not_before"].isna().sum() == 2 and revoked["expires"].isna().sum() == 2
    assert sorted(revoked["severity"]) == ["high", "high", "medium"]
    zoneless = server_backend.query(ANALYST_QUERIES["zoneless"], params)
    assert set(zoneless["t"]) == {e.time for e in events}
    literals = server_backend.query(ANALYST_QUERIES["literals"], params).iloc[0]
    assert (literals["quote"], literals["percent"], literals["in_empty"]) == (
        "it's a \\ test", "a%", 0)


def test_ipv4_and_ipv6_round_trip_as_the_same_strings(backend) -> None:
    name = tenant()
    given = {"73.162.10.20": "73.162.10.20", "::ffff:167.99.10.10": "167.99.10.10",
             "2001:DB8:0:0:0:0:0:7": "2001:db8::7", "::1": "::1", "fe80::1": "fe80::1"}
    rows = [event_row(event(name, at=i, ip=ip, id=f"{name}-{i}")) for i, ip in enumerate(given)]
    backend.insert("events", rows)
    out = backend.query("SELECT ip FROM sessionwatch.events FINAL WHERE tenant = %(tenant)s "
                        "ORDER BY time_ms", {"tenant": name})
    assert list(out["ip"]) == list(given.values())
    for ip in ("167.99.10.10", "2001:db8::7"):
        hit = backend.query("SELECT count() AS n FROM sessionwatch.events WHERE tenant = %(t)s "
                            "AND ip = %(ip)s", {"t": name, "ip": ip})
        assert hit["n"][0] == 1, ip


def test_time_ms_is_exact_and_time_as_precise_as_the_server_allows(backend) -> None:
    name = tenant()
    ev = event(name, at=1.237)
    backend.insert("events", [event_row(ev)])
    out = backend.query("SELECT time, time_ms FROM sessionwatch.events WHERE tenant = %(t)s",
                        {"t": name}).iloc[0]
    assert out["time_ms"] == int(ev.time.timestamp() * 1000) == 1772442001237
    expected = ev.time if backend.capabilities.datetime64 else ev.time.replace(microsecond=0)
    assert out["time"] == expected


def test_drop_partitions_before_removes_old_days_only(backend) -> None:
    name = tenant()
    # Days of their own (2001): other tests' partitions are not touched.
    times = [datetime(2001, 1, 1, 12, tzinfo=UTC), datetime(2001, 1, 2, 23, 59, 59, tzinfo=UTC),
             datetime(2001, 1, 3, tzinfo=UTC), datetime(2001, 1, 4, 8, tzinfo=UTC)]
    events = [event(name, at=(t - T0).total_seconds()) for t in times]
    backend.insert("events", [event_row(e) for e in events])
    backend.insert("findings", [finding_row(finding(events[0]))])
    assert backend.drop_partitions_before("events", date(2001, 1, 3)) == 2
    assert backend.drop_partitions_before("events", date(2001, 1, 3)) == 0
    left = backend.query("SELECT time FROM sessionwatch.events WHERE tenant = %(t)s ORDER BY time",
                         {"t": name})
    assert list(left["time"]) == times[2:]
    kept = backend.query("SELECT count() AS n FROM sessionwatch.findings WHERE tenant = %(t)s",
                         {"t": name})
    assert kept["n"][0] == 1
    with pytest.raises(ValueError, match="no archive table"):
        backend.drop_partitions_before("events; DROP TABLE x", date(2001, 1, 3))


def test_mistakes_propagate_and_are_not_unavailability(backend) -> None:
    with pytest.raises(Exception) as bad_sql:
        backend.query("SELECT no_such_column FROM sessionwatch.events")
    assert not isinstance(bad_sql.value, ArchiveUnavailable)
    with pytest.raises(ValueError, match="no column colour"):
        backend.insert("events", [{**event_row(event(tenant())), "colour": "red"}])
    with pytest.raises(ValueError, match="no archive table"):
        backend.insert("sessions", [{"id": "x"}])
    with pytest.raises(ValueError, match="no such parameter"):
        backend.query("SELECT %(missing)s", {"other": 1})
    injected = backend.query("SELECT count() AS n FROM sessionwatch.events WHERE tenant = %(t)s",
                             {"t": "x' OR 1 = 1 OR tenant = '"})
    assert injected["n"][0] == 0


# -- the server going away -------------------------------------------------------------------------


def test_archive_unavailable_while_the_server_is_down(tmp_path) -> None:
    server = ClickHouseServer(tmp_path).start()
    backend = ServerBackend(server.url)
    try:
        assert backend.migrate() == ALL_MIGRATIONS
        name = tenant()
        events = [event(name, at=i) for i in range(3)]
        backend.insert("events", [event_row(e) for e in events[:2]])
        server.kill()
        with pytest.raises(ArchiveUnavailable):
            backend.insert("events", [event_row(events[2])])
        with pytest.raises(ArchiveUnavailable):
            backend.query("SELECT 1")
        late = ServerBackend(server.url)  # building one while the server is down is fine
        with pytest.raises(ArchiveUnavailable):
            late.migrate()
        server.start()
        backend.insert("events", [event_row(e) for e in events])  # the retried batch
        assert backend.migrate() == []
        counts = backend.query("SELECT count() AS n FROM sessionwatch.events FINAL "
                               "WHERE tenant = %(t)s", {"t": name})
        assert counts["n"][0] == 3
        server.stop()  # a clean shutdown and restart keeps ports and data too
        with pytest.raises(ArchiveUnavailable):
            backend.query("SELECT 1")
        server.start()
        assert backend.query("SELECT count() AS n FROM sessionwatch.events FINAL "
                             "WHERE tenant = %(t)s", {"t": name})["n"][0] == 3
    finally:
        backend.close()
        server.stop()


def test_wrong_password_is_a_config_error(clickhouse_server: ClickHouseServer) -> None:
    backend = ServerBackend(clickhouse_server.url, password="not-the-password")
    with pytest.raises(ConfigError, match="clickhouse"):
        backend.migrate()
    assert "not-the-password" not in repr(backend)


# -- configuration and rows (no server needed) ------------------------------------------------------


def test_open_backend_takes_exactly_one_archive(tmp_path) -> None:
    for url, directory in ((None, None), ("clickhouse://127.0.0.1:9000/sessionwatch",
                                          str(tmp_path))):
        with pytest.raises(ConfigError, match="clickhouse, chdb"):
            open_backend(url, directory)
    server = open_backend("clickhouses://db.example:9440/sessionwatch", None, user="archiver",
                          password="s3cret", ca_certs=None)
    assert isinstance(server, ServerBackend) and server.secure and server.port == 9440
    assert "s3cret" not in repr(server)
    assert isinstance(open_backend(None, str(tmp_path), password=""), ChdbBackend)
    for bad in ("http://127.0.0.1:8123/", "clickhouse://u:pw@127.0.0.1:9000/sessionwatch",
                "clickhouse://127.0.0.1:9000/other"):
        with pytest.raises(ConfigError, match="clickhouse"):
            open_backend(bad, None)


def test_rows_from_contract_objects() -> None:
    ev = event("acme", at=0.5, session=None, type="auth.failed", user_agent=None,
               ip="::FFFF:73.162.10.20")
    row = event_row(ev, {"country": "US", "asn": "AS7922", "network_kind": "isp"})
    assert (row["session"], row["user_agent"], row["ip"], row["client"]) == (
        "", "", "73.162.10.20", "")
    assert row["time_ms"] == 1772442000500 and row["time"].tzinfo is not None
    assert (row["country"], row["asn"], row["network_kind"]) == ("US", "AS7922", "isp")
    with pytest.raises(ValueError, match="enrichment"):
        check_enrichment({"city": "Springfield"})
    low = Reason(detector="b.low", severity=Severity.LOW, summary="low", evidence={"x": 1})
    critical = Reason(detector="a.critical", severity=Severity.CRITICAL, summary="crit")
    rev = revocation_row(revocation(ev, low, critical, scope=Scope.USER))
    assert (rev["severity"], rev["detectors"], rev["not_before"], rev["source"]) == (
        "critical", ["a.critical", "b.low"], None, "")
    assert json.loads(rev["reasons"]) == [
        {"detector": "b.low", "severity": "low", "summary": "low"},
        {"detector": "a.critical", "severity": "critical", "summary": "crit"}]
    assert truncate_ip("73.162.10.20") == "73.162.10.0"
    assert truncate_ip("::ffff:73.162.10.20") == "73.162.10.0"
    assert truncate_ip("2001:db8:1:2::5") == "2001:db8:1::"
    assert truncate_ip("2001:db8:1:2::5", v6_bits=64) == "2001:db8:1:2::"
    assert truncate_ip("not an address") == ""


def test_delete_before_removes_only_the_named_tenants_old_rows(backend) -> None:
    """Per-tenant retention on both backends: a DELETE mutation by tenant and time_ms."""
    bank, shop, other = tenant(), tenant(), tenant()
    rows = [event_row(event(t, at=at, id=f"{t}-{at:.0f}"))
            for t in (bank, shop, other) for at in (0.0, 86_400.0)]
    backend.insert("events", rows)
    cutoff = rows[1]["time_ms"]           # the second day
    backend.delete_before("events", cutoff, tenants=(bank,))
    backend.delete_before("events", cutoff, except_tenants=(bank, shop))   # the default's
    left = _wait_ids(backend, "SELECT id FROM sessionwatch.events FINAL "
                              "WHERE tenant IN %(tenants)s", {"tenants": (bank, shop, other)},
                     {f"{bank}-86400", f"{shop}-0", f"{shop}-86400", f"{other}-86400"})
    assert left == {f"{bank}-86400", f"{shop}-0", f"{shop}-86400", f"{other}-86400"}


def _wait_ids(backend, sql: str, params: dict, expected: set[str]) -> set[str]:
    # Mutations are asynchronous on a server: wait for them with a deadline, not a sleep.
    import time

    deadline = time.monotonic() + 30
    while True:
        ids = set(backend.query(sql, params)["id"])
        if ids == expected or time.monotonic() > deadline:
            return ids
        time.sleep(0.1)
