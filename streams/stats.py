"""The worker's counters: what an on-call engineer reads in the periodic stats line."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class WorkerStats:
    received: int = 0          # messages read from sessionwatch.events
    processed: int = 0         # events that went through the session stage (or around it)
    deadlettered: int = 0
    duplicates: int = 0        # redeliveries dropped by event id
    rekeyed: int = 0           # events keyed by something else, re-sent under their session
    sessionless: int = 0
    user_events: int = 0       # messages read from <app_id>-by-user
    source_events: int = 0     # messages read from <app_id>-by-source
    late: int = 0              # events older than the allowed lateness when they arrived
    findings: int = 0
    revocations: int = 0

    def line(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


class LogLimiter:
    """At most `burst` log lines per `every_s` for one kind of message; the rest are counted and
    summed up in the next line let through (a flood of garbage is an attack, not a log feed)."""

    def __init__(self, burst: int = 10, every_s: float = 10.0) -> None:
        self.burst = burst
        self.every_s = every_s
        self._window_start = float("-inf")
        self._in_window = 0
        self.suppressed = 0

    def allow(self, now: float) -> bool:
        if now - self._window_start >= self.every_s:
            self._window_start, self._in_window = now, 0
        self._in_window += 1
        if self._in_window <= self.burst:
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        n, self.suppressed = self.suppressed, 0
        return n
