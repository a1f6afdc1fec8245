"""What every detector is: an id, defaults, a pure `evaluate`, and its own examples.

A detector scores; it never decides. It returns a `Signal` (severity + admin summary + evidence,
and whom a decision would act on) or None. The policy (streams/policy.py) turns signals into
revocations. Detectors must be deterministic in event time: no wall clock, no randomness.

Three kinds, by the state they see (each kind has its own pipeline and stage):
- `SessionDetector` - one session's state before the event (streams/pipeline.py);
- `UserDetector` - one user's sessions, logins and failures (streams/user_pipeline.py);
- `SourceDetector` - windows of one network's traffic (streams/source_pipeline.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import msgspec

from producers.contract import Event, EventType, Severity
from streams.enrich import Client, Location, Network
from streams.state import SessionState

if TYPE_CHECKING:
    from streams.source_state import SourceWindows
    from streams.user_state import UserState

# What a decision caused by a detector does (the policy maps a detector to one of these):
REVOKE = "revoke"            # revoke the session(s) the signal names (default: the event's)
REVOKE_USER = "revoke_user"  # revoke every session of the user authenticated before the event
STEP_UP = "step_up"          # require re-authentication on the session(s)
BLOCK = "block"              # block the source (address or CIDR) for the tenant's block time
ALERT = "alert"              # publish the finding only
ACTIONS = (REVOKE, REVOKE_USER, STEP_UP, BLOCK, ALERT)


@dataclass(frozen=True)
class NoParams:
    """A detector without tunable thresholds."""


# The contexts are built for every event and detector stage: msgspec Structs, immutable like the
# frozen dataclasses they replace, but about ten times cheaper to build.
class Context(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a session detector may look at for one event."""

    event: Event
    network: Network
    client: Client
    prefix: str
    location: Location | None     # attrs.geo when the app sent it, else GeoIP; None if unknown
    previous: SessionState | None  # None for the first event of a session
    now: float                    # the event's time, epoch seconds (`event.time.timestamp()`)


class UserContext(msgspec.Struct, frozen=True, kw_only=True):
    """A user detector's view: the event (already recorded in `state`) and the user's state."""

    event: Event
    network: Network
    location: Location | None
    previous: UserState | None  # unused since decisions split into on-arrival and in-order
    state: UserState            # after the event
    # For an on-arrival credential-change detector: the logins it acts on (all logins before the
    # change, or the one login that arrived after it).
    logins: tuple[Any, ...] = ()
    # For the learned score (session.anomaly): the event's feature vector (models/features.py).
    features: list[float] | None = None


class SourceContext(msgspec.Struct, frozen=True, kw_only=True):
    """A source detector's view: the event and the windows of its address, prefix and network."""

    event: Event
    network: Network
    prefix: str
    windows: SourceWindows      # counts already include this event
    now: float                  # the event's time, epoch seconds


@dataclass(frozen=True, slots=True)
class Signal:
    severity: Severity
    summary: str
    evidence: dict[str, Any]
    # Whom a decision acts on. `sessions` None means the event's own session; a tuple names them
    # (a credential change revokes the user's *other* sessions). `source` is the address or CIDR a
    # block would cover (source detectors).
    sessions: tuple[str, ...] | None = None
    source: str | None = None


@dataclass(frozen=True)
class Step:
    """One event of an example: seconds after the example's start, address, UA, type."""

    at: float
    ip: str
    user_agent: str | None = None
    type: str = "session.activity"
    user: str | None = "alice"
    attrs: dict[str, Any] = field(default_factory=dict)
    session: str | None = "ex-session"


@dataclass(frozen=True)
class Example:
    """A named event sequence and what the detector must say about its *last* event.

    `params` overrides the detector's default thresholds for this example only.
    """

    name: str
    steps: tuple[Step, ...]
    fires: bool
    severity: Severity | None = None  # when set, the exact severity expected
    params: dict[str, Any] = field(default_factory=dict)
    # Other detectors the example needs enabled (a block must come from a flood detector).
    with_detectors: tuple[str, ...] = ()

    def events(self, tenant: str = "default") -> list[Event]:
        start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        return [
            Event(
                schema="sessionwatch.event/1",
                id=f"{self.name}-{i}",
                type=EventType(step.type),
                time=start + timedelta(seconds=step.at),
                tenant=tenant,
                session=step.session,
                user=step.user,
                ip=step.ip,
                user_agent=step.user_agent,
                attrs=step.attrs,
            )
            for i, step in enumerate(self.steps)
        ]


C = TypeVar("C")


class Detector(Generic[C]):
    """Base of all detectors. Subclasses set the class attributes and `evaluate`."""

    id: ClassVar[str]
    title: ClassVar[str]
    default_severity: ClassVar[Severity]
    reference: ClassVar[str]          # the standard or anchor its defaults follow
    examples: ClassVar[tuple[Example, ...]]
    # Thresholds a policy file may override per tenant: a frozen dataclass with defaults.
    Params: ClassVar[type[Any]] = NoParams
    # What the policy may make of its findings, and what it does by default.
    actions: ClassVar[tuple[str, ...]] = (REVOKE, STEP_UP, ALERT)
    default_action: ClassVar[str] = REVOKE
    # One finding per subject (user, source) and detector within the policy's dedup window.
    dedup_per_subject: ClassVar[bool] = False
    # The event types it can fire on (None: any). The pipelines do not ask it about others, so
    # `evaluate` must return None for them (it still checks: it is called directly too).
    event_types: ClassVar[frozenset[EventType] | None] = None

    def evaluate(self, ctx: C, params: Any) -> Signal | None:
        raise NotImplementedError

    @classmethod
    def params(cls, **overrides: Any) -> Any:
        return dataclasses.replace(cls.Params(), **overrides)


class SessionDetector(Detector[Context]):
    # Session detectors normally judge live sessions only: after a logout, expiry or revocation
    # only detectors with this flag run (what happens then is replay, not drift).
    after_end: ClassVar[bool] = False


class UserDetector(Detector[UserContext]):
    # True: decided as events arrive, for decisions more input can only add to (see
    # streams/user_pipeline.py); False: decided in event-time order once final.
    on_arrival: ClassVar[bool] = False
    # For on-arrival detectors: the event type they judge (a login, a credential change).
    judges: ClassVar[EventType | None] = None


class SourceDetector(Detector[SourceContext]):
    actions = (BLOCK, REVOKE, ALERT)
    default_action = BLOCK
