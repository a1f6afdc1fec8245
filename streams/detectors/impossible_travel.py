"""`session.impossible_travel`: one session seen in two places too far apart for the time between.

Defaults (REFERENCE.md, Panther `impossible_travel_login.py`):
- `max_speed_kmh` 900: Panther's limit, a Boeing 747's cruise speed. A real flight (New York to
  London in 7 h, ~770 km/h) stays under it.
- `min_distance_km` 50: Panther treats hops under 50 km as GeoIP noise; here the distance is
  measured *after* subtracting both accuracy radii (rsirimalla/LoginDetect widens distances by the
  GeoIP radius the same way), so only a gap no radius explains counts.
- `min_elapsed_s` 60: same-second events would divide by zero, and app servers stamp requests at
  slightly different moments. Any 50 km gap inside a minute still implies >= 3,000 km/h, so the
  floor only keeps the reported speed finite; it never hides a jump.
Coarse points (GeoIP knew only the country, e.g. mobile carriers) say nothing about distance and
are ignored; the state never stores them. A GeoIP point without a city is often the country's
default point even with a small radius, so its radius counts as at least 500 km.

Severity is high, downgraded to low (a finding, never a revocation on its own) when:
- either point came from GeoIP on a VPN or Tor network (Panther downgrades VPN and Apple Private
  Relay to info): their exits are not where the user is. The app's own `attrs.geo` (a device
  location) is not moved by a VPN;
- the event returns to a network this session used before (which `session.ip_change` also
  rates low), or switches between IPv4 and IPv6 of the same ISP (its two pools geolocate to
  different cities), or stays in one ISP's local pool (the same /16: a DHCP renewal that GeoIP
  places in another city). A jump elsewhere within one ISP and address family stays high: a
  residential proxy on the victim's own ISP is how careful attackers hide; tenants whose GeoIP
  data is poor set `same_network_is_noise`;
- the move stays within one country and involves a mobile carrier: carrier geolocation is wrong
  by whole countries and Wi-Fi/cellular handoffs are routine (REFERENCE.md, "what users complain
  about").
  Two different fixed-line ISPs hundreds of km apart within minutes stay high (a cookie replayed
  through a residential proxy in the victim's country), and so do hosting networks - replayed
  cookies come from datacenters.
The last two are GeoIP-noise arguments and do not apply when the app sent the device's position.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from producers.contract import Severity
from streams.detectors.base import Context, Example, SessionDetector, Signal, Step
from streams.enrich import COARSE_ACCURACY_KM, network_kind
from streams.geo import distance_km
from streams.state import SessionState

# Network kinds whose GeoIP location is an exit node, not the user.
_RELAYED = frozenset({"vpn", "tor"})

CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
SARATOGA = "73.162.10.20"      # Comcast, Saratoga CA, radius 20 km
SARATOGA_2 = "73.162.11.5"     # Comcast, Saratoga CA, another /24
LONDON = "81.2.69.142"         # Andrews & Arnold, Willesden (London), radius 200 km
NEW_YORK = "68.173.1.1"        # Spectrum, New York, radius 10 km
STATEN_ISLAND = "98.14.1.1"    # Spectrum, Staten Island, radius 5 km (28 km from New York)
BURLINGTON_MA = "66.249.1.1"   # Burlington MA, radius 1000 km (300 km from New York)
DATACENTER_NJ = "167.99.1.1"   # DigitalOcean, North Bergen NJ, radius 1000 km (hosting)
VPN_PRAGUE = "89.187.160.1"    # Datacamp (vpn), CZ
TOR_EXIT = "185.220.101.1"     # Stiftung Erneuerbare Freiheit (tor), DE
TMOBILE = "172.56.20.30"       # T-Mobile US: country only (coarse)
TMOBILE_BROOKLYN = "172.56.35.75"  # T-Mobile US, "Brooklyn" radius 20 km: carrier geolocation
BT_V4 = "86.150.216.52"        # BT, Manchester
BT_MANCHESTER = "86.146.238.5"  # BT, Manchester, radius 20 km
BT_GLASGOW = "86.146.241.5"    # BT, the same /16: Glasgow, ~300 km away
BT_V6 = "2a00:23c5:6ce4:c512:e1cf:874f:25ec:ddba"  # the same BT line's IPv6, "Tewkesbury"
PARIS_GPS = {"geo": {"lat": 48.8566, "lon": 2.3522, "accuracy_km": 5}}


@dataclass(frozen=True)
class ImpossibleTravelParams:
    max_speed_kmh: float = 900.0
    min_distance_km: float = 50.0
    min_elapsed_s: float = 60.0
    # Treat far jumps within one network (same ISP, same address family) as GeoIP noise.
    same_network_is_noise: bool = False


def _pool(ip: str) -> str:
    """An ISP's local address pool, roughly: the /16 of IPv4, the /32 of IPv6."""
    if ":" in ip:
        return ":".join(ipaddress.ip_address(ip).exploded.split(":")[:2])
    return ip.rsplit(".", 2)[0]


