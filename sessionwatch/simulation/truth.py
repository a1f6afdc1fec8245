"""What really happened in a simulated run: attack instances and benign sessions, as JSON-able records.

Scoring (sessionwatch/evaluate.py) reads only this and the pipeline's outputs. Session hashes are
the SDK's HMACs, as they appear in events; raw tokens never appear here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# What a decision must hit to catch an attack: its sessions, its victim user, its source addresses.
CATCH_SESSION = "session"
CATCH_USER = "user"
CATCH_SOURCE = "source"


@dataclass
class AttackTruth:
    id: str
    cls: str
    tenant: str
    first_event: str
    # Event time (epoch seconds) of the first malicious event.
    start: float
    sessions: list[str] = field(default_factory=list)
    victims: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    # Every malicious event id, in event order.
    events: list[str] = field(default_factory=list)
    catch: list[str] = field(default_factory=list)


@dataclass
class BenignTruth:
    """One benign login session (every hash it had: pre-login, after login, after rotations)."""

    session: str
    user: str
    kind: str
    tenant: str
    hashes: list[str] = field(default_factory=list)
    # address -> [first use, last use] (epoch seconds, event time)
    addresses: dict[str, list[float]] = field(default_factory=dict)
    start: float = 0.0
    end: float = 0.0
    authenticated_at: float | None = None

    def used(self, ip: str, t: float) -> None:
        span = self.addresses.get(ip)
        if span is None:
            self.addresses[ip] = [t, t]
        else:
            span[0], span[1] = min(span[0], t), max(span[1], t)
        self.start = min(self.start, t) if self.start else t
        self.end = max(self.end, t)


@dataclass
class Truth:
    seed: int
    users: int
    start: datetime
    attacks: list[AttackTruth] = field(default_factory=list)
    benign: list[BenignTruth] = field(default_factory=list)
    # Victim sessions' legitimate parts are not counted as benign: they were hijacked.

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "users": self.users,
            "start": self.start.isoformat(),
            "attacks": [asdict(a) for a in self.attacks],
            "benign": [asdict(b) for b in self.benign],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Truth:
        return cls(
            seed=int(data["seed"]),
            users=int(data["users"]),
            start=datetime.fromisoformat(data["start"]),
            attacks=[AttackTruth(**a) for a in data["attacks"]],
            benign=[BenignTruth(**b) for b in data["benign"]],
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> Truth:
        return cls.from_json(json.loads(path.read_text()))
