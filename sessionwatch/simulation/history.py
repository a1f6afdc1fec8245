"""Earlier days of ordinary visits for every user, before START: what per-user features learn from.

Day d of D starts at -d * DAY_S plus the offsets of the simulated day; every login is a benign
session of kind HISTORY_KIND, attack victims' included (their accounts were fine until START).
"""

from __future__ import annotations

from sessionwatch.simulation import networks as nets
from sessionwatch.simulation.benign import Population, User
from sessionwatch.simulation.clients import Browser
from sessionwatch.simulation.paths import benign_request

DAY_S = 86_400.0
HISTORY_KIND = "history"


# Users new to the app (no earlier days): attacked ones too, so a model cannot learn that "no
# history" means "no attack" - in the simulator's traffic it would otherwise be true.
NEW_USERS = 0.15


def add_history(pop: Population, days: int, span_s: float) -> None:
    """`days` earlier days for every user made so far, but the NEW_USERS share, who have none."""
    rng = pop.w.rng
    for user in list(pop.made):
        if rng.random() < NEW_USERS:
            continue
        for d in range(days, 0, -1):
            _day(pop, user, -d * DAY_S, span_s)


def _day(pop: Population, user: User, base: float, span_s: float) -> None:
    rng = pop.w.rng
    t = base + (rng.uniform(0, 5400) if user.profile == "office" else rng.uniform(0, span_s * 0.7))
    for _ in range(rng.choice((1, 1, 2, 2, 3))):
        if t > base + span_s:
            break
        ip, browser = _usual(pop, user)
        ua = browser.ua()
        s, t = pop.login(user, t, ip, ua, HISTORY_KIND)
        route = []
        for _ in range(rng.randint(4, 20)):
            if ":" in ip and rng.random() < 0.2:
                ip = nets.same_prefix(rng, ip)  # IPv6 privacy address rotation
            elif ip in user.carrier and rng.random() < 0.1:
                ip = rng.choice(user.carrier)  # the carrier moved us to another NAT address
            route.append((ip, ua))
        t = pop.browse(s, t, route, request=benign_request)
        end, _ = pop.finish(s, t, ip, ua, logout=rng.random() < 0.35)
        t = end + rng.uniform(600, 7200)


def _usual(pop: Population, user: User) -> tuple[str, Browser]:
    """Where and on what the user usually comes: home, phone, office, VPN, other people's browsers."""
    rng = pop.w.rng
    home = user.usual_ip
    options: list[tuple[tuple[str, Browser], int]] = [((home, user.desktop), 6)]
    if user.phone is not None:
        options.append(((home, user.phone), 2))
        if user.carrier:
            options.append(((rng.choice(user.carrier), user.phone), 6 if user.profile == "mobile" else 1))
    options += [((home, other), 3) for other in user.others]
    if user.office_ip:
        options.append(((user.office_ip, user.desktop), 10))
    if user.vpn is not None:
        options.append(((nets.host(rng, user.vpn), user.desktop), 6))
    if user.v6_ip:
        options.append(((user.v6_ip, user.desktop), 6))
    return rng.choices([o for o, _ in options], [w for _, w in options])[0]
