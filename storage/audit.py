"""The operator console's audit trail (`sessionwatch.audit`): every sign-in, verdict, revocation
by hand and lift, with who, when, from where and how it ended.

An entry's id is a hash of its fields, so one written twice is one row (reads are `FINAL`).
`detail` is for facts, never secrets: keys naming a password, token, cookie, secret or note
are refused, and free text belongs in the feedback table, not here. Same SQL on ClickHouse
18.16 and chDB.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pandas as pd

from producers.errors import SessionwatchError
from storage.clickhouse import ArchiveBackend
from storage.clickhouse.frames import TIME_DTYPE
from storage.clickhouse.rows import canonical_ip, epoch_ms

log = logging.getLogger("sessionwatch.audit")

DB = "sessionwatch"
Result = Literal["ok", "refused", "error"]
RESULTS: tuple[Result, ...] = ("ok", "refused", "error")
ROLES = ("viewer", "responder", "")   # '' : nobody signed in yet (a failed sign-in)
# The actions the console writes; others are accepted if they are snake_case names.
ACTIONS = ("sign_in", "sign_in_failed", "sign_out", "verdict", "revoke_session", "revoke_user",
           "block_source", "lift_block")
MAX_ACTOR = 200
MAX_TARGET = 256
MAX_CLIENT = 64
MAX_DETAIL = 4_000
MAX_LIMIT = 10_000
_ACTION = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Substrings of detail keys that would hold what no table may: refused at any depth.
_SECRET_KEYS = ("password", "passwd", "token", "cookie", "secret", "authorization", "csrf",
                "note")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
COLUMNS = ["id", "at", "actor", "role", "action", "target", "tenant", "result", "detail", "client"]


class AuditError(SessionwatchError, ValueError):
    """An entry that cannot be recorded as given; nothing was written."""


@dataclass(frozen=True)
class AuditEntry:
    """One entry as archived."""

    id: str
    at: datetime            # UTC, milliseconds
    actor: str
    role: str
    action: str
    target: str
    tenant: str
    result: Result
    detail: dict[str, Any] = field(default_factory=dict)
    client: str = ""

    def row(self) -> dict[str, Any]:
        """The row of `sessionwatch.audit`."""
        return {"id": self.id, "at": self.at, "time_ms": epoch_ms(self.at), "actor": self.actor,
                "role": self.role, "action": self.action, "target": self.target,
                "tenant": self.tenant, "result": self.result, "detail": _detail_json(self.detail),
                "client": self.client}


def entry_id(at: datetime, actor: str, role: str, action: str, target: str, tenant: str,
             result: str, detail: str, client: str) -> str:
    """Deterministic: the same action by the same actor at the same millisecond is one row."""
    text = "|".join((str(epoch_ms(at)), actor, role, action, target, tenant, result, detail,
                     client))
    return hashlib.sha256(text.encode()).hexdigest()


def audit_entry(*, actor: str, role: str, action: str, target: str = "", tenant: str = "",
                result: str = "ok", detail: Mapping[str, Any] | None = None, client: str = "",
                at: datetime | None = None) -> AuditEntry:
    """The entry `record_action` would write, checked; raises AuditError naming the field."""
    actor = actor.strip()[:MAX_ACTOR]   # a failed sign-in's name as typed, bounded
    if role not in ROLES:
        raise AuditError(f"role: {role!r} is not one of viewer, responder, '' (not signed in)")
    if not _ACTION.fullmatch(action):
        raise AuditError(f"action: {action[:80]!r} is not a snake_case name such as "
                         f"{', '.join(ACTIONS[:4])}")
    if result not in RESULTS:
        raise AuditError(f"result: {result!r} is not one of {', '.join(RESULTS)}")
    if len(target) > MAX_TARGET:
        raise AuditError(f"target: {len(target)} characters; at most {MAX_TARGET} (an id)")
    facts = dict(detail or {})
    _check_keys(facts, "detail")
    text = _detail_json(facts)
    if len(text) > MAX_DETAIL:
        raise AuditError(f"detail: {len(text)} characters of JSON; at most {MAX_DETAIL}: keep "
                         "facts (ids, counts, reasons), not documents")
    client = canonical_ip(client.strip())[:MAX_CLIENT]
    if at is not None and (at.tzinfo is None or at.utcoffset() is None):
        raise AuditError(f"at: give an aware time (tzinfo=UTC), not {at.isoformat()}")
    when = _EPOCH + epoch_ms(at or datetime.now(UTC)) * _MS
    return AuditEntry(
        id=entry_id(when, actor, role, action, target, tenant, result, text, client),
        at=when, actor=actor, role=role, action=action, target=target, tenant=tenant,
        result=result,  # checked against RESULTS above
        detail=json.loads(text), client=client)


def record_action(backend: ArchiveBackend, *, actor: str, role: str, action: str,
                  target: str = "", tenant: str = "", result: str = "ok",
                  detail: Mapping[str, Any] | None = None, client: str = "",
                  at: datetime | None = None) -> AuditEntry:
    """Write one entry to `sessionwatch.audit` and return it. `at` defaults to now (kept to
    the millisecond); `client` is the admin's address (canonical text when it is one)."""
    entry = audit_entry(actor=actor, role=role, action=action, target=target, tenant=tenant,
                        result=result, detail=detail, client=client, at=at)
    backend.insert("audit", [entry.row()])
    log.info("audit: %s %s by %r (%s) from %s: %s", entry.action, entry.target or "-",
             entry.actor, entry.role or "not signed in", entry.client or "?", entry.result)
    return entry


