"""The archive's tables and their versioned migrations, rendered for what the server supports.

Column names are the same everywhere; only types differ by capability (IPv6 or String,
DateTime64(3) or DateTime, LowCardinality(String) or String). Every table is a
ReplacingMergeTree whose ORDER BY key ends with `id` and holds only columns a duplicate
shares, partitioned by UTC day, so at-least-once redeliveries collapse (`FINAL`, or merges)
and retention drops whole days.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from storage.clickhouse.base import Capabilities

DATABASE = "sessionwatch"
MIGRATIONS_TABLE = "schema_migrations"
_WRAPPER = re.compile(r"(LowCardinality|Nullable)\((.*)\)", re.S)


class Kind(Enum):
    """What a column holds; `column_type` turns it into the server's type."""

    STRING = "string"
    LABEL = "label"            # few distinct values: LowCardinality(String) where supported
    JSON = "json"              # a JSON document as a String
    IP = "ip"                  # a client address: IPv6 where supported, else its text
    TIME = "time"              # UTC, milliseconds where supported
    OPTIONAL_TIME = "optional_time"  # TIME or NULL
    INT64 = "int64"
    STRINGS = "strings"        # Array(String)


def column_type(kind: Kind, caps: Capabilities) -> str:
    time = "DateTime64(3, 'UTC')" if caps.datetime64 else "DateTime('UTC')"
    return {
        Kind.STRING: "String",
        Kind.LABEL: "LowCardinality(String)" if caps.low_cardinality else "String",
        Kind.JSON: "String",
        Kind.IP: "IPv6" if caps.ipv6_type else "String",
        Kind.TIME: time,
        Kind.OPTIONAL_TIME: f"Nullable({time})",
        Kind.INT64: "Int64",
        Kind.STRINGS: "Array(String)",
    }[kind]


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, Kind], ...]
    order_by: tuple[str, ...]
    day_of: str                # the TIME column whose UTC day is the partition

    def create(self, caps: Capabilities) -> str:
        columns = ",\n    ".join(f"`{name}` {column_type(kind, caps)}" for name, kind in self.columns)
        order_by = ", ".join(f"`{c}`" for c in self.order_by)
        return (f"CREATE TABLE IF NOT EXISTS {DATABASE}.{self.name} (\n    {columns}\n)\n"
                f"ENGINE = ReplacingMergeTree\nPARTITION BY toYYYYMMDD(`{self.day_of}`)\n"
                f"ORDER BY ({order_by})")

    @property
    def ip_columns(self) -> frozenset[str]:
        return frozenset(name for name, kind in self.columns if kind is Kind.IP)


# Enrichment the archiver adds to each event when it can ('' otherwise).
ENRICHMENT_COLUMNS = ("country", "asn", "network_kind", "client")

EVENTS = Table(
    name="events",
    columns=(
        ("id", Kind.STRING),
        ("tenant", Kind.LABEL),
        ("type", Kind.LABEL),
        ("time", Kind.TIME),
        ("time_ms", Kind.INT64),          # epoch ms: exact order where `time` has seconds only
        ("session", Kind.STRING),         # '' when none
        ("user", Kind.STRING),            # '' when none
        ("ip", Kind.IP),
        ("user_agent", Kind.STRING),
        ("attrs", Kind.JSON),
        *((name, Kind.STRING) for name in ENRICHMENT_COLUMNS),
    ),
    # A session's timeline is one range; per-user queries filter on `user`.
    order_by=("tenant", "session", "time_ms", "id"),
    day_of="time",
)

FINDINGS = Table(
    name="findings",
    columns=(
        ("id", Kind.STRING),
        ("tenant", Kind.LABEL),
        ("session", Kind.STRING),
        ("user", Kind.STRING),
        ("ip", Kind.IP),
        ("detector", Kind.LABEL),
        ("severity", Kind.LABEL),
        ("summary", Kind.STRING),
        ("evidence", Kind.JSON),
        ("event_time", Kind.TIME),
        ("time_ms", Kind.INT64),          # event_time in epoch ms
        ("events", Kind.STRINGS),
    ),
    order_by=("tenant", "session", "time_ms", "id"),
    day_of="event_time",
)

REVOCATIONS = Table(
    name="revocations",
    columns=(
        ("id", Kind.STRING),
        ("tenant", Kind.LABEL),
        ("scope", Kind.LABEL),
        ("session", Kind.STRING),
        ("user", Kind.STRING),
        ("source", Kind.STRING),
        ("action", Kind.LABEL),
        ("not_before", Kind.OPTIONAL_TIME),   # NULL when the revocation has none
        ("expires", Kind.OPTIONAL_TIME),
        ("detectors", Kind.STRINGS),
        ("severity", Kind.LABEL),             # the highest of the reasons
        ("reasons", Kind.JSON),               # [{detector, severity, summary}] for admins
        ("event_time", Kind.TIME),
        ("decided_at", Kind.TIME),
        ("time_ms", Kind.INT64),              # event_time in epoch ms
        ("events", Kind.STRINGS),
    ),
    # decided_at is left out of key and partition: a replay may decide at another moment.
    order_by=("tenant", "user", "session", "time_ms", "id"),
    day_of="event_time",
)

