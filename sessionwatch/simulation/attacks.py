"""Attack classes, injected into the benign day with their truth.

Attackers come mostly from hosting/VPS networks (DigitalOcean, AWS, Hetzner, OVH, Akamai/Linode,
Vultr), some from Tor exits, and some from residential networks abroad (residential proxies).
Victims are ordinary users at home whose session or account the attacker takes over. The last
classes blend in (the victim's own ISP or a VPN at home, the exact UA, interleaved with the victim)
so that only learned, per-user features can tell them apart.
"""

from __future__ import annotations

from collections.abc import Callable

from producers.contract import DEFAULT_TENANT, EventType
from sessionwatch.simulation import networks as nets
from sessionwatch.simulation.benign import Population, User
from sessionwatch.simulation.clients import BOT_BROWSER_UAS, DESKTOPS, TOOL_UAS
from sessionwatch.simulation.networks import Pool
from sessionwatch.simulation.paths import (
    SENSITIVE_PATHS,
    attacker_request,
    attacker_sensitive,
    benign_request,
)
from sessionwatch.simulation.truth import CATCH_SESSION, CATCH_SOURCE, CATCH_USER, AttackTruth
from sessionwatch.simulation.world import LEGACY_TENANT, Session

HOSTING_COUNTRIES = ("US", "GB", "DE", "FR", "NL", "CA", "IN", "JP")
STEAL_PATHS = ("/account/export", "/api/me", "/settings/security", "/api/payments", "/inbox")


class Attack:
    """Collects one attack instance's malicious events and subjects into its truth record."""

    def __init__(self, pop: Population, cls: str, index: int, tenant: str = DEFAULT_TENANT) -> None:
        self.pop, self.w, self.rng = pop, pop.w, pop.w.rng
        self.truth = AttackTruth(id=f"{cls}-{index:03d}", cls=cls, tenant=tenant, first_event="",
                                 start=0.0)

    def emit(self, t: float, type: EventType, ip: str, **kw: object) -> None:
        event = self.w.emit(t, type, ip, attack=self.truth.id, **kw)  # type: ignore[arg-type]
        if not self.truth.events:
            self.truth.first_event, self.truth.start = event.id, event.time.timestamp()
        self.truth.events.append(event.id)
        if ip not in self.truth.sources:
            self.truth.sources.append(ip)

    def done(self, *catch: str) -> None:
        self.truth.catch = list(catch)
        self.w.truth.attacks.append(self.truth)


def _pick(pop: Population, pools: list[Pool]) -> str:
    return nets.host(pop.w.rng, pop.w.rng.choice(pools))


def _foreign_source(pop: Population, country: str, residential: float = 0.15) -> str:
    r = pop.w.rng.random()
    if r < residential:
        return _pick(pop, nets.blocks(nets.RESIDENTIAL_BLOCKS, exclude_country=country))
    if r < residential + 0.1:
        return _pick(pop, nets.blocks(nets.TOR_BLOCKS))
    return _pick(pop, nets.blocks(nets.HOSTING_BLOCKS, exclude_country=country))


def _same_country_source(pop: Population, user: User) -> str:
    rng = pop.w.rng
    if rng.random() < 0.2:  # a residential proxy elsewhere in the victim's country
        metros = [m for m, v in nets.METROS.items() if v[0] == user.country and m != user.metro]
        if metros:
            return nets.host(rng, rng.choice(nets.home_pools(rng.choice(metros))))
    return _pick(pop, nets.blocks(nets.HOSTING_BLOCKS, country=user.country))


def _victim(pop: Population, t: float, countries: tuple[str, ...] = (), tenant_legacy: bool = False,
            requests: int = 4) -> tuple[User, Session, float]:
    """A user at home, logged in and browsing (not counted as benign: the session gets stolen)."""
    user = pop.user("legacy" if tenant_legacy else "home", countries)
    s, t = pop.login(user, t, user.home_ip, user.desktop.ua(), "victim", benign=False)
    t = pop.browse(s, t, [(user.home_ip, user.desktop.ua())] * requests)
    return user, s, t


