"""Per-source sliding windows on event time: what one address, /24-/64 prefix or network did.

In memory only, per worker: windows are minutes long, so after a rebalance a flood re-crosses its
threshold within seconds, and not changelogging them keeps a flood of millions of events from
becoming a flood of state writes. Bounded under attack: every map is an LRU with a cap, every
window holds at most `WINDOW_CAP` distinct items (counts saturate there, far above any default
threshold), so a flood from millions of addresses evicts old addresses while the prefix and
network windows, which it cannot evict, keep counting it.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Generic, TypeVar

import msgspec

from producers.contract import EventType, Severity

WINDOW_CAP = 2048           # distinct items per window (counts saturate here)
MEMORY_S = 3600.0           # nothing older than this is kept (the longest window a policy may use)
MAX_ADDRESSES = 50_000      # per worker
MAX_PREFIXES = 20_000
MAX_NETWORKS = 5_000
MAX_BLOCKS = 20_000

# Event types that show a live session in use from a source.
LIVE_TYPES = frozenset({EventType.ACTIVITY, EventType.REFRESHED, EventType.AUTHENTICATED,
                        EventType.LOGOUT})

K = TypeVar("K")
V = TypeVar("V")


class Lru(OrderedDict[K, V], Generic[K, V]):
    """An OrderedDict that forgets its least recently used entries beyond `cap`."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def touch(self, key: K, factory: Callable[[], V]) -> V:
        value = self.get(key)
        if value is None:
            value = self[key] = factory()
            while len(self) > self.cap:
                self.popitem(last=False)
        else:
            self.move_to_end(key)
        return value


def _no_times() -> array[float]:
    return array("d")


# Window and Counters are msgspec Structs with gc=False: they hold only strings and numbers (no
# reference cycle is possible), and untracked, the worker's tens of thousands of them are not
# walked by every full garbage collection.
class Window(msgspec.Struct, gc=False):
    """Distinct items with the event time each was last seen, most recent last.

    `count` scans back from the most recent item to the first older one. While the items' times
    are in order (always when events arrive in event-time order, as the source stage feeds them,
    and nearly always otherwise) that is the number of times after the cut-off, which `times`, a
    sorted copy of them, answers by bisection: a flood's 2,048-item window cost a 2,048-step scan
    per event. A late event puts the times out of order; then it scans as before, and checks
    again every `len(items)` adds (amortised O(1) per add) whether it is back in order.
    """

    items: OrderedDict[str, float] = msgspec.field(default_factory=OrderedDict)
    times: array[float] | None = msgspec.field(default_factory=_no_times)  # None: out of order
    recheck: int = 0  # adds until the next check, while out of order

    def add(self, item: str, at: float) -> None:
        items, times = self.items, self.times
        seen = items.get(item)
        if seen is not None:
            items.move_to_end(item)
            if seen > at:
                at = seen
            if times is not None:
                del times[bisect_left(times, seen)]
        items[item] = at
        if times is not None:
            if times and at < times[-1]:
                times = self.times = None
                self.recheck = len(items)
            else:
                times.append(at)
        horizon = at - MEMORY_S
        if times is not None:
            # In order, the first item is the oldest: its time is times[0].
            while times and times[0] < horizon:
                items.popitem(last=False)
                del times[0]
            while len(items) > WINDOW_CAP:
                items.popitem(last=False)
                del times[0]
            return
        while items and next(iter(items.values())) < horizon:
            items.popitem(last=False)
        while len(items) > WINDOW_CAP:
            items.popitem(last=False)
        self.recheck -= 1
        if self.recheck <= 0:
            values = array("d", items.values())
            if all(a <= b for a, b in pairwise(values)):
                self.times = values
            else:
                self.recheck = len(items)

    def count(self, now: float, span_s: float) -> int:
        """Distinct items seen in (now - span_s, now]; stops at the first older one."""
        since = now - span_s
        if self.times is not None:
            return len(self.times) - bisect_right(self.times, since)
        n = 0
        for at in reversed(self.items.values()):
            if at <= since:
                break
            n += 1
        return n


class Counters(msgspec.Struct, gc=False):
    """What one source did recently, as distinct items per kind."""

    rejected: Window = msgspec.field(default_factory=Window)  # distinct never-valid tokens presented
    created: Window = msgspec.field(default_factory=Window)   # distinct sessions created
    failed: Window = msgspec.field(default_factory=Window)    # distinct users whose login failed
    valid: Window = msgspec.field(default_factory=Window)     # distinct live sessions used here
    logins: Window = msgspec.field(default_factory=Window)    # distinct users who logged in here


# Level and SourceWindows are built for every event: msgspec Structs, immutable like frozen
# dataclasses but about ten times cheaper to build.
class Level(msgspec.Struct, frozen=True):
    """One level of a source: its kind ("address", "prefix", "network"), name and counters."""

    kind: str
    source: str            # what a block would cover: an address or a CIDR
    counters: Counters


