"""Query parameters: `%(name)s` placeholders replaced by quoted ClickHouse literals, client-side.

The same rendering serves both backends (18.16 has no server-side parameters), so one query
text behaves the same on either. With parameters, a literal `%` is written `%%` (as in DB-API
pyformat); without, the SQL is sent untouched.

    None -> NULL          bool -> 1 / 0        int, float, Decimal -> number (nan, inf too)
    str, IP address -> '…' (backslash and quote escaped)           Enum -> its value
    date -> toDate('2026-03-02')
    datetime (aware) -> toDateTime('2026-03-02 09:00:00', 'UTC'); with a fraction of a second,
        toDateTime64(…, 6, 'UTC') where the server has DateTime64, else ValueError (compare
        `time_ms` instead)
    list -> [a, b]        tuple, set, frozenset -> (a, b) for IN; empty -> (NULL): matches nothing
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any


def render(sql: str, params: Mapping[str, Any] | None, *, datetime64: bool) -> str:
    if params is None:
        return sql
    literals = {name: literal(value, datetime64=datetime64, name=name)
                for name, value in params.items()}
    try:
        return sql % literals
    except KeyError as exc:
        raise ValueError(f"query: the SQL uses %({exc.args[0]})s but no such parameter was "
                         f"given (given: {', '.join(params) or 'none'})") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"query: {exc}: use %(name)s placeholders, and %% for a literal % "
                         "when passing parameters") from None


def literal(value: Any, *, datetime64: bool, name: str = "?") -> str:
    if value is None:
        return "NULL"
    if isinstance(value, Enum):
        return literal(value.value, datetime64=datetime64, name=name)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return quote(str(value))
    if isinstance(value, datetime):
        return _datetime(value, datetime64=datetime64, name=name)
    if isinstance(value, date):
        return f"toDate('{value.isoformat()}')"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v, datetime64=datetime64, name=name) for v in value) + "]"
    if isinstance(value, tuple | set | frozenset):
        items = [literal(v, datetime64=datetime64, name=name) for v in value]
        if not isinstance(value, tuple):
            items.sort()  # the same text every time, for logs and query caches
        return "(" + (", ".join(items) or "NULL") + ")"
    raise TypeError(f"query parameter {name!r}: cannot send a {type(value).__name__}")


def quote(text: str) -> str:
    # Inside '…' only the backslash and the quote are special; NUL is escaped for the logs' sake.
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\0", "\\0") + "'"


def _datetime(value: datetime, *, datetime64: bool, name: str) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"query parameter {name!r}: give an aware datetime (e.g. tzinfo=UTC), "
                         f"not the naive {value.isoformat()}")
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%d %H:%M:%S")
    if utc.microsecond == 0:
        return f"toDateTime('{text}', 'UTC')"
    if not datetime64:
        raise ValueError(f"query parameter {name!r}: {value.isoformat()} has a fraction of a "
                         "second but this server has no DateTime64; compare `time_ms` instead")
    return f"toDateTime64('{text}.{utc.microsecond:06d}', 6, 'UTC')"