def _replay(pop: Population, cls: str, i: int, t: float, *, same_country: bool, ua_mode: str) -> None:
    rng = pop.w.rng
    countries = HOSTING_COUNTRIES if same_country else ()
    user, s, t = _victim(pop, t, countries)
    a = Attack(pop, cls, i)
    if ua_mode == "tool":
        ua = rng.choice(TOOL_UAS)
    else:
        ua = user.desktop.ua()
    if ua_mode == "travel":  # residential proxy far away, the victim's exact browser
        ip = _pick(pop, nets.blocks(nets.RESIDENTIAL_BLOCKS, exclude_country=user.country))
    elif same_country:
        ip = _same_country_source(pop, user)
    else:
        ip = _foreign_source(pop, user.country)
    ta = t + rng.uniform(20, 600)
    for _ in range(rng.randint(3, 12)):
        a.emit(ta, EventType.ACTIVITY, ip, session=s, user=user.id, ua=ua,
               attrs={"path": rng.choice(STEAL_PATHS)})
        ta += rng.uniform(1, 30)
    if rng.random() < 0.2:  # account takeover: the attacker changes the password
        a.emit(ta + 5, EventType.CREDENTIAL_CHANGED, ip, session=s, user=user.id, ua=ua,
               attrs={"credential": "password"})
    a.truth.sessions.append(s.hash)
    a.truth.victims.append(user.id)
    # The victim keeps using the session meanwhile, as a victim does.
    pop.browse(s, t, [(user.home_ip, user.desktop.ua())] * rng.randint(2, 8))
    a.done(CATCH_SESSION, CATCH_USER, CATCH_SOURCE)


def replay_cross_country_tool_ua(pop: Population, i: int, t: float) -> None:
    _replay(pop, "replay_cross_country_tool_ua", i, t, same_country=False, ua_mode="tool")


def replay_cross_country_spoofed_ua(pop: Population, i: int, t: float) -> None:
    _replay(pop, "replay_cross_country_spoofed_ua", i, t, same_country=False, ua_mode="spoofed")


def replay_same_country_tool_ua(pop: Population, i: int, t: float) -> None:
    _replay(pop, "replay_same_country_tool_ua", i, t, same_country=True, ua_mode="tool")


def replay_same_country_spoofed_ua(pop: Population, i: int, t: float) -> None:
    _replay(pop, "replay_same_country_spoofed_ua", i, t, same_country=True, ua_mode="spoofed")


def impossible_travel_same_ua(pop: Population, i: int, t: float) -> None:
    _replay(pop, "impossible_travel_same_ua", i, t, same_country=False, ua_mode="travel")


def replay_after_logout(pop: Population, i: int, t: float) -> None:
    rng = pop.w.rng
    user, s, t = _victim(pop, t)
    t += rng.uniform(10, 120)
    pop.w.emit(t, EventType.LOGOUT, user.home_ip, session=s, user=user.id, ua=user.desktop.ua())
    a = Attack(pop, "replay_after_logout", i)
    ip = _foreign_source(pop, user.country, residential=0.3)
    ua = user.desktop.ua() if rng.random() < 0.6 else rng.choice(TOOL_UAS)
    ta = t + rng.uniform(60, 2400)
    for _ in range(rng.randint(2, 8)):
        a.emit(ta, EventType.ACTIVITY, ip, session=s, user=user.id, ua=ua,
               attrs={"path": rng.choice(STEAL_PATHS)})
        ta += rng.uniform(1, 30)
    a.truth.sessions.append(s.hash)
    a.truth.victims.append(user.id)
    a.done(CATCH_SESSION, CATCH_USER, CATCH_SOURCE)


def fixation(pop: Population, i: int, t: float) -> None:
    """On the app that keeps the pre-login id: the attacker plants its id, then rides the login."""
    rng = pop.w.rng
    user = pop.user("legacy")
    a = Attack(pop, "fixation", i, LEGACY_TENANT)
    s = pop.w.new_session(LEGACY_TENANT)
    ip = _foreign_source(pop, user.country, residential=0.2)
    attacker_ua = rng.choice(DESKTOPS).ua()
    a.emit(t, EventType.CREATED, ip, session=s, ua=attacker_ua, attrs={"path": "/login"})
    ta = t
    victim_t = t + rng.uniform(120, 1500)
    while ta + 600 < victim_t:  # keeps the planted session alive until the victim uses it
        ta += rng.uniform(300, 600)
        a.emit(ta, EventType.ACTIVITY, ip, session=s, ua=attacker_ua, attrs={"path": "/"})
    ua = user.desktop.ua()
    pop.w.emit(victim_t, EventType.ACTIVITY, user.home_ip, session=s, ua=ua, attrs={"path": "/"})
    victim_t += rng.uniform(5, 40)
    pop.w.emit(victim_t, EventType.AUTHENTICATED, user.home_ip, session=s, user=user.id, ua=ua,
               attrs={"method": "password"})
    s.user = user.id
    end = pop.browse(s, victim_t, [(user.home_ip, ua)] * rng.randint(2, 6))
    ta = victim_t + rng.uniform(30, 300)
    for _ in range(rng.randint(2, 8)):
        a.emit(ta, EventType.ACTIVITY, ip, session=s, user=user.id, ua=attacker_ua,
               attrs={"path": rng.choice(STEAL_PATHS)})
        ta += rng.uniform(2, 40)
    del end
    a.truth.sessions.append(s.hash)
    a.truth.victims.append(user.id)
    a.done(CATCH_SESSION, CATCH_USER, CATCH_SOURCE)


