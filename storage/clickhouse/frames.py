"""Query results -> pandas DataFrames with the same dtypes whichever backend answered.

Driven by each result column's ClickHouse type, so a column reads the same from the server
(clickhouse-driver: Python objects) and from chDB (Arrow, via `from_arrow`):

    String, FixedString, Enum, UUID, IPv4, IPv6 -> pandas' default string dtype (`str` on
        pandas 3); IPv6 as canonical text, IPv4-mapped as IPv4, `::` as ''
    (U)Int8-64 -> numpy (u)int of that width; Nullable -> pandas' Int64 etc.; wider -> object
    Float32/64 -> float32/64 (NULL -> NaN); Decimal -> float64; Bool -> bool / boolean
    DateTime, DateTime64 -> datetime64[ns, UTC]; a time without a zone is read in the server's
        zone (as clickhouse-driver does; NaT where a DST change makes it ambiguous)
    Date, Date32 -> datetime64[ns]
    Array(T) -> object, each cell a list of T's Python values; anything else -> object
"""

from __future__ import annotations

import ipaddress
import math
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from storage.clickhouse.schema import unwrap

if TYPE_CHECKING:
    import pyarrow as pa

STRING_DTYPE = pd.Series(["x"]).dtype  # `str` on pandas 3, object on pandas 2
TIME_DTYPE = "datetime64[ns, UTC]"
_INTS = {f"{sign}Int{bits}": f"{sign.lower()}int{bits}"
         for sign in ("", "U") for bits in (8, 16, 32, 64)}
_TEXT = ("String", "FixedString", "Enum8", "Enum16", "Enum", "UUID", "IPv4", "IPv6")
_IPV4_MAPPED = bytes(10) + b"\xff\xff"


def frame(names: Sequence[str], types: Sequence[str], columns: Sequence[Sequence[Any]],
          server_tz: str = "UTC") -> pd.DataFrame:
    series = [column(values, type_, server_tz) for values, type_ in zip(columns, types, strict=True)]
    if not series:
        return pd.DataFrame()
    df = pd.concat(series, axis=1, ignore_index=True)
    df.columns = list(names)
    return df


def column(values: Sequence[Any], ch_type: str, server_tz: str = "UTC") -> pd.Series:
    base, nullable = unwrap(ch_type)
    name = base.split("(", 1)[0]
    if isinstance(values, pd.Series):
        values = values.reset_index(drop=True)
    if name in ("String", "FixedString", "Enum8", "Enum16", "Enum"):
        text = (values if isinstance(values, pd.Series)
                else pd.Series(values, dtype=object)).astype(STRING_DTYPE)
        # FixedString: chDB keeps the NUL padding, clickhouse-driver strips it.
        return text.str.rstrip("\0") if name == "FixedString" else text
    if name in _TEXT:
        convert = _text if name == "UUID" else _ip_text
        return pd.Series([convert(v) for v in values], dtype=STRING_DTYPE)
    if name in _INTS:
        if nullable:
            return pd.Series(pd.array([None if _missing(v) else int(v) for v in values],
                                      dtype=name))  # pandas' masked dtypes share the names
        return pd.Series(np.asarray(values, dtype=_INTS[name]))
    if name in ("Float32", "Float64"):
        return pd.Series(values, dtype=object).astype(name.lower())
    if name.startswith("Decimal"):
        return pd.Series([math.nan if _missing(v) else float(v) for v in values], dtype="float64")
    if name == "Bool":
        if nullable:
            return pd.Series(pd.array([None if _missing(v) else bool(v) for v in values],
                                      dtype="boolean"))
        return pd.Series(np.asarray(values, dtype=bool))
    if name in ("DateTime", "DateTime64"):
        return _times(values, _zone(base) or server_tz)
    if name in ("Date", "Date32"):
        return pd.Series(pd.to_datetime(pd.Series(values, dtype=object)), dtype="datetime64[ns]")
    if name == "Array":
        inner = base[len("Array("):-1]
        return pd.Series([[_scalar(v, inner, server_tz) for v in cell] for cell in values],
                         dtype=object)
    return pd.Series([_plain(v) for v in values], dtype=object)


