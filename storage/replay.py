"""Archived events and revocations of a time range read back as contract objects, for a replay.

Events come back in one deterministic order, (time_ms, tenant, session, id), read in pages so a
week of events never has to fit in one DataFrame; every read is `FINAL`, so rows archived more
than once count once. The same SQL runs on ClickHouse 18.16 and on chDB.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from producers.contract import EVENT_SCHEMA, Event, EventType
from producers.errors import SessionwatchError
from storage.clickhouse import ArchiveBackend

DB = "sessionwatch"
PAGE_ROWS = 50_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_SECOND = timedelta(seconds=1)

EVENT_COLUMNS = ("id", "type", "time_ms", "tenant", "session", "user", "ip", "user_agent", "attrs")
REVOCATION_COLUMNS = ("id", "tenant", "scope", "action", "session", "user", "source", "detectors",
                      "time_ms")

# Keyset pagination over the order (time_ms, tenant, session, id): unique after FINAL, because it
# is the table's ORDER BY key in another order. Spelled out as ORs: 18.16 has no tuple `>`.
_AFTER = ("(time_ms > %(k_time)s OR (time_ms = %(k_time)s AND (tenant > %(k_tenant)s OR "
          "(tenant = %(k_tenant)s AND (session > %(k_session)s OR "
          "(session = %(k_session)s AND id > %(k_id)s))))))")


def read_events(backend: ArchiveBackend, since: datetime, until: datetime,
                tenant: str | None = None, page_rows: int = PAGE_ROWS) -> Iterator[Event]:
    """The archived events with `since <= time < until` (of one tenant, or all), as contract
    events, ordered by (time, tenant, session, id): each session's events in their original
    order, and the whole order the same on every call.

    What the archive does not keep comes back as the contract's default: `schema` is
    `sessionwatch.event/1` whatever minor revision was sent, times have milliseconds, and
    addresses are in their canonical text (IPv4-mapped IPv6 as IPv4).
    """
    if page_rows < 1:
        raise ValueError("page_rows: must be at least 1")
    params = _range_params(since, until, tenant)
    where = _where(tenant) + " AND time >= %(since_s)s AND time < %(until_s)s"
    columns = ", ".join(f"`{c}`" for c in EVENT_COLUMNS)
    after = ""
    while True:
        page = backend.query(
            f"SELECT {columns} FROM {DB}.events FINAL WHERE {where}{after} "
            f"ORDER BY time_ms, tenant, session, id LIMIT {int(page_rows)}", params)
        if page.empty:
            return
        rows = list(zip(*(page[c].tolist() for c in EVENT_COLUMNS), strict=True))
        for row in rows:
            yield _event(*row)
        if len(rows) < page_rows:
            return
        last = rows[-1]
        params.update(k_time=int(last[2]), k_tenant=str(last[3]), k_session=str(last[4]),
                      k_id=str(last[0]))
        after = " AND " + _AFTER


def read_revocations(backend: ArchiveBackend, since: datetime, until: datetime,
                     tenant: str | None = None, *,
                     include_manual: bool = False) -> list[dict[str, Any]]:
    """The archived revocations with `since <= event time < until`, as plain dicts (id, tenant,
    scope, action, session, user, source, detectors, time_ms); absent subjects are None.
    Ordered by (time_ms, tenant, id). Revocations an admin made by hand in the console
    (detector `console.manual`) are left out unless asked for: a backtest compares what a
    policy decides, and no policy reproduces a person's decision."""
    params = _range_params(since, until, tenant)
    columns = ", ".join(f"`{c}`" for c in REVOCATION_COLUMNS)
    manual = "" if include_manual else " AND NOT has(detectors, 'console.manual')"
    frame = backend.query(
        f"SELECT {columns} FROM {DB}.revocations FINAL WHERE {_where(tenant)}{manual} "
        f"ORDER BY time_ms, tenant, id", params)
    if frame.empty:
        return []
    out: list[dict[str, Any]] = []
    for row in zip(*(frame[c].tolist() for c in REVOCATION_COLUMNS), strict=True):
        item = dict(zip(REVOCATION_COLUMNS, row, strict=True))
        for name in ("id", "tenant", "scope", "action"):
            item[name] = str(item[name])
        for name in ("session", "user", "source"):
            item[name] = str(item[name]) or None
        item["detectors"] = sorted(str(d) for d in item["detectors"])
        item["time_ms"] = int(item["time_ms"])
        out.append(item)
    return out


def _event(event_id: Any, kind: Any, time_ms: Any, tenant: Any, session: Any, user: Any, ip: Any,
           user_agent: Any, attrs: Any) -> Event:
    try:
        event_type = EventType(str(kind))
        parsed = json.loads(str(attrs)) if attrs else {}
    except ValueError as exc:
        raise SessionwatchError(f"{DB}.events: event {event_id!r} cannot be rebuilt ({exc}); the row "
                                "was not written by this version's archiver") from None
    return Event(schema=EVENT_SCHEMA, id=str(event_id), type=event_type,
                 time=_EPOCH + int(time_ms) * _MS, ip=str(ip), tenant=str(tenant),
                 session=str(session) or None, user=str(user) or None,
                 user_agent=str(user_agent) or None, attrs=parsed)


def _ms(when: datetime, name: str) -> int:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name}: give a timezone-aware time (e.g. tzinfo=UTC), not the naive "
                         f"{when.isoformat()}")
    return (when - _EPOCH) // _MS


def _range_params(since: datetime, until: datetime, tenant: str | None) -> dict[str, Any]:
    start, end = _ms(since, "since"), _ms(until, "until")
    if end <= start:
        raise ValueError(f"until ({until.isoformat()}) must be after since ({since.isoformat()})")
    # Whole seconds around the range on `time`: lets the server skip day partitions outside it
    # (and `time` has seconds only on 18.16); `time_ms` then decides exactly.
    since_s = (_EPOCH + start * _MS).replace(microsecond=0)
    until_s = (_EPOCH + end * _MS).replace(microsecond=0) + _SECOND
    return {"since": start, "until": end, "since_s": since_s, "until_s": until_s,
            "tenant": tenant or ""}


def _where(tenant: str | None) -> str:
    where = "time_ms >= %(since)s AND time_ms < %(until)s"
    return where + (" AND tenant = %(tenant)s" if tenant is not None else "")
