"""Offline enrichment of an event's address and User-Agent: network (ASN), location, client family.

All lookups are local files (GeoLite2 City from `maxminddb-geolite2`, ASN from `geoip2fast`) and
cached, because the same address and UA recur for the life of a session. Production deployments
point the settings at current mmdb files; the bundled data is old (City: July 2018).
"""

from __future__ import annotations

import ipaddress
import os
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import msgspec

# Client families that are tools, not browsers: their appearance mid-session is strong evidence
# of cookie replay (Elastic's AiTM rule keys on these too).
TOOL_FAMILIES = frozenset(
    {
        "curl", "Wget", "Python Requests", "Python-urllib", "aiohttp", "httpx", "Go-http-client",
        "Java", "Apache-HttpClient", "okhttp", "PostmanRuntime", "Insomnia", "libwww-perl",
        "PHP", "Ruby", "node-fetch", "axios", "HeadlessChrome", "PhantomJS", "Scrapy",
        "Bot", "Spider",
    }
)
_TOOL_PREFIXES = ("python-", "go-http", "java/", "curl/", "wget/", "okhttp/", "axios/",
                  "node-fetch", "postmanruntime/", "insomnia/", "libwww-perl", "httpie/")


# What kind of network an ASN is, from its name (offline, no reputation feed): "tor" exits,
# consumer "vpn"/relay egress (Apple Private Relay runs on Akamai/Cloudflare/Fastly), "mobile"
# carriers, "hosting" (datacenters and VPS providers, where replayed cookies usually come
# from). First match wins; None is residential or unknown.
# Production deployments with a commercial feed can extend these lists.
NETWORK_KIND_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("tor", ("STIFTUNG ERNEUERBARE FREIHEIT", "TORSERVERS", "TOR EXIT", "ZWIEBELFREUNDE",
             "FOUNDATION FOR APPLIED PRIVACY", "EMERALD ONION", "NOS OIGNONS")),
    ("vpn", ("DATACAMP", "M247", "31173 SERVICES", "PACKETHUB", "TEFINCOM", "EXPRESSVPN",
             "PROTON AG", "PRIVATE INTERNET ACCESS", "LONDON TRUST MEDIA", "CDN77", "SURFSHARK",
             "WINDSCRIBE", "MULLVAD", "NORDVPN", "AKAMAI INTERNATIONAL", "CLOUDFLARENET",
             "FASTLY", "IPXO")),
    # Carriers: their addresses sit behind CGNAT gateways that geolocate to a country centroid or
    # a city hundreds of km away, so distances involving them are not evidence.
    ("mobile", ("T-MOBILE", "CELLCO", "WIRELESS", "CELLULAR", "MOBILE", "EE LIMITED",
                "DOCOMO", "RELIANCE JIO", "AT&T MOBILITY", "SPRINT", "TELEFONICA MOVILES",
                "VODAFONE", "BHARTI AIRTEL", "MTN ", "SAFARICOM")),
    ("hosting", ("DIGITALOCEAN", "AMAZON", "AWS", "OVH", "HETZNER", "LINODE",
                 "AKAMAI CONNECTED CLOUD", "CHOOPA", "VULTR", "GOOGLE-CLOUD", "GOOGLE CLOUD",
                 "MICROSOFT", "ORACLE", "ALIBABA", "TENCENT", "CONTABO", "SCALEWAY",
                 "ONLINE S.A.S", "LEASEWEB", "NFORCE", "HOSTINGER", "IONOS", "HOSTWINDS",
                 "COLOCROSSING", "PSYCHZ", "QUADRANET", "FRANTECH", "SERVERIUS", "WORLDSTREAM",
                 "SELECTEL", "TIMEWEB", "HOSTING", "DATACENTER", "DATA CENTER", "SERVERS",
                 "VPS")),
)
# Exact names that are datacenters but too generic to match by keyword.
_HOSTING_NAMES = frozenset({"GOOGLE"})
# GeoLite2 gives a country's centroid, without a city, for addresses it only knows by country;
# such a point (or one this vague) says nothing about distance.
COARSE_ACCURACY_KM = 500.0


