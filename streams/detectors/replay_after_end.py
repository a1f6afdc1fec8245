"""`session.replay_after_end`: a session the app ended (logout, expiry) or we revoked is used again.

Logout and expiry must terminate the session (ASVS 5.0 7.4.1), so any request the app *serves* on
it afterwards - activity, a refresh, a login, a credential change - means the app still accepts a
dead session, and someone holds it: high, revoked or not (after a revocation it also means
enforcement failed, or the attacker keeps going). Requests the app refuses (`token.rejected`) are
enforcement working; a second logout or expiry is bookkeeping. Neither fires.

Defaults (our choice - REFERENCE.md has no number for this):
- `in_flight_s` 10: requests sent just before the logout (parallel XHRs, a slow upload, a retry)
  are stamped just after it, within a second or two; 10 s covers slow mobile links and leaves a
  replay little room. It only applies from the logout's own /24 or /64 and User-Agent, because IP
  binding breaks on NAT and address rotation (OWASP Session Management Cheat Sheet).
- `revocation_grace_s` 30: a revocation needs a moment to reach the app's session store (our
  event-to-revocation p99 is ~0.2 s, plus the app's consumer poll); the revoked session's own
  requests inside that window are in flight from anywhere, and the revocation already answered them.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.contract import EventType, Severity
from streams.detectors.base import Context, Example, SessionDetector, Signal, Step
from streams.enrich import network_prefix

# What the app accepted on the dead session. Refusals, failures and repeated endings are not replays.
_SERVED = frozenset({
    EventType.ACTIVITY, EventType.REFRESHED, EventType.AUTHENTICATED, EventType.CREATED,
    EventType.CREDENTIAL_CHANGED,
})

_VERBS = {
    EventType.ACTIVITY: "used", EventType.REFRESHED: "refreshed", EventType.AUTHENTICATED: "logged into",
    EventType.CREATED: "issued again", EventType.CREDENTIAL_CHANGED: "used to change credentials",
}
_ENDS = {"logout": "logout", "expired": "expiry", "revoked": "revocation"}

FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
HOME = "73.162.10.20"         # Comcast, Saratoga
HOME_SAME_24 = "73.162.10.99"
DATACENTER = "167.99.1.1"     # DigitalOcean NJ
CURL = "curl/8.5.0"
LOGOUT = "session.logout"


@dataclass(frozen=True)
class ReplayAfterEndParams:
    in_flight_s: float = 10.0
    revocation_grace_s: float = 30.0


class ReplayAfterEnd(SessionDetector):
    id = "session.replay_after_end"
    title = "Ended session used again"
    default_severity = Severity.HIGH
    reference = "ASVS 5.0 7.4.1 (logout and expiry terminate the session)"
    Params = ReplayAfterEndParams
    after_end = True
    event_types = _SERVED

    def evaluate(self, ctx: Context, params: ReplayAfterEndParams) -> Signal | None:
        prev, event = ctx.previous, ctx.event
        if prev is None or event.type not in _SERVED:
            return None
        if prev.ended_at is None and prev.revoked_at is None:
            return None  # alive: nothing to replay
        now = ctx.now
        if prev.ended_at is not None:
            end, reason = prev.ended_at, prev.end_reason or "ended"
            since = now - end
            if since < 0:
                return None  # stamped while the session was alive, delivered late
            same_origin = (
                prev.ended_ip is not None
                and (event.ip == prev.ended_ip or ctx.prefix == network_prefix(prev.ended_ip))
                and event.user_agent == prev.ended_user_agent
            )
            if same_origin and since <= params.in_flight_s:
                return None  # in flight when the user logged out
        else:
            assert prev.revoked_at is not None
            end, reason = prev.revoked_at, "revoked"
            since = now - end
            if since <= params.revocation_grace_s:
                return None  # the revocation is still reaching the app
        evidence = {
            "event_type": event.type.value,
            "end_reason": reason,
            "revoked": prev.revocation is not None,
            "seconds_after_end": round(since, 1),
            "ended_ip": prev.ended_ip,
            "ip": event.ip,
            "network": ctx.network.asn,
            "client": f"{ctx.client.family} on {ctx.client.os}",
            "same_client_as_end": (event.user_agent == prev.ended_user_agent
                                   if prev.ended_at is not None else None),
        }
        also = " and revocation" if prev.revocation is not None and reason != "revoked" else ""
        return Signal(
            Severity.HIGH,
            f"Ended session {_VERBS[event.type]} {_duration(since)} after "
            f"{_ENDS.get(reason, reason)}{also}, from {ctx.network.asn or event.ip}",
            evidence,
        )

    examples = (
        Example(
            "activity-an-hour-after-logout",
            (Step(0, HOME, FIREFOX), Step(60, HOME, FIREFOX, type=LOGOUT),
             Step(3660, HOME, FIREFOX)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "replay-from-elsewhere-seconds-after-logout",
            (Step(0, HOME, FIREFOX), Step(60, HOME, FIREFOX, type=LOGOUT),
             Step(62, DATACENTER, CURL)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "same-client-after-in-flight-window",
            (Step(0, HOME, FIREFOX), Step(60, HOME, FIREFOX, type=LOGOUT),
             Step(71, HOME, FIREFOX)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "refresh-after-expiry",
            (Step(0, HOME, FIREFOX), Step(1800, HOME, FIREFOX, type="session.expired"),
             Step(2400, HOME, FIREFOX, type="session.refreshed")),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "login-on-logged-out-session",
            (Step(0, HOME, FIREFOX), Step(60, HOME, FIREFOX, type=LOGOUT),
             Step(600, DATACENTER, FIREFOX, type="session.authenticated")),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "replay-goes-on-after-revocation",
            (Step(0, HOME, FIREFOX), Step(60, HOME, FIREFOX, type=LOGOUT),
             Step(120, DATACENTER, CURL),            # fires and revokes
             Step(120 + 3700, DATACENTER, CURL)),    # after the dedup window: still served
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "tenant-without-in-flight-allowance",
            (Step(0, HOME, FIREFOX), Step(60, HOME, FIREFOX, type=LOGOUT),
             Step(62, HOME, FIREFOX)),
            fires=True,
            severity=Severity.HIGH,
            params={"in_flight_s": 0},
        ),
        Example(
            "in-flight-request-after-logout",
            (Step(0, HOME, FIREFOX), Step(60, HOME, FIREFOX, type=LOGOUT),
             Step(62, HOME, FIREFOX)),
            fires=False,
        ),
        Example(
            "in-flight-from-same-prefix",
            (Step(0, HOME, FIREFOX), Step(60, HOME, FIREFOX, type=LOGOUT),
             Step(65, HOME_SAME_24, FIREFOX)),
            fires=False,
        ),
        Example(
            "the-logout-itself",
            (Step(0, HOME, FIREFOX), Step(60, HOME, FIREFOX, type=LOGOUT)),
            fires=False,
        ),
        Example(
            "second-logout",
            (Step(0, HOME, FIREFOX), Step(60, HOME, FIREFOX, type=LOGOUT),
             Step(600, HOME, FIREFOX, type=LOGOUT)),
            fires=False,
        ),
        Example(
            "app-refuses-the-dead-session",
            (Step(0, HOME, FIREFOX), Step(60, HOME, FIREFOX, type=LOGOUT),
             Step(600, DATACENTER, CURL, type="token.rejected")),
            fires=False,
        ),
        Example(
            "live-session",
            (Step(0, HOME, FIREFOX), Step(600, HOME, FIREFOX)),
            fires=False,
        ),
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{round(seconds)} s"
    if seconds < 7200:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600, 1)} h"
