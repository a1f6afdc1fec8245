"""`user.login_travel`: a new login too far from the user's previous login, too soon.

The cross-session half of impossible travel: a password (not a cookie) used from the other side
of the world. Same thresholds as `session.impossible_travel` (Panther: > 900 km/h; < 50 km is
GeoIP noise; accuracy radii widen the tolerance; VPN, relay and Tor exits downgraded to low), and
only between logins of *different* sessions; within one country a mobile carrier's location is
not evidence (low), as in the session detector. Travellers who fly and log in on landing move at
well under 900 km/h door to door. Default action `step_up`: the new session must pass a second
factor; the user's existing sessions are left alone.

Decided on arrival against every earlier login the user state keeps (not only the previous one),
taking the most severe pair: the pairs can only grow as logins arrive, in whatever order, so a
login judged again when an earlier one arrives late ends with the same verdict as in event-time
order. (Against the previous login only, a late login in between would change the verdict.)
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.contract import EventType, Severity
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
from streams.geo import travel

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) " \
         "Chrome/131.0.0.0 Safari/537.36"
SARATOGA = "73.162.10.20"     # Comcast, California
HELSINKI = "95.216.1.1"       # Hetzner, Finland
DATACAMP = "89.187.160.1"     # Datacamp (a VPN provider), Prague
EE_GB = "2.24.1.1"            # EE, England


@dataclass(frozen=True)
class LoginTravelParams:
    max_kmh: float = 900.0       # Panther impossible_travel_login
    min_km: float = 50.0         # closer than this (after the accuracy radii) is GeoIP noise
    # Speeds are computed over at least this long: two logins a minute apart in one metro area
    # sit in different GeoIP cities 60 km apart; over 10 min that is 360 km/h, not 3,600
    # (Panther treats < 10 min and < 50 km as noise). A replay from another continent still
    # implies tens of thousands of km/h.
    min_elapsed_s: float = 600.0


class LoginTravel(UserDetector):
    id = "user.login_travel"
    title = "New login too far from the last one, too soon"
    default_severity = Severity.HIGH
    reference = "Panther impossible_travel_login; rsirimalla/LoginDetect (accuracy radius)"
    Params = LoginTravelParams
    actions = (STEP_UP, REVOKE, ALERT)
    default_action = STEP_UP

    on_arrival = True
    judges = EventType.AUTHENTICATED

    def evaluate(self, ctx: UserContext, params: LoginTravelParams) -> Signal | None:
        event = ctx.event
        loc = ctx.location
        if event.type is not EventType.AUTHENTICATED or loc is None or loc.coarse:
            return None
        at = event.time.timestamp()
        worst: tuple[int, float, Signal] | None = None
        for last in ctx.state.logins:
            if (last.at, last.event_id) >= (at, event.id):
                break  # logins are kept in event-time order: the rest came later
            if last.lat is None or last.lon is None or last.session == event.session:
                continue
            t = travel(last.lat, last.lon, last.accuracy_km or 0.0, loc.lat, loc.lon,
                       loc.accuracy_km, at - last.at, params.min_elapsed_s)
            if t.effective_km < params.min_km or t.kmh <= params.max_kmh:
                continue
            anonymised = last.kind in ("vpn", "tor") or ctx.network.kind in ("vpn", "tor")
            # Carrier geolocation is wrong by whole regions: within a country it is not evidence.
            carrier = (ctx.network.country == last.country
                       and "mobile" in (last.kind, ctx.network.kind))
            severity = Severity.LOW if anonymised or carrier else Severity.HIGH
            signal = Signal(
                severity,
                f"Login from {ctx.network.city or ctx.network.country} {t.km:.0f} km from an "
                f"earlier login in {last.city or last.country}, {t.hours * 60:.0f} min before "
                f"({t.kmh:.0f} km/h)",
                {"from_country": last.country, "to_country": ctx.network.country,
                 "carrier": carrier, "km": round(t.km), "tolerance_km": round(t.tolerance_km),
                 "minutes": round(t.hours * 60, 1), "kmh": round(t.kmh),
                 "anonymising_network": anonymised},
            )
            # The most severe pair; among equals the nearest in time (the clearest evidence).
            rank = (severity.rank, last.at)
            if worst is None or rank > worst[:2]:
                worst = (*rank, signal)
        return worst[2] if worst is not None else None

    examples = (
        Example(
            "california-then-helsinki",
            (
                Step(0, SARATOGA, CHROME, "session.authenticated", session="s1"),
                Step(1800, HELSINKI, CHROME, "session.authenticated", session="s2"),
            ),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "via-a-vpn-is-low",
            (
                Step(0, SARATOGA, CHROME, "session.authenticated", session="s1"),
                Step(1800, DATACAMP, CHROME, "session.authenticated", session="s2"),
            ),
            fires=True,
            severity=Severity.LOW,
        ),
        Example(
            "flight-to-london-and-login-on-landing",
            (
                Step(0, SARATOGA, CHROME, "session.authenticated", session="s1"),
                Step(12 * 3600, EE_GB, CHROME, "session.authenticated", session="s2"),
            ),
            fires=False,
        ),
        Example(
            "same-metro-area-a-minute-later",
            (
                Step(0, SARATOGA, CHROME, "session.authenticated", session="s1"),
                Step(60, "73.162.99.1", CHROME, "session.authenticated", session="s2"),
            ),
            fires=False,
        ),
        Example(
            "app-geo-wins",
            (
                Step(0, SARATOGA, CHROME, "session.authenticated", session="s1",
                     attrs={"geo": {"lat": 37.25, "lon": -122.06, "accuracy_km": 5}}),
                Step(600, SARATOGA, CHROME, "session.authenticated", session="s2",
                     attrs={"geo": {"lat": 51.5, "lon": -0.12, "accuracy_km": 5}}),
            ),
            fires=True,
        ),
    )