@lru_cache(maxsize=16_384)
def network_kind(asn: str | None) -> str | None:
    """The kind of a network from its name (see NETWORK_KIND_KEYWORDS).

    Cached: detectors ask it of the networks a session used on every event, and scanning the
    keyword lists is a hundred substring searches.
    """
    if not asn:
        return None
    name = asn.upper()
    if name in _HOSTING_NAMES:
        return "hosting"
    for kind, words in NETWORK_KIND_KEYWORDS:
        if any(w in name for w in words):
            return kind
    return None


@dataclass(frozen=True, slots=True)
class Network:
    """Where an address sits: its announcing network and a coarse location."""

    asn: str | None          # the announcing network's name (geoip2fast carries names, not numbers)
    asn_cidr: str | None
    country: str | None
    lat: float | None
    lon: float | None
    accuracy_km: float | None
    private: bool
    city: str | None = None
    kind: str | None = None  # "hosting", "vpn", "tor", "mobile" or None (residential, unknown)


class Location(msgspec.Struct, frozen=True):
    """A point and how far off it may be.

    `coarse`: GeoIP knew only the country (no city, radius >= 500 km: often the country's
    centroid, e.g. 37.751,-97.822 for the US) - useless for distance. The app's own location is
    never coarse; its `accuracy_km` widens the tolerance instead.

    A msgspec Struct rather than a frozen dataclass (as Network and Client are): one is built for
    every event, and a frozen dataclass costs about ten times as much to build.
    """

    lat: float
    lon: float
    accuracy_km: float
    coarse: bool
    source: str              # "geoip" or "app" (the app's own `attrs.geo`)


def locate(attrs: dict[str, Any], network: Network) -> Location | None:
    """The event's location: the app's `attrs.geo` {lat, lon, accuracy_km} wins over GeoIP."""
    geo = attrs.get("geo") if attrs else None
    if isinstance(geo, dict):
        lat, lon = geo.get("lat"), geo.get("lon")
        if (isinstance(lat, (int, float)) and isinstance(lon, (int, float))
                and not isinstance(lat, bool) and -90 <= lat <= 90 and -180 <= lon <= 180):
            acc = geo.get("accuracy_km")
            acc = float(acc) if isinstance(acc, (int, float)) and acc >= 0 else 1.0
            return Location(float(lat), float(lon), acc, coarse=False, source="app")
    if network.lat is None or network.lon is None:
        return None
    acc = float(network.accuracy_km or COARSE_ACCURACY_KM)
    if network.city is None:
        # Without a city GeoIP often returns the country's default point whatever radius it
        # claims; such a point is worth at least the coarse radius.
        return Location(network.lat, network.lon, max(acc, COARSE_ACCURACY_KM),
                        coarse=acc >= COARSE_ACCURACY_KM, source="geoip")
    return Location(network.lat, network.lon, acc, coarse=False, source="geoip")


@dataclass(frozen=True, slots=True)
class Client:
    """The client software behind a User-Agent string, at family level."""

    family: str              # browser or tool family, e.g. "Chrome", "curl"
    os: str                  # OS family, e.g. "Windows", "iOS"
    major: str | None
    is_tool: bool


UNKNOWN_CLIENT = Client(family="Other", os="Other", major=None, is_tool=False)
_UNKNOWN = object()  # not looked up yet (a City record may be None: not in the database)


@lru_cache(maxsize=65_536)
def network_prefix(ip: str) -> str:
    """The prefix that ISP rotation and IPv6 privacy addresses usually stay within: /24 or /64.

    Cached: parsing addresses was a third of the pipeline's time, and they recur all session long.
    """
    addr = ipaddress.ip_address(ip)
    bits = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


