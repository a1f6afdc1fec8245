"""Questions analysts ask of the archive, as functions returning pandas DataFrames.

Shared by the CLI and the notebooks; the same SQL runs on Debian's ClickHouse 18.16 and on chDB
(storage/clickhouse/params.py renders `%(name)s` parameters for both). Time ranges are given as
aware datetimes and compared on the `time_ms` columns (epoch ms), exact on either server.
Every query reads `FINAL`, so rows redelivered at least once count once.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pandas as pd

from storage.clickhouse import ArchiveBackend

DB = "sessionwatch"


def _ms(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError("times must be timezone-aware (e.g. datetime(..., tzinfo=UTC))")
    return int(when.timestamp() * 1000)


def _range(since: datetime, until: datetime) -> dict[str, Any]:
    if until <= since:
        raise ValueError(f"until ({until.isoformat()}) must be after since ({since.isoformat()})")
    return {"since": _ms(since), "until": _ms(until)}


def session_timeline(backend: ArchiveBackend, tenant: str, session: str) -> pd.DataFrame:
    """Everything that happened to one session, in order: its events with where they came from,
    and the findings and revocations about it (column `kind`: event, finding, revocation)."""
    params = {"tenant": tenant, "session": session}
    events = backend.query(
        f"SELECT time_ms, type AS what, ip, country, asn, network_kind, client, user_agent, "
        f"`user`, id FROM {DB}.events FINAL WHERE tenant = %(tenant)s AND session = %(session)s",
        params)
    events.insert(0, "kind", "event")
    findings = backend.query(
        f"SELECT time_ms, detector AS what, ip, severity, summary, evidence, `user`, id "
        f"FROM {DB}.findings FINAL WHERE tenant = %(tenant)s AND session = %(session)s", params)
    findings.insert(0, "kind", "finding")
    revocations = backend.query(
        f"SELECT time_ms, action AS what, severity, reasons AS summary, `user`, id "
        f"FROM {DB}.revocations FINAL WHERE tenant = %(tenant)s AND session = %(session)s",
        params)
    revocations.insert(0, "kind", "revocation")
    frames = [f for f in (events, findings, revocations) if not f.empty]
    if not frames:
        return events
    timeline = pd.concat(frames, ignore_index=True, sort=False)
    # Same instant: the event first, then what it caused.
    order = {"event": 0, "finding": 1, "revocation": 2}
    timeline["_order"] = timeline["kind"].map(order)
    timeline = timeline.sort_values(["time_ms", "_order", "id"], kind="stable")
    timeline.insert(1, "time", pd.to_datetime(timeline["time_ms"], unit="ms", utc=True))
    return timeline.drop(columns="_order").reset_index(drop=True)


def user_sessions(backend: ArchiveBackend, tenant: str, user: str, since: datetime,
                  until: datetime) -> pd.DataFrame:
    """A user's sessions in a range: when, from how many addresses, countries, networks and
    clients, and whether one was revoked."""
    params = {"tenant": tenant, "user": user, **_range(since, until)}
    sessions = backend.query(
        f"SELECT session, min(time_ms) AS first_ms, max(time_ms) AS last_ms, count() AS events, "
        f"uniqExact(ip) AS addresses, groupUniqArray(country) AS countries, "
        f"groupUniqArray(asn) AS networks, groupUniqArray(client) AS clients "
        f"FROM {DB}.events FINAL WHERE tenant = %(tenant)s AND `user` = %(user)s "
        f"AND time_ms >= %(since)s AND time_ms < %(until)s AND session != '' "
        f"GROUP BY session ORDER BY first_ms, session", params)
    revoked = backend.query(
        f"SELECT session, groupArray(action) AS actions FROM {DB}.revocations FINAL "
        f"WHERE tenant = %(tenant)s AND `user` = %(user)s AND session != '' GROUP BY session",
        params)
    sessions = sessions.merge(revoked, on="session", how="left")
    sessions["revoked"] = sessions["actions"].apply(
        lambda a: isinstance(a, (list, tuple)) and "revoke" in a or False)
    for col in ("first", "last"):
        sessions.insert(1 if col == "first" else 2, col,
                        pd.to_datetime(sessions.pop(f"{col}_ms"), unit="ms", utc=True))
    for col in ("countries", "networks", "clients"):
        sessions[col] = sessions[col].apply(lambda xs: sorted(x for x in xs if x))
    return sessions.drop(columns="actions")


def revocations(backend: ArchiveBackend, since: datetime, until: datetime,
                tenant: str | None = None) -> pd.DataFrame:
    """Revocations in a range with their evidence: the reasons (for admins) and the findings of
    the same session up to the decision."""
    params: dict[str, Any] = {**_range(since, until), "tenant": tenant or ""}
    where = "time_ms >= %(since)s AND time_ms < %(until)s"
    if tenant is not None:
        where += " AND tenant = %(tenant)s"
    revs = backend.query(
        f"SELECT id, tenant, scope, action, session, `user`, source, severity, detectors, "
        f"reasons, time_ms, decided_at FROM {DB}.revocations FINAL WHERE {where} "
        f"ORDER BY time_ms, id", params)
    revs.insert(1, "time", pd.to_datetime(revs["time_ms"], unit="ms", utc=True))
    revs["reasons"] = revs["reasons"].apply(json.loads)
    return revs


def detector_stats(backend: ArchiveBackend, since: datetime, until: datetime,
                   bucket: str = "hour", tenant: str | None = None) -> pd.DataFrame:
    """Per hour (or day) and detector: findings by severity, sessions flagged, and the
    revocations the detector took part in."""
    if bucket not in ("hour", "day"):
        raise ValueError("bucket: 'hour' or 'day'")
    step = 3_600_000 if bucket == "hour" else 86_400_000
    params: dict[str, Any] = {**_range(since, until), "tenant": tenant or "", "step": step}
    where = "time_ms >= %(since)s AND time_ms < %(until)s"
    if tenant is not None:
        where += " AND tenant = %(tenant)s"
    findings = backend.query(
        f"SELECT intDiv(time_ms, %(step)s) * %(step)s AS bucket_ms, detector, "
        f"countIf(severity = 'low') AS low, countIf(severity = 'medium') AS medium, "
        f"countIf(severity = 'high') AS high, countIf(severity = 'critical') AS critical, "
        f"count() AS findings, uniqExact(session) AS sessions FROM {DB}.findings FINAL "
        f"WHERE {where} GROUP BY bucket_ms, detector", params)
    revs = backend.query(
        f"SELECT intDiv(time_ms, %(step)s) * %(step)s AS bucket_ms, detector, "
        f"count() AS revocations FROM {DB}.revocations FINAL ARRAY JOIN detectors AS detector "
        f"WHERE {where} GROUP BY bucket_ms, detector", params)
    stats = findings.merge(revs, on=["bucket_ms", "detector"], how="outer")
    counts = ["low", "medium", "high", "critical", "findings", "sessions", "revocations"]
    stats[counts] = stats[counts].fillna(0).astype("int64")
    stats = stats.sort_values(["bucket_ms", "detector"]).reset_index(drop=True)
    stats.insert(0, bucket, pd.to_datetime(stats.pop("bucket_ms"), unit="ms", utc=True))
    return stats


def top_sources(backend: ArchiveBackend, event_type: str, since: datetime, until: datetime,
                tenant: str | None = None, limit: int = 20) -> pd.DataFrame:
    """The addresses (with network and country) that sent the most events of one type:
    `token.rejected` (token guessing) or `auth.failed` (brute force, stuffing)."""
    params: dict[str, Any] = {**_range(since, until), "type": event_type,
                              "tenant": tenant or "", "limit": int(limit)}
    where = "type = %(type)s AND time_ms >= %(since)s AND time_ms < %(until)s"
    if tenant is not None:
        where += " AND tenant = %(tenant)s"
    return backend.query(
        f"SELECT ip, any(asn) AS network, any(network_kind) AS network_kind, "
        f"any(country) AS country, count() AS events, uniqExact(session) AS tokens, "
        f"uniqExact(`user`) AS users, min(time_ms) AS first_ms, max(time_ms) AS last_ms "
        f"FROM {DB}.events FINAL WHERE {where} GROUP BY ip ORDER BY events DESC, ip "
        f"LIMIT %(limit)s", params)


def top_rejected_token_sources(backend: ArchiveBackend, since: datetime, until: datetime,
                               tenant: str | None = None, limit: int = 20) -> pd.DataFrame:
    return top_sources(backend, "token.rejected", since, until, tenant, limit)


def top_failed_login_sources(backend: ArchiveBackend, since: datetime, until: datetime,
                             tenant: str | None = None, limit: int = 20) -> pd.DataFrame:
    return top_sources(backend, "auth.failed", since, until, tenant, limit)