def from_arrow(array: pa.ChunkedArray, ch_type: str) -> Any:
    """A chDB Arrow column as `column` takes it. Arrow times are epoch-based, so they come
    out aware; the other types Arrow represents differently come out as the driver's values."""
    import pyarrow as pa

    base, _ = unwrap(ch_type)
    name = base.split("(", 1)[0]
    kind = array.type
    if name == "DateTime" and pa.types.is_integer(kind):  # UInt32 epoch seconds
        seconds = pd.Series(array.to_numpy(zero_copy_only=False), dtype="float64")
        return pd.to_datetime(seconds, unit="s", utc=True)
    if pa.types.is_timestamp(kind):
        times = array.to_pandas()
        return times if times.dt.tz is not None else times.dt.tz_localize(UTC)
    if name in ("Enum8", "Enum16"):
        names = {int(n): text for text, n in re.findall(r"'((?:[^'\\]|\\.)*)'\s*=\s*(-?\d+)", base)}
        return [None if v is None else names[v] for v in array.to_pylist()]
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        return array.to_pandas()
    if name in _INTS or name in ("Float32", "Float64", "Bool", "Date", "Date32"):
        return array.to_pandas()
    return array.to_pylist()


def _zone(ch_type: str) -> str | None:
    match = re.search(r"'([^']+)'", ch_type)
    return match.group(1) if match else None


def _times(values: Sequence[Any], zone: str) -> pd.Series:
    if isinstance(values, pd.Series) and values.dtype.kind == "M":
        times = values
    else:
        objects = pd.Series(values, dtype=object)
        first = next((v for v in objects if not _missing(v)), None)
        aware = first is not None and getattr(first, "tzinfo", None) is not None
        times = pd.to_datetime(objects, utc=aware)
    if times.dt.tz is None:
        times = times.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
    return times.dt.tz_convert(UTC).astype(TIME_DTYPE)


def _timestamp(value: Any, zone: str) -> pd.Timestamp:
    stamp = pd.Timestamp(value, unit="s") if isinstance(value, int | float) else pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(UTC if isinstance(value, int | float) else zone)
    return stamp.tz_convert(UTC)


def _scalar(value: Any, ch_type: str, server_tz: str) -> Any:
    """One element of an Array, as a plain Python value of the column rules above."""
    base, _ = unwrap(ch_type)
    name = base.split("(", 1)[0]
    if _missing(value):
        return None
    if name in ("IPv4", "IPv6"):
        return _ip_text(value)
    if name in _TEXT:
        return _text(value)
    if name in _INTS:
        return int(value)
    if name in ("Float32", "Float64") or name.startswith("Decimal"):
        return float(value)
    if name == "Bool":
        return bool(value)
    if name in ("DateTime", "DateTime64"):
        return _timestamp(value, _zone(base) or server_tz)
    if name in ("Date", "Date32"):
        return pd.Timestamp(value)
    if name == "Array":
        return [_scalar(v, base[len("Array("):-1], server_tz) for v in value]
    return _plain(value)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (
        isinstance(value, float) and math.isnan(value))


def _text(value: Any) -> str | None:
    if _missing(value):
        return None
    if isinstance(value, bytes):
        if len(value) == 16:  # a UUID from Arrow
            return str(uuid.UUID(bytes=value))
        value = value.decode("utf-8", "replace")
    return str(value).rstrip("\0")


def _ip_text(value: Any) -> str | None:
    if _missing(value):
        return None
    if isinstance(value, bytes | int | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return _address_text(value)
    return _canonical(str(value))


@lru_cache(maxsize=65_536)
def _address_text(value: bytes | int | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """IPv6 as 16 bytes (Arrow) or an address object (clickhouse-driver); IPv4 as an int."""
    if isinstance(value, bytes):
        if value.startswith(_IPV4_MAPPED):
            return str(ipaddress.IPv4Address(value[12:]))
        value = ipaddress.IPv6Address(value)
    elif isinstance(value, int):
        return str(ipaddress.IPv4Address(value))
    if isinstance(value, ipaddress.IPv6Address):
        if value.ipv4_mapped is not None:
            return str(value.ipv4_mapped)
        if not int(value):
            return ""  # what an IPv6 column holds for '' (no address)
    return str(value)


@lru_cache(maxsize=65_536)
def _canonical(text: str) -> str:
    try:
        return _address_text(ipaddress.ip_address(text))
    except ValueError:
        return text


def _plain(value: Any) -> Any:
    """numpy containers and scalars -> Python ones, so both backends give equal cells."""
    if _missing(value):
        return None
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, datetime | date) and not isinstance(value, pd.Timestamp):
        return pd.Timestamp(value)
    return value
