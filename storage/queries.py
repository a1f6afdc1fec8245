"""Questions analysts ask of the archive, as functions returning pandas DataFrames.

Shared by the CLI and the notebooks; the same SQL runs on Debian's ClickHouse 18.16 and on chDB
(storage/clickhouse/params.py renders `%(name)s` parameters for both), and the same call returns
the same DataFrame from either. Time ranges are given as aware datetimes and compared on the
`time_ms` columns (epoch ms), exact on either server; times come back as datetime64[ns, UTC].
Every query reads `FINAL`, so rows redelivered at least once count once.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pandas as pd

from storage.clickhouse import ArchiveBackend
from storage.clickhouse.frames import TIME_DTYPE
from storage.clickhouse.rows import epoch_ms

DB = "sessionwatch"

# An address as the text both backends return: 18.16 stores that text (String), chDB an IPv6
# that prints IPv4 as ::ffff:a.b.c.d and no address as ::. Ordering by the column itself would
# order differently (bytes vs text) and so cut a LIMIT at different rows.
_IP_TEXT = "replaceRegexpOne(replaceRegexpOne(toString(ip), '^::ffff:', ''), '^::$', '')"


def _ms(when: datetime) -> int:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"times must be timezone-aware (e.g. datetime(..., tzinfo=UTC)), not "
                         f"the naive {when.isoformat()}")
    # The rows' own conversion (integer arithmetic): bounds match `time_ms` by construction.
    return epoch_ms(when)


def _range(since: datetime, until: datetime) -> dict[str, Any]:
    bounds = {"since": _ms(since), "until": _ms(until)}  # naive times fail here, not in `<=`
    if bounds["until"] <= bounds["since"]:
        raise ValueError(f"until ({until.isoformat()}) must be after since ({since.isoformat()})")
    return bounds


def range_where(column: str, since: datetime, until: datetime,
                tenant: str | None = None) -> tuple[str, dict[str, Any]]:
    """`since <= column < until` (epoch ms), and one tenant if given: the WHERE and its params."""
    where = f"{column} >= %(since)s AND {column} < %(until)s"
    if tenant is not None:
        where += " AND tenant = %(tenant)s"
    return where, {**_range(since, until), "tenant": tenant or ""}


def _times(ms: pd.Series) -> pd.Series:
    # pandas 3 would pick microseconds; the backends' time columns are nanoseconds.
    return pd.to_datetime(ms, unit="ms", utc=True).astype(TIME_DTYPE)


def session_timeline(backend: ArchiveBackend, tenant: str, session: str) -> pd.DataFrame:
    """Everything that happened to one session, in order: its events with where they came from,
    and the findings and revocations about it (column `kind`: event, finding, revocation).
    A finding's `evidence` is parsed; a revocation's `summary` lists its reasons."""
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
    findings["evidence"] = [json.loads(e) for e in findings["evidence"]]
    revocations = backend.query(
        f"SELECT time_ms, action AS what, severity, reasons AS summary, `user`, id "
        f"FROM {DB}.revocations FINAL WHERE tenant = %(tenant)s AND session = %(session)s",
        params)
    revocations.insert(0, "kind", "revocation")
    revocations["summary"] = revocations["summary"].map(_reasons_text)
    frames = [f for f in (events, findings, revocations) if not f.empty] or [events]
    timeline = pd.concat(frames, ignore_index=True, sort=False)
    # Same instant: the event first, then what it caused.
    order = {"event": 0, "finding": 1, "revocation": 2}
    timeline["_order"] = timeline["kind"].map(order)
    timeline = timeline.sort_values(["time_ms", "_order", "id"], kind="stable")
    timeline.insert(1, "time", _times(timeline["time_ms"]))
    return timeline.drop(columns="_order").reset_index(drop=True)


def _reasons_text(reasons: str) -> str:
    return "; ".join(f"{r['detector']} ({r['severity']}): {r['summary']}"
                     for r in json.loads(reasons))


def user_sessions(backend: ArchiveBackend, tenant: str, user: str, since: datetime,
                  until: datetime) -> pd.DataFrame:
    """A user's sessions in a range: when, from how many addresses, countries, networks and
    clients, and whether one was revoked (`revoked`: a revocation with action `revoke`; a
    step-up does not count)."""
    params = {"tenant": tenant, "user": user, **_range(since, until)}
    sessions = backend.query(
        f"SELECT session, min(time_ms) AS first_ms, max(time_ms) AS last_ms, count() AS events, "
        f"uniqExact(ip) AS addresses, groupUniqArray(country) AS countries, "
        f"groupUniqArray(asn) AS networks, groupUniqArray(client) AS clients "
        f"FROM {DB}.events FINAL WHERE tenant = %(tenant)s AND `user` = %(user)s "
        f"AND time_ms >= %(since)s AND time_ms < %(until)s AND session != '' "
        f"GROUP BY session ORDER BY first_ms, session", params)
    revoked = backend.query(
        f"SELECT DISTINCT session FROM {DB}.revocations FINAL WHERE tenant = %(tenant)s "
        f"AND `user` = %(user)s AND session != '' AND action = 'revoke'", params)
    sessions["revoked"] = sessions["session"].isin(set(revoked["session"]))
    sessions.insert(1, "first", _times(sessions.pop("first_ms")))
    sessions.insert(2, "last", _times(sessions.pop("last_ms")))
    for col in ("countries", "networks", "clients"):
        sessions[col] = sessions[col].map(lambda xs: sorted(x for x in xs if x))
    return sessions


def revocations(backend: ArchiveBackend, since: datetime, until: datetime,
                tenant: str | None = None) -> pd.DataFrame:
    """Revocations in a range with their evidence: `reasons` (for admins: detector, severity,
    summary) and `evidence` ({detector: evidence} of the findings that caused each one: same
    event, same detector). `decided_at` to the second: 18.16 stores no more."""
    where, params = range_where("time_ms", since, until, tenant)
    revs = backend.query(
        f"SELECT id, tenant, scope, action, session, `user`, source, severity, detectors, "
        f"reasons, events, time_ms, decided_at FROM {DB}.revocations FINAL WHERE {where} "
        f"ORDER BY time_ms, id", params)
    revs.insert(1, "time", _times(revs["time_ms"]))
    revs["reasons"] = [json.loads(r) for r in revs["reasons"]]
    revs["decided_at"] = revs["decided_at"].dt.floor("s")
    # A finding has the time of its event, so the causes of these revocations are in the range.
    causes = backend.query(
        f"SELECT tenant, event, detector, evidence FROM {DB}.findings FINAL "
        f"ARRAY JOIN events AS event WHERE {where} AND (tenant, event) IN "
        f"(SELECT tenant, event FROM {DB}.revocations FINAL ARRAY JOIN events AS event "
        f"WHERE {where})", params)
    found = {(t, e, d): json.loads(ev) for t, e, d, ev in causes.itertuples(index=False)}
    revs.insert(revs.columns.get_loc("reasons") + 1, "evidence", [
        {d: found[(t, e, d)] for e in events for d in detectors if (t, e, d) in found}
        for t, events, detectors in zip(revs["tenant"], revs["events"], revs["detectors"],
                                        strict=True)])
    return revs


def detector_stats(backend: ArchiveBackend, since: datetime, until: datetime,
                   bucket: str = "hour", tenant: str | None = None) -> pd.DataFrame:
    """Per hour (or day) and detector: findings by severity, sessions flagged, and the
    revocations the detector took part in."""
    if bucket not in ("hour", "day"):
        raise ValueError(f"bucket: 'hour' or 'day', not {bucket!r}")
    step = 3_600_000 if bucket == "hour" else 86_400_000
    where, params = range_where("time_ms", since, until, tenant)
    params["step"] = step
    findings = backend.query(
        f"SELECT intDiv(time_ms, %(step)s) * %(step)s AS bucket_ms, detector, "
        f"countIf(severity = 'low') AS low, countIf(severity = 'medium') AS medium, "
        f"countIf(severity = 'high') AS high, countIf(severity = 'critical') AS critical, "
        f"count() AS findings, uniqExactIf(session, session != '') AS sessions "
        f"FROM {DB}.findings FINAL WHERE {where} GROUP BY bucket_ms, detector", params)
    revs = backend.query(
        f"SELECT intDiv(time_ms, %(step)s) * %(step)s AS bucket_ms, detector, "
        f"count() AS revocations FROM {DB}.revocations FINAL ARRAY JOIN detectors AS detector "
        f"WHERE {where} GROUP BY bucket_ms, detector", params)
    if findings.empty or revs.empty:  # pandas cannot merge an empty Arrow column with another
        stats = (findings if revs.empty else revs).copy()
        for col in ("low", "medium", "high", "critical", "findings", "sessions", "revocations"):
            if col not in stats:
                stats[col] = pd.Series(0, index=stats.index, dtype="int64")
    else:
        stats = findings.merge(revs, on=["bucket_ms", "detector"], how="outer")
    counts = ["low", "medium", "high", "critical", "findings", "sessions", "revocations"]
    stats[counts] = stats[counts].fillna(0).astype("int64")
    stats = stats.sort_values(["bucket_ms", "detector"]).reset_index(drop=True)
    stats.insert(0, bucket, _times(stats.pop("bucket_ms")))
    return stats


def top_sources(backend: ArchiveBackend, event_type: str, since: datetime, until: datetime,
                tenant: str | None = None, limit: int = 20) -> pd.DataFrame:
    """The addresses (with network and country) that sent the most events of one type:
    `token.rejected` (token guessing) or `auth.failed` (brute force, stuffing). Ties in order
    of the address's text; `tokens` counts distinct sessions named, `users` distinct users."""
    params: dict[str, Any] = {**_range(since, until), "type": event_type,
                              "tenant": tenant or "", "limit": int(limit)}
    where = "type = %(type)s AND time_ms >= %(since)s AND time_ms < %(until)s"
    if tenant is not None:
        where += " AND tenant = %(tenant)s"
    sources = backend.query(
        f"SELECT ip, any(asn) AS network, any(network_kind) AS network_kind, "
        f"any(country) AS country, count() AS events, "
        f"uniqExactIf(session, session != '') AS tokens, uniqExactIf(`user`, `user` != '') "
        f"AS users, min(time_ms) AS first_ms, max(time_ms) AS last_ms "
        f"FROM {DB}.events FINAL WHERE {where} GROUP BY ip "
        f"ORDER BY events DESC, {_IP_TEXT} LIMIT %(limit)s", params)
    sources["first"] = _times(sources.pop("first_ms"))
    sources["last"] = _times(sources.pop("last_ms"))
    return sources


def top_rejected_token_sources(backend: ArchiveBackend, since: datetime, until: datetime,
                               tenant: str | None = None, limit: int = 20) -> pd.DataFrame:
    """Where rejected (revoked, expired, forged) session tokens come from: token guessing."""
    return top_sources(backend, "token.rejected", since, until, tenant, limit)


def top_failed_login_sources(backend: ArchiveBackend, since: datetime, until: datetime,
                             tenant: str | None = None, limit: int = 20) -> pd.DataFrame:
    """Where failed logins come from: brute force and credential stuffing."""
    return top_sources(backend, "auth.failed", since, until, tenant, limit)
