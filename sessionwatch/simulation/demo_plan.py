"""A seeded, labelled session-traffic simulator: benign users and injected hijacks.

Addresses come from real network blocks that geolocate where they should in the bundled
GeoLite2/ASN data (home ISPs, mobile carriers, hosting providers), so enrichment sees what it
would see in production. Benign behaviour the detectors must leave alone: DHCP renewals, ISP
rotation, Wi-Fi/cellular churn, IPv6 privacy addresses, browser auto-updates. Attacks: cookie
replay from another network with a tool UA, with another browser, or with the victim's exact UA.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field
from typing import Any

from producers.hashing import mint_session_token
from sessionwatch.simulation import networks as nets
from sessionwatch.simulation.clients import (
    chrome_android,
    chrome_mac,
    chrome_win,
    edge_win,
    firefox_win,
    safari_iphone,
    safari_mac,
)

# Homes, carriers and attackers come from the checked tables in networks.py: a household keeps one
# address in its metro for the day, so only the behaviour under test moves it.
ATTACKER_NETWORKS = [
    "159.203.0.0/16", "167.99.0.0/16", "51.38.0.0/16", "95.216.0.0/15", "54.208.0.0/14",
    "45.79.0.0/18", "45.32.0.0/16", "185.220.101.0/24", "105.112.8.0/22", "61.150.0.0/16",
    "113.160.0.0/11",
]


# (builder, current version, is a phone)
BROWSERS = [
    (chrome_win, 130, False), (chrome_mac, 130, False), (chrome_android, 130, True),
    (firefox_win, 132, False), (edge_win, 130, False), (safari_mac, 17, False),
    (safari_iphone, 17, True),
]
TOOL_UAS = ["curl/8.5.0", "python-requests/2.32.3", "Go-http-client/2.0", "okhttp/4.12.0"]

BENIGN_KINDS = ("steady", "dhcp", "isp_rotation", "mobile_churn", "browser_update", "ipv6_privacy")
ATTACK_KINDS = ("replay_tool_ua", "replay_other_browser", "replay_same_ua")
# What the detectors are expected to catch: every kind since impossible travel (issue 3).
DETECTABLE_ATTACKS = frozenset(ATTACK_KINDS)


@dataclass(frozen=True)
class Planned:
    """One event to emit: simulated seconds from the start, the SDK method and its arguments."""

    at: float
    method: str
    kwargs: dict[str, Any]
    session_label: str
    attack: bool = False


@dataclass
class SessionTruth:
    label: str
    user: str
    benign_kind: str
    attack_kind: str | None = None
    attack_starts_at: float | None = None


@dataclass
class Plan:
    events: list[Planned] = field(default_factory=list)
    sessions: dict[str, SessionTruth] = field(default_factory=dict)
    # session label -> raw token (kept by the simulated *app*; only hashes leave it)
    tokens: dict[str, str] = field(default_factory=dict)


class _Net:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def host(self, cidr: str) -> str:
        net = ipaddress.ip_network(cidr)
        return str(net.network_address + self.rng.randrange(1, net.num_addresses - 1))

    def other_slash24(self, cidr: str, ip: str) -> str:
        """Another host of the same network block, outside `ip`'s /24 (ISP rotation)."""
        while True:
            new = self.host(cidr)
            if new.rsplit(".", 1)[0] != ip.rsplit(".", 1)[0]:
                return new

    def same_slash24(self, ip: str) -> str:
        addr = ipaddress.ip_address(ip)
        if addr.version == 6:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False).network_address
                       + self.rng.randrange(1, 2**32))
        base = int(addr) & ~0xFF
        return str(ipaddress.ip_address(base + self.rng.randrange(1, 255)))