def concurrent_sessions(pop: Population, i: int, t: float) -> None:
    """A sold or shared account: several logins from around the world while the owner is on."""
    rng = pop.w.rng
    user, s, t = _victim(pop, t, requests=6)
    a = Attack(pop, "concurrent_sessions", i)
    ta = t + rng.uniform(10, 300)
    for _ in range(rng.randint(3, 5)):
        ip = _foreign_source(pop, user.country, residential=0.4)
        ua = rng.choice(DESKTOPS).ua()
        sess = pop.w.new_session()
        a.emit(ta, EventType.CREATED, ip, session=sess, ua=ua, attrs={"path": "/login"})
        previous = pop.w.rotate(sess)
        a.emit(ta + rng.uniform(3, 15), EventType.AUTHENTICATED, ip, session=sess, user=user.id, ua=ua,
               previous_token=previous, attrs={"method": "password"})
        tb = ta + 20
        for _ in range(rng.randint(2, 6)):
            tb += rng.uniform(5, 120)
            a.emit(tb, EventType.ACTIVITY, ip, session=sess, user=user.id, ua=ua,
                   attrs={"path": rng.choice(STEAL_PATHS)})
        a.truth.sessions.append(sess.hash)
        ta += rng.uniform(20, 240)
    pop.browse(s, t, [(user.home_ip, user.desktop.ua())] * rng.randint(3, 8))
    a.truth.victims.append(user.id)
    a.done(CATCH_SESSION, CATCH_USER, CATCH_SOURCE)


def _guess(a: Attack, ips: list[str], count: int, t: float, gap: tuple[float, float]) -> None:
    rng = a.rng
    ua = rng.choice(TOOL_UAS + BOT_BROWSER_UAS)
    for _ in range(count):
        # A token that was never issued: only its hash exists, as the app hashes what it receives.
        guessed = a.w.hasher.hash(a.w.token())
        a.emit(t, EventType.TOKEN_REJECTED, rng.choice(ips), session_hash=guessed, ua=ua,
               attrs={"reason": "unknown"})
        t += rng.uniform(*gap)


def token_guess_single(pop: Population, i: int, t: float) -> None:
    a = Attack(pop, "token_guess_single", i)
    ip = _pick(pop, nets.blocks(nets.HOSTING_BLOCKS))
    _guess(a, [ip], pop.w.rng.randint(60, 200), t, (0.2, 2.0))
    a.done(CATCH_SOURCE)


def token_guess_distributed(pop: Population, i: int, t: float) -> None:
    """Many addresses of one provider (one /24, or spread over the provider's network)."""
    rng = pop.w.rng
    pool = rng.choice(nets.blocks(nets.HOSTING_BLOCKS))
    if rng.random() < 0.5:
        prefix = rng.choice(pool.prefixes)
        pool = Pool(pool.network, pool.country, (prefix,))
    ips = sorted({nets.host(rng, pool) for _ in range(rng.randint(10, 40))})
    a = Attack(pop, "token_guess_distributed", i)
    _guess(a, ips, rng.randint(80, 240), t, (0.5, 4.0))
    a.done(CATCH_SOURCE)


