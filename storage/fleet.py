"""Fleet-wide questions of the archive (activity per hour, why and how fast revocations were
decided, logins by place, detectors' verdicts), as DataFrames for the notebooks and the console.

The same SQL runs on ClickHouse 18.16 and chDB (see storage/queries.py); every read is `FINAL`,
ranges are `since <= event time < until` on `time_ms`, and times come back as
datetime64[ns, UTC]. JSON columns are parsed in pandas, not in SQL: 18.16 has few JSON functions.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from storage.clickhouse import ArchiveBackend
from storage.clickhouse.frames import STRING_DTYPE
from storage.queries import _range, _times, range_where

DB = "sessionwatch"
HOUR_MS = 3_600_000
ACTIVITY_COLUMNS = ["hour", "kind", "tenant", "what", "action", "count"]


def _text(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    for c in columns:
        frame[c] = frame[c].astype(STRING_DTYPE)
    return frame


def activity_per_hour(backend: ArchiveBackend, since: datetime, until: datetime,
                      tenant: str | None = None) -> pd.DataFrame:
    """One tidy frame of counts per UTC hour: hour, kind, tenant, what, action, count.

    kind `event`: `what` is the event type; `finding`: the detector; `revocation`: each
    detector that took part, with the decision's `action` (revoke, step_up, block, ...). A
    revocation two detectors caused counts once for each, so per-detector revocation counts add
    up to more than the revocations (count decisions with `queries.revocations`). `action` is ''
    for events and findings. Ordered by hour, kind, tenant, what, action."""
    where, params = range_where("time_ms", since, until, tenant)
    params["step"] = HOUR_MS
    bucket = "intDiv(time_ms, %(step)s) * %(step)s AS bucket_ms"
    parts = [
        ("event", backend.query(
            f"SELECT {bucket}, tenant, type AS what, '' AS action, count() AS n "
            f"FROM {DB}.events FINAL WHERE {where} GROUP BY bucket_ms, tenant, what", params)),
        ("finding", backend.query(
            f"SELECT {bucket}, tenant, detector AS what, '' AS action, count() AS n "
            f"FROM {DB}.findings FINAL WHERE {where} GROUP BY bucket_ms, tenant, what", params)),
        ("revocation", backend.query(
            f"SELECT {bucket}, tenant, detector AS what, action, count() AS n "
            f"FROM {DB}.revocations FINAL ARRAY JOIN detectors AS detector WHERE {where} "
            f"GROUP BY bucket_ms, tenant, what, action", params)),
    ]
    frames = [f.assign(kind=kind) for kind, f in parts if not f.empty]
    if not frames:
        return pd.DataFrame({
            "hour": pd.Series(dtype="datetime64[ns, UTC]"),
            **{c: pd.Series(dtype=STRING_DTYPE) for c in ("kind", "tenant", "what", "action")},
            "count": pd.Series(dtype="int64")})
    out = pd.concat(frames, ignore_index=True)
    out["hour"] = _times(out.pop("bucket_ms"))
    out["count"] = out.pop("n").astype("int64")
    out = _text(out, ["kind", "tenant", "what", "action"])[ACTIVITY_COLUMNS]
    return out.sort_values(ACTIVITY_COLUMNS[:5], kind="stable").reset_index(drop=True)


def revocation_reasons(backend: ArchiveBackend, since: datetime, until: datetime,
                       tenant: str | None = None) -> pd.DataFrame:
    """Why decisions were taken: per detector, the severity it reported and the decision's
    action, how many revocations (`revocations`) and distinct subjects (`subjects`: sessions,
    users or sources). The severity is each reason's own, not the decision's highest. Most
    revocations first, then detector, severity, action."""
    where, params = range_where("time_ms", since, until, tenant)
    revs = backend.query(
        f"SELECT id, tenant, scope, session, `user`, source, action, reasons "
        f"FROM {DB}.revocations FINAL WHERE {where}", params)
    columns = ["detector", "severity", "action", "revocations", "subjects"]
    rows = []
    for r in revs.itertuples(index=False):
        subject = f"{r.tenant}/{r.scope}/" + {"session": r.session, "user": r.user}.get(
            str(r.scope), r.source)
        for reason in json.loads(r.reasons):
            rows.append((reason["detector"], reason["severity"], str(r.action), r.id, subject))
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=STRING_DTYPE if i < 3 else "int64")
                             for i, c in enumerate(columns)})
    flat = pd.DataFrame(rows, columns=["detector", "severity", "action", "id", "subject"])
    out = flat.groupby(["detector", "severity", "action"], as_index=False).agg(
        revocations=("id", "nunique"), subjects=("subject", "nunique"))
    out[["revocations", "subjects"]] = out[["revocations", "subjects"]].astype("int64")
    out = _text(out, ["detector", "severity", "action"])
    return out.sort_values(["revocations", "detector", "severity", "action"],
                           ascending=[False, True, True, True], kind="stable").reset_index(drop=True)


def decision_latency(backend: ArchiveBackend, since: datetime, until: datetime,
                     tenant: str | None = None) -> pd.DataFrame:
    """Per revocation: id, tenant, action, detectors, time (the event's), decided_at and
    `decided_s`, the seconds from the event to the worker's decision.

    `decided_at` is kept to the second (18.16 stores no more), so `decided_s` is exact to about
    a second and may be slightly negative for a decision within the event's own second. It is
    the worker's wall clock: revocations a backtest or a restarted worker decided late measure
    that. The archive holds no time at which a revocation was *applied* (the applier writes to
    the session stores, webhooks and SSF, not to the archive): decided -> applied latency is the
    applier's metric, not the archive's. Ordered by time, id."""
    where, params = range_where("time_ms", since, until, tenant)
    revs = backend.query(
        f"SELECT id, tenant, action, detectors, time_ms, decided_at FROM {DB}.revocations "
        f"FINAL WHERE {where} ORDER BY time_ms, id", params)
    revs.insert(revs.columns.get_loc("time_ms"), "time", _times(revs["time_ms"]))
    revs["decided_at"] = revs["decided_at"].dt.floor("s")
    revs["decided_s"] = ((revs["decided_at"] - revs["time"]).dt.total_seconds()
                         .astype("float64"))
    return revs.drop(columns="time_ms").reset_index(drop=True)


def user_logins(backend: ArchiveBackend, tenant: str, user: str, since: datetime,
                until: datetime) -> pd.DataFrame:
    """A user's logins (`session.authenticated` events) by place and client: country, asn,
    network_kind, client, logins, sessions, addresses, first, last. Most logins first; '' where
    the archiver could not enrich. A place or client seen once is worth a look."""
    params = {"tenant": tenant, "user": user, **_range(since, until)}
    logins = backend.query(
        f"SELECT country, asn, network_kind, client, count() AS logins, "
        f"uniqExactIf(session, session != '') AS sessions, uniqExact(ip) AS addresses, "
        f"min(time_ms) AS first_ms, max(time_ms) AS last_ms FROM {DB}.events FINAL "
        f"WHERE tenant = %(tenant)s AND `user` = %(user)s AND type = 'session.authenticated' "
        f"AND time_ms >= %(since)s AND time_ms < %(until)s "
        f"GROUP BY country, asn, network_kind, client "
        f"ORDER BY logins DESC, first_ms, country, asn, client", params)
    logins["first"] = _times(logins.pop("first_ms"))
    logins["last"] = _times(logins.pop("last_ms"))
    for c in ("logins", "sessions", "addresses"):
        logins[c] = logins[c].astype("int64")
    return logins


def _latest_verdicts(backend: ArchiveBackend, where: str, params: dict[str, Any]) -> pd.DataFrame:
    """The latest verdict per target (target_time in range): target, target_kind, verdict.
    At the same millisecond confirmed wins, as in storage.feedback.session_labels."""
    found = backend.query(
        f"SELECT target, target_kind, verdict, time_ms, id FROM {DB}.feedback FINAL "
        f"WHERE {where}", params)
    found["confirmed"] = found["verdict"] == "confirmed"
    return (found.sort_values(["time_ms", "confirmed", "id"], kind="stable")
            .drop_duplicates("target", keep="last")[["target", "target_kind", "verdict"]])


def detector_verdicts(backend: ArchiveBackend, since: datetime, until: datetime,
                      tenant: str | None = None) -> pd.DataFrame:
    """Per detector: findings, revocations it took part in, and the analysts' verdicts on them
    (storage/feedback.py; each target's latest): confirmed, dismissed, and `benign_rate` =
    dismissed / (confirmed + dismissed), NaN without verdicts. A verdict on a revocation counts
    for each of its detectors, one on a finding for the finding's detector. Ranges are on the
    findings' and revocations' event time (a verdict counts with its target). By detector."""
    where, params = range_where("time_ms", since, until, tenant)
    target_where, _ = range_where("target_time_ms", since, until, tenant)
    findings = backend.query(
        f"SELECT detector, count() AS findings FROM {DB}.findings FINAL WHERE {where} "
        f"GROUP BY detector", params)
    revs = backend.query(
        f"SELECT detector, count() AS revocations FROM {DB}.revocations FINAL "
        f"ARRAY JOIN detectors AS detector WHERE {where} GROUP BY detector", params)
    latest = _latest_verdicts(backend, target_where, params)
    subquery = f"SELECT target FROM {DB}.feedback WHERE {target_where}"
    of_revs = backend.query(
        f"SELECT id AS target, detector FROM {DB}.revocations FINAL ARRAY JOIN detectors AS "
        f"detector WHERE {where} AND id IN ({subquery})", params)
    of_findings = backend.query(
        f"SELECT id AS target, detector FROM {DB}.findings FINAL WHERE {where} "
        f"AND id IN ({subquery})", params)
    judged = pd.concat([of_revs.merge(latest[latest["target_kind"] == "revocation"], on="target"),
                        of_findings.merge(latest[latest["target_kind"] == "finding"], on="target")],
                       ignore_index=True)
    counts = pd.DataFrame({v: (judged["verdict"] == v).groupby(judged["detector"]).sum()
                           for v in ("confirmed", "dismissed")}).rename_axis("detector").reset_index()
    out = (findings.merge(revs, on="detector", how="outer")
           .merge(counts, on="detector", how="outer"))
    numbers = ["findings", "revocations", "confirmed", "dismissed"]
    out[numbers] = out[numbers].fillna(0).astype("int64")
    judged_n = out["confirmed"] + out["dismissed"]
    out["benign_rate"] = np.where(judged_n > 0, out["dismissed"] / judged_n.where(judged_n > 0, 1),
                                  np.nan)
    out = _text(out, ["detector"])[["detector", *numbers, "benign_rate"]]
    return out.sort_values("detector", kind="stable").reset_index(drop=True)


def subject_verdicts(backend: ArchiveBackend, since: datetime, until: datetime,
                     tenant: str | None = None) -> pd.DataFrame:
    """The verdicts on archived revocations by what they decided about: tenant, scope, subject
    (the session, user or source), verdict ('confirmed' if any revocation of the subject's
    latest verdicts is, else 'dismissed'). What a backtest's decision is matched on."""
    where, params = range_where("time_ms", since, until, tenant)
    target_where, _ = range_where("target_time_ms", since, until, tenant)
    latest = _latest_verdicts(backend, target_where, params)
    revs = backend.query(
        f"SELECT id AS target, tenant, scope, session, `user`, source FROM {DB}.revocations FINAL "
        f"WHERE {where} AND id IN (SELECT target FROM {DB}.feedback WHERE {target_where})", params)
    columns = ["tenant", "scope", "subject", "verdict"]
    judged = revs.merge(latest, on="target")
    if judged.empty:
        return pd.DataFrame({c: pd.Series(dtype=STRING_DTYPE) for c in columns})
    judged["subject"] = [{"session": s, "user": u}.get(str(scope), src) for scope, s, u, src in
                         zip(judged["scope"], judged["session"], judged["user"], judged["source"],
                             strict=True)]
    judged["confirmed"] = judged["verdict"] == "confirmed"
    out = judged.groupby(["tenant", "scope", "subject"], as_index=False)["confirmed"].any()
    out["verdict"] = out.pop("confirmed").map({True: "confirmed", False: "dismissed"})
    return out[columns].astype(STRING_DTYPE).reset_index(drop=True)