def plan_traffic(
    users: int = 300,
    seed: int = 7,
    attack_rate: float = 0.08,
    span_s: float = 7200.0,
) -> Plan:
    """Plan the events of `users` simulated users over `span_s` simulated seconds, in time order."""
    rng = random.Random(seed)
    net = _Net(rng)
    plan = Plan()
    metros = sorted(nets.METROS)
    carriers: dict[str, list[str]] = {}
    for pool in nets.blocks(nets.CARRIER_BLOCKS):
        carriers.setdefault(pool.country, []).extend(nets.cgnat_pool(rng, pool, 16))
    for u in range(users):
        user = f"user-{u:05d}"
        metro = rng.choice(metros)
        country = nets.METROS[metro][0]
        builder, version, phone = rng.choice(BROWSERS)
        v6 = metro in nets.HOME_V6 and rng.random() < 0.3
        home = rng.choice(nets.home_pools(metro))
        if v6:
            home = nets.Pool(nets.HOME_V6[metro][0], country, (), v6=nets.HOME_V6[metro][1])
        home_ip = nets.host(rng, home)
        for s in range(rng.choice((1, 1, 2))):
            label = f"{user}/s{s}"
            kinds = ["steady", "dhcp", "isp_rotation", "browser_update"]
            if country in carriers:
                kinds.append("mobile_churn")
            if v6:
                kinds = ["ipv6_privacy", "steady", "browser_update"]
            kind = rng.choice(kinds)
            attack = rng.choice(ATTACK_KINDS) if rng.random() < attack_rate else None
            _plan_session(plan, rng, net, label, user, home, home_ip, carriers.get(country, []),
                          builder, version, kind, attack, span_s)
    plan.events.sort(key=lambda p: p.at)
    return plan


def _plan_session(
    plan: Plan, rng: random.Random, net: _Net, label: str, user: str, home: nets.Pool,
    home_ip: str, carrier: list[str], builder: Any, version: int, kind: str, attack: str | None,
    span_s: float,
) -> None:
    pre_login, token = mint_session_token(), mint_session_token()
    plan.tokens[label] = token
    truth = SessionTruth(label=label, user=user, benign_kind=kind, attack_kind=attack)
    plan.sessions[label] = truth
    ip = home_ip
    ua = builder(version)
    t = rng.uniform(0, span_s * 0.8)
    add = plan.events.append
    add(Planned(t, "created", {"session_token": pre_login, "ip": ip, "user_agent": ua}, label))
    t += rng.uniform(5, 40)
    add(Planned(t, "authenticated", {
        "session_token": token, "user": user, "ip": ip, "user_agent": ua,
        "previous_session_token": pre_login}, label))
    n = rng.randint(6, 30)
    change_at = rng.randint(2, n - 2)
    attack_at = rng.randint(3, n - 1) if attack else None
    mobile_ip = rng.choice(carrier) if carrier else home_ip
    for i in range(n):
        t += rng.uniform(5, 120)
        if i >= change_at:
            if kind == "dhcp" and i == change_at:
                ip = net.same_slash24(ip)
            elif kind == "isp_rotation" and i == change_at:
                ip = nets.other_prefix(rng, home, ip) if not home.v6 else net.same_slash24(ip)
            elif kind == "mobile_churn" and rng.random() < 0.5:
                ip = mobile_ip if ip == home_ip else home_ip
            elif kind == "browser_update" and i == change_at:
                ua = builder(version + 1)
            elif kind == "ipv6_privacy" and i == change_at:
                ip = net.same_slash24(ip)
        add(Planned(t, "activity", {"session_token": token, "user": user, "ip": ip,
                                    "user_agent": ua, "attrs": {"path": "/account"}}, label))
        if attack_at is not None and i == attack_at:
            truth.attack_starts_at = t + 1
            _plan_attack(plan, rng, net, label, token, user, ua, attack or "", t + 1)
    if rng.random() < 0.4:
        add(Planned(t + rng.uniform(5, 60), "logout",
                    {"session_token": token, "user": user, "ip": ip, "user_agent": ua}, label))


def _plan_attack(plan: Plan, rng: random.Random, net: _Net, label: str, token: str, user: str,
                 victim_ua: str, kind: str, t: float) -> None:
    attacker_ip = net.host(rng.choice(ATTACKER_NETWORKS))
    if kind == "replay_tool_ua":
        ua = rng.choice(TOOL_UAS)
    elif kind == "replay_other_browser":
        ua = firefox_win(133) if "Firefox" not in victim_ua else chrome_mac(131)
    else:
        ua = victim_ua
    for _ in range(rng.randint(2, 5)):
        plan.events.append(Planned(t, "activity", {
            "session_token": token, "user": user, "ip": attacker_ip, "user_agent": ua,
            "attrs": {"path": "/account/export"}}, label, attack=True))
        t += rng.uniform(1, 20)
