"""Where simulated traffic comes from: network blocks checked against the bundled GeoIP data.

Every /24 below was picked so that its hosts map, in both bundled databases (geoip2fast ASN names,
GeoLite2 City), to the network name and country listed, and home /24s to the metro named
(tests/sessionwatch/test_simulation.py re-checks samples). Network names are what the enricher sees,
so the detectors' network kinds (hosting, vpn, tor) follow from them as they would in production.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from functools import cache

from sessionwatch.simulation.network_tables import (
    CARRIER_BLOCKS,
    DHCP_FAR_GEO,
    FLIGHTS,
    HOME_POOL_CITIES,
    HOME_POOLS,
    HOME_V6,
    HOSTING_BLOCKS,
    METROS,
    OFFICE_METROS,
    RESIDENTIAL_BLOCKS,
    TOR_BLOCKS,
    VPN_BLOCKS,
)

__all__ = [
    "CARRIER_BLOCKS",
    "DHCP_FAR_GEO",
    "FLIGHTS",
    "HOME_POOL_CITIES",
    "HOME_POOLS",
    "HOME_V6",
    "HOSTING_BLOCKS",
    "METROS",
    "OFFICE_METROS",
    "RESIDENTIAL_BLOCKS",
    "TOR_BLOCKS",
    "VPN_BLOCKS",
]


@dataclass(frozen=True)
class Pool:
    """A set of /24s (or one IPv6 block) of one network, and what GeoIP says about it."""

    network: str
    country: str
    prefixes: tuple[str, ...]
    v6: str | None = None


def home_pools(metro: str) -> list[Pool]:
    country = METROS[metro][0]
    return [Pool(net, country, tuple(prefixes.split())) for net, prefixes in HOME_POOLS[metro]]


def blocks(
    table: list[tuple[str, str, str]],
    country: str | None = None,
    exclude_country: str | None = None,
) -> list[Pool]:
    return [
        Pool(net, cc, tuple(prefixes.split()))
        for cc, net, prefixes in table
        if (country is None or cc == country) and cc != exclude_country
    ]


def host(rng: random.Random, pool: Pool) -> str:
    """A random host of the pool (never .0 or .255)."""
    if pool.v6:
        return v6_host(rng, pool.v6)
    return f"{rng.choice(pool.prefixes)}.{rng.randrange(2, 254)}"


def v6_host(rng: random.Random, block: str) -> str:
    """A random /64 inside `block` and a random interface id (a privacy address)."""
    net = ipaddress.ip_network(block)
    slots = 2 ** (64 - net.prefixlen)
    prefix = int(net.network_address) + (rng.randrange(slots) << 64)
    return str(ipaddress.ip_address(prefix + rng.randrange(1, 2**64 - 1)))


def same_prefix(rng: random.Random, ip: str) -> str:
    """Another host in `ip`'s /24 or /64: a DHCP renewal or IPv6 privacy-address rotation."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6:
        base = int(addr) & ~(2**64 - 1)
        return str(ipaddress.ip_address(base + rng.randrange(1, 2**64 - 1)))
    base = int(addr) & ~0xFF
    while True:
        new = str(ipaddress.ip_address(base + rng.randrange(2, 254)))
        if new != ip:
            return new


def other_prefix(rng: random.Random, pool: Pool, ip: str) -> str:
    """A host of the same pool in another /24: the ISP reassigned the line's address."""
    for _ in range(50):
        new = host(rng, pool)
        if new.rsplit(".", 1)[0] != ip.rsplit(".", 1)[0]:
            return new
    return same_prefix(rng, ip)


def cgnat_pool(rng: random.Random, pool: Pool, size: int = 48) -> list[str]:
    """The few public addresses a carrier's NAT shares among many subscribers."""
    return sorted({host(rng, pool) for _ in range(size)})


def same_city_other_prefix(rng: random.Random, metro: str, pool: Pool, ip: str) -> str:
    """A host of `pool` in another /24 that GeoIP places in the same city as `ip`."""
    prefix = ip.rsplit(".", 1)[0]
    group: tuple[str, ...] = pool.prefixes
    for prefixes in HOME_POOL_CITIES.get(metro, {}).values():
        if prefix in prefixes.split():
            group = tuple(prefixes.split())
    others = [p for p in group if p != prefix and p in pool.prefixes]
    if not others:
        return same_prefix(rng, ip)
    return f"{rng.choice(others)}.{rng.randrange(2, 254)}"


def carrier_addresses(cgnat: list[str], country: str, rng: random.Random) -> list[str]:
    """The NAT addresses of one carrier of `country` among a country's shared `cgnat` addresses."""
    networks = sorted({p.network for p in blocks(CARRIER_BLOCKS, country=country)})
    if not networks:
        return []
    network = rng.choice(networks)
    prefixes = {p for pool in blocks(CARRIER_BLOCKS, country=country) if pool.network == network
                for p in pool.prefixes}
    return [ip for ip in cgnat if ip.rsplit(".", 1)[0] in prefixes]


@cache
def _prefix_kinds() -> dict[str, str]:
    kinds: dict[str, str] = {}
    for kind, table in (("carrier", CARRIER_BLOCKS), ("hosting", HOSTING_BLOCKS), ("tor", TOR_BLOCKS),
                        ("vpn", VPN_BLOCKS), ("residential", RESIDENTIAL_BLOCKS)):
        for _, _, prefixes in table:
            kinds.update(dict.fromkeys(prefixes.split(), kind))
    for pools in HOME_POOLS.values():
        for _, prefixes in pools:
            kinds.update(dict.fromkeys(prefixes.split(), "home"))
    return kinds


def source_kind(ip: str) -> str:
    """Which of the tables `ip` comes from: home, carrier, hosting, tor, vpn, residential (abroad).

    IPv6 addresses are households' (HOME_V6); anything else is "other".
    """
    if ":" in ip:
        return "home"
    return _prefix_kinds().get(ip.rsplit(".", 1)[0], "other")
