"""`session.timeouts`: a session served past its idle timeout or its absolute lifetime.

The app must enforce both (ASVS 5.0 7.3.1 idle, 7.3.2 absolute). A request served after either
means it did not - and a stale session picked up again after a long silence is what a replayed,
stolen session looks like - so: high.

Defaults are ASVS 4 V3.3.2 level 2: `idle_s` 1800 (30 min idle) and `absolute_s` 43200 (12 h since
authentication). Level 3 apps (15 min idle) and apps with longer documented lifetimes (ASVS 5.0
7.1.1) set theirs per tenant in the policy file. Idle time is measured from the session's previous
event; the lifetime from its last authentication, else from its creation or first sighting.

Only sessions bound to a user count (ASVS's limits are re-authentication limits; an anonymous
cart cookie carries no privilege). Only requests the app served count: the logout or expiry that
ends a stale session, a refused session, and a re-authentication are the app doing its job.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.contract import EventType, Severity
from streams.detectors.base import Context, Example, SessionDetector, Signal, Step

_SERVED = frozenset({EventType.ACTIVITY, EventType.REFRESHED})

SAFARI_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
)
IP = "2.24.1.1"   # EE, GB
LOGIN = "session.authenticated"
# Activity every 25 min (never idle) from a login at 0 to just past 12 h.
_EVERY_25_MIN = tuple(Step(i * 1500, IP, SAFARI_IOS) for i in range(1, 29)) + (
    Step(43201, IP, SAFARI_IOS),
)


@dataclass(frozen=True)
class TimeoutsParams:
    idle_s: float = 1800.0
    absolute_s: float = 43200.0


class Timeouts(SessionDetector):
    id = "session.timeouts"
    title = "Session used past its idle timeout or lifetime"
    default_severity = Severity.HIGH
    reference = "ASVS 5.0 7.3.1/7.3.2; ASVS 4 V3.3.2 L2 (30 min idle, 12 h absolute)"
    Params = TimeoutsParams
    event_types = _SERVED

    def evaluate(self, ctx: Context, params: TimeoutsParams) -> Signal | None:
        prev, event = ctx.previous, ctx.event
        if prev is None or event.type not in _SERVED:
            return None
        if prev.authenticated_at is None and prev.user is None:
            return None  # anonymous: no privilege to outlive
        now = ctx.now
        idle_s = now - prev.last_seen
        started = prev.authenticated_at or prev.created_at or prev.first_seen
        age_s = now - started
        idle = idle_s > params.idle_s
        expired = age_s > params.absolute_s
        if not (idle or expired):
            return None
        evidence = {
            "idle_minutes": round(idle_s / 60, 1),
            "idle_limit_minutes": round(params.idle_s / 60, 1),
            "age_hours": round(age_s / 3600, 2),
            "absolute_limit_hours": round(params.absolute_s / 3600, 2),
            "age_since": "authentication" if prev.authenticated_at is not None else "creation",
            "idle_exceeded": idle,
            "absolute_exceeded": expired,
        }
        parts = []
        if idle:
            parts.append(f"after {_minutes(idle_s)} idle (limit {_minutes(params.idle_s)})")
        if expired:
            since = "login" if prev.authenticated_at is not None else "creation"
            parts.append(f"{_minutes(age_s)} after {since} (limit {_minutes(params.absolute_s)})")
        return Signal(Severity.HIGH, "Session still served " + " and ".join(parts), evidence)

    examples = (
        Example(
            "idle-45-min",
            (Step(0, IP, SAFARI_IOS, type=LOGIN), Step(60, IP, SAFARI_IOS),
             Step(60 + 2700, IP, SAFARI_IOS)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "refresh-after-a-night",
            (Step(0, IP, SAFARI_IOS, type=LOGIN),
             Step(9 * 3600, IP, SAFARI_IOS, type="session.refreshed")),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "busy-past-12-hours",
            (Step(0, IP, SAFARI_IOS, type=LOGIN), *_EVERY_25_MIN),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "lifetime-from-creation-without-login-event",
            (Step(0, IP, SAFARI_IOS, type="session.created"), *_EVERY_25_MIN),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "level-3-tenant-idle-20-min",
            (Step(0, IP, SAFARI_IOS, type=LOGIN), Step(1200, IP, SAFARI_IOS)),
            fires=True,
            severity=Severity.HIGH,
            params={"idle_s": 900},
        ),
        Example(
            "remember-me-tenant-idle-9-h",
            (Step(0, IP, SAFARI_IOS, type=LOGIN), Step(9 * 3600, IP, SAFARI_IOS)),
            fires=False,
            params={"idle_s": 14 * 86400, "absolute_s": 30 * 86400},
        ),
        Example(
            "idle-29-min",
            (Step(0, IP, SAFARI_IOS, type=LOGIN), Step(1740, IP, SAFARI_IOS)),
            fires=False,
        ),
        Example(
            "busy-under-12-hours",
            (Step(0, IP, SAFARI_IOS, type=LOGIN), *_EVERY_25_MIN[:-1]),
            fires=False,
        ),
        Example(
            "app-expires-the-idle-session",
            (Step(0, IP, SAFARI_IOS, type=LOGIN),
             Step(3600, IP, SAFARI_IOS, type="session.expired")),
            fires=False,
        ),
        Example(
            "logout-after-idle",
            (Step(0, IP, SAFARI_IOS, type=LOGIN),
             Step(7200, IP, SAFARI_IOS, type="session.logout")),
            fires=False,
        ),
        Example(
            "re-authentication-after-idle",
            (Step(0, IP, SAFARI_IOS, type=LOGIN), Step(7200, IP, SAFARI_IOS, type=LOGIN)),
            fires=False,
        ),
        Example(
            "anonymous-session-idle",
            (Step(0, IP, SAFARI_IOS, type="session.created", user=None),
             Step(7200, IP, SAFARI_IOS, user=None)),
            fires=False,
        ),
    )


def _minutes(seconds: float) -> str:
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.2f}".rstrip("0").rstrip(".") + " h"
