"""What every detector is: an id, a default severity, a pure `evaluate`, and its own examples.

A detector scores; it never decides. It returns a `Signal` (severity + admin summary + evidence)
or None, from the event, its enrichment and the session's state *before* the event. The policy
(streams/policy.py) turns signals into revocations. Detectors must be deterministic in event time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from producers.contract import Event, Severity
from streams.enrich import Client, Network
from streams.state import SessionState


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a session detector may look at for one event."""

    event: Event
    network: Network
    client: Client
    prefix: str
    previous: SessionState | None  # None for the first event of a session


@dataclass(frozen=True, slots=True)
class Signal:
    severity: Severity
    summary: str
    evidence: dict[str, Any]


@dataclass(frozen=True)
class Step:
    """One event of an example: seconds after the example's start, address, UA, type."""

    at: float
    ip: str
    user_agent: str | None = None
    type: str = "session.activity"
    user: str | None = "alice"
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Example:
    """A named event sequence and what the detector must say about its *last* event."""

    name: str
    steps: tuple[Step, ...]
    fires: bool
    severity: Severity | None = None  # when set, the exact severity expected

    def events(self, session: str = "ex-session", tenant: str = "default") -> list[Event]:
        start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        return [
            Event(
                schema="sessionwatch.event/1",
                id=f"{self.name}-{i}",
                type=step.type,  # type: ignore[arg-type]
                time=start + timedelta(seconds=step.at),
                tenant=tenant,
                session=session,
                user=step.user,
                ip=step.ip,
                user_agent=step.user_agent,
                attrs=step.attrs,
            )
            for i, step in enumerate(self.steps)
        ]


class SessionDetector:
    """Base class of per-session detectors. Subclasses set the class attributes and `evaluate`."""

    id: ClassVar[str]
    title: ClassVar[str]
    default_severity: ClassVar[Severity]
    reference: ClassVar[str]  # the standard or anchor its defaults follow
    examples: ClassVar[tuple[Example, ...]]

    def evaluate(self, ctx: Context) -> Signal | None:
        raise NotImplementedError
