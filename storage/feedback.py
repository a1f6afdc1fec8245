"""Analysts' verdicts on revocations and findings (`sessionwatch.feedback`), and the training
labels built from them: each verdicted session's label, and an audit sample of unflagged sessions.

A verdict copies its target's tenant, session, user and event time when it is written, so the
labels need no lookup later. The same SQL runs on ClickHouse 18.16 and chDB; reads are `FINAL`
(a verdict written twice, same id, counts once). Notes are kept but never logged.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pandas as pd

from producers.errors import SessionwatchError
from storage.clickhouse import ArchiveBackend
from storage.clickhouse.frames import STRING_DTYPE
from storage.clickhouse.rows import epoch_ms
from storage.queries import _ms, _range, _times, range_where

log = logging.getLogger("sessionwatch.feedback")

DB = "sessionwatch"
VerdictKind = Literal["confirmed", "dismissed"]
TargetKind = Literal["revocation", "finding"]
VERDICTS: tuple[VerdictKind, ...] = ("confirmed", "dismissed")
TARGET_KINDS: tuple[TargetKind, ...] = ("revocation", "finding")  # the order targets are looked up
MAX_NOTE = 2_000
MAX_ANALYST = 200
_TABLE_OF = {"revocation": "revocations", "finding": "findings"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Sample buckets of the audit hash: fractions down to 1 in 2^32.
_BUCKETS = 1 << 32
_LIST_IDS = ("list archived ids with storage.queries.revocations(archive, since, until) or "
             "storage.queries.session_timeline(archive, tenant, session) (as "
             "notebooks/investigate_session.ipynb does)")


class FeedbackError(SessionwatchError):
    """A verdict that cannot be recorded as given; nothing was written."""


class UnknownTarget(FeedbackError):
    """The verdict names a revocation or finding id the archive does not hold."""


class InvalidVerdict(FeedbackError):
    """The verdict is not one of `VERDICTS`."""


@dataclass(frozen=True)
class Verdict:
    """One analyst verdict as archived; `session`/`user` are None when the target has none."""

    id: str
    target: str
    target_kind: TargetKind
    tenant: str
    session: str | None
    user: str | None
    verdict: VerdictKind
    analyst: str
    at: datetime            # UTC, milliseconds
    target_time: datetime   # the target's event time, UTC, milliseconds
    note: str

    def row(self) -> dict[str, Any]:
        """The row of `sessionwatch.feedback`."""
        return {"id": self.id, "target": self.target, "target_kind": self.target_kind,
                "tenant": self.tenant, "session": self.session or "", "user": self.user or "",
                "verdict": self.verdict, "analyst": self.analyst, "at": self.at,
                "time_ms": epoch_ms(self.at), "target_time_ms": epoch_ms(self.target_time),
                "note": self.note}


def verdict_id(target: str, verdict: str, analyst: str, at: datetime) -> str:
    """Deterministic: the same verdict by the same analyst at the same millisecond is one row."""
    return hashlib.sha256(f"{target}|{verdict}|{analyst}|{epoch_ms(at)}".encode()).hexdigest()


def record_verdict(backend: ArchiveBackend, target: str, verdict: str, analyst: str,
                   note: str = "", at: datetime | None = None, *,
                   kind: TargetKind | None = None) -> Verdict:
    """Archive `analyst`'s verdict on a revocation or finding (`kind`, or whichever holds the id:
    revocations first) and return it. `at` defaults to now; it is kept to the millisecond."""
    target, analyst = check_verdict(target, verdict, analyst, note)
    if kind is not None and kind not in TARGET_KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(TARGET_KINDS)}")
    when = _EPOCH + _ms(at or datetime.now(UTC)) * _MS
    found = _find_target(backend, target, kind)
    if found is None:
        what = kind or "revocation or finding"
        raise UnknownTarget(f"{what} {target!r} was not found in the archive ({backend.name}); "
                            f"{_LIST_IDS}")
    target_kind, tenant, session, user, target_ms = found
    record = Verdict(
        id=verdict_id(target, verdict, analyst, when), target=target, target_kind=target_kind,
        tenant=tenant, session=session or None, user=user or None,
        verdict=verdict,  # type: ignore[arg-type]  # checked against VERDICTS above
        analyst=analyst, at=when, target_time=_EPOCH + target_ms * _MS, note=note)
    backend.insert("feedback", [record.row()])
    # The note stays out of the log: it is free text and may say more than a log should.
    log.info("feedback: %s %s %s (tenant %s) by %s", record.verdict, target_kind, target, tenant,
             analyst)
    return record


def check_verdict(target: str, verdict: str, analyst: str, note: str = "") -> tuple[str, str]:
    """Raise `FeedbackError` for what `record_verdict` would refuse before looking anything up;
    returns the target and analyst as recorded (surrounding blanks removed)."""
    target = target.strip()
    if not target:
        raise FeedbackError(f"target: give a revocation or finding id; {_LIST_IDS}")
    if verdict not in VERDICTS:
        raise InvalidVerdict(f"verdict: {verdict!r} is not one of {', '.join(VERDICTS)} "
                             "(confirmed: a real hijack; dismissed: a false alarm)")
    analyst = analyst.strip()
    if not analyst:
        raise FeedbackError("analyst: say who gives the verdict (a name or login)")
    if len(analyst) > MAX_ANALYST:
        raise FeedbackError(f"analyst: {len(analyst)} characters; at most {MAX_ANALYST}")
    if len(note) > MAX_NOTE:
        raise FeedbackError(f"note: {len(note)} characters; at most {MAX_NOTE}: shorten it "
                            "(nothing was recorded)")
    return target, analyst


def _find_target(backend: ArchiveBackend, target: str,
                 kind: TargetKind | None) -> tuple[TargetKind, str, str, str, int] | None:
    """(kind, tenant, session, user, time_ms) of the target. A target without a session (a
    user- or source-scope revocation) takes the session and user of the events that caused it."""
    for candidate in (kind,) if kind else TARGET_KINDS:
        # No FINAL: duplicates of a row are identical, LIMIT 1 picks any.
        rows = backend.query(
            f"SELECT tenant, session, `user`, events, time_ms FROM {DB}.{_TABLE_OF[candidate]} "
            f"WHERE id = %(id)s ORDER BY tenant LIMIT 1", {"id": target})
        if rows.empty:
            continue
        tenant, session, user = (str(rows[c].iloc[0]) for c in ("tenant", "session", "user"))
        events = [str(e) for e in rows["events"].iloc[0]]
        if events and not (session and user):
            causes = backend.query(
                f"SELECT session, `user` FROM {DB}.events WHERE tenant = %(tenant)s "
                f"AND id IN %(ids)s ORDER BY time_ms, id", {"tenant": tenant, "ids": tuple(events)})
            session = session or next((str(s) for s in causes["session"] if s), "")
            user = user or next((str(u) for u in causes["user"] if u), "")
        return candidate, tenant, session, user, int(rows["time_ms"].iloc[0])
    return None


def verdicts(backend: ArchiveBackend, target: str | None = None, since: datetime | None = None,
             until: datetime | None = None, tenant: str | None = None) -> pd.DataFrame:
    """Verdicts given in `since <= at < until` (either bound may be left open), of one target
    or all, latest first: id, at, target, target_kind, verdict, tenant, session, user, analyst,
    note, target_time. Sessions and users are '' when the target had none."""
    params: dict[str, Any] = {"target": target or "", "tenant": tenant or ""}
    where = ["1"]
    if target is not None:
        where.append("target = %(target)s")
    if tenant is not None:
        where.append("tenant = %(tenant)s")
    if since is not None and until is not None:
        params.update(_range(since, until))
    elif since is not None:
        params["since"] = _ms(since)
    elif until is not None:
        params["until"] = _ms(until)
    if since is not None:
        where.append("time_ms >= %(since)s")
    if until is not None:
        where.append("time_ms < %(until)s")
    found = backend.query(
        f"SELECT id, time_ms, target, target_kind, verdict, tenant, session, `user`, analyst, "
        f"note, target_time_ms FROM {DB}.feedback FINAL WHERE {' AND '.join(where)} "
        f"ORDER BY time_ms DESC, id", params)
    found.insert(1, "at", _times(found.pop("time_ms")))
    found["target_time"] = _times(found.pop("target_time_ms"))
    return found


def session_labels(backend: ArchiveBackend, since: datetime, until: datetime,
                   tenant: str | None = None) -> pd.DataFrame:
    """One label per session whose revocations or findings (event time in `since <= t < until`)
    have a verdict: tenant, session, user, label ('confirmed' | 'dismissed'), source
    ('feedback'). Each target counts with its latest verdict; a session with any confirmed
    target is confirmed (a hijack stays a hijack when another of its alerts was noise).
    Targets without a session (a block of an address whose events named none) give no label."""
    where, params = range_where("target_time_ms", since, until, tenant)
    found = backend.query(
        f"SELECT tenant, target, session, `user`, verdict, time_ms, id FROM {DB}.feedback FINAL "
        f"WHERE {where}", params)
    columns = ["tenant", "session", "user", "label", "source"]
    if found.empty:
        return pd.DataFrame({c: pd.Series(dtype=STRING_DTYPE) for c in columns})
    # Latest verdict per target; at the same millisecond, confirmed wins, then the id decides.
    found["confirmed"] = found["verdict"] == "confirmed"
    latest = (found.sort_values(["time_ms", "confirmed", "id"], kind="stable")
              .drop_duplicates(["tenant", "target"], keep="last"))
    latest = latest[latest["session"] != ""]
    labels = latest.groupby(["tenant", "session"], as_index=False, sort=True).agg(
        user=("user", "max"), confirmed=("confirmed", "any"))
    labels["label"] = labels.pop("confirmed").map({True: "confirmed", False: "dismissed"})
    labels["source"] = "feedback"
    return labels[columns].astype(STRING_DTYPE).reset_index(drop=True)


def audit_sample(backend: ArchiveBackend, since: datetime, until: datetime, fraction: float,
                 seed: int, tenant: str | None = None) -> pd.DataFrame:
    """A deterministic random sample of the sessions with events in `since <= t < until` that
    nothing flagged: tenant, session, user, ordered by tenant and session.

    Unflagged: no finding and no revocation names the session (at any time), and no revocation
    without a session (user or source scope) was caused by one of its events in the range.
    A session is in the sample when sipHash64 of seed, tenant and session falls in the lowest
    `fraction` of the hash range: the same seed gives the same sample on every call and on both
    backends, and a sample at a larger fraction contains the one at a smaller.
    """
    if isinstance(fraction, bool) or not 0 < fraction <= 1:
        raise ValueError(f"fraction: {fraction!r} must be above 0 and at most 1")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: {seed!r} must be an int")
    bounds = _range(since, until)
    # Whole seconds around the range on `time`: the server skips day partitions outside it.
    since_s = (_EPOCH + bounds["since"] * _MS).replace(microsecond=0)
    until_s = (_EPOCH + bounds["until"] * _MS).replace(microsecond=0) + timedelta(seconds=1)
    params: dict[str, Any] = {**bounds, "since_s": since_s, "until_s": until_s,
                              "tenant": tenant or "", "seed": str(seed),
                              "threshold": min(_BUCKETS, int(fraction * _BUCKETS))}
    in_range = ("time >= %(since_s)s AND time < %(until_s)s AND time_ms >= %(since)s "
                "AND time_ms < %(until)s AND session != ''")
    if tenant is not None:
        in_range += " AND tenant = %(tenant)s"
    # Duplicated event rows do not matter: the sessions are grouped, and max(user) is the same.
    sample = backend.query(
        f"SELECT tenant, session, max(`user`) AS session_user FROM {DB}.events "
        f"WHERE {in_range} "
        f"AND sipHash64(concat(%(seed)s, '/', tenant, '/', session)) %% {_BUCKETS} "
        f"< %(threshold)s "
        f"AND (tenant, session) NOT IN (SELECT tenant, session FROM {DB}.findings "
        f"WHERE session != '') "
        f"AND (tenant, session) NOT IN (SELECT tenant, session FROM {DB}.revocations "
        f"WHERE session != '') "
        f"AND (tenant, session) NOT IN (SELECT tenant, session FROM {DB}.events "
        f"WHERE {in_range} AND (tenant, id) IN (SELECT tenant, event FROM {DB}.revocations "
        f"ARRAY JOIN events AS event WHERE session = '')) "
        f"GROUP BY tenant, session ORDER BY tenant, session", params)
    sample = sample.rename(columns={"session_user": "user"})
    return sample[["tenant", "session", "user"]].astype(STRING_DTYPE).reset_index(drop=True)