def credential_stuffing(pop: Population, i: int, t: float) -> None:
    """A combo list tried once per account from one host (or a few in one /24); a few work."""
    rng = pop.w.rng
    pool = rng.choice(nets.blocks(nets.HOSTING_BLOCKS) + nets.blocks(nets.RESIDENTIAL_BLOCKS))
    prefix = rng.choice(pool.prefixes)
    ips = [f"{prefix}.{rng.randrange(2, 254)}" for _ in range(rng.choice((1, 1, 3)))]
    ua = rng.choice(BOT_BROWSER_UAS)
    a = Attack(pop, "credential_stuffing", i)
    for n in range(rng.randint(60, 180)):
        ip = rng.choice(ips)
        if n % 45 == 30:  # a combo that works: the account is taken over
            victim = pop.user("home")
            sess = pop.w.new_session()
            a.emit(t, EventType.CREATED, ip, session=sess, ua=ua, attrs={"path": "/login"})
            previous = pop.w.rotate(sess)
            a.emit(t + 1, EventType.AUTHENTICATED, ip, session=sess, user=victim.id, ua=ua,
                   previous_token=previous, attrs={"method": "password"})
            a.emit(t + 3, EventType.ACTIVITY, ip, session=sess, user=victim.id, ua=ua,
                   attrs={"path": "/api/payments"})
            a.truth.sessions.append(sess.hash)
            a.truth.victims.append(victim.id)
        else:
            name = f"combo-{rng.getrandbits(40):010x}@mail.example"
            a.emit(t, EventType.AUTH_FAILED, ip, user=name, ua=ua,
                   attrs={"reason": rng.choice(("bad_password", "unknown_user"))})
        t += rng.uniform(0.5, 4.0)
    a.done(CATCH_SOURCE, CATCH_SESSION, CATCH_USER)


def creation_flood(pop: Population, i: int, t: float) -> None:
    rng = pop.w.rng
    pool = rng.choice(nets.blocks(nets.HOSTING_BLOCKS))
    prefix = rng.choice(pool.prefixes)
    ips = [f"{prefix}.{rng.randrange(2, 254)}" for _ in range(rng.choice((1, 1, 4)))]
    ua = rng.choice(TOOL_UAS + BOT_BROWSER_UAS)
    a = Attack(pop, "creation_flood", i)
    for _ in range(rng.randint(150, 350)):
        a.emit(t, EventType.CREATED, rng.choice(ips), session=pop.w.new_session(), ua=ua,
               attrs={"path": "/login"})
        t += rng.uniform(0.05, 0.8)
    a.done(CATCH_SOURCE)


# -- blended attacks: what rules on addresses, networks and UAs cannot see ---------------------

# Countries where a victim at home has a consumer VPN exit of its own country (VPN_BLOCKS).
VPN_HOME_COUNTRIES = tuple(sorted({cc for cc, _, _ in nets.VPN_BLOCKS}
                                  & {v[0] for v in nets.METROS.values()}))
# Share of an interleaving replayer's requests that go to sensitive paths.
INTERLEAVED_SENSITIVE_P = 0.7


def _interleave(pop: Population, a: Attack, user: User, s: Session, t: float, ip: str) -> None:
    """The victim browses on (6-15 requests over 10-20 min); the attacker's 3-10 requests, with
    the victim's exact UA, fall one each into gaps between the victim's: A, B, A, B, ..."""
    w, rng = pop.w, pop.w.rng
    ua = user.desktop.ua()
    n_victim = rng.randint(6, 15)
    span = rng.uniform(600, 1200)
    victim_times = sorted(t + rng.uniform(5, span) for _ in range(n_victim))
    gaps = sorted(rng.sample(range(n_victim - 1), min(rng.randint(3, 10), n_victim - 1)))
    attacker_times = [victim_times[k] + rng.uniform(0.2, 0.8) * (victim_times[k + 1] - victim_times[k])
                      for k in gaps]
    for vt in victim_times:
        w.emit(vt, EventType.ACTIVITY, user.home_ip, session=s, user=user.id, ua=ua,
               attrs=benign_request(rng))
    for at in attacker_times:
        a.emit(at, EventType.ACTIVITY, ip, session=s, user=user.id, ua=ua,
               attrs=attacker_request(rng, INTERLEAVED_SENSITIVE_P))
    a.truth.sessions.append(s.hash)
    a.truth.victims.append(user.id)
    a.done(CATCH_SESSION, CATCH_USER)


