"""`user.concurrent_sessions`: more live sessions than the tenant allows.

ASVS 5.0 7.1.2 asks for a documented concurrent-session limit and what happens at it; Keycloak's
realm default is 3. What happens at the limit matters: ASVS 4 V3.7 warns that denying or ending
sessions makes "the last authenticator win, which is often the attacker". So the default is
`target: newest` with the action `step_up`: the session that went over the limit must
re-authenticate (a second factor stops an attacker with a password; the owner passes), and nobody
already signed in is thrown out. `oldest` revokes the oldest live sessions beyond the limit
(Keycloak's alternative) and `all` every live session (account-sharing policies).

A session is live when it was seen within `idle_s` and authenticated within `lifetime_s` (the
tenant's ASVS timeouts); the session stage forwards a heartbeat per session every 5 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.contract import EventType, Severity
from producers.errors import ConfigError
from streams.detectors.base import (
    ALERT,
    REVOKE,
    STEP_UP,
    Example,
    Signal,
    Step,
    UserContext,
    UserDetector,
)

HOME = "73.162.10.20"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) " \
         "Chrome/131.0.0.0 Safari/537.36"
TARGETS = ("newest", "oldest", "all")


@dataclass(frozen=True)
class ConcurrentSessionsParams:
    limit: int = 3            # Keycloak's realm default
    target: str = "newest"    # newest | oldest | all
    idle_s: float = 1800.0    # ASVS 4 V3.3.2 L2: 30 min idle
    lifetime_s: float = 43200.0  # ... and 12 h absolute

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"user.concurrent_sessions params.target: {self.target!r} is not one "
                              f"of {', '.join(TARGETS)}")
        if self.limit < 1:
            raise ConfigError("user.concurrent_sessions params.limit: must be at least 1")


class ConcurrentSessions(UserDetector):
    id = "user.concurrent_sessions"
    title = "More concurrent sessions than allowed"
    default_severity = Severity.HIGH
    reference = "OWASP ASVS 5.0 7.1.2, ASVS 4 V3.7; Keycloak realm default (3)"
    Params = ConcurrentSessionsParams
    actions = (STEP_UP, REVOKE, ALERT)
    default_action = STEP_UP
    event_types = frozenset({EventType.AUTHENTICATED})

    def evaluate(self, ctx: UserContext, params: ConcurrentSessionsParams) -> Signal | None:
        event = ctx.event
        if event.type is not EventType.AUTHENTICATED or event.session is None:
            return None
        now = event.time.timestamp()
        live = sorted(ctx.state.live_sessions(now, params.idle_s, params.lifetime_s),
                      key=lambda s: (s.authenticated_at, s.session))
        if len(live) <= params.limit:
            return None
        if params.target == "newest":
            targets = (event.session,)
        elif params.target == "oldest":
            targets = tuple(s.session for s in live[: len(live) - params.limit])
        else:
            targets = tuple(s.session for s in live)
        return Signal(
            Severity.HIGH,
            f"{len(live)} live sessions, over the limit of {params.limit}",
            {"live_sessions": len(live), "limit": params.limit, "target": params.target,
             "addresses": sorted({s.ip for s in live})[:8]},
            sessions=targets,
        )

    examples = (
        Example(
            "fourth-session",
            tuple(Step(i * 60, HOME, CHROME, "session.authenticated", session=f"s{i}")
                  for i in range(4)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "three-is-fine",
            tuple(Step(i * 60, HOME, CHROME, "session.authenticated", session=f"s{i}")
                  for i in range(3)),
            fires=False,
        ),
        Example(
            "ended-sessions-do-not-count",
            (
                Step(0, HOME, CHROME, "session.authenticated", session="s0"),
                Step(10, HOME, CHROME, "session.logout", session="s0"),
                Step(60, HOME, CHROME, "session.authenticated", session="s1"),
                Step(120, HOME, CHROME, "session.authenticated", session="s2"),
                Step(180, HOME, CHROME, "session.authenticated", session="s3"),
            ),
            fires=False,
        ),
        Example(
            "idle-sessions-do-not-count",
            (
                Step(0, HOME, CHROME, "session.authenticated", session="s0"),
                Step(60, HOME, CHROME, "session.authenticated", session="s1"),
                Step(120, HOME, CHROME, "session.authenticated", session="s2"),
                Step(4000, HOME, CHROME, "session.authenticated", session="s3"),
            ),
            fires=False,
        ),
        Example(
            "limit-one",
            (
                Step(0, HOME, CHROME, "session.authenticated", session="s0"),
                Step(60, HOME, CHROME, "session.authenticated", session="s1"),
            ),
            fires=True,
            params={"limit": 1},
        ),
    )
