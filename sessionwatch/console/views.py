"""What each console page shows, as plain data: the pages render it and `/api/` returns it as
JSON, so the two cannot disagree. Everything comes from storage/ queries (the notebooks' own).

Sessions are addressed by a reference, the first 16 characters of their hash: enough to be
unique, and viewers never see a full hash (not in the page, not in a link).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from storage import feedback, fleet, queries, recent

REF_LENGTH = 16
_REF = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
SESSION_WINDOW = timedelta(days=7)
USER_WINDOW = timedelta(days=30)


class NotFound(LookupError):
    """The page's subject is not in the archive."""


def session_ref(session: str | None) -> str:
    return (session or "")[:REF_LENGTH]


def resolve_session(archive: Any, tenant: str, ref: str) -> str:
    """The full session hash a reference names; NotFound if none or several."""
    if not _REF.fullmatch(ref):
        raise NotFound(f"session reference {ref[:40]!r} is not one")
    # A prefix only at exactly the reference's length: a longer guess must be the whole hash, so
    # a viewer cannot grow a reference into the full hash one character (one 200/404) at a time.
    pattern = ref.replace("_", "\\_") + ("%" if len(ref) == REF_LENGTH else "")
    found: set[str] = set()
    for table in ("events", "revocations", "findings"):
        rows = archive.query(
            f"SELECT DISTINCT session FROM sessionwatch.{table} WHERE tenant = %(tenant)s "
            "AND session LIKE %(pattern)s LIMIT 2", {"tenant": tenant, "pattern": pattern})
        found |= {str(s) for s in rows["session"]} if not rows.empty else set()
        if found:
            break
    if len(found) != 1:
        raise NotFound(f"no single session of tenant {tenant!r} starts with {ref!r}")
    return found.pop()


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame as JSON-able dicts: times as RFC 3339, NaN as None, arrays as lists."""
    out = []
    for row in frame.to_dict("records"):
        out.append({k: _plain(v) for k, v in row.items() if k != "time_ms"})
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def revocation_view(archive: Any, revocation_id: str) -> dict[str, Any]:
    rev = recent.revocation(archive, revocation_id)
    if rev is None:
        raise NotFound(f"revocation {revocation_id[:80]!r} is not in the archive")
    return {"revocation": rev, "findings": recent.causing_findings(archive, rev),
            "verdicts": records(feedback.verdicts(archive, target=revocation_id)),
            "session_ref": session_ref(rev["session"])}


def session_view(archive: Any, tenant: str, session: str) -> dict[str, Any]:
    timeline = queries.session_timeline(archive, tenant, session)
    if timeline.empty:
        raise NotFound(f"session {session_ref(session)!r} of tenant {tenant!r} has nothing archived")
    rows = records(timeline)
    user = next((r["user"] for r in rows if r.get("user")), None)
    first, last = timeline["time"].min(), timeline["time"].max()
    others: list[dict[str, Any]] = []
    if user:
        sessions = queries.user_sessions(archive, tenant, user, first - SESSION_WINDOW,
                                         last + SESSION_WINDOW)
        others = [dict(r, session_ref=session_ref(r["session"])) for r in records(sessions)
                  if r["session"] != session]
    findings = [dict(r, evidence=r.get("evidence") or {}) for r in rows if r["kind"] == "finding"]
    revs = recent.latest_revocations(archive, tenant=tenant, user=user, limit=200) if user else []
    revs = [r for r in revs if r["session"] == session]
    return {"tenant": tenant, "session": session, "session_ref": session_ref(session),
            "user": user, "first": first.isoformat(), "last": last.isoformat(),
            "timeline": rows, "findings": findings, "revocations": revs,
            "other_sessions": others}


def user_view(archive: Any, tenant: str, user: str,
              now: datetime | None = None) -> dict[str, Any]:
    until = (now or datetime.now(UTC)) + timedelta(minutes=1)
    since = until - USER_WINDOW
    sessions = queries.user_sessions(archive, tenant, user, since, until)
    revs = recent.latest_revocations(archive, tenant=tenant, user=user, limit=200)
    if sessions.empty and not revs:
        raise NotFound(f"user {user[:80]!r} of tenant {tenant!r} has nothing in the last "
                       f"{USER_WINDOW.days} days")
    logins = fleet.user_logins(archive, tenant, user, since, until)
    return {"tenant": tenant, "user": user, "since": since.isoformat(),
            "sessions": [dict(r, session_ref=session_ref(r["session"])) for r in records(sessions)],
            "logins": records(logins),
            "revocations": [dict(r, session_ref=session_ref(r["session"])) for r in revs]}


def detectors_view(archive: Any, since: datetime, until: datetime,
                   tenant: str | None = None) -> dict[str, Any]:
    stats = queries.detector_stats(archive, since, until, bucket="hour", tenant=tenant)
    verdicts = fleet.detector_verdicts(archive, since, until, tenant=tenant)
    return {"since": since.isoformat(), "until": until.isoformat(), "tenant": tenant,
            "per_hour": records(stats), "verdicts": records(verdicts)}