def replay_same_isp_interleaved(pop: Population, i: int, t: float) -> None:
    """A residential proxy on the victim's own ISP line pool in its city, another /24."""
    user = pop.user("home")
    s, t = pop.login(user, t, user.home_ip, user.desktop.ua(), "victim", benign=False)
    a = Attack(pop, "replay_same_isp_interleaved", i)
    ip = nets.same_city_other_prefix(pop.w.rng, user.metro, user.home, user.home_ip)
    _interleave(pop, a, user, s, t, ip)


def replay_vpn_interleaved(pop: Population, i: int, t: float) -> None:
    """A consumer VPN exit in the victim's country."""
    user = pop.user("home", VPN_HOME_COUNTRIES)
    s, t = pop.login(user, t, user.home_ip, user.desktop.ua(), "victim", benign=False)
    a = Attack(pop, "replay_vpn_interleaved", i)
    ip = _pick(pop, nets.blocks(nets.VPN_BLOCKS, country=user.country))
    _interleave(pop, a, user, s, t, ip)


def ato_sensitive_first(pop: Population, i: int, t: float) -> None:
    """A login with the password from a residential address in the victim's country, a common
    browser, straight to the sensitive pages. The victim's own visit ended well before."""
    w, rng = pop.w, pop.w.rng
    user = pop.user("home")
    ua = user.desktop.ua()
    s, tv = pop.login(user, t, user.home_ip, ua, "ato_victim")
    tv = pop.browse(s, tv, [(user.home_ip, ua)] * rng.randint(4, 10), request=benign_request)
    end, _ = pop.finish(s, tv, user.home_ip, ua, logout=True)
    a = Attack(pop, "ato_sensitive_first", i)
    metros = [m for m, v in nets.METROS.items() if v[0] == user.country and m != user.metro]
    pool = rng.choice(nets.home_pools(rng.choice(metros or [user.metro])))
    ip = nets.other_prefix(rng, pool, user.home_ip) if pool == user.home else nets.host(rng, pool)
    attacker_ua = rng.choice(DESKTOPS).ua()
    ta = end + rng.uniform(2400, 3 * 3600)
    sess = w.new_session(user.tenant)
    a.emit(ta, EventType.CREATED, ip, session=sess, ua=attacker_ua, attrs={"path": "/login"})
    ta += rng.uniform(4, 20)
    previous = w.rotate(sess)
    a.emit(ta, EventType.AUTHENTICATED, ip, session=sess, user=user.id, ua=attacker_ua,
           previous_token=previous, attrs={"method": "password"})
    for path in rng.sample(SENSITIVE_PATHS, rng.randint(2, 4)):
        ta += rng.uniform(3, 40)
        a.emit(ta, EventType.ACTIVITY, ip, session=sess, user=user.id, ua=attacker_ua,
               attrs=attacker_sensitive(rng, path))
    for _ in range(rng.randint(2, 5)):
        ta += rng.uniform(5, 90)
        a.emit(ta, EventType.ACTIVITY, ip, session=sess, user=user.id, ua=attacker_ua,
               attrs=attacker_request(rng, 0.0))
    if rng.random() < 0.5:
        a.emit(ta + rng.uniform(3, 30), EventType.LOGOUT, ip, session=sess, user=user.id,
               ua=attacker_ua)
    a.truth.sessions.append(sess.hash)
    a.truth.victims.append(user.id)
    a.done(CATCH_SESSION, CATCH_USER)


ATTACKS: dict[str, Callable[[Population, int, float], None]] = {
    "replay_cross_country_tool_ua": replay_cross_country_tool_ua,
    "replay_cross_country_spoofed_ua": replay_cross_country_spoofed_ua,
    "replay_same_country_tool_ua": replay_same_country_tool_ua,
    "replay_same_country_spoofed_ua": replay_same_country_spoofed_ua,
    "impossible_travel_same_ua": impossible_travel_same_ua,
    "replay_after_logout": replay_after_logout,
    "fixation": fixation,
    "concurrent_sessions": concurrent_sessions,
    "token_guess_single": token_guess_single,
    "token_guess_distributed": token_guess_distributed,
    "credential_stuffing": credential_stuffing,
    "creation_flood": creation_flood,
    # Appended last, so that the classes above get the same instances for a seed as before.
    "replay_same_isp_interleaved": replay_same_isp_interleaved,
    "replay_vpn_interleaved": replay_vpn_interleaved,
    "ato_sensitive_first": ato_sensitive_first,
}
