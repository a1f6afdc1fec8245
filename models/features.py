"""Every feature of the learned anomaly score, defined once, for the trainer and the stream alike.

Pure functions over bounded state; no I/O, no wall clock, no randomness. Two kinds of state,
kept where the worker sees the events they need:

- `SessionBehaviour` - how one session is being used, updated by `observe` on every event of the
  session (the session stage, which sees every request). It rides along, as `attrs[BEHAVIOUR]`,
  on the events the session stage forwards to the user stage.
- `UserProfile` - one user's history (Freeman et al., NDSS 2016): bounded count tables of the
  values the user's sessions came from, kept by the user stage, which sees all of a user's
  sessions. Scoring reads only the user's *earlier days* (`history`): a day's counts join the
  history when a later day starts, so a score does not depend on how the day's events from
  different partitions interleaved. Values unseen for 180 days are dropped (Wiefling et al.,
  ACM TOPS 2022: older history does not help).

`vector` turns one scored event, its session's behaviour and the user's history into the
feature vector `FEATURE_NAMES` names, in that order. NaN means unknown (no history, no edge
fingerprint): never 0. The trainer (models/train.py) runs events through the very pipelines
the worker runs (streams/local.py), so both compute the same vectors by construction; a test
checks it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import msgspec

# The attrs key the session stage sets on forwarded events (never accepted from an app: the
# session stage overwrites it, see streams/routing.py).
BEHAVIOUR = "sessionwatch.behaviour"
# ... and marks an event forwarded for the score alone (not a login, end or heartbeat): the user
# stage scores it and does not queue it for its in-order detectors.
SCORE_ONLY = "sessionwatch.score_only"

# Paths whose first requests after a change of address or client give an account takeover away:
# exports, contact and MFA changes, payees, API keys. Prefix match; a tenant can replace them.
SENSITIVE_PATHS: tuple[str, ...] = (
    "/account/export", "/settings/email", "/settings/phone", "/settings/mfa",
    "/settings/security", "/payments/payees", "/settings/api-keys", "/api/payments",
)
AFTER_CHANGE_REQUESTS = 5      # requests after a change whose paths count as "first requests"
MAX_PAIRS = 8                  # distinct (address, client) pairs remembered per session
MAX_VALUES = 24                # values remembered per user and field (the least seen go first)
MAX_TODAY = 256                # distinct values counted per user, field and day
HISTORY_DAYS = 180             # history older than this is dropped
DAY_S = 86400.0
WEEK_S = 7 * DAY_S
_EWMA = 0.3                    # weight of the newest inter-arrival gap

# The fields of a user's history, Freeman-style: address, its /24 (/48), network, place, client.
HISTORY_FIELDS = ("ip", "prefix", "asn", "country", "city", "ua", "ua_family", "os", "hour")
FEATURE_NAMES: tuple[str, ...] = (
    *(f"lr_{f}" for f in HISTORY_FIELDS),
    "history_events", "history_days",
    "pairs", "alternations", "switch_rate", "prefix_gap_ratio",
    "gap_ewma_log", "gap_cv", "path_surprise_user", "path_bigram_surprise",
    "sensitive_after_change", "sensitive_now", "denied_rate", "refresh_ratio",
    "since_login_log", "events_log", "is_login",
    "rtt_disagreement_ms", "ja4_changed", "h2_changed",
)
N_FEATURES = len(FEATURE_NAMES)
# What an admin reads for a feature that pushed a score up (models/scoring.py picks the top ones).
FEATURE_WORDS: dict[str, str] = {
    "lr_ip": "new address for this user",
    "lr_prefix": "new /24 network for this user",
    "lr_asn": "new network provider for this user",
    "lr_country": "new country for this user",
    "lr_city": "new city for this user",
    "lr_ua": "new browser build for this user",
    "lr_ua_family": "new browser for this user",
    "lr_os": "new operating system for this user",
    "lr_hour": "unusual hour of the week for this user",
    "history_events": "little history for this user",
    "history_days": "little history for this user",
    "pairs": "several address/client pairs in one session",
    "alternations": "two clients interleaving on one session",
    "switch_rate": "the session keeps switching address or client",
    "prefix_gap_ratio": "requests from two networks closer together than this user ever browses",
    "gap_ewma_log": "unusual request pace",
    "gap_cv": "irregular request pace",
    "path_surprise_user": "pages this user does not usually visit",
    "path_bigram_surprise": "an unusual sequence of pages",
    "sensitive_after_change": "first requests after the change went to sensitive pages",
    "sensitive_now": "a sensitive page",
    "denied_rate": "many refused requests (401/403)",
    "refresh_ratio": "token refreshed at an unusual cadence",
    "since_login_log": "time since login",
    "events_log": "session length",
    "is_login": "a login",
    "rtt_disagreement_ms": "TCP and TLS round trips disagree (a proxy in between)",
    "ja4_changed": "TLS fingerprint changed within the session",
    "h2_changed": "HTTP/2 fingerprint changed within the session",
}


@lru_cache(maxsize=65_536)
def _digest(text: str) -> str:
    """A short stable digest: user agents and paths are kept hashed (bounded, and no PII)."""
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


@lru_cache(maxsize=65_536)
def history_prefix(ip: str) -> str:
    """The /24 of an IPv4 address, the /48 of an IPv6 one (a site's allocation)."""
    addr = ipaddress.ip_address(ip)
    bits = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


# -- session behaviour (session stage) ------------------------------------------------------------

class SessionBehaviour(msgspec.Struct, kw_only=True, gc=False, array_like=True):
    """How one session has been used so far. Small: it is part of the session's state, and it
    travels as a JSON array (array_like) on the events forwarded to the user stage."""

    n: int = 0                          # events observed
    first_at: float = 0.0
    last_at: float = 0.0
    login_at: float | None = None
    pairs: tuple[str, ...] = ()         # distinct (address, client) pairs, most recent last
    pair: str | None = None             # the last event's pair (a digest)
    user_agent: str | None = None       # the last client (events without one keep it)
    ip: str | None = None               # the last address
    previous_pair: str | None = None    # the pair before the last change
    switches: int = 0                   # changes of pair between consecutive events
    alternations: int = 0               # returns to the pair before the last change (A->B->A)
    prefix: str | None = None
    min_prefix_gap: float | None = None  # shortest time between requests from two prefixes
    gaps: int = 0                       # inter-arrival gaps seen (Welford's mean and M2)
    gap_mean: float = 0.0
    gap_m2: float = 0.0
    gap_ewma: float | None = None
    since_change: int = 0               # requests since the last change of pair (or the login)
    sensitive_after_change: int = 0     # ... that went to sensitive paths (among the first few)
    after_change: int = 0               # ... counted so far (at most AFTER_CHANGE_REQUESTS)
    denied: int = 0                     # 401/403 answers
    refreshes: int = 0
    last_refresh_at: float | None = None
    refresh_gap: float | None = None    # mean gap between refreshes
    path: str | None = None             # digest of the last path and the one before
    previous_path: str | None = None
    ja4: str | None = None              # the first fingerprints seen, and whether they changed
    ja4_changed: bool = False
    h2: str | None = None
    h2_changed: bool = False
    rtt_disagreement: float | None = None  # largest TLS RTT - TCP RTT seen (ms)
    last_sensitive: bool = False        # the last event went to a sensitive path
    changed: bool = False               # the last event changed something the model can see


def observe(previous: SessionBehaviour | None, *, now: float, ip: str, user_agent: str | None,
            event_type: str, attrs: Mapping[str, Any], prefix: str,
            sensitive: tuple[str, ...] = SENSITIVE_PATHS) -> SessionBehaviour:
    """The behaviour after one more event of the session (`previous` is not mutated).

    Runs for every request of every session while a model is loaded, so it is kept to plain
    arithmetic (the worker's throughput with the model on must stay within 10 %)."""
    b = SessionBehaviour(first_at=now) if previous is None else msgspec.structs.replace(previous)
    if not user_agent and b.pair is not None:
        # No client on this event (the app's own `session.expired`): the client is unchanged.
        user_agent = b.user_agent
    if b.pair is not None and ip == b.ip and user_agent == b.user_agent:
        pair = b.pair  # most requests: the same address and client as the last one
    else:
        # Kept as a short digest: the model only counts and compares pairs (and a User-Agent
        # is up to 1 KB, eight of them in every session's state).
        pair = _digest(f"{ip}|{user_agent}") if user_agent else _digest(ip)
        b.ip = ip
    # The session's end is the app speaking, not the client: never a change of pair.
    changed = b.pair is not None and pair != b.pair and event_type not in _ENDS
    if b.n:
        gap = now - b.last_at
        if gap < 0.0:
            gap = 0.0
        b.gaps += 1
        delta = gap - b.gap_mean
        b.gap_mean += delta / b.gaps
        b.gap_m2 += delta * (gap - b.gap_mean)
        b.gap_ewma = gap if b.gap_ewma is None else _EWMA * gap + (1 - _EWMA) * b.gap_ewma
        if prefix != b.prefix and (b.min_prefix_gap is None or gap < b.min_prefix_gap):
            b.min_prefix_gap = gap
        if now > b.last_at:
            b.last_at = now
    else:
        b.last_at = now
    b.n += 1
    login = event_type == "session.authenticated"
    if login:
        b.login_at = now
        b.since_change = b.after_change = b.sensitive_after_change = 0
    if changed:
        if pair == b.previous_pair:
            b.alternations += 1
        b.previous_pair = b.pair
        b.switches += 1
        b.since_change = b.after_change = b.sensitive_after_change = 0
        if pair not in b.pairs:
            b.pairs = (b.pairs + (pair,))[-MAX_PAIRS:]
    elif not b.pairs:
        b.pairs = (pair,)
    b.pair = pair
    if user_agent and user_agent != b.user_agent:
        b.user_agent = user_agent
    b.prefix = prefix
    sensitive_now = False
    if attrs:
        path = attrs.get("path")
        if isinstance(path, str):
            b.previous_path, b.path = b.path, _digest(path)
            b.since_change += 1
            if b.after_change < AFTER_CHANGE_REQUESTS:
                b.after_change += 1
                if path.startswith(sensitive):
                    sensitive_now = True
                    b.sensitive_after_change += 1
        if attrs.get("status") in (401, 403):
            b.denied += 1
        if "tls_rtt_ms" in attrs or "ja4" in attrs or "h2" in attrs:
            _edge(b, attrs)
    if event_type == "session.refreshed":
        if b.last_refresh_at is not None:
            gap = now - b.last_refresh_at
            gaps = b.refreshes  # gaps so far, this one included (the first refresh has none)
            b.refresh_gap = gap if b.refresh_gap is None else (
                b.refresh_gap * (gaps - 1) + gap) / gaps
        b.refreshes += 1
        b.last_refresh_at = now
    b.last_sensitive = sensitive_now
    b.changed = changed or login or sensitive_now
    return b


_ENDS = frozenset({"session.expired", "session.logout"})


def _edge(b: SessionBehaviour, attrs: Mapping[str, Any]) -> None:
    """The optional edge fingerprints: JA4, HTTP/2, and TCP vs TLS round trips."""
    ja4, h2 = attrs.get("ja4"), attrs.get("h2")
    if isinstance(ja4, str):
        if b.ja4 is None:
            b.ja4 = _digest(ja4)
        elif _digest(ja4) != b.ja4:
            b.ja4_changed = True
    if isinstance(h2, str):
        if b.h2 is None:
            b.h2 = _digest(h2)
        elif _digest(h2) != b.h2:
            b.h2_changed = True
    tls, tcp = attrs.get("tls_rtt_ms"), attrs.get("tcp_rtt_ms")
    if _number(tls) and _number(tcp):
        gap_ms = float(tls) - float(tcp)
        if b.rtt_disagreement is None or gap_ms > b.rtt_disagreement:
            b.rtt_disagreement = gap_ms


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def behaviour_to_attr(b: SessionBehaviour) -> Any:
    return msgspec.to_builtins(b)


def behaviour_from_attr(value: Any) -> SessionBehaviour | None:
    if not isinstance(value, list):
        return None
    try:
        return msgspec.convert(value, SessionBehaviour)
    except msgspec.ValidationError:
        return None


# -- user history (user stage) --------------------------------------------------------------------

class UserProfile(msgspec.Struct, kw_only=True, gc=False):
    """A user's history: per field, value -> [count, last day seen]; `today` is the current
    day's counts, which join `history` when a later day's event arrives."""

    day: int = -1                       # the day `today` counts
    today: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    history: dict[str, dict[str, list[int]]] = msgspec.field(default_factory=dict)
    totals: dict[str, int] = msgspec.field(default_factory=dict)  # per field: sum of counts
    days: int = 0                       # days with history
    events: int = 0                     # events in history
    gap: float | None = None            # the user's usual inter-request gap (mean of sessions')
    refresh_gap: float | None = None    # ... and refresh cadence
    today_gap: list[int] = msgspec.field(default_factory=lambda: [0, 0])  # sum (ms), n
    today_refresh: list[int] = msgspec.field(default_factory=lambda: [0, 0])


@dataclass(frozen=True)
class Observation:
    """The values of one event that a user's history counts."""

    ip: str
    prefix: str
    asn: str | None
    country: str | None
    city: str | None
    ua: str | None
    ua_family: str | None
    os: str | None
    hour: str
    path: str | None = None

    def values(self) -> tuple[tuple[str, str | None], ...]:
        return (("ip", self.ip), ("prefix", self.prefix), ("asn", self.asn),
                ("country", self.country), ("city", self.city), ("ua", self.ua),
                ("ua_family", self.ua_family), ("os", self.os), ("hour", self.hour),
                ("path", self.path))


def observation(*, ip: str, now: float, asn: str | None, country: str | None, city: str | None,
                user_agent: str | None, ua_family: str | None, os: str | None,
                path: str | None) -> Observation:
    # Hour of the week in UTC (the events carry no time zone; a user's habit still shows).
    hour = str(int((now % WEEK_S) // 3600))
    return Observation(ip=ip, prefix=history_prefix(ip), asn=asn, country=country, city=city,
                       ua=_digest(user_agent) if user_agent else None,
                       ua_family=ua_family if user_agent else None,
                       os=os if user_agent else None, hour=hour,
                       path=_digest(path) if isinstance(path, str) else None)


def learn(profile: UserProfile | None, obs: Observation, now: float,
          behaviour: SessionBehaviour | None) -> UserProfile:
    """Count one event into the user's profile (in place when given one; returns it)."""
    p = profile if profile is not None else UserProfile()
    day = int(now // DAY_S)
    if day > p.day:
        _close_day(p, day)
    target_today = day == p.day
    for name, value in obs.values():
        if value is None:
            continue
        if target_today:
            counts = p.today.setdefault(name, {})
            seen = counts.get(value)
            if seen is not None:
                counts[value] = seen + 1
            elif len(counts) < MAX_TODAY:  # bounded: a user seen from a million addresses today
                counts[value] = 1
        else:  # a late event of a day already closed: straight into the history
            table = p.history.setdefault(name, {})
            _count(table, value, 1, day)
            p.totals[name] = sum(c for c, _ in table.values())
    # Summed in whole milliseconds: integer sums do not depend on the order they are added in.
    if behaviour is not None and behaviour.gap_ewma is not None:
        p.today_gap[0] += round(behaviour.gap_ewma * 1000)
        p.today_gap[1] += 1
    if behaviour is not None and behaviour.refresh_gap is not None:
        p.today_refresh[0] += round(behaviour.refresh_gap * 1000)
        p.today_refresh[1] += 1
    if not target_today:
        p.events += 1
    return p


def _close_day(p: UserProfile, day: int) -> None:
    if p.day >= 0 and p.today:
        for name, counts in p.today.items():
            table = p.history.setdefault(name, {})
            # Most counted first, then by value: which values a full table keeps does not
            # depend on the order the day's events arrived in.
            for value, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
                _count(table, value, n, p.day)
            p.totals[name] = sum(c for c, _ in table.values())
        p.events += sum(p.today.get("hour", {}).values())
        p.days += 1
        if p.today_gap[1]:
            mean = p.today_gap[0] / p.today_gap[1] / 1000.0
            p.gap = mean if p.gap is None else 0.5 * p.gap + 0.5 * mean
        if p.today_refresh[1]:
            mean = p.today_refresh[0] / p.today_refresh[1] / 1000.0
            p.refresh_gap = mean if p.refresh_gap is None else 0.5 * p.refresh_gap + 0.5 * mean
    p.today, p.today_gap, p.today_refresh = {}, [0, 0], [0, 0]
    p.day = day
    for name, table in p.history.items():
        stale = [v for v, (_, last) in table.items() if day - last > HISTORY_DAYS]
        for v in stale:
            del table[v]
        if stale:
            p.totals[name] = sum(c for c, _ in table.values())


def _count(table: dict[str, list[int]], value: str, n: int, day: int) -> None:
    entry = table.get(value)
    if entry is None:
        if len(table) >= MAX_VALUES:
            # Forget the value seen least (then longest ago): bounded whatever the user does.
            drop = min(table, key=lambda v: (table[v][0], table[v][1], v))
            del table[drop]
        table[value] = [n, day]
    else:
        entry[0] += n
        entry[1] = max(entry[1], day)


def history_for(profile: UserProfile | None, now: float) -> UserProfile | None:
    """The part of the profile a score at `now` may read: days before `now`'s day only.

    An event of a later day closes the day the profile was counting, in place: its counts join
    the history (exactly what counting this event would do next), so nothing is copied."""
    if profile is None:
        return None
    day = int(now // DAY_S)
    if day > profile.day:
        _close_day(profile, day)
    return profile


# -- population (from the training data, shipped in the artefact) --------------------------------

@dataclass(frozen=True)
class Population:
    """How common each value is across all users (Freeman's p(value)), and path bigrams."""

    counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    totals: Mapping[str, int] = field(default_factory=dict)
    distinct: Mapping[str, int] = field(default_factory=dict)
    bigrams: Mapping[str, int] = field(default_factory=dict)   # "prev>path" -> count
    path_totals: Mapping[str, int] = field(default_factory=dict)  # prev -> count

    def p(self, name: str, value: str | None) -> float:
        total = self.totals.get(name, 0)
        if value is None or total <= 0:
            return float("nan")
        seen = self.counts.get(name, {}).get(value)
        distinct = self.distinct.get(name, 0)
        if seen is None:
            return 1.0 / (total + distinct + 1)
        return seen / total

    def to_json(self) -> dict[str, Any]:
        return {"counts": {k: dict(v) for k, v in self.counts.items()}, "totals": dict(self.totals),
                "distinct": dict(self.distinct), "bigrams": dict(self.bigrams),
                "path_totals": dict(self.path_totals)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Population:
        return cls(counts=data.get("counts", {}), totals=data.get("totals", {}),
                   distinct=data.get("distinct", {}), bigrams=data.get("bigrams", {}),
                   path_totals=data.get("path_totals", {}))


class PopulationCounter:
    """Builds a `Population` from observations (the trainer's first pass), bounded per field."""

    def __init__(self, keep: int = 2000) -> None:
        self.keep = keep
        self.counts: dict[str, dict[str, int]] = {}
        self.bigrams: dict[str, int] = {}
        self.path_totals: dict[str, int] = {}

    def add(self, obs: Observation, behaviour: SessionBehaviour | None = None) -> None:
        for name, value in obs.values():
            if value is not None:
                table = self.counts.setdefault(name, {})
                table[value] = table.get(value, 0) + 1
        if behaviour is not None and behaviour.path is not None:
            prev = behaviour.previous_path or "^"
            key = f"{prev}>{behaviour.path}"
            self.bigrams[key] = self.bigrams.get(key, 0) + 1
            self.path_totals[prev] = self.path_totals.get(prev, 0) + 1

    def build(self) -> Population:
        counts, totals, distinct = {}, {}, {}
        for name, table in self.counts.items():
            totals[name] = sum(table.values())
            distinct[name] = len(table)
            top = sorted(table.items(), key=lambda kv: (-kv[1], kv[0]))[: self.keep]
            counts[name] = dict(top)
        bigrams = dict(sorted(self.bigrams.items(), key=lambda kv: (-kv[1], kv[0]))[: self.keep * 4])
        return Population(counts=counts, totals=totals, distinct=distinct, bigrams=bigrams,
                          path_totals=dict(self.path_totals))


# -- the vector ----------------------------------------------------------------------------------

def _p_user(table: Mapping[str, list[int]] | None, value: str | None, n: int) -> float | None:
    """p(value | user), smoothed as das-group/rba-algorithm does for Freeman's score: a known
    value count/n * (1 - k/(n + k)), an unseen one 1/(n + k), with k the values seen and n
    their total count."""
    if value is None or not table or n <= 0:
        return None
    k = len(table)
    entry = table.get(value)
    if entry is None:
        return 1.0 / (n + k)
    return entry[0] / n * (1.0 - k / (n + k))


def vector(*, obs: Observation, behaviour: SessionBehaviour, history: UserProfile | None,
           population: Population, event_type: str, now: float) -> list[float]:
    """The features of one scored event, in `FEATURE_NAMES` order (NaN: unknown)."""
    nan = float("nan")
    out: list[float] = []
    tables = history.history if history is not None else {}
    totals = history.totals if history is not None else {}
    for name, value in obs.values():
        if name == "path":
            continue
        p_user = _p_user(tables.get(name), value, totals.get(name, 0))
        p_all = population.p(name, value)
        if p_user is None or math.isnan(p_all):
            out.append(nan)
        else:
            out.append(math.log(p_all / p_user))
    out.append(math.log1p(history.events) if history is not None else 0.0)
    out.append(math.log1p(history.days) if history is not None else 0.0)
    b = behaviour
    out.append(float(len(b.pairs)))
    out.append(float(b.alternations))
    out.append(b.switches / max(1, b.n - 1))
    usual = history.gap if history is not None else None
    if b.min_prefix_gap is None or not usual:
        out.append(nan)
    else:
        out.append(math.log((b.min_prefix_gap + 1.0) / (usual + 1.0)))
    out.append(math.log1p(b.gap_ewma) if b.gap_ewma is not None else nan)
    if b.gaps >= 2 and b.gap_mean > 0:
        out.append(math.sqrt(b.gap_m2 / (b.gaps - 1)) / b.gap_mean)
    else:
        out.append(nan)
    path_table = tables.get("path")
    p_path = _p_user(path_table, obs.path, totals.get("path", 0))
    out.append(-math.log(p_path) if p_path else nan)
    if b.path is not None and population.path_totals:
        prev = b.previous_path or "^"
        seen = population.bigrams.get(f"{prev}>{b.path}", 0)
        total = population.path_totals.get(prev, 0)
        out.append(-math.log((seen + 1) / (total + len(population.path_totals) + 1)))
    else:
        out.append(nan)
    out.append(b.sensitive_after_change / b.after_change if b.after_change else nan)
    out.append(1.0 if b.last_sensitive else 0.0)
    out.append(b.denied / b.n if b.n else 0.0)
    usual_refresh = history.refresh_gap if history is not None else None
    out.append(math.log((b.refresh_gap + 1) / (usual_refresh + 1))
               if b.refresh_gap is not None and usual_refresh else nan)
    out.append(math.log1p(max(0.0, now - b.login_at)) if b.login_at is not None else nan)
    out.append(math.log1p(b.n))
    out.append(1.0 if event_type == "session.authenticated" else 0.0)
    out.append(b.rtt_disagreement if b.rtt_disagreement is not None else nan)
    out.append((1.0 if b.ja4_changed else 0.0) if b.ja4 is not None else nan)
    out.append((1.0 if b.h2_changed else 0.0) if b.h2 is not None else nan)
    assert len(out) == N_FEATURES
    return out
