"""The latest findings and revocations, newest first, and one of them by id: what the operator
console's live view, its pages and its JSON API read (sessionwatch/console/).

Same SQL on ClickHouse 18.16 and chDB; reads are `FINAL`. Revocations come back in the contract's
shape (producers/contract.py `Revocation`: `id` first), reasons as archived ({detector, severity,
summary}: the admins' words; evidence stays with the findings).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from storage.clickhouse import ArchiveBackend
from storage.queries import _ms

DB = "sessionwatch"
MAX_ROWS = 10_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The contract's field order (producers/contract.py Revocation), `schema` left out: one version.
REVOCATION_FIELDS = ("id", "tenant", "scope", "session", "user", "source", "action", "not_before",
                     "expires", "reasons", "severity", "detectors", "event_time", "decided_at",
                     "events")
FINDING_FIELDS = ("id", "tenant", "session", "user", "ip", "detector", "severity", "summary",
                  "evidence", "event_time", "events")
_REVOCATION_SELECT = (
    "SELECT id, tenant, scope, session, `user`, source, action, "
    "if(isNull(not_before), -1, toInt64(toUInt32(assumeNotNull(not_before)))) AS not_before_s, "
    "if(isNull(expires), -1, toInt64(toUInt32(assumeNotNull(expires)))) AS expires_s, "
    "reasons, severity, detectors, time_ms, toInt64(toUInt32(decided_at)) AS decided_s, events "
    f"FROM {DB}.revocations FINAL")
_FINDING_SELECT = ("SELECT id, tenant, session, `user`, ip, detector, severity, summary, evidence, "
                   f"time_ms, events FROM {DB}.findings FINAL")
_IP_TEXT = "replaceRegexpOne(replaceRegexpOne(toString(ip), '^::ffff:', ''), '^::$', '')"


def _iso_ms(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=int(ms))).isoformat(timespec="milliseconds")


def _iso_s(seconds: int) -> str | None:
    return None if seconds < 0 else (_EPOCH + timedelta(seconds=int(seconds))).isoformat()


def _filters(tenant: str | None, since: datetime | None, **equal: str | None) -> tuple[str, dict]:
    where, params = ["1"], {}
    if since is not None:
        where.append("time_ms >= %(since)s")
        params["since"] = _ms(since)
    if tenant:
        where.append("tenant = %(tenant)s")
        params["tenant"] = tenant
    for column, value in equal.items():
        if value:
            where.append(f"`{column}` = %({column})s")
            params[column] = value
    return " AND ".join(where), params


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_ROWS:
        raise ValueError(f"limit: {limit!r} must be a whole number from 1 to {MAX_ROWS}")
    return limit


def _revocation(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "tenant": row["tenant"], "scope": row["scope"],
        "session": row["session"] or None, "user": row["user"] or None,
        "source": row["source"] or None, "action": row["action"],
        "not_before": _iso_s(int(row["not_before_s"])), "expires": _iso_s(int(row["expires_s"])),
        "reasons": json.loads(row["reasons"]), "severity": row["severity"],
        "detectors": [str(d) for d in row["detectors"]],
        "event_time": _iso_ms(row["time_ms"]), "decided_at": _iso_s(int(row["decided_s"])),
        "events": [str(e) for e in row["events"]],
    }


def _finding(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "tenant": row["tenant"], "session": row["session"] or None,
        "user": row["user"] or None, "ip": row["ip"], "detector": row["detector"],
        "severity": row["severity"], "summary": row["summary"],
        "evidence": json.loads(row["evidence"]), "event_time": _iso_ms(row["time_ms"]),
        "events": [str(e) for e in row["events"]],
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict("records") if not frame.empty else []


def latest_revocations(backend: ArchiveBackend, *, since: datetime | None = None,
                       tenant: str | None = None, detector: str | None = None,
                       severity: str | None = None, action: str | None = None,
                       scope: str | None = None, user: str | None = None,
                       limit: int = 100) -> list[dict[str, Any]]:
    """Revocations with event time at or after `since` (all if None), newest first, as dicts in
    the contract's field order; `detector` matches any of a revocation's detectors."""
    where, params = _filters(tenant, since, severity=severity, action=action, scope=scope,
                             user=user)
    if detector:
        where += " AND has(detectors, %(detector)s)"
        params["detector"] = detector
    params["limit"] = _limit(limit)
    rows = backend.query(f"{_REVOCATION_SELECT} WHERE {where} ORDER BY time_ms DESC, id DESC "
                         "LIMIT %(limit)s", params)
    return [_revocation(r) for r in _records(rows)]


def latest_findings(backend: ArchiveBackend, *, since: datetime | None = None,
                    tenant: str | None = None, detector: str | None = None,
                    severity: str | None = None, session: str | None = None,
                    limit: int = 100) -> list[dict[str, Any]]:
    """Findings with event time at or after `since` (all if None), newest first."""
    where, params = _filters(tenant, since, detector=detector, severity=severity,
                             session=session)
    params["limit"] = _limit(limit)
    rows = backend.query(
        f"SELECT id, tenant, session, `user`, {_IP_TEXT} AS ip, detector, severity, summary, "
        f"evidence, time_ms, events FROM {DB}.findings FINAL WHERE {where} "
        "ORDER BY time_ms DESC, id DESC LIMIT %(limit)s", params)
    return [_finding(r) for r in _records(rows)]


def revocation(backend: ArchiveBackend, revocation_id: str) -> dict[str, Any] | None:
    """One revocation by id, or None."""
    rows = backend.query(f"{_REVOCATION_SELECT} WHERE id = %(id)s LIMIT 1", {"id": revocation_id})
    found = _records(rows)
    return _revocation(found[0]) if found else None


def finding(backend: ArchiveBackend, finding_id: str) -> dict[str, Any] | None:
    """One finding by id, or None."""
    rows = backend.query(
        f"SELECT id, tenant, session, `user`, {_IP_TEXT} AS ip, detector, severity, summary, "
        f"evidence, time_ms, events FROM {DB}.findings FINAL WHERE id = %(id)s LIMIT 1",
        {"id": finding_id})
    found = _records(rows)
    return _finding(found[0]) if found else None


def causing_findings(backend: ArchiveBackend, rev: dict[str, Any]) -> list[dict[str, Any]]:
    """The findings behind a revocation: same tenant, one of its events, one of its detectors."""
    if not rev["events"]:
        return []  # a revocation by hand has no events
    rows = backend.query(
        f"SELECT id, tenant, session, `user`, {_IP_TEXT} AS ip, detector, severity, summary, "
        f"evidence, time_ms, events FROM {DB}.findings FINAL ARRAY JOIN events AS event "
        "WHERE tenant = %(tenant)s AND event IN %(events)s AND detector IN %(detectors)s "
        "ORDER BY time_ms, id",
        {"tenant": rev["tenant"], "events": tuple(rev["events"]),
         "detectors": tuple(rev["detectors"]) or ("",)})
    seen: dict[str, dict[str, Any]] = {}
    for r in _records(rows):
        seen.setdefault(r["id"], _finding(r))
    return list(seen.values())


def tenants(backend: ArchiveBackend) -> list[str]:
    """Tenants with any revocation or finding, for the filters."""
    rows = backend.query(f"SELECT DISTINCT tenant FROM {DB}.findings UNION ALL "
                         f"SELECT DISTINCT tenant FROM {DB}.revocations")
    return sorted({str(t) for t in rows["tenant"]}) if not rows.empty else []


def detectors(backend: ArchiveBackend) -> list[str]:
    """Detectors with any finding, for the filters."""
    rows = backend.query(f"SELECT DISTINCT detector FROM {DB}.findings")
    return sorted(str(d) for d in rows["detector"]) if not rows.empty else []