def audit_log(backend: ArchiveBackend, since: datetime | None = None,
              until: datetime | None = None, actor: str | None = None,
              action: str | None = None, limit: int = 200, *, tenant: str | None = None,
              target: str | None = None) -> pd.DataFrame:
    """Entries with `since <= at < until` (either bound open), newest first, at most `limit`:
    id, at, actor, role, action, target, tenant, result, detail (a dict), client."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise AuditError(f"limit: {limit!r} must be an int from 1 to {MAX_LIMIT}")
    where = ["1"]
    params: dict[str, Any] = {"limit": limit}
    for name, value in (("since", since), ("until", until)):
        if value is not None:
            if value.tzinfo is None or value.utcoffset() is None:
                raise AuditError(f"{name}: give an aware time (tzinfo=UTC), not "
                                 f"{value.isoformat()}")
            params[name] = epoch_ms(value)
    if since is not None and until is not None and params["until"] <= params["since"]:
        raise AuditError(f"until ({until.isoformat()}) must be after since ({since.isoformat()})")
    if since is not None:
        where.append("time_ms >= %(since)s")
    if until is not None:
        where.append("time_ms < %(until)s")
    for column, text in (("actor", actor), ("action", action), ("tenant", tenant),
                         ("target", target)):
        if text is not None:
            params[column] = text
            where.append(f"`{column}` = %({column})s")
    found = backend.query(
        f"SELECT id, time_ms, actor, role, action, target, tenant, result, detail, client "
        f"FROM {DB}.audit FINAL WHERE {' AND '.join(where)} "
        f"ORDER BY time_ms DESC, id LIMIT %(limit)s", params)
    found.insert(1, "at", pd.to_datetime(found.pop("time_ms"), unit="ms", utc=True)
                 .astype(TIME_DTYPE))
    found["detail"] = [json.loads(d) if d else {} for d in found["detail"]]
    return found[COLUMNS].reset_index(drop=True)


def _check_keys(value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise AuditError(f"{path}: key {key!r} is not a string")
            lowered = key.lower()
            if any(word in lowered for word in _SECRET_KEYS):
                raise AuditError(f"{path}.{key}: the audit never holds passwords, tokens, "
                                 "cookies, secrets or note text; leave it out (an id or a "
                                 "count will do)")
            _check_keys(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_keys(item, f"{path}[{i}]")


def _detail_json(detail: Mapping[str, Any]) -> str:
    try:
        return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          default=_plain)
    except (TypeError, ValueError) as exc:
        raise AuditError(f"detail: not JSON-serialisable ({exc}); give strings, numbers, "
                         "booleans, lists and objects") from None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "value") and isinstance(value.value, str):  # an Enum such as Action
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON")
