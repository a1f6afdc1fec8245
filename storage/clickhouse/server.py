"""A ClickHouse server as the archive, through clickhouse-driver (native protocol)."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

from producers.errors import ConfigError
from storage.clickhouse.base import ArchiveUnavailable
from storage.clickhouse.core import (
    AUTH_CODES,
    RETRYABLE_CODES,
    Columns,
    SqlBackend,
    first_line,
)
from storage.clickhouse.schema import DATABASE

DEFAULT_URL = f"clickhouse://127.0.0.1:9000/{DATABASE}"


class ServerBackend(SqlBackend):
    """A ClickHouse server through clickhouse-driver (native protocol, columnar inserts).

    Connects on first use and again after the server came back. The URL names host, port and
    the `sessionwatch` database; the password comes separately, never in the URL.
    """

    name = "clickhouse"

    def __init__(self, url: str = DEFAULT_URL, *, user: str = "default", password: str = "",
                 secure: bool = False, ca_certs: str | None = None, verify: bool = True) -> None:
        super().__init__()
        parts = urlsplit(url)
        if parts.scheme not in ("clickhouse", "clickhouses"):
            raise ConfigError(f"clickhouse: {url!r} is not a ClickHouse URL; use "
                              f"clickhouse://host:9000/{DATABASE} (clickhouses:// for TLS)")
        if parts.password is not None:
            raise ConfigError("clickhouse: the URL holds a password; give it as the ClickHouse "
                              "password setting instead, so it never shows in logs")
        if parts.path.strip("/") not in ("", DATABASE):
            raise ConfigError(f"clickhouse: {url!r} names database {parts.path.strip('/')!r}; "
                              f"the archive lives in {DATABASE!r}: use /{DATABASE}")
        if parts.query:
            raise ConfigError(f"clickhouse: {url!r}: URL options are not supported; use the "
                              "ClickHouse settings (user, password, CA certificates)")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"clickhouse: {url!r} has a bad port") from None
        if not parts.hostname:
            raise ConfigError(f"clickhouse: {url!r} names no host")
        self.secure = secure or parts.scheme == "clickhouses"
        self.host = parts.hostname
        self.port = port or (9440 if self.secure else 9000)
        self.user = parts.username or user
        self.url = f"{'clickhouses' if self.secure else 'clickhouse'}://{self.host}:{self.port}/{DATABASE}"
        self._password = password
        self._ca_certs = ca_certs
        self._verify = verify
        self._client: Any = None

    def __repr__(self) -> str:
        return f"ServerBackend({self.url!r}, user={self.user!r})"

    def _run(self, sql: str, data: Any = None, **kwargs: Any) -> Any:
        from clickhouse_driver import errors

        if self._client is None:
            from clickhouse_driver import Client

            self._client = Client(
                host=self.host, port=self.port, database="default", user=self.user,
                password=self._password, secure=self.secure, verify=self._verify,
                ca_certs=self._ca_certs, client_name="sessionwatch", connect_timeout=5,
                send_receive_timeout=120, sync_request_timeout=5)
        try:
            return self._client.execute(sql, data, **kwargs)
        except errors.ServerException as exc:
            if exc.code in AUTH_CODES:
                raise ConfigError(f"clickhouse: {self.url} refused user {self.user!r}: "
                                  f"{first_line(exc)}; check the ClickHouse user and password "
                                  "settings") from None
            if exc.code in RETRYABLE_CODES:
                raise ArchiveUnavailable(f"clickhouse: {self.url}: {first_line(exc)}") from exc
            raise
        except ssl.SSLCertVerificationError as exc:
            raise ConfigError(f"clickhouse: {self.url}: TLS certificate not trusted ({exc}); "
                              "give the CA file as the ClickHouse CA certificates setting") from None
        except (errors.NetworkError, errors.SocketTimeoutError,
                errors.UnexpectedPacketFromServerError, EOFError, OSError) as exc:
            self._client.disconnect()  # the next call starts on a fresh connection
            raise ArchiveUnavailable(f"clickhouse: {self.url}: {first_line(exc)}") from exc

    def _execute(self, sql: str) -> None:
        self._run(sql)

    def _select(self, sql: str) -> tuple[list[str], list[str], Columns]:
        result = self._run(sql, with_column_types=True, columnar=True)
        data, described = result if isinstance(result, tuple) else ([], [])
        names = [name for name, _ in described]
        types = [type_ for _, type_ in described]
        return names, types, list(data) if data else [[] for _ in described]

    def _insert_columns(self, table: str, names: list[str], types: list[str],
                        columns: Columns) -> None:
        quoted = ", ".join(f"`{name}`" for name in names)
        self._run(f"INSERT INTO {DATABASE}.{table} ({quoted}) VALUES", columns, columnar=True)

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client = None
