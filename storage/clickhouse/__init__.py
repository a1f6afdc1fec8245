"""The archive: events, findings and revocations in ClickHouse (a server, or chDB in-process).

`open_backend` picks the backend from the settings; `schema` holds the tables and migrations,
`rows` turns contract objects into rows, `params` and `frames` make one query text and one
DataFrame shape work on both backends. clickhouse-driver, chDB and pandas load on first use.
"""

from storage.clickhouse.backends import ChdbBackend, ServerBackend, open_backend
from storage.clickhouse.base import ArchiveBackend, ArchiveUnavailable, Capabilities
from storage.clickhouse.schema import DATABASE, MIGRATIONS, TABLES

__all__ = [
    "DATABASE",
    "MIGRATIONS",
    "TABLES",
    "ArchiveBackend",
    "ArchiveUnavailable",
    "Capabilities",
    "ChdbBackend",
    "ServerBackend",
    "open_backend",
]
