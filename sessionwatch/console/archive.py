"""The console's handle on the archive: one backend shared by the request threads, one query at a
time (chDB's in-process engine is one connection; a server would allow more, but the console's
load is a few analysts)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd


class SharedArchive:
    """An ArchiveBackend (storage/clickhouse) behind a lock; the same methods storage/ calls."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._lock = threading.RLock()
        self.name = backend.name

    @property
    def capabilities(self) -> Any:
        return self._backend.capabilities

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        with self._lock:
            return self._backend.query(sql, params)

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        with self._lock:
            return self._backend.insert(table, rows)

    def migrate(self) -> list[str]:
        with self._lock:
            return self._backend.migrate()

    def close(self) -> None:
        with self._lock:
            self._backend.close()

    def __repr__(self) -> str:
        return f"SharedArchive({self._backend!r})"
