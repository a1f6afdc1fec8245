"""`session.fixation`: a login that keeps the session id it was given before authenticating.

ASVS 5.0 7.2.4: a new session token on authentication and re-authentication, the old one ended;
the OWASP cheat sheet: renew the id on any privilege change. A login that rotates arrives as a
brand-new session whose `session.authenticated` names the replaced one in `attrs.previous_session`,
and never fires. Otherwise, on `session.authenticated`:
- the session existed before, anonymous, on the login's own network and client: no rotation on
  login - medium (an app bug that makes fixation possible, not yet an attack);
- its pre-login requests came from another client (browser/tool family or OS), from a hosting,
  VPN or Tor network, or from another country: someone else held the id before the victim logged
  in with it - the classic planted session - high;
- its pre-login requests came from another residential or mobile network in the same country with
  the same client: one person moving from cellular to Wi-Fi between the login page and the login
  (IP binding's best-known false positive, REFERENCE.md) - low; `session.ip_change` reports the
  move itself, and a medium here would corroborate it into revoking every such login;
- the session was already bound to a user: re-authentication (step-up) without rotation - low.
Networks compare by ASN (ISP rotation inside one network is no evidence), by /24-/64 when an ASN
is unknown; the state keeps the last pre-login country only.

`issued_s` (default 5 s, our choice): apps that report a login as `session.created` followed by
`session.authenticated` for the token the login itself minted are not fixation - a session whose
only earlier event is its creation, seconds before, from the same prefix and client. A planted id
needs the victim to receive it first: minutes, from elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.contract import EventType, Severity
from streams.detectors.base import Context, Example, SessionDetector, Signal, Step
from streams.enrich import network_kind
from streams.state import SessionState

EDGE_WIN = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"
)
CURL = "curl/8.5.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
)
CELLULAR_US = "172.56.20.30"  # T-Mobile US
WIFI_US = "73.162.10.20"      # Comcast
ELSEWHERE_GB = "2.24.1.1"     # EE, GB (residential/mobile, another country)
VICTIM = "88.64.1.1"          # Vodafone DE
VICTIM_SAME_ASN = "88.64.77.1"
ATTACKER = "95.216.1.1"       # Hetzner FI
CREATED, LOGIN = "session.created", "session.authenticated"
PREVIOUS = {"previous_session": "9f2c4e0b7a1d3c5e8f6a2b4d0c9e7f1a3b5d7c9e0f2a4b6c8d0e1f3a5b7c9d0e"}


# Where planted sessions are minted: not where a victim browses before logging in.
_HOSTED = frozenset({"hosting", "vpn", "tor"})


@dataclass(frozen=True)
class FixationParams:
    issued_s: float = 5.0


def _other_networks(ctx: Context, prev: SessionState) -> list[str]:
    """The networks the pre-login session used that the login did not come from.

    By ASN (ISP rotation within one network is no evidence); by /24-/64 when an ASN is unknown;
    never for LAN addresses, whose subnets say nothing about who holds the session.
    """
    if ctx.network.private:
        return []
    if ctx.network.asn is not None and prev.networks:
        return [n for n in prev.networks if n != ctx.network.asn]
    return [p for p in prev.prefixes if p != ctx.prefix]


def _other_client(ctx: Context, prev: SessionState) -> bool:
    if ctx.event.user_agent is None or prev.client_family is None:
        return False
    return (ctx.client.family, ctx.client.os) != (prev.client_family, prev.client_os)


class Fixation(SessionDetector):
    id = "session.fixation"
    title = "Session id kept across login"
    default_severity = Severity.MEDIUM
    reference = "ASVS 5.0 7.2.4; OWASP Session Management Cheat Sheet (renew the id on login)"
    Params = FixationParams
    event_types = frozenset({EventType.AUTHENTICATED})

    def evaluate(self, ctx: Context, params: FixationParams) -> Signal | None:
        prev, event = ctx.previous, ctx.event
        if prev is None or event.type is not EventType.AUTHENTICATED:
            return None
        replaced = event.attrs.get("previous_session") if event.attrs else None
        if isinstance(replaced, str) and replaced and replaced != event.session:
            return None  # the login minted this session and says which one it replaced
        other_networks = _other_networks(ctx, prev)
        other_client = _other_client(ctx, prev)
        now = ctx.now
        if (prev.events == 1 and prev.created_at is not None
                and 0 <= now - prev.created_at <= params.issued_s
                and ctx.prefix == prev.prefix and not other_client):
            return None  # the login's own token, reported as created then authenticated
        evidence = {
            "session_age_s": round(now - prev.first_seen, 1),
            "earlier_events": prev.events,
            "earlier_networks": list(prev.networks),
            "login_network": ctx.network.asn,
            "earlier_client": f"{prev.client_family} on {prev.client_os}",
            "login_client": f"{ctx.client.family} on {ctx.client.os}",
            "rotated": False,
        }
        if prev.authenticated_at is not None or prev.user is not None:
            return Signal(Severity.LOW, "Re-authentication kept the same session id", evidence)
        hosted = [n for n in other_networks if network_kind(n) in _HOSTED]
        foreign = (prev.country is not None and ctx.network.country is not None
                   and prev.country != ctx.network.country)
        if hosted or foreign or other_client:
            elsewhere = []
            if hosted or foreign:
                elsewhere.append("network " + ", ".join(other_networks)
                                 + (f" ({prev.country})" if foreign else ""))
            if other_client:
                elsewhere.append(f"client {prev.client_family}/{prev.client_os}")
            return Signal(
                Severity.HIGH,
                "Login adopted a session id first used from another " + " and ".join(elsewhere),
                evidence,
            )
        if other_networks:
            return Signal(Severity.LOW, "Login kept the pre-login session id; the same client "
                          "changed network in-country before it", evidence)
        return Signal(Severity.MEDIUM, "Login kept the pre-login session id (no rotation)",
                      evidence)

    examples = (
        Example(
            "no-rotation-on-login",
            (Step(0, VICTIM, EDGE_WIN, type=CREATED, user=None), Step(20, VICTIM, EDGE_WIN, user=None),
             Step(45, VICTIM, EDGE_WIN, type=LOGIN)),
            fires=True,
            severity=Severity.MEDIUM,
        ),
        Example(
            "no-rotation-isp-rotated-same-asn",
            (Step(0, VICTIM, EDGE_WIN, type=CREATED, user=None),
             Step(45, VICTIM_SAME_ASN, EDGE_WIN, type=LOGIN)),
            fires=True,
            severity=Severity.MEDIUM,
        ),
        Example(
            "planted-from-another-network",
            (Step(0, ATTACKER, CURL, type=CREATED, user=None),
             Step(900, VICTIM, EDGE_WIN, user=None),
             Step(960, VICTIM, EDGE_WIN, type=LOGIN)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "planted-by-another-client",
            (Step(0, VICTIM, CURL, type=CREATED, user=None),
             Step(300, VICTIM, EDGE_WIN, type=LOGIN)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "planted-from-another-country",
            (Step(0, ELSEWHERE_GB, EDGE_WIN, type=CREATED, user=None),
             Step(600, VICTIM, EDGE_WIN, type=LOGIN)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "cellular-to-wifi-before-login",
            (Step(0, CELLULAR_US, IPHONE, type=CREATED, user=None),
             Step(40, WIFI_US, IPHONE, type=LOGIN)),
            fires=True,
            severity=Severity.LOW,
        ),
        Example(
            "re-authentication-without-rotation",
            (Step(0, VICTIM, EDGE_WIN, type=LOGIN), Step(60, VICTIM, EDGE_WIN),
             Step(600, VICTIM, EDGE_WIN, type=LOGIN)),
            fires=True,
            severity=Severity.LOW,
        ),
        Example(
            "rotated-login",
            (Step(0, VICTIM, EDGE_WIN, type=CREATED, user=None, session="pre-login"),
             Step(30, VICTIM, EDGE_WIN, type=LOGIN, attrs=PREVIOUS)),
            fires=False,
        ),
        Example(
            "rotated-re-authentication",
            (Step(0, VICTIM, EDGE_WIN, type=LOGIN), Step(60, VICTIM, EDGE_WIN),
             Step(600, VICTIM, EDGE_WIN, type=LOGIN, attrs=PREVIOUS)),
            fires=False,
        ),
        Example(
            "login-reported-as-created-then-authenticated",
            (Step(0, VICTIM, EDGE_WIN, type=CREATED), Step(0.2, VICTIM, EDGE_WIN, type=LOGIN)),
            fires=False,
        ),
        Example(
            "slow-issuance-tenant",
            (Step(0, VICTIM, EDGE_WIN, type=CREATED), Step(20, VICTIM, EDGE_WIN, type=LOGIN)),
            fires=False,
            params={"issued_s": 30},
        ),
        Example("first-event-is-the-login", (Step(0, VICTIM, EDGE_WIN, type=LOGIN),), False),
        Example(
            "activity-is-not-a-login",
            (Step(0, ATTACKER, CURL, type=CREATED, user=None), Step(60, VICTIM, EDGE_WIN)),
            fires=False,
        ),
    )