class Enricher:
    """Cached GeoIP and UA lookups. One per process; safe to share within an event loop."""

    def __init__(
        self,
        city_db: str | None = None,
        asn_db: str | None = None,
        cache_size: int = 65_536,
    ) -> None:
        import maxminddb
        from geoip2fast import GeoIP2Fast

        self._city = maxminddb.open_database(city_db or _bundled_city_db())
        self._asn = GeoIP2Fast(geoip2fast_data_file=asn_db or _bundled_asn_db(), verbose=False)
        self.network = lru_cache(maxsize=cache_size)(self._network)  # type: ignore[method-assign]
        self.client = lru_cache(maxsize=cache_size)(self._client)  # type: ignore[method-assign]
        # City records by /24 or /64, for the prefixes the database gives one record (see
        # _city_record); first in, first out beyond the cap.
        self._city_by_prefix: OrderedDict[str, Any] = OrderedDict()
        self._city_cache_size = cache_size // 4

    def _network(self, ip: str) -> Network:
        addr = ipaddress.ip_address(ip)
        if addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved:
            return Network(None, None, None, None, None, None, private=True)
        asn_name = asn_cidr = None
        asn = self._asn.lookup(ip)
        if getattr(asn, "asn_name", "") and asn.asn_name != "IANA.ORG":
            asn_name, asn_cidr = asn.asn_name, asn.asn_cidr
        rec: Any = self._city_record(ip) or {}
        loc = rec.get("location") or {}
        country = (rec.get("country") or rec.get("registered_country") or {}).get("iso_code")
        city = ((rec.get("city") or {}).get("names") or {}).get("en")
        return Network(
            asn=asn_name,
            asn_cidr=asn_cidr,
            country=country or (asn.country_code if asn.country_code not in ("", "--") else None),
            lat=loc.get("latitude"),
            lon=loc.get("longitude"),
            accuracy_km=loc.get("accuracy_radius"),
            private=False,
            city=city,
            kind=network_kind(asn_name),
        )

    def _city_record(self, ip: str) -> Any:
        """The GeoLite2 City record of `ip` (None if it has none).

        Decoding a record is the costliest part of a new address (~10 µs), and new addresses
        mostly come from prefixes already seen (DHCP pools, carrier NAT). The database says which
        network a record covers; when that covers the address's whole /24 (IPv4) or /64, the
        record is kept for the prefix, so the same record is returned for its other addresses.
        """
        prefix = network_prefix(ip)
        rec = self._city_by_prefix.get(prefix, _UNKNOWN)
        if rec is _UNKNOWN:
            rec, covered = self._city.get_with_prefix_len(ip)
            if covered <= (64 if ":" in ip else 24):
                if len(self._city_by_prefix) >= self._city_cache_size:
                    self._city_by_prefix.popitem(last=False)
                self._city_by_prefix[prefix] = rec
        return rec

    def _client(self, user_agent: str | None) -> Client:
        if not user_agent:
            return UNKNOWN_CLIENT
        from ua_parser import parse

        parsed = parse(user_agent)
        family = parsed.user_agent.family if parsed.user_agent else "Other"
        os_family = parsed.os.family if parsed.os else "Other"
        major = parsed.user_agent.major if parsed.user_agent else None
        lowered = user_agent.lower()
        is_tool = (
            family in TOOL_FAMILIES
            or lowered.startswith(_TOOL_PREFIXES)
            or (parsed.device is not None and parsed.device.family == "Spider")
        )
        return Client(family=family, os=os_family, major=major, is_tool=is_tool)

    def close(self) -> None:
        self._city.close()


def _bundled_city_db() -> str:
    from geolite2 import geolite2

    path: str = geolite2.filename  # type: ignore[attr-defined]
    return path


def _bundled_asn_db() -> str:
    import geoip2fast

    return os.path.join(os.path.dirname(geoip2fast.__file__), "geoip2fast-asn-ipv6.dat.gz")
