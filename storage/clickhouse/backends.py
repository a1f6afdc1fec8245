"""The archive backends and the one place that picks one from the settings."""

from __future__ import annotations

from typing import Any

from producers.errors import ConfigError
from storage.clickhouse.embedded import ChdbBackend
from storage.clickhouse.schema import DATABASE
from storage.clickhouse.server import DEFAULT_URL, ServerBackend

__all__ = ["DEFAULT_URL", "ChdbBackend", "ServerBackend", "open_backend"]


def open_backend(clickhouse_url: str | None, chdb_dir: str | None,
                 **secrets: Any) -> ServerBackend | ChdbBackend:
    """The archive the settings name: a server URL or a chDB directory, exactly one.

    `secrets` (user, password, secure, ca_certs, verify) go to the server; chDB needs none.
    """
    if clickhouse_url and chdb_dir:
        raise ConfigError("clickhouse, chdb: give one archive, not both (a ClickHouse URL or a "
                          "chDB directory)")
    if clickhouse_url:
        return ServerBackend(clickhouse_url, **secrets)
    if chdb_dir:
        return ChdbBackend(chdb_dir)
    raise ConfigError(f"clickhouse, chdb: no archive given; use clickhouse://host:9000/{DATABASE} "
                      "or a chDB directory")