class SourceWindows(msgspec.Struct, frozen=True):
    """A source detector's view: the event's address, prefix and (if known) network windows."""

    address: Level
    prefix: Level
    network: Level | None
    network_kind: str | None          # "hosting", "vpn", "tor" or None (residential, mobile...)
    blocked: str | None               # the active block covering the event's address, if any

    def levels(self) -> tuple[Level, ...]:
        return (self.address, self.prefix) if self.network is None else (
            self.address, self.prefix, self.network)


class SourceState:
    """All sources this worker has seen recently, bounded; and the blocks it has decided."""

    def __init__(self) -> None:
        # Keyed (tenant, name): a tuple hashes from its strings' cached hashes, where a joined
        # key string would be built and hashed anew for every event and level.
        self.addresses: Lru[tuple[str, str], Counters] = Lru(MAX_ADDRESSES)
        self.prefixes: Lru[tuple[str, str], Counters] = Lru(MAX_PREFIXES)
        self.networks: Lru[tuple[str, str], Counters] = Lru(MAX_NETWORKS)
        # (tenant, source) -> event time the block ends
        self.blocks: Lru[tuple[str, str], float] = Lru(MAX_BLOCKS)
        # tenant + detector + source -> event time of the last finding (dedup window)
        self.flagged: Lru[str, float] = Lru(MAX_BLOCKS)

    def windows(self, tenant: str, ip: str, prefix: str, network: str | None,
                network_cidr: str | None, network_kind: str | None, now: float) -> SourceWindows:
        """The event's levels. A network is counted by name (all its announced blocks) and
        blocked by the announced block the event came from (`network_cidr`)."""
        address = Level("address", ip, self.addresses.touch((tenant, ip), Counters))
        pre = Level("prefix", prefix, self.prefixes.touch((tenant, prefix), Counters))
        net = None
        if network is not None and network_cidr is not None:
            net = Level("network", network_cidr,
                        self.networks.touch((tenant, network), Counters))
        blocked = None
        if self.blocks:  # nearly always empty: no block, no look-ups
            for level in (address, pre, net):
                if level is None:
                    continue
                until = self.blocks.get((tenant, level.source))
                if until is not None and until > now:
                    blocked = level.source
                    break
        return SourceWindows(address, pre, net, network_kind, blocked)

    def block(self, tenant: str, source: str, until: float) -> None:
        key = (tenant, source)
        self.blocks[key] = max(until, self.blocks.get(key, 0.0))
        self.blocks.move_to_end(key)
        while len(self.blocks) > self.blocks.cap:
            self.blocks.popitem(last=False)

    def flag(self, key: str, at: float) -> None:
        """Remember a finding's dedup key (tenant + detector + subject) and its event time."""
        self.flagged[key] = at
        self.flagged.move_to_end(key)
        while len(self.flagged) > self.flagged.cap:
            self.flagged.popitem(last=False)

    def is_blocked(self, tenant: str, source: str, now: float) -> bool:
        until = self.blocks.get((tenant, source))
        return until is not None and until > now

    def __len__(self) -> int:
        return len(self.addresses) + len(self.prefixes) + len(self.networks)


@dataclass(frozen=True, slots=True)
class Flood:
    """A level whose window crossed its threshold."""

    level: Level
    count: int
    share: float             # of the level's traffic that is the flood kind (1.0 when not asked)
    network_wide: bool       # crossed at the network level only

    def severity(self, network_kind: str | None, blockable: tuple[str, ...]) -> Severity:
        """High (a block), except a network-wide flood from a network that may not be blocked
        as a whole (a carrier's block locks out its customers): medium, an alert."""
        if self.network_wide and network_kind not in blockable:
            return Severity.MEDIUM
        return Severity.HIGH


def first_flood(
    windows: SourceWindows,
    kind: str,
    thresholds: tuple[int, int, int],
    span_s: float,
    now: float,
    *,
    against: str | None = None,
    min_share: float = 0.0,
) -> Flood | None:
    """The narrowest level (address, then prefix, then network) whose distinct `kind` items in
    the last `span_s` reach its threshold, and make up at least `min_share` of `kind` + `against`
    items there (a NAT with many live sessions is not a flood of stale cookies)."""
    for level, threshold in zip(windows.levels(), thresholds, strict=False):
        counters = level.counters
        count = getattr(counters, kind).count(now, span_s)
        if count < threshold:
            continue
        share = 1.0
        if against is not None:
            other = getattr(counters, against).count(now, span_s)
            share = count / (count + other)
            if share < min_share:
                continue
        return Flood(level, count, share, network_wide=level.kind == "network")
    return None
