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
