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

from sessionwatch.simulation.network_tables import (
    CARRIER_BLOCKS,
    FLIGHTS,
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
    "FLIGHTS",
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
