"""The benign population: households, phones behind carrier NAT, VPN users, offices, travellers.

Each user has a home metro and ISP line, devices, and a day of one to three visits. Apps enforce
the idle timeout: a visit ends with a logout or, 30 idle minutes later, an `expired` event; the
next visit is a new login (after the browser's stale cookie is rejected). Each login session is
one benign truth record, labelled with the behaviour that makes it interesting to a detector.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from producers.contract import DEFAULT_TENANT, EventType
from sessionwatch.simulation import networks as nets
from sessionwatch.simulation.clients import DESKTOPS, PHONES, Browser
from sessionwatch.simulation.networks import Pool
from sessionwatch.simulation.paths import PATHS
from sessionwatch.simulation.truth import BenignTruth
from sessionwatch.simulation.world import IDLE_TIMEOUT_S, LEGACY_TENANT, Session, World

HOME_KINDS = ("steady", "steady", "dhcp", "isp_rotation", "browser_update", "typo_login",
              "token_refresh", "password_change", "logout_straggler", "forgot_password")
PROFILES = (("home", 40), ("v6home", 8), ("mobile", 22), ("vpn", 7), ("office", 10),
            ("traveller", 5), ("legacy", 8))


@dataclass
class User:
    id: str
    tenant: str
    metro: str
    country: str
    profile: str
    home: Pool
    home_ip: str
    desktop: Browser
    phone: Browser | None
    carrier: list[str] = field(default_factory=list)   # CGNAT addresses this user's phone gets
    v6_ip: str | None = None
    vpn: Pool | None = None
    office_ip: str | None = None
    usual_ip: str = ""  # the home address before START (the day may renew it): history uses it
    others: list[Browser] = field(default_factory=list)  # other people's browsers on the account


class Population:
    """Makes users and their sessions; shares carrier NAT pools and office NAT addresses."""

    def __init__(self, world: World) -> None:
        self.w = world
        rng = world.rng
        self.cgnat: dict[str, list[str]] = {}
        for pool in nets.blocks(nets.CARRIER_BLOCKS):
            self.cgnat.setdefault(pool.country, []).extend(nets.cgnat_pool(rng, pool, 24))
        self.offices = {m: nets.host(rng, rng.choice(nets.home_pools(m))) for m in nets.OFFICE_METROS}
        self.origins = sorted({f[0] for f in nets.FLIGHTS})
        self._n = 0
        self.made: list[User] = []

    @property
    def users_made(self) -> int:
        return self._n

    def user(self, profile: str | None = None, countries: tuple[str, ...] = (),
             metros_only: tuple[str, ...] = ()) -> User:
        w, rng = self.w, self.w.rng
        if profile is None:
            profile = rng.choices([p for p, _ in PROFILES], [wt for _, wt in PROFILES])[0]
        metros = [m for m in nets.METROS if (not countries or nets.METROS[m][0] in countries)
                  and (not metros_only or m in metros_only)]
        if profile == "v6home":
            metros = [m for m in metros if m in nets.HOME_V6] or metros
        elif profile == "traveller":
            metros = [m for m in metros if m in self.origins] or metros
        elif profile == "office":
            metros = [m for m in metros if m in self.offices] or metros
        metro = rng.choice(metros)
        country = nets.METROS[metro][0]
        home = rng.choice(nets.home_pools(metro))
        self._n += 1
        user = User(
            id=f"user-{self._n:05d}", tenant=LEGACY_TENANT if profile == "legacy" else DEFAULT_TENANT,
            metro=metro, country=country, profile=profile, home=home, home_ip=nets.host(rng, home),
            desktop=rng.choice(DESKTOPS), phone=rng.choice(PHONES) if rng.random() < 0.7 else None,
        )
        if user.phone is not None and country in self.cgnat:
            user.carrier = self.cgnat[country]
        if profile == "v6home" and metro in nets.HOME_V6:
            user.v6_ip = nets.v6_host(rng, nets.HOME_V6[metro][1])
        if profile == "vpn":
            exits = nets.blocks(nets.VPN_BLOCKS)
            near = [p for p in exits if p.country == country]
            user.vpn = rng.choice(near if near and rng.random() < 0.6 else exits)
        if profile == "office":
            user.office_ip = self.offices.get(metro)
        user.usual_ip = user.home_ip
        self.made.append(user)
        del w
        return user

    # -- one login session --------------------------------------------------------------------

    def login(self, user: User, t: float, ip: str, ua: str, kind: str, *, benign: bool = True,
              typos: int = 0, prelogin_ip: str | None = None) -> tuple[Session, float]:
        w, rng = self.w, self.w.rng
        s = w.new_session(user.tenant)
        if benign:
            s.truth = BenignTruth(session=s.hash, user=user.id, kind=kind, tenant=user.tenant,
                                  hashes=[s.hash])
        w.emit(t, EventType.CREATED, prelogin_ip or ip, session=s, ua=ua, attrs={"path": "/login"})
        t += rng.uniform(4, 30)
        for _ in range(typos):
            w.emit(t, EventType.AUTH_FAILED, ip, user=user.id, ua=ua, tenant=user.tenant,
                   attrs={"reason": "bad_password"})
            if s.truth is not None:
                s.truth.used(ip, w.epoch(t))
            t += rng.uniform(4, 20)
        previous = None if user.tenant == LEGACY_TENANT else w.rotate(s)
        w.emit(t, EventType.AUTHENTICATED, ip, session=s, user=user.id, ua=ua,
               previous_token=previous, attrs={"method": "password"})
        s.user, s.authenticated_at = user.id, t
        if s.truth is not None:
            s.truth.session = s.hash
            s.truth.authenticated_at = w.epoch(t)
            w.truth.benign.append(s.truth)
        return s, t

    def browse(self, s: Session, t: float, route: list[tuple[str, str]],
               refresh_every: float | None = None,
               request: Callable[[random.Random], dict[str, Any]] | None = None) -> float:
        """One activity per (ip, ua) in `route`, at human gaps always shorter than the idle timeout.

        `request` makes each activity's attrs (paths.benign_request); by default a bare path.
        """
        w, rng = self.w, self.w.rng
        last_refresh = t
        for ip, ua in route:
            r = rng.random()
            t += rng.uniform(5, 60) if r < 0.7 else rng.uniform(60, 600) if r < 0.95 else \
                rng.uniform(600, IDLE_TIMEOUT_S - 300)
            if refresh_every is not None and t - last_refresh > refresh_every:
                previous = w.rotate(s)
                w.emit(t - 0.2, EventType.REFRESHED, ip, session=s, user=s.user, ua=ua,
                       previous_token=previous)
                last_refresh = t
            attrs = request(rng) if request is not None else {"path": rng.choice(PATHS)}
            w.emit(t, EventType.ACTIVITY, ip, session=s, user=s.user, ua=ua, attrs=attrs)
        return t

    def finish(self, s: Session, t: float, ip: str, ua: str, *, logout: bool,
               straggler: bool = False) -> tuple[float, bool]:
        """Log out, or let the app expire the session after the idle timeout. Returns (end, expired)."""
        w, rng = self.w, self.w.rng
        if logout:
            t += rng.uniform(3, 60)
            w.emit(t, EventType.LOGOUT, ip, session=s, user=s.user, ua=ua)
            if straggler:  # a background tab's request racing the logout
                w.emit(t + rng.uniform(0.3, 3.0), EventType.ACTIVITY, ip, session=s, user=s.user,
                       ua=ua, attrs={"path": "/api/notifications"})
            return t, False
        t = s.last_t + IDLE_TIMEOUT_S + rng.uniform(0, 60)
        w.emit(t, EventType.EXPIRED, ip, session=s, user=s.user, attrs={"reason": "idle"})
        return t, True

    # -- a user's day ---------------------------------------------------------------------------

    def day(self, user: User, span_s: float) -> None:
        """One to three visits; office workers arrive in the morning rush, travellers fly."""
        rng = self.w.rng
        if user.profile == "traveller":
            self._travel(user, span_s)
            return
        t = rng.uniform(0, 5400) if user.profile == "office" else rng.uniform(0, span_s * 0.7)
        stale: str | None = None
        for _ in range(rng.choice((1, 1, 2, 2, 3))):
            if t > span_s:
                break
            kind = self._kind(user)
            end, expired, last_hash = self._visit(user, t, kind, stale)
            stale = last_hash if expired else None
            t = end + rng.uniform(600, 7200)

    def _kind(self, user: User) -> str:
        rng = self.w.rng
        choices = {
            "home": HOME_KINDS,
            "v6home": ("ipv6_privacy", "ipv6_privacy", "dual_stack"),
            "mobile": ("mobile_churn", "mobile_only") if user.carrier else HOME_KINDS,
            "vpn": ("vpn_always", "vpn_toggle"),
            "office": ("office", "office", "office_typo"),
            "legacy": ("legacy_no_rotation", "legacy_no_rotation", "legacy_prelogin_handoff")
            if user.carrier else ("legacy_no_rotation",),
        }[user.profile]
        return rng.choice(choices)

    def _visit(self, user: User, t: float, kind: str, stale: str | None) -> tuple[float, bool, str]:
        rng = self.w.rng
        phone = kind in ("mobile_churn", "mobile_only", "legacy_prelogin_handoff")
        browser = (user.phone if phone else user.desktop) or user.desktop
        ua = browser.ua()
        ip = self._start_ip(user, kind)
        if stale is not None:  # the browser still sends the cookie of the expired session
            self.w.emit(t - rng.uniform(1, 5), EventType.TOKEN_REJECTED, ip, session_hash=stale,
                        ua=ua, tenant=user.tenant, attrs={"reason": "expired"})
        if kind == "forgot_password":
            t = self._forgot_password(user, t, ip, ua)
        typos = rng.randint(1, 2) if kind in ("typo_login", "office_typo") else 0
        prelogin = rng.choice(user.carrier) if kind == "legacy_prelogin_handoff" else None
        s, t = self.login(user, t, ip, ua, kind, typos=typos, prelogin_ip=prelogin)
        if s.truth is not None and stale is not None:
            s.truth.used(ip, self.w.epoch(t))
        n = rng.randint(4, 28)
        route = self._route(user, kind, n, ip, browser)
        if kind == "password_change":
            half = n // 2
            t = self.browse(s, t, route[:half])
            self.w.emit(t + 5, EventType.CREDENTIAL_CHANGED, ip, session=s, user=user.id, ua=ua,
                        attrs={"credential": "password"})
            previous = self.w.rotate(s)
            self.w.emit(t + 6, EventType.REFRESHED, ip, session=s, user=user.id, ua=ua,
                        previous_token=previous, attrs={"reason": "credential_change"})
            t = self.browse(s, t + 6, route[half:])
        else:
            t = self.browse(s, t, route, refresh_every=900.0 if kind == "token_refresh" else None)
        last_ip, last_ua = route[-1]
        straggler = kind == "logout_straggler"
        end, expired = self.finish(s, t, last_ip, last_ua, logout=straggler or rng.random() < 0.35,
                                   straggler=straggler)
        return end, expired, s.hash

    def _start_ip(self, user: User, kind: str) -> str:
        rng = self.w.rng
        if kind in ("mobile_only",) and user.carrier:
            return rng.choice(user.carrier)
        if kind == "vpn_always" and user.vpn is not None:
            return nets.host(rng, user.vpn)
        if kind.startswith("office") and user.office_ip:
            return user.office_ip
        if kind in ("ipv6_privacy", "dual_stack") and user.v6_ip:
            return user.v6_ip
        return user.home_ip

    def _route(self, user: User, kind: str, n: int, ip: str, browser: Browser) -> list[tuple[str, str]]:
        """The (address, UA) of each request of the session: the behaviour `kind` names."""
        rng = self.w.rng
        ua = browser.ua()
        k = rng.randint(1, max(1, n - 2))
        route: list[tuple[str, str]] = []
        for i in range(n):
            if kind == "dhcp" and i == k:
                ip = user.home_ip = nets.same_prefix(rng, ip)
            elif kind == "isp_rotation" and i == k:
                ip = user.home_ip = nets.other_prefix(rng, user.home, ip)
            elif kind == "browser_update" and i == k:
                ua = browser.ua(1)
            elif kind == "ipv6_privacy" and i > 0 and rng.random() < 0.2:
                ip = nets.same_prefix(rng, ip)
            elif kind == "dual_stack" and rng.random() < 0.3:
                ip = user.home_ip if ":" in ip else (user.v6_ip or ip)
            elif kind == "mobile_churn" and rng.random() < 0.3:
                ip = rng.choice(user.carrier) if ip == user.home_ip else user.home_ip
            elif kind == "mobile_only" and rng.random() < 0.12:
                ip = rng.choice(user.carrier)  # the carrier moved us to another NAT address
            elif kind == "vpn_always" and user.vpn is not None and rng.random() < 0.04:
                ip = nets.host(rng, user.vpn)  # reconnected to another server of the same exit
            elif kind == "vpn_toggle" and user.vpn is not None and i == k:
                ip = nets.host(rng, user.vpn)
            elif kind == "vpn_toggle" and i > k and ip != user.home_ip and rng.random() < 0.1:
                ip = user.home_ip
            route.append((ip, ua))
        return route

    def _forgot_password(self, user: User, t: float, ip: str, ua: str) -> float:
        """Several wrong passwords from the laptop and the phone, then a reset by e-mail link."""
        w, rng = self.w, self.w.rng
        phone_ip = rng.choice(user.carrier) if user.carrier else ip
        phone_ua = user.phone.ua() if user.phone else ua
        for i in range(rng.randint(3, 6)):
            src, agent = (phone_ip, phone_ua) if i % 2 else (ip, ua)
            w.emit(t, EventType.AUTH_FAILED, src, user=user.id, ua=agent, tenant=user.tenant,
                   attrs={"reason": "bad_password"})
            t += rng.uniform(10, 60)
        t += rng.uniform(60, 300)
        w.emit(t, EventType.CREDENTIAL_CHANGED, ip, user=user.id, ua=ua, tenant=user.tenant,
               attrs={"credential": "password", "via": "reset_link"})
        return t + rng.uniform(10, 40)

    def _travel(self, user: User, span_s: float) -> None:
        """A session at home before leaving; after the flight, a new login at the destination."""
        rng = self.w.rng
        flights = [f for f in nets.FLIGHTS if f[0] == user.metro]
        _, dest, minutes = rng.choice(flights)
        t = rng.uniform(0, span_s * 0.25)
        end, _, _ = self._visit(user, t, "traveller_departing", None)
        last = end - IDLE_TIMEOUT_S if end > t + IDLE_TIMEOUT_S else end
        arrive = last + rng.uniform(2400, 7200) + minutes * 60
        land_t = arrive + rng.uniform(300, 2400)
        if user.phone is not None and user.carrier and rng.random() < 0.5:
            ip, browser = rng.choice(user.carrier), user.phone  # roaming: home carrier's address
        else:
            ip, browser = nets.host(rng, rng.choice(nets.home_pools(dest))), user.desktop
        s, t2 = self.login(user, land_t, ip, browser.ua(), "traveller_landed")
        t2 = self.browse(s, t2, [(ip, browser.ua())] * rng.randint(4, 15))
        self.finish(s, t2, ip, browser.ua(), logout=rng.random() < 0.3)
