"""Benign sessions that look like the blended attacks: two devices or two people on one account,
restored tabs, a phone on a train, and a DHCP renewal that GeoIP sees as a jump.

Each kind is a function (pop, index, t) like an attack class; simulate() runs them after the
attacks, so the population and attacks before them stay the same for a seed.
"""

from __future__ import annotations

from collections.abc import Callable

from producers.contract import EventType
from sessionwatch.simulation import networks as nets
from sessionwatch.simulation.benign import Population, User
from sessionwatch.simulation.clients import DESKTOPS, PHONES, Browser
from sessionwatch.simulation.paths import benign_request
from sessionwatch.simulation.world import Session


def _carrier_countries(pop: Population) -> tuple[str, ...]:
    return tuple(sorted(pop.cgnat))


def _phone(pop: Population, user: User) -> Browser:
    if user.phone is None:
        user.phone = pop.w.rng.choice(PHONES)
    if not user.carrier:
        user.carrier = pop.cgnat.get(user.country, [])
    return user.phone


def _finish(pop: Population, s: Session, t: float, ip: str, ua: str) -> None:
    pop.finish(s, t, ip, ua, logout=pop.w.rng.random() < 0.35)


def _in_parallel(pop: Population, user: User, tabs: list[tuple[Session, str, str]], t: float,
                 n: int) -> None:
    """`n` requests spread at random over the (session, ip, ua) `tabs`, interleaved in time; none
    left idle for 20 minutes. Each session then ends on its own."""
    w, rng = pop.w, pop.w.rng
    last = [t] * len(tabs)
    for _ in range(n):
        t += rng.uniform(5, 120)
        stale = [k for k, at in enumerate(last) if t - at > 1200]
        k = stale[0] if stale else rng.randrange(len(tabs))
        s, ip, ua = tabs[k]
        w.emit(t, EventType.ACTIVITY, ip, session=s, user=user.id, ua=ua, attrs=benign_request(rng))
        last[k] = t
    for s, ip, ua in tabs:
        _finish(pop, s, s.last_t, ip, ua)


def two_devices_home(pop: Population, i: int, t: float) -> None:
    """One user on the laptop and the phone at once, both on the home Wi-Fi: two logins."""
    rng = pop.w.rng
    user = pop.user("home")
    phone = _phone(pop, user)
    desk_ua, phone_ua = user.desktop.ua(), phone.ua()
    s1, t1 = pop.login(user, t, user.home_ip, desk_ua, "two_devices_home")
    s2, t2 = pop.login(user, t1 + rng.uniform(5, 300), user.home_ip, phone_ua, "two_devices_home")
    _in_parallel(pop, user, [(s1, user.home_ip, desk_ua), (s2, user.home_ip, phone_ua)], t2,
                 rng.randint(12, 40))


def household_shared(pop: Population, i: int, t: float) -> None:
    """One account, two people at home with two browsers; sometimes one is on the phone's carrier."""
    rng = pop.w.rng
    user = pop.user("home", _carrier_countries(pop))
    ua1 = user.desktop.ua()
    if rng.random() < 0.3:
        second = rng.choice(PHONES)
        carrier = nets.carrier_addresses(pop.cgnat.get(user.country, []), user.country, rng)
        ip2 = rng.choice(carrier) if carrier else user.home_ip
    else:
        second = rng.choice([b for b in DESKTOPS if b.build is not user.desktop.build])
        ip2 = user.home_ip
    user.others.append(second)
    ua2 = second.ua()
    s1, t1 = pop.login(user, t, user.home_ip, ua1, "household_shared")
    s2, t2 = pop.login(user, t1 + rng.uniform(30, 600), ip2, ua2, "household_shared")
    _in_parallel(pop, user, [(s1, user.home_ip, ua1), (s2, ip2, ua2)], t2, rng.randint(12, 40))


def tab_restore(pop: Population, i: int, t: float) -> None:
    """A browser reopened with its tabs: 10-40 requests within 1-3 s, then ordinary browsing."""
    w, rng = pop.w, pop.w.rng
    user = pop.user("home")
    ua, ip = user.desktop.ua(), user.home_ip
    s, t = pop.login(user, t, ip, ua, "tab_restore")
    t = pop.browse(s, t, [(ip, ua)] * rng.randint(2, 6), request=benign_request)
    t += rng.uniform(120, 1200)  # the browser was closed, then reopened
    burst = rng.uniform(1, 3)
    for at in sorted(t + rng.uniform(0, burst) for _ in range(rng.randint(10, 40))):
        w.emit(at, EventType.ACTIVITY, ip, session=s, user=user.id, ua=ua, attrs=benign_request(rng))
    t = pop.browse(s, t + burst, [(ip, ua)] * rng.randint(3, 12), request=benign_request)
    _finish(pop, s, t, ip, ua)


def train_commute(pop: Population, i: int, t: float) -> None:
    """A phone on a train: one carrier's NAT addresses, a new one every 1-4 minutes, none reused
    while it is fresh (never A, B, A within a minute)."""
    w, rng = pop.w, pop.w.rng
    user = pop.user("mobile", _carrier_countries(pop))
    phone = _phone(pop, user)
    pool = nets.carrier_addresses(pop.cgnat[user.country], user.country, rng) or user.carrier
    user.carrier = pool  # the user's carrier, for their history too
    ua = phone.ua()
    ip = rng.choice(pool)
    last_use = {ip: t}
    s, t = pop.login(user, t, ip, ua, "train_commute")
    end = t + rng.uniform(1200, 3600)
    change_at = t + rng.uniform(60, 240)
    while t < end:
        t += rng.uniform(5, 45)
        if t >= change_at:
            fresh = [a for a in pool if a not in last_use]
            if not fresh:
                fresh = [a for a in pool if a != ip and last_use[a] < t - 60]
            if fresh:
                ip = rng.choice(fresh)
            change_at = t + rng.uniform(60, 240)
        w.emit(t, EventType.ACTIVITY, ip, session=s, user=user.id, ua=ua, attrs=benign_request(rng))
        last_use[ip] = t
    _finish(pop, s, t, ip, ua)


def dhcp_far_geo(pop: Population, i: int, t: float) -> None:
    """The home line renewed to an address of the same ISP block that GeoIP puts 300-500 km away."""
    rng = pop.w.rng
    metro, network, old, new = rng.choice(nets.DHCP_FAR_GEO)
    user = pop.user("home", metros_only=(metro,))
    user.home = next(p for p in nets.home_pools(metro) if p.network == network)
    user.home_ip = user.usual_ip = f"{rng.choice(old.split())}.{rng.randrange(2, 254)}"
    ua, ip = user.desktop.ua(), user.home_ip
    s, t = pop.login(user, t, ip, ua, "dhcp_far_geo")
    n = rng.randint(6, 20)
    k = rng.randint(1, n - 2)
    renewed = f"{rng.choice(new.split())}.{rng.randrange(2, 254)}"
    route = [(ip, ua)] * k + [(renewed, ua)] * (n - k)
    user.home_ip = renewed
    t = pop.browse(s, t, route, request=benign_request)
    _finish(pop, s, t, renewed, ua)


BENIGN_LOOKALIKES: dict[str, Callable[[Population, int, float], None]] = {
    "two_devices_home": two_devices_home,
    "household_shared": household_shared,
    "tab_restore": tab_restore,
    "train_commute": train_commute,
    "dhcp_far_geo": dhcp_far_geo,
}