# Analysts' verdicts on revocations and findings: the labels `train --from-archive` learns from.
# `id` is sha256(target|verdict|analyst|time_ms), so the same verdict written twice collapses.
FEEDBACK = Table(
    name="feedback",
    columns=(
        ("id", Kind.STRING),
        ("target", Kind.STRING),          # a revocation id or a finding id
        ("target_kind", Kind.LABEL),      # 'revocation' | 'finding'
        ("tenant", Kind.LABEL),
        ("session", Kind.STRING),         # the target's session ('' when none), copied at write
        ("user", Kind.STRING),            # the target's user ('' when none)
        ("verdict", Kind.LABEL),          # 'confirmed' | 'dismissed'
        ("analyst", Kind.STRING),
        ("at", Kind.TIME),                # when the verdict was given
        ("time_ms", Kind.INT64),          # `at` in epoch ms
        ("target_time_ms", Kind.INT64),   # the target's event time in epoch ms
        ("note", Kind.STRING),
    ),
    order_by=("tenant", "target", "time_ms", "id"),
    day_of="at",
)

# What people did in the operator console (storage/audit.py): who, when, from where, to what.
# `id` is sha256 of the entry's fields, so an entry written twice collapses. `detail` never holds
# a password, token, cookie or note text. Not touched by the archive's retention.
AUDIT = Table(
    name="audit",
    columns=(
        ("id", Kind.STRING),
        ("at", Kind.TIME),                # when it happened
        ("time_ms", Kind.INT64),          # `at` in epoch ms
        ("actor", Kind.STRING),           # the console account ('' before a sign-in names one)
        ("role", Kind.LABEL),             # 'viewer' | 'responder' | '' (not signed in)
        ("action", Kind.LABEL),           # sign_in, sign_in_failed, verdict, revoke_session, …
        ("target", Kind.STRING),          # a revocation/finding/session/user/source id, or ''
        ("tenant", Kind.LABEL),           # '' when the action concerns no tenant
        ("result", Kind.LABEL),           # 'ok' | 'refused' | 'error'
        ("detail", Kind.JSON),            # a JSON object of facts about the action
        ("client", Kind.STRING),          # the admin's address ('' when unknown)
    ),
    order_by=("time_ms", "id"),
    day_of="at",
)

TABLES: dict[str, Table] = {t.name: t for t in (EVENTS, FINDINGS, REVOCATIONS, FEEDBACK, AUDIT)}


def table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise ValueError(f"no archive table {name!r}; the tables are "
                         f"{', '.join(TABLES)}") from None


@dataclass(frozen=True)
class Migration:
    """One schema version. Its statements must be idempotent (IF NOT EXISTS, ADD COLUMN IF NOT
    EXISTS…): a crash between a statement and the record of the version replays them all."""

    version: int
    name: str
    statements: Callable[[Capabilities], list[str]]

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def _create_tables(caps: Capabilities) -> list[str]:
    # The tables of version 1 only: later tables come with their own migration.
    return [t.create(caps) for t in (EVENTS, FINDINGS, REVOCATIONS)]


def _create_feedback(caps: Capabilities) -> list[str]:
    return [FEEDBACK.create(caps)]


def _create_audit(caps: Capabilities) -> list[str]:
    return [AUDIT.create(caps)]


# Append only: a version, once released, never changes (servers record what they applied).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create_tables", _create_tables),
    Migration(2, "create_feedback", _create_feedback),
    Migration(3, "create_audit", _create_audit),
)


def bootstrap_statements() -> list[str]:
    """The database and the table that records applied versions, before any migration."""
    return [
        f"CREATE DATABASE IF NOT EXISTS {DATABASE}",
        f"CREATE TABLE IF NOT EXISTS {DATABASE}.{MIGRATIONS_TABLE} (\n"
        "    `version` UInt32,\n    `name` String,\n    `applied_at` DateTime('UTC')\n"
        ")\nENGINE = ReplacingMergeTree\nORDER BY version",
    ]


def unwrap(ch_type: str) -> tuple[str, bool]:
    """A server-reported type without its wrappers, and whether it was Nullable:
    'LowCardinality(Nullable(String))' -> ('String', True)."""
    nullable = False
    while match := _WRAPPER.fullmatch(ch_type):
        nullable = nullable or match.group(1) == "Nullable"
        ch_type = match.group(2)
    return ch_type, nullable