def _previous_relayed(prev: SessionState) -> bool:
    """Whether the stored point may be a VPN/Tor exit's location.

    The state keeps the network of the last event only: when the point came from that event its
    network is known; when it came from an earlier one, any relay network the session used counts.
    """
    if prev.located_at == prev.last_seen:
        return network_kind(prev.asn) in _RELAYED
    return any(network_kind(n) in _RELAYED for n in (*prev.networks, prev.asn))


class ImpossibleTravel(SessionDetector):
    id = "session.impossible_travel"
    title = "Session used from two places too far apart"
    default_severity = Severity.HIGH
    reference = "Panther impossible_travel_login (900 km/h, 50 km GeoIP noise, VPN downgraded)"
    Params = ImpossibleTravelParams

    def evaluate(self, ctx: Context, params: ImpossibleTravelParams) -> Signal | None:
        prev, here = ctx.previous, ctx.location
        if prev is None or here is None or here.coarse:
            return None
        if prev.lat is None or prev.lon is None or prev.located_at is None:
            return None
        net = ctx.network
        here_km = here.accuracy_km
        if here.source == "geoip" and net.city is None:
            here_km = max(here_km, COARSE_ACCURACY_KM)  # likely the country's default point
        # Most events come from where the last one did: the distance is exactly 0 then.
        same_point = prev.lat == here.lat and prev.lon == here.lon
        raw_km = 0.0 if same_point else distance_km(prev.lat, prev.lon, here.lat, here.lon)
        tolerance_km = (prev.accuracy_km or 0.0) + here_km
        km = max(0.0, raw_km - tolerance_km)
        if km < params.min_distance_km:
            return None  # the same place as far as the radii can tell
        # abs(): an event delayed in transit arrives after a later one; the gap is what matters.
        elapsed_s = abs(ctx.now - prev.located_at)
        kmh = km / (max(elapsed_s, params.min_elapsed_s) / 3600.0)
        if kmh <= params.max_speed_kmh:
            return None
        relayed_here = here.source == "geoip" and net.kind in _RELAYED
        relayed = relayed_here or _previous_relayed(prev)
        # GeoIP noise arguments: they do not hold when the app reports the device's own position.
        by_geoip = here.source == "geoip"
        # One ISP's IPv4 and IPv6 pools geolocate to different cities: a switch between them on
        # the same network is noise. The same ISP and address family hundreds of km apart is not
        # (a residential proxy on the victim's own ISP), unless the tenant says its GeoIP data is
        # that poor (`same_network_is_noise`).
        same_network = by_geoip and net.asn is not None and net.asn == prev.asn
        family_switch = prev.ip is not None and (":" in prev.ip) != (":" in ctx.event.ip)
        # A DHCP renewal stays in the ISP's local pool (one /16, or /32 of IPv6) yet GeoIP may put
        # the new address in another city 100+ km away: noise. A proxy elsewhere on the same ISP
        # comes from another pool (the learned score, session.anomaly, judges its behaviour).
        same_pool = (same_network and not family_switch and prev.ip is not None
                     and _pool(prev.ip) == _pool(ctx.event.ip))
        known_network = by_geoip and net.asn is not None and (
            (net.asn in prev.networks and not same_network)
            or (same_network and (family_switch or same_pool or params.same_network_is_noise)))
        # Within one country, GeoIP is noise for carriers and for one ISP's address pools; two
        # different fixed-line ISPs hundreds of km apart within minutes are not.
        domestic = (by_geoip and net.country is not None and net.country == prev.country
                    and net.kind != "hosting"
                    and "mobile" in (net.kind, network_kind(prev.asn)))
        evidence = {
            # Rounded to ~10 km: enough to explain the finding, not a device's exact position.
            "from_point": [round(prev.lat, 1), round(prev.lon, 1)],
            "from_country": prev.country if prev.located_at == prev.last_seen else None,
            "to_point": [round(here.lat, 1), round(here.lon, 1)],
            "to_country": net.country,
            "to_city": net.city,
            "to_network": net.asn,
            "to_network_kind": net.kind,
            "to_location_source": here.source,
            "km": round(km),
            "km_before_tolerance": round(raw_km),
            "tolerance_km": round(tolerance_km),
            "minutes": round(elapsed_s / 60.0, 1),
            "kmh": round(kmh),
            "max_kmh": params.max_speed_kmh,
        }
        where = ", ".join(p for p in (net.city, net.country) if p) or "an unknown place"
        took = f"{round(elapsed_s)} s" if elapsed_s < 120 else f"{round(elapsed_s / 60.0)} min"
        summary = (f"Session moved {round(km)} km in {took} "
                   f"({round(kmh)} km/h) to {where}")
        if relayed:
            return Signal(Severity.LOW, summary + " via a VPN or Tor network", evidence)
        if known_network:
            return Signal(Severity.LOW, summary + " on a network the session already used",
                          evidence)
        if domestic:
            return Signal(Severity.LOW, summary + " within one country", evidence)
        return Signal(Severity.HIGH, summary, evidence)

    examples = (
        Example(
            "saratoga-to-london-in-30-min",
            (Step(0, SARATOGA, CHROME_MAC), Step(1800, LONDON, CHROME_MAC)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "replayed-from-datacenter-10-min-later",
            (Step(0, SARATOGA, CHROME_MAC), Step(600, DATACENTER_NJ, CHROME_MAC)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "two-continents-same-second",
            (Step(0, SARATOGA, CHROME_MAC), Step(0, LONDON, CHROME_MAC)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "app-gps-says-paris",
            (Step(0, SARATOGA, CHROME_MAC), Step(600, SARATOGA, CHROME_MAC, attrs=PARIS_GPS)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "vpn-exit-downgraded",
            (Step(0, SARATOGA, CHROME_MAC), Step(1800, VPN_PRAGUE, CHROME_MAC)),
            fires=True,
            severity=Severity.LOW,
        ),
        Example(
            "tor-exit-downgraded",
            (Step(0, SARATOGA, CHROME_MAC), Step(1800, TOR_EXIT, CHROME_MAC)),
            fires=True,
            severity=Severity.LOW,
        ),
        Example(
            "vpn-switched-off-downgraded",
            (Step(0, VPN_PRAGUE, CHROME_MAC), Step(1800, SARATOGA, CHROME_MAC)),
            fires=True,
            severity=Severity.LOW,
        ),
        Example(
            "wifi-to-cellular-within-one-country",
            (Step(0, SARATOGA, CHROME_MAC), Step(50, TMOBILE_BROOKLYN, CHROME_MAC)),
            fires=True,
            severity=Severity.LOW,
        ),
        Example(
            "dual-stack-isp-geolocates-apart",
            (Step(0, BT_V6, CHROME_MAC), Step(22, BT_V4, CHROME_MAC)),
            fires=True,
            severity=Severity.LOW,
        ),
        Example(
            "dhcp-renewal-in-the-isp-pool-geolocates-400-km-away",
            (Step(0, BT_MANCHESTER, CHROME_MAC), Step(300, BT_GLASGOW, CHROME_MAC)),
            fires=True,
            severity=Severity.LOW,
        ),
        Example(
            "tenant-allows-faster-travel",
            (Step(0, SARATOGA, CHROME_MAC), Step(1800, LONDON, CHROME_MAC)),
            fires=False,
            params={"max_speed_kmh": 20000},
        ),
        Example(
            "same-city-other-prefix",
            (Step(0, SARATOGA, CHROME_MAC), Step(60, SARATOGA_2, CHROME_MAC)),
            fires=False,
        ),
        Example(
            "mobile-carrier-coarse-geo",
            (Step(0, SARATOGA, CHROME_MAC), Step(300, TMOBILE, CHROME_MAC)),
            fires=False,
        ),
        Example(
            "flight-new-york-to-london-7h",
            (Step(0, NEW_YORK, CHROME_MAC), Step(7 * 3600, LONDON, CHROME_MAC)),
            fires=False,
        ),
        Example(
            "short-hop-under-50-km",
            (Step(0, NEW_YORK, CHROME_MAC), Step(60, STATEN_ISLAND, CHROME_MAC)),
            fires=False,
        ),
        Example(
            "within-accuracy-radius",
            (Step(0, NEW_YORK, CHROME_MAC), Step(60, BURLINGTON_MA, CHROME_MAC)),
            fires=False,
        ),
        Example("first-event", (Step(0, LONDON, CHROME_MAC),), fires=False),
    )
