"""What an archive backend is (a ClickHouse server or an embedded chDB directory) and its errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

from producers.errors import SessionwatchError

if TYPE_CHECKING:
    import pandas as pd


class ArchiveUnavailable(SessionwatchError):
    """The archive cannot be reached right now (refused, timed out, server gone, disk full):
    retry the same call later. Every other error (bad SQL, unknown column) is a bug: it propagates."""


@dataclass(frozen=True)
class Capabilities:
    """What the server supports, found by asking it (never assumed from its name or version)."""

    server_version: str
    ipv6_type: bool         # the IPv6 column type (IPv4 addresses stored mapped: ::ffff:a.b.c.d)
    datetime64: bool        # DateTime64(3, 'UTC'): millisecond times; else DateTime (seconds)
    low_cardinality: bool   # LowCardinality(String) without experimental settings


# The probes: each statement succeeds (and answers as expected) only where the feature exists.
PROBE_VERSION = "SELECT version()"
PROBE_TIMEZONE = "SELECT timezone()"
PROBE_IPV6 = "SELECT toTypeName(toIPv6('::1'))"
PROBE_DATETIME64 = "SELECT toTypeName(toDateTime64('2020-01-01 00:00:00', 3, 'UTC'))"
# CAST to LowCardinality works on 18.16 too; only creating a column of it needs the setting.
PROBE_LOW_CARDINALITY = ("CREATE TEMPORARY TABLE sessionwatch_probe_lc (x LowCardinality(String)) "
                         "ENGINE = Memory")
PROBE_LOW_CARDINALITY_CLEANUP = "DROP TEMPORARY TABLE IF EXISTS sessionwatch_probe_lc"


class ArchiveBackend(Protocol):
    """The archive as the archiver, retention and analysts see it; the same on both backends.

    Nothing connects before the first call that needs the archive, so a backend can be built
    while the server is down; every call may raise `ArchiveUnavailable`. Not thread-safe: call
    from one thread (chDB requires it).
    """

    # "clickhouse" or "chdb": for logs.
    name: str

    @property
    def capabilities(self) -> Capabilities:
        """Detected on first use, then cached."""
        ...

    def migrate(self) -> list[str]:
        """Apply the pending schema migrations; returns the names applied ([] when up to date)."""
        ...

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Columnar insert of rows (column name -> Python value, e.g. from `rows.event_row`) into
        `sessionwatch.<table>`; returns the number of rows. All rows must have the same keys."""
        ...

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run a SELECT and return its result with the same dtypes on both backends.

        Parameters are `%(name)s` placeholders quoted client-side (`storage.clickhouse.params`);
        with params, write a literal `%` as `%%`. Qualify tables: `sessionwatch.events`.
        """
        ...

    def drop_partitions_before(self, table: str, day: date) -> int:
        """Drop `table`'s day partitions (UTC) older than `day`; returns how many were dropped."""
        ...

    def delete_before(self, table: str, cutoff_ms: int, *, tenants: Sequence[str] = (),
                      except_tenants: Sequence[str] = ()) -> None:
        """Delete the rows of some tenants older than `cutoff_ms` (epoch ms; a mutation)."""
        ...

    def close(self) -> None:
        ...
