"""What both archive backends share: migrations, inserts, queries and retention, written once
over three primitives each backend supplies (run a statement, select, insert columns)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from producers.errors import SessionwatchError
from storage.clickhouse.base import (
    PROBE_DATETIME64,
    PROBE_IPV6,
    PROBE_LOW_CARDINALITY,
    PROBE_LOW_CARDINALITY_CLEANUP,
    PROBE_TIMEZONE,
    PROBE_VERSION,
    ArchiveUnavailable,
    Capabilities,
)
from storage.clickhouse.params import quote, render
from storage.clickhouse.schema import (
    DATABASE,
    MIGRATIONS,
    MIGRATIONS_TABLE,
    bootstrap_statements,
    table,
    unwrap,
)

if TYPE_CHECKING:
    import pandas as pd

# Server error codes that say "not now" rather than "never": the same call may succeed later.
RETRYABLE_CODES = {
    159: "TIMEOUT_EXCEEDED", 160: "TOO_SLOW", 202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    203: "NO_FREE_CONNECTION", 209: "SOCKET_TIMEOUT", 210: "NETWORK_ERROR",
    236: "ABORTED", 241: "MEMORY_LIMIT_EXCEEDED", 242: "TABLE_IS_READ_ONLY",
    243: "NOT_ENOUGH_SPACE", 252: "TOO_MANY_PARTS", 285: "TOO_FEW_LIVE_REPLICAS",
    319: "UNKNOWN_STATUS_OF_INSERT", 394: "QUERY_WAS_CANCELLED", 425: "SYSTEM_ERROR",
    999: "KEEPER_EXCEPTION",
}
# Wrong user, password or network: retrying will not help, the settings must change.
AUTH_CODES = {192, 193, 194, 195, 516}

Columns = list[Sequence[Any]]


class SqlBackend:
    """migrate / insert / query / retention over `_execute`, `_select`, `_insert_columns`."""

    name: str

    def __init__(self) -> None:
        self._capabilities: Capabilities | None = None
        self._timezone = "UTC"
        self._column_types: dict[str, dict[str, str]] = {}

    @property
    def _result_timezone(self) -> str:
        """The zone of zoneless times in `_select`'s values."""
        return self._timezone

    # -- primitives ----------------------------------------------------------------------------
    def _execute(self, sql: str) -> None:
        raise NotImplementedError

    def _select(self, sql: str) -> tuple[list[str], list[str], Columns]:
        """Column names, ClickHouse types and values (any sequence per column)."""
        raise NotImplementedError

    def _insert_columns(self, table: str, names: list[str], types: list[str],
                        columns: Columns) -> None:
        raise NotImplementedError

    # -- the ArchiveBackend protocol -------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        if self._capabilities is None:
            self._capabilities = self._detect()
        return self._capabilities

    def migrate(self) -> list[str]:
        caps = self.capabilities
        for sql in bootstrap_statements():
            self._execute(sql)
        done = {int(v) for v in self._select(
            f"SELECT version FROM {DATABASE}.{MIGRATIONS_TABLE}")[2][0]}
        applied: list[str] = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            for sql in migration.statements(caps):
                self._execute(sql)
            # INSERT … SELECT: clickhouse-driver expects data after a bare INSERT … VALUES.
            self._execute(f"INSERT INTO {DATABASE}.{MIGRATIONS_TABLE} (version, name, applied_at) "
                          f"SELECT {migration.version}, {quote(migration.name)}, now()")
            applied.append(migration.label)
        self._column_types.clear()
        return applied

    def insert(self, table_name: str, rows: Sequence[Mapping[str, Any]]) -> int:
        spec = table(table_name)
        if not rows:
            return 0
        names = list(rows[0])
        try:
            columns: Columns = [[row[name] for row in rows] for name in names]
        except KeyError as exc:
            raise ValueError(f"insert into {table_name}: a row has no {exc.args[0]!r}; every row "
                             "needs the first row's columns") from None
        if any(len(row) != len(names) for row in rows):
            raise ValueError(f"insert into {table_name}: rows have different columns; every row "
                             "needs the first row's columns")
        known = self._types_of(table_name)
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"insert into {table_name}: no column {', '.join(unknown)}; the "
                             f"table has {', '.join(known)}")
        types = [known[name] for name in names]
        for i, name in enumerate(names):
            base, nullable = unwrap(types[i])
            # rows.py wrote canonical text, which a String column keeps as it is.
            if name in spec.ip_columns and base == "IPv6":
                columns[i] = [_ipv6_text(v) for v in columns[i]]
            elif base.startswith("DateTime(") and not nullable:
                # Epoch seconds: clickhouse-driver takes ints as they are, where aware datetimes
                # cost a pytz conversion each (12 % of the archive path, benchmarks/archive.py).
                columns[i] = [int(v.timestamp()) if isinstance(v, datetime) else v
                              for v in columns[i]]
        self._insert_columns(table_name, names, types, columns)
        return len(rows)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        from storage.clickhouse.frames import frame

        text = render(sql, params, datetime64=self.capabilities.datetime64)
        names, types, columns = self._select(text)
        return frame(names, types, columns, self._result_timezone)

    def drop_partitions_before(self, table_name: str, day: date) -> int:
        table(table_name)
        partitions = self._select(
            f"SELECT DISTINCT partition_id FROM system.parts WHERE database = {quote(DATABASE)} "
            f"AND table = {quote(table_name)} AND active")[2][0]
        cutoff = int(day.strftime("%Y%m%d"))
        old = sorted(p for p in map(str, partitions) if p.isdigit() and int(p) < cutoff)
        for partition in old:
            self._execute(f"ALTER TABLE {DATABASE}.{table_name} DROP PARTITION ID {quote(partition)}")
        return len(old)

    def delete_before(self, table_name: str, cutoff_ms: int, *, tenants: Sequence[str] = (),
                      except_tenants: Sequence[str] = ()) -> None:
        """Delete rows older than `cutoff_ms` of some tenants (a mutation: for tenants whose
        retention is shorter than the day partitions kept for the others)."""
        table(table_name)
        where = [f"time_ms < {int(cutoff_ms)}"]
        if tenants:
            where.append(f"tenant IN ({', '.join(quote(t) for t in tenants)})")
        if except_tenants:
            where.append(f"tenant NOT IN ({', '.join(quote(t) for t in except_tenants)})")
        self._execute(f"ALTER TABLE {DATABASE}.{table_name} DELETE WHERE {' AND '.join(where)}")

    def close(self) -> None:
        pass

    # -- helpers -------------------------------------------------------------------------------
    def _detect(self) -> Capabilities:
        version = str(self._probe(PROBE_VERSION, required=True))
        self._timezone = str(self._probe(PROBE_TIMEZONE, required=True))
        low_cardinality = self._probe(PROBE_LOW_CARDINALITY) is not None
        if low_cardinality:
            self._execute(PROBE_LOW_CARDINALITY_CLEANUP)
        return Capabilities(
            server_version=version,
            ipv6_type=self._probe(PROBE_IPV6) == "IPv6",
            datetime64=str(self._probe(PROBE_DATETIME64)).startswith("DateTime64"),
            low_cardinality=low_cardinality,
        )

    def _probe(self, sql: str, required: bool = False) -> Any:
        """The first value `sql` returns ('' for a statement), None if the server refuses it."""
        try:
            _, _, columns = self._select(sql)
        except ArchiveUnavailable:
            raise
        except Exception:  # noqa: BLE001 - any refusal means "not supported here"
            if required:
                raise
            return None
        return next(iter(columns[0]), "") if columns else ""

    def _types_of(self, table_name: str) -> dict[str, str]:
        if table_name not in self._column_types:
            names, types = self._select(
                f"SELECT name, type FROM system.columns WHERE database = {quote(DATABASE)} "
                f"AND table = {quote(table_name)}")[2]
            if not len(names):
                raise SessionwatchError(f"{DATABASE}.{table_name} does not exist: migrate() the "
                                        "archive first")
            self._column_types[table_name] = dict(zip(map(str, names), map(str, types),
                                                      strict=True))
        return self._column_types[table_name]


def _ipv6_text(value: str) -> str:
    """What an IPv6 column accepts for an address's text: IPv4 as mapped, '' (none) as ::."""
    if not value:
        return "::"
    return value if ":" in value else "::ffff:" + value


def error_code(exc: BaseException) -> int | None:
    match = re.search(r"Code: (\d+)", str(exc))
    return int(match.group(1)) if match else None


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2])[:300] if lines else type(exc).__name__
