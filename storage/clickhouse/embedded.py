"""chDB as the archive: ClickHouse in-process, keeping its data in a directory."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from producers.errors import ConfigError
from storage.clickhouse.base import ArchiveUnavailable
from storage.clickhouse.core import (
    RETRYABLE_CODES,
    Columns,
    SqlBackend,
    error_code,
    first_line,
)
from storage.clickhouse.schema import DATABASE, unwrap

if TYPE_CHECKING:
    import pyarrow as pa


class ChdbBackend(SqlBackend):
    """ClickHouse in-process (chDB) keeping the archive in a directory: no server to run.

    chDB opens one directory per process: close this backend before opening another path.
    """

    name = "chdb"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = str(path)
        self._session: Any = None

    def __repr__(self) -> str:
        return f"ChdbBackend({self.path!r})"

    @property
    def _result_timezone(self) -> str:
        return "UTC"  # Arrow times are epoch-based whatever chDB's zone

    def _open(self) -> Any:
        if self._session is None:
            from chdb.session import Session

            try:
                self._session = Session(self.path)  # type: ignore[no-untyped-call]
            except RuntimeError as exc:
                message = first_line(exc)
                if "already initialized with path" in message:
                    raise ConfigError(f"chdb: cannot open {self.path!r}: this process has another "
                                      f"chDB directory open ({message})") from None
                if "Cannot lock file" in message:
                    raise ArchiveUnavailable(f"chdb: {self.path!r} is in use by another process "
                                             f"({message})") from exc
                raise
        return self._session

    # chDB raises chdb._exceptions.ChdbError, a RuntimeError (`chdb.ChdbError` is another class).
    def _run(self, sql: str, fmt: str = "CSV") -> Any:
        session = self._open()
        try:
            return session.query(sql, fmt)
        except RuntimeError as exc:
            code = error_code(exc)
            if code in RETRYABLE_CODES:
                raise ArchiveUnavailable(f"chdb: {self.path}: {first_line(exc)}") from exc
            raise

    def _execute(self, sql: str) -> None:
        self._run(sql)

    def _select(self, sql: str) -> tuple[list[str], list[str], Columns]:
        from storage.clickhouse.frames import from_arrow

        text = sql.strip().rstrip(";")
        # Arrow is ~15x faster than chDB's own DataFrame but drops types (DateTime as UInt32,
        # Enum as its codes, IPv6 as bytes): ask for the exact ones, as the server protocol has.
        try:
            described = self._run(f"DESCRIBE TABLE ({text})", "ArrowTable")
            types: list[str] | None = [str(t) for t in described.column("type").to_pylist()]
        except RuntimeError:
            types = None  # not a SELECT (SHOW, EXISTS…): Arrow's types will do
        result = self._run(text, "ArrowTable")
        if types is None or len(types) != result.num_columns:
            types = [_type_of(c.type) for c in result.columns]
        columns = [from_arrow(c, t) for c, t in zip(result.columns, types, strict=True)]
        return list(result.column_names), types, columns

    def _insert_columns(self, table: str, names: list[str], types: list[str],
                        columns: Columns) -> None:
        import pyarrow as pa

        batch = pa.Table.from_arrays([_arrow(c, t) for c, t in zip(columns, types, strict=True)],
                                     names=names)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_table(batch)
        quoted = ", ".join(f"`{name}`" for name in names)
        try:
            with self._open().send_insert(f"INSERT INTO {DATABASE}.{table} ({quoted})",
                                          "ArrowStream") as inserter:
                inserter.append(sink.getvalue().to_pybytes())
                inserter.finish()
        except RuntimeError as exc:
            if error_code(exc) in RETRYABLE_CODES:
                raise ArchiveUnavailable(f"chdb: {self.path}: {first_line(exc)}") from exc
            raise

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def _arrow(values: Sequence[Any], ch_type: str) -> pa.Array:
    """One column as Arrow, typed so chDB converts it exactly (times as epoch ms)."""
    import pyarrow as pa

    base, _ = unwrap(ch_type)
    name = base.split("(", 1)[0]
    if name in ("DateTime", "DateTime64"):
        # Aware datetimes: pyarrow converts them to UTC (and to ms, truncating).
        return pa.array(values, pa.timestamp("ms", tz="UTC"))
    if name in ("String", "IPv6", "IPv4", "FixedString"):
        return pa.array(values, pa.string())
    if base == "Array(String)":
        return pa.array(values, pa.list_(pa.string()))
    if re.fullmatch(r"U?Int(8|16|32|64)", name):
        return pa.array(values, getattr(pa, name.lower())())
    return pa.array(values)


def _type_of(kind: pa.DataType) -> str:
    """A ClickHouse type for an Arrow column whose query could not be described."""
    import pyarrow as pa

    if pa.types.is_integer(kind):
        return f"{'U' if pa.types.is_unsigned_integer(kind) else ''}Int{kind.bit_width}"
    if pa.types.is_floating(kind):
        return f"Float{kind.bit_width}"
    if pa.types.is_boolean(kind):
        return "Bool"
    if pa.types.is_timestamp(kind):
        return "DateTime64(9)"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        return "String"
    return "Object"
