"""How big the worker's state stores are: entries and bytes per store, for the gauges
`sessionwatch_state_entries{store}` and `sessionwatch_state_bytes{store}`.

Read from what each Quix store partition already keeps, never by a scan: RocksDB's own estimates
(`rocksdb.estimate-num-keys`; live data + memtables per column family) and the memory store's
dicts (a count, and the size of a small sample times the count). A reading costs microseconds
per partition whatever the state's size; the worker takes one every `STATE_EVERY_S`, between
messages, so nothing is paid per event.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("sessionwatch.worker")

STATE_EVERY_S = 10.0
# Memory store: bytes are estimated from this many entries per column family.
SAMPLE = 64

_DEFAULT_CF = "default"   # Quix keeps the stages' keys there; TTL index and metadata beside it


def state_sizes(state_manager: Any, stores: Mapping[str, str]) -> dict[str, tuple[int, int]]:
    """{label: (entries, bytes)} for each stream in `stores` (stream id -> label, e.g.
    {"sessionwatch.events": "session"}), summed over the store partitions this process holds
    now (0, 0 when it holds none). `state_manager` is the application's StateStoreManager.

    Entries are the keys of the stores' data (RocksDB's estimate: overwrites not yet compacted
    may count twice); bytes are every column family's (the TTL index and metadata too): RocksDB's
    live data on disk plus its memtables, or the memory store's keys and values (not Python's
    object overhead). Partitions of a kind this does not know are left out."""
    found: dict[str, tuple[int, int]] = {}
    for stream_id, label in stores.items():
        entries = size = 0
        for store in state_manager.stores.get(stream_id, {}).values():
            for partition in list(store.partitions.values()):
                measured = partition_size(partition)
                if measured is not None:
                    entries += measured[0]
                    size += measured[1]
        found[label] = (entries, size)
    return found


def partition_size(partition: Any) -> tuple[int, int] | None:
    """(entries, bytes) of one RocksDB or memory store partition; None for another kind."""
    db = getattr(partition, "_db", None)
    if db is not None and hasattr(db, "property_int_value"):
        return _rocksdb_size(db, getattr(partition, "_cf_cache", {}))
    tables = getattr(partition, "_state", None)
    if isinstance(tables, dict):
        return _memory_size(tables)
    return None


def _rocksdb_size(db: Any, opened: Mapping[str, Any]) -> tuple[int, int]:
    # The column families Quix has opened (its own cache): listing them from the manifest would
    # read the disk.
    families = {**opened, _DEFAULT_CF: db}
    size = 0
    for cf in families.values():
        size += _int_property(cf, "rocksdb.estimate-live-data-size")
        size += _int_property(cf, "rocksdb.cur-size-all-mem-tables")
    return _int_property(db, "rocksdb.estimate-num-keys"), size


def _int_property(db: Any, name: str) -> int:
    value = db.property_int_value(name)
    return int(value) if value is not None else 0


def _memory_size(tables: Mapping[str, Mapping[Any, Any]]) -> tuple[int, int]:
    size = 0
    for table in tables.values():
        if not table:
            continue
        sample = list(itertools.islice(table.items(), SAMPLE))
        sampled = sum(_length(k) + _length(v) for k, v in sample)
        size += sampled * len(table) // len(sample)
    return len(tables.get(_DEFAULT_CF, {})), size


def _length(value: Any) -> int:
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    return 8   # a number or a flag (metadata)


class StateGauges:
    """Every `every_s` (on the worker's periodic task), each store's entries and bytes to
    `report(label, entries, bytes)` (WorkerMetrics.set_state). A reading that fails is logged
    once and skipped: the gauges must never stop the worker."""

    def __init__(self, state_manager: Any, stores: Mapping[str, str],
                 report: Callable[[str, int, int], None], every_s: float = STATE_EVERY_S) -> None:
        self.state_manager = state_manager
        self.stores = dict(stores)
        self.report = report
        self.every_s = every_s
        self._last: float | None = None
        self._failed = False

    def poll(self, now: float) -> None:
        if self._last is not None and now - self._last < self.every_s:
            return
        self._last = now
        try:
            sizes = state_sizes(self.state_manager, self.stores)
        except Exception as exc:  # noqa: BLE001 - a Quix internal changed: lose a gauge, not the worker
            if not self._failed:
                log.warning("state gauges: could not read the stores' sizes (%s: %s); "
                            "sessionwatch_state_* stay as they were", type(exc).__name__, exc)
                self._failed = True
            return
        for label, (entries, size) in sizes.items():
            self.report(label, entries, size)
