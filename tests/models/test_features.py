"""The learned score's features (models/features.py): session behaviour, user history, the vector,
and that the worker's pipelines compute exactly what the features define.

Everything here is pure and deterministic: explicit timestamps, seeded randomness, no clock.
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.dataset import record
from models.features import (
    AFTER_CHANGE_REQUESTS,
    DAY_S,
    FEATURE_NAMES,
    HISTORY_DAYS,
    HISTORY_FIELDS,
    MAX_PAIRS,
    MAX_TODAY,
    MAX_VALUES,
    N_FEATURES,
    Observation,
    Population,
    PopulationCounter,
    SessionBehaviour,
    UserProfile,
    _digest,
    history_for,
    learn,
    observation,
    observe,
    vector,
)
from producers.contract import Event
from sessionwatch.simulation import simulate
from streams.enrich import Enricher, network_prefix

T0 = 1_772_000_000.0 - (1_772_000_000.0 % DAY_S) + 9 * 3600   # 09:00 UTC on some day
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/130.0.0.0 Safari/537.36")
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
HOME = "73.162.10.20"
HOME_OTHER = "73.162.11.5"     # same ISP, another /24
MOBILE = "172.56.20.30"
PROXY = "167.99.10.10"
LOGIN = "session.authenticated"
ACTIVITY = "session.activity"


def walk(steps: Iterable[tuple[Any, ...]]) -> list[SessionBehaviour]:
    """The behaviour after each step: (seconds, ip, user agent[, event type[, attrs]])."""
    out: list[SessionBehaviour] = []
    b: SessionBehaviour | None = None
    for t, ip, ua, *rest in steps:
        kind = rest[0] if rest else ACTIVITY
        attrs = rest[1] if len(rest) > 1 else None
        b = observe(b, now=T0 + t, ip=ip, user_agent=ua, event_type=kind, attrs=attrs or {},
                    prefix=network_prefix(ip))
        out.append(b)
    return out


def obs_at(now: float, *, ip: str = HOME, ua: str | None = CHROME, path: str | None = "/inbox",
           country: str | None = "US", city: str | None = "Saratoga") -> Observation:
    return observation(ip=ip, now=now, asn="COMCAST-7922", country=country, city=city,
                       user_agent=ua, ua_family="Chrome" if ua else None,
                       os="Windows" if ua else None, path=path)


def profile_parts(p: UserProfile | None) -> dict[str, Any]:
    return msgspec.to_builtins(p) if p is not None else {}


# -- session behaviour ----------------------------------------------------------------------------


def test_alternation_counts_returns_to_the_previous_pair() -> None:
    *_, b = walk([(0, HOME, CHROME, LOGIN), (10, PROXY, CHROME), (20, HOME, CHROME),
                  (30, PROXY, CHROME), (40, HOME, CHROME)])
    assert (b.alternations, b.switches, len(b.pairs)) == (3, 4, 2)
    # A -> B -> C -> B: one return (to the pair before the last change), C is not a return.
    *_, b = walk([(0, HOME, CHROME), (10, PROXY, CHROME), (20, MOBILE, CHROME), (30, PROXY, CHROME)])
    assert (b.alternations, b.switches, len(b.pairs)) == (1, 3, 3)
    # A client change on the same address is a pair change too.
    *_, b = walk([(0, HOME, CHROME), (10, HOME, FIREFOX), (20, HOME, CHROME)])
    assert (b.alternations, b.switches, len(b.pairs)) == (1, 2, 2)


def test_a_one_time_change_is_no_alternation() -> None:
    """A DHCP renewal: one change, then steady on the new address."""
    steps = [(0, HOME, CHROME, LOGIN), (20, HOME, CHROME), (40, HOME_OTHER, CHROME),
             (60, HOME_OTHER, CHROME), (90, HOME_OTHER, CHROME)]
    *_, b = walk(steps)
    assert (b.alternations, b.switches, len(b.pairs)) == (0, 1, 2)
    x = vector(obs=obs_at(T0 + 90, ip=HOME_OTHER), behaviour=b, history=None,
               population=Population(), event_type=ACTIVITY, now=T0 + 90)
    assert x[FEATURE_NAMES.index("alternations")] == 0.0
    assert x[FEATURE_NAMES.index("switch_rate")] == pytest.approx(1 / 4)


def test_pairs_are_capped_most_recent_kept() -> None:
    ips = [f"198.51.100.{i}" for i in range(MAX_PAIRS + 5)]
    behaviours = walk([(10 * i, ip, CHROME) for i, ip in enumerate(ips)])
    assert all(len(b.pairs) <= MAX_PAIRS for b in behaviours)
    last = behaviours[-1]
    assert last.pairs == tuple(_digest(f"{ip}|{CHROME}") for ip in ips[-MAX_PAIRS:])
    assert last.switches == len(ips) - 1
    # A pair that was forgotten counts as new again when it comes back.
    again = observe(last, now=T0 + 1000, ip=ips[0], user_agent=CHROME, event_type=ACTIVITY,
                    attrs={}, prefix=network_prefix(ips[0]))
    assert again.pairs[-1] == _digest(f"{ips[0]}|{CHROME}") and len(again.pairs) == MAX_PAIRS


def test_changed_marks_what_the_model_can_see() -> None:
    steps = [
        (0, HOME, CHROME, LOGIN, {"path": "/login"}),            # a login
        (10, HOME, CHROME, ACTIVITY, {"path": "/inbox"}),        # repeated activity
        (20, HOME, CHROME, ACTIVITY, {"path": "/orders"}),       # repeated activity
        (30, PROXY, CHROME, ACTIVITY, {"path": "/inbox"}),       # a new pair
        (40, PROXY, CHROME, ACTIVITY, {"path": "/search"}),      # same pair again
        (50, PROXY, CHROME, ACTIVITY, {"path": "/settings/mfa"}),  # sensitive, 3rd after change
        (60, PROXY, CHROME, ACTIVITY, {"path": "/inbox"}),
        (70, PROXY, CHROME, ACTIVITY, {"path": "/inbox"}),
        (80, PROXY, CHROME, ACTIVITY, {"path": "/account/export"}),  # 6th after: not "first"
        (90, PROXY, CHROME, LOGIN, {"path": "/login"}),          # a login on the same pair
    ]
    assert [b.changed for b in walk(steps)] == [True, False, False, True, False, True, False, False,
                                                 False, True]
    assert AFTER_CHANGE_REQUESTS == 5   # the 6th request after the change is past the first ones
    b = walk(steps[:6])[-1]
    assert (b.sensitive_after_change, b.after_change, b.last_sensitive) == (1, 3, True)


def test_repeated_activity_without_attrs_is_not_a_change() -> None:
    behaviours = walk([(0, HOME, CHROME, LOGIN)] + [(10 * i, HOME, CHROME) for i in range(1, 30)])
    assert [b.changed for b in behaviours[1:]] == [False] * 29


def test_an_event_without_a_user_agent_is_not_a_new_client() -> None:
    steps = [(0, HOME, CHROME, LOGIN), (10, HOME, CHROME), (20, HOME, CHROME),
             (1820, HOME, None, "session.expired", {"reason": "idle"})]
    b = walk(steps)[-1]
    assert (b.changed, b.switches, len(b.pairs)) == (False, 0, 1)


def test_gap_mean_and_cv_match_numpy() -> None:
    rng = np.random.default_rng(17)
    gaps = rng.exponential(30.0, size=60)
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    behaviours = walk([(t, HOME, CHROME) for t in times])
    b = behaviours[-1]
    assert b.gaps == len(gaps)
    assert b.gap_mean == pytest.approx(np.mean(gaps), rel=1e-9)
    assert math.sqrt(b.gap_m2 / (b.gaps - 1)) == pytest.approx(np.std(gaps, ddof=1), rel=1e-9)
    ewma = gaps[0]
    for g in gaps[1:]:
        ewma = 0.3 * g + 0.7 * ewma
    assert b.gap_ewma == pytest.approx(ewma, rel=1e-9)
    x = vector(obs=obs_at(T0 + times[-1]), behaviour=b, history=None, population=Population(),
               event_type=ACTIVITY, now=T0 + times[-1])
    assert x[FEATURE_NAMES.index("gap_cv")] == pytest.approx(np.std(gaps, ddof=1) / np.mean(gaps),
                                                             rel=1e-9)
    assert x[FEATURE_NAMES.index("gap_ewma_log")] == pytest.approx(math.log1p(ewma), rel=1e-9)
    # One gap: no spread yet (NaN, not 0).
    two = walk([(0, HOME, CHROME), (5, HOME, CHROME)])[-1]
    cv = vector(obs=obs_at(T0 + 5), behaviour=two, history=None, population=Population(),
                event_type=ACTIVITY, now=T0 + 5)[FEATURE_NAMES.index("gap_cv")]
    assert math.isnan(cv)


def test_min_prefix_gap_is_the_shortest_hop_between_networks() -> None:
    steps = [(0, HOME, CHROME), (10, HOME, CHROME), (13, PROXY, CHROME),     # hop after 3 s
             (20, PROXY, CHROME), (21, HOME, CHROME),                         # hop after 1 s
             (60, HOME, CHROME), (62, PROXY, CHROME)]                         # 2 s: not shorter
    mins = [b.min_prefix_gap for b in walk(steps)]
    assert mins == [None, None, 3.0, 3.0, 1.0, 1.0, 1.0]
    # Another address in the same /24 is no hop.
    same_net = walk([(0, "73.162.10.20", CHROME), (1, "73.162.10.99", CHROME)])[-1]
    assert same_net.min_prefix_gap is None


def test_edge_fingerprints() -> None:
    steps = [
        (0, HOME, CHROME, LOGIN, {"path": "/login", "ja4": "t13d1516h2_aaa", "h2": "1:65536",
                                   "tls_rtt_ms": 42.0, "tcp_rtt_ms": 40.0}),
        (10, HOME, CHROME, ACTIVITY, {"path": "/inbox", "ja4": "t13d1516h2_aaa", "h2": "1:65536",
                                      "tls_rtt_ms": 95.0, "tcp_rtt_ms": 15.0}),   # a proxy: 80 ms
        (20, HOME, CHROME, ACTIVITY, {"path": "/inbox", "ja4": "t13d1516h2_bbb", "h2": "1:65536",
                                      "tls_rtt_ms": 30.0, "tcp_rtt_ms": 29.0}),
    ]
    b0, b1, b2 = walk(steps)
    assert b0.rtt_disagreement == 2.0 and b1.rtt_disagreement == 80.0 and b2.rtt_disagreement == 80.0
    assert (b0.ja4_changed, b1.ja4_changed, b2.ja4_changed) == (False, False, True)
    assert b2.h2_changed is False
    x = vector(obs=obs_at(T0 + 20), behaviour=b2, history=None, population=Population(),
               event_type=ACTIVITY, now=T0 + 20)
    assert x[FEATURE_NAMES.index("rtt_disagreement_ms")] == 80.0
    assert x[FEATURE_NAMES.index("ja4_changed")] == 1.0
    assert x[FEATURE_NAMES.index("h2_changed")] == 0.0
    # Non-numbers and booleans are no round trips.
    odd = walk([(0, HOME, CHROME, ACTIVITY, {"tls_rtt_ms": True, "tcp_rtt_ms": 1.0}),
                (1, HOME, CHROME, ACTIVITY, {"tls_rtt_ms": "90", "tcp_rtt_ms": 1.0}),
                (2, HOME, CHROME, ACTIVITY, {"tls_rtt_ms": math.inf, "tcp_rtt_ms": 1.0})])[-1]
    assert odd.rtt_disagreement is None


def test_an_absent_fingerprint_is_unknown_never_zero() -> None:
    b = walk([(0, HOME, CHROME, LOGIN, {"path": "/login"}), (10, HOME, CHROME, ACTIVITY, {"path": "/a"})])[-1]
    assert (b.ja4, b.h2, b.rtt_disagreement) == (None, None, None)
    x = vector(obs=obs_at(T0 + 10), behaviour=b, history=None, population=Population(),
               event_type=ACTIVITY, now=T0 + 10)
    for name in ("rtt_disagreement_ms", "ja4_changed", "h2_changed"):
        assert math.isnan(x[FEATURE_NAMES.index(name)]), name


def test_observe_leaves_the_previous_behaviour_alone() -> None:
    first = walk([(0, HOME, CHROME, LOGIN, {"path": "/login", "ja4": "x"})])[-1]
    before = msgspec.to_builtins(first)
    observe(first, now=T0 + 5, ip=PROXY, user_agent=FIREFOX, event_type=ACTIVITY,
            attrs={"path": "/settings/mfa", "ja4": "y", "status": 403}, prefix=network_prefix(PROXY))
    assert msgspec.to_builtins(first) == before


def test_refresh_gap_is_the_mean_gap_between_refreshes() -> None:
    b = walk([(t, HOME, CHROME, "session.refreshed") for t in (0, 100, 300, 600)])[-1]
    assert b.refresh_gap == pytest.approx(200.0)


# -- user history ---------------------------------------------------------------------------------


def _day_profile(days: Sequence[Sequence[Observation]], start_day: int) -> UserProfile:
    p: UserProfile | None = None
    for offset, observations in enumerate(days):
        for k, o in enumerate(observations):
            p = learn(p, o, (start_day + offset) * DAY_S + 3600 + k, None)
    assert p is not None
    return p


def test_a_score_reads_only_earlier_days() -> None:
    day = int(T0 // DAY_S)
    yesterday = [obs_at((day - 1) * DAY_S + 3600) for _ in range(5)]
    p = _day_profile([yesterday], day - 1)
    morning, afternoon = day * DAY_S + 9 * 3600, day * DAY_S + 15 * 3600
    seen_before = msgspec.to_builtins(history_for(p, afternoon))
    p = learn(p, obs_at(morning, ip=PROXY, ua=FIREFOX, country="NL", city="Amsterdam",
                        path="/account/export"), morning, None)
    seen_after = msgspec.to_builtins(history_for(p, afternoon))
    for key in ("history", "days", "events", "gap", "refresh_gap"):
        assert seen_after[key] == seen_before[key], key
    assert PROXY not in seen_after["history"]["ip"]
    # The vector of an afternoon event is the same with or without the morning's event.
    b = walk([(0, PROXY, FIREFOX, LOGIN)])[-1]
    pop = Population(counts={"ip": {HOME: 5}}, totals={"ip": 10}, distinct={"ip": 3})
    o = obs_at(afternoon, ip=PROXY, ua=FIREFOX, country="NL", city="Amsterdam")
    with_morning = vector(obs=o, behaviour=b, history=history_for(p, afternoon), population=pop,
                          event_type=LOGIN, now=afternoon)
    without = vector(obs=o, behaviour=b,
                     history=history_for(_day_profile([yesterday], day - 1), afternoon),
                     population=pop, event_type=LOGIN, now=afternoon)
    np.testing.assert_array_equal(with_morning, without)
    # The next day, the morning's values are history.
    assert PROXY in history_for(p, (day + 1) * DAY_S + 60).history["ip"]


def test_reading_the_history_changes_nothing_counting_would_not() -> None:
    """history_for may close the day it reads past (in place): the profile after a read and a
    count is the profile after the count alone, and a second read sees the same."""
    day = int(T0 // DAY_S)
    observations = [obs_at((day - 2) * DAY_S + 60, ip=MOBILE), obs_at((day - 1) * DAY_S + 60),
                    obs_at((day - 1) * DAY_S + 120, ip=PROXY, path="/settings/mfa")]

    def profile() -> UserProfile:
        p: UserProfile | None = None
        for o, now in zip(observations, ((day - 2) * DAY_S + 60, (day - 1) * DAY_S + 60,
                                         (day - 1) * DAY_S + 120), strict=True):
            p = learn(p, o, now, SessionBehaviour(gap_ewma=12.5))
        assert p is not None
        return p

    read = profile()
    first = msgspec.to_builtins(history_for(read, T0))
    assert msgspec.to_builtins(history_for(read, T0)) == first
    assert msgspec.to_builtins(history_for(read, T0 + 3600)) == first    # same day, later
    counted_after_read = learn(read, obs_at(T0), T0, None)
    counted = learn(profile(), obs_at(T0), T0, None)
    assert msgspec.to_builtins(counted_after_read) == msgspec.to_builtins(counted)


_ips = st.sampled_from([HOME, HOME_OTHER, MOBILE, PROXY, "2001:db8::1", "198.51.100.7"])
_uas = st.sampled_from([CHROME, FIREFOX, None])
_paths = st.sampled_from(["/inbox", "/orders", "/settings/mfa", None])
_gaps = st.one_of(st.none(), st.floats(0.1, 900.0, allow_nan=False))


def _observed(items: Sequence[tuple[int, int, str, str | None, str | None, float | None]]
              ) -> list[tuple[float, Observation, SessionBehaviour | None]]:
    out = []
    for day, second, ip, ua, path, gap in items:
        now = day * DAY_S + second
        b = None if gap is None else SessionBehaviour(gap_ewma=gap)
        out.append((now, obs_at(now, ip=ip, ua=ua, path=path), b))
    return out


def _learn_all(events: Iterable[tuple[float, Observation, SessionBehaviour | None]]) -> UserProfile | None:
    p: UserProfile | None = None
    for now, o, b in events:
        p = learn(p, o, now, b)
    return p


# Seconds within the first 3 hours of a day: at most 7 x 3 hour-of-week values, under MAX_VALUES.
_seconds = st.integers(0, 3 * 3600 - 1)
_day_events = st.lists(st.tuples(st.just(20_001), _seconds, _ips, _uas, _paths, _gaps),
                       min_size=1, max_size=25)
_earlier_events = st.lists(st.tuples(st.integers(19_995, 20_000), _seconds, _ips, _uas, _paths, _gaps),
                           max_size=15)


def _by_time(items: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(items, key=lambda item: (item[0], item[1]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(earlier=_earlier_events, today=_day_events, seed=st.integers(0, 2**32 - 1))
def test_profile_is_the_same_in_any_order_within_a_day(earlier, today, seed) -> None:  # type: ignore[no-untyped-def]
    """Within a day, how the partitions interleaved must not matter (the values here stay below
    MAX_VALUES per field; the overflow case is its own test)."""
    earlier = _by_time(earlier)
    shuffled = list(today)
    random.Random(seed).shuffle(shuffled)
    a = _learn_all(_observed(earlier + _by_time(today)))
    b = _learn_all(_observed(earlier + shuffled))
    next_day = 20_002 * DAY_S
    for pa, pb in ((profile_parts(a), profile_parts(b)),
                   (profile_parts(history_for(a, next_day)), profile_parts(history_for(b, next_day)))):
        for key in ("day", "today", "history", "totals", "days", "events"):
            assert pa[key] == pb[key], key
        # Sums of floats: equal to rounding (exact equality is test_usual_gap_exactly_...).
        assert (pa["gap"] is None) == (pb["gap"] is None)
        assert pa["gap"] is None or pa["gap"] == pytest.approx(pb["gap"], rel=1e-12)
        assert pa["today_gap"] == pytest.approx(pb["today_gap"], rel=1e-12)


def test_profile_is_order_independent_when_a_table_overflows() -> None:
    base: UserProfile | None = None
    for i in range(MAX_VALUES):           # a full ip table, every value seen 3 times on day 0
        for k in range(3):
            base = learn(base, obs_at(100.0 + k, ip=f"10.0.0.{i}"), 100.0 + k, None)
    day1 = [obs_at(DAY_S + 5, ip="192.0.2.1"), obs_at(DAY_S + 6, ip="192.0.2.2")]

    def closed(order: Sequence[Observation]) -> dict[str, list[int]]:
        p = msgspec.convert(msgspec.to_builtins(base), UserProfile)
        for o in order:
            p = learn(p, o, DAY_S + 10, None)
        h = history_for(p, 2 * DAY_S)
        assert h is not None
        return h.history["ip"]

    assert closed(day1) == closed(day1[::-1])


def test_usual_gap_is_exactly_order_independent() -> None:
    events = [(DAY_S + 10.0 * i, obs_at(DAY_S + 10.0 * i), SessionBehaviour(gap_ewma=g))
              for i, g in enumerate((0.1, 0.2, 0.3))]
    a, b = _learn_all(events), _learn_all(events[::-1])
    assert history_for(a, 2 * DAY_S).gap == history_for(b, 2 * DAY_S).gap  # type: ignore[union-attr]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 86_399), st.integers(0, 10_000)),
                      min_size=1, max_size=300))
def test_history_is_bounded_whatever_the_input(items) -> None:  # type: ignore[no-untyped-def]
    """Any days in any order (late events included), any number of distinct values: every
    history table stays within MAX_VALUES, and `totals` stays the sum of its table's counts."""
    p: UserProfile | None = None
    for day, second, n in items:
        now = day * DAY_S + second
        ip = f"10.{n % 256}.{n // 256}.1"
        p = learn(p, obs_at(now, ip=ip, ua=f"agent/{n}", path=f"/p/{n}"), now, None)
        assert all(len(table) <= MAX_VALUES for table in p.history.values())
    h = history_for(p, 402 * DAY_S)
    assert h is not None and all(len(table) <= MAX_VALUES for table in h.history.values())
    for name, table in h.history.items():
        assert h.totals.get(name, 0) == sum(c for c, _ in table.values()), name


def test_the_current_day_is_bounded_too() -> None:
    p: UserProfile | None = None
    for i in range(1000):
        p = learn(p, obs_at(DAY_S + i, ip=f"10.0.{i // 250}.{i % 250}", path=f"/p/{i}"), DAY_S + i, None)
    assert p is not None
    # The day's tables are capped at MAX_TODAY (the history at MAX_VALUES when the day closes).
    assert all(len(table) <= MAX_TODAY for table in p.today.values())
    assert max(len(table) for table in p.today.values()) == MAX_TODAY


def test_values_older_than_history_days_are_dropped() -> None:
    p = learn(None, obs_at(0.0, ip=PROXY), 0.0, None)                        # day 0
    p = learn(p, obs_at(HISTORY_DAYS * DAY_S, ip=HOME), HISTORY_DAYS * DAY_S, None)
    assert PROXY in history_for(p, HISTORY_DAYS * DAY_S + 60).history["ip"]   # 180 days ago: kept
    later = history_for(p, (HISTORY_DAYS + 1) * DAY_S)                        # 181: dropped
    assert PROXY not in later.history["ip"] and HOME in later.history["ip"]  # type: ignore[union-attr]
    # ... also when the user comes back after a long absence.
    away = history_for(learn(None, obs_at(0.0, ip=PROXY), 0.0, None), (HISTORY_DAYS + 30) * DAY_S)
    assert PROXY not in away.history.get("ip", {})  # type: ignore[union-attr]


# -- the vector -----------------------------------------------------------------------------------


def _population() -> Population:
    counter = PopulationCounter()
    for i in range(200):
        counter.add(obs_at(i * 60.0, ip=[HOME, MOBILE, PROXY, HOME_OTHER][i % 4],
                           ua=[CHROME, FIREFOX][i % 2]))
    return counter.build()


def test_vector_shape_and_no_history() -> None:
    b = walk([(0, HOME, CHROME, LOGIN, {"path": "/login"})])[-1]
    x = vector(obs=obs_at(T0), behaviour=b, history=None, population=_population(),
               event_type=LOGIN, now=T0)
    assert len(x) == N_FEATURES == len(FEATURE_NAMES) and all(isinstance(v, float) for v in x)
    named = dict(zip(FEATURE_NAMES, x, strict=True))
    assert all(math.isnan(named[f"lr_{f}"]) for f in HISTORY_FIELDS)
    assert named["history_events"] == 0.0 and named["history_days"] == 0.0
    assert named["is_login"] == 1.0 and named["events_log"] == pytest.approx(math.log(2))
    assert named["since_login_log"] == 0.0 and named["pairs"] == 1.0


def test_a_familiar_value_scores_lower_than_an_unseen_one() -> None:
    pop = _population()
    day = int(T0 // DAY_S)
    p = _day_profile([[obs_at(0, ip=HOME) for _ in range(50)], [obs_at(0, ip=MOBILE)]], day - 2)
    history = history_for(p, T0)
    b = walk([(0, HOME, CHROME, LOGIN)])[-1]

    def lr(ip: str, field: str = "lr_ip") -> float:
        x = vector(obs=obs_at(T0, ip=ip), behaviour=b, history=history, population=pop,
                   event_type=LOGIN, now=T0)
        return x[FEATURE_NAMES.index(field)]

    # 50 times < never. (Seen once scores like never: the smoothing gives a known value
    # count/(n + k) and an unseen one 1/(n + k).)
    assert lr(HOME) < lr(MOBILE) <= lr(PROXY)
    assert lr(HOME) < lr(PROXY)
    assert lr(PROXY) == lr(PROXY)                     # deterministic
    assert lr(HOME, "lr_prefix") < lr(PROXY, "lr_prefix")
    named = dict(zip(FEATURE_NAMES, vector(obs=obs_at(T0, ip=HOME, ua=None), behaviour=b,
                                           history=history, population=pop, event_type=LOGIN,
                                           now=T0), strict=True))
    assert math.isnan(named["lr_ua"]) and math.isnan(named["lr_os"])   # no UA: unknown, not 0
    assert named["history_days"] == pytest.approx(math.log1p(2))
    assert named["history_events"] == pytest.approx(math.log1p(51))


def test_vector_is_deterministic() -> None:
    pop = _population()
    p = _day_profile([[obs_at(0, ip=HOME, path="/inbox"), obs_at(0, ip=MOBILE, path="/orders")]],
                     int(T0 // DAY_S) - 1)
    behaviours = walk([(0, HOME, CHROME, LOGIN, {"path": "/login"}), (9, PROXY, CHROME, ACTIVITY,
                                                                      {"path": "/settings/mfa"})])
    args = dict(obs=obs_at(T0 + 9, ip=PROXY, path="/settings/mfa"), behaviour=behaviours[-1],
                history=history_for(p, T0 + 9), population=pop, event_type=ACTIVITY, now=T0 + 9)
    first = vector(**args)  # type: ignore[arg-type]
    np.testing.assert_array_equal(first, vector(**args))  # type: ignore[arg-type]
    assert sum(not math.isnan(v) for v in first) > 20


# -- the stream and the trainer compute the same vector ---------------------------------------


@pytest.fixture(scope="module")
def sim_events() -> list[Event]:
    # Edge fingerprints on: the ja4/RTT features are exercised too.
    return simulate(users=60, seed=3, history_days=1, edge_fingerprints=0.5).events


@pytest.fixture(scope="module")
def recorded(sim_events: list[Event], enricher: Enricher):  # type: ignore[no-untyped-def]
    return record(sim_events, enricher=enricher)


def _by_hand(events: Sequence[Event], enricher: Enricher, population: Population) -> dict[str, list[float]]:
    """The vectors from models.features alone: `observe` over each session's events in order;
    an event that `changed` something is scored - `vector` against `history_for` the user's
    profile - and then counted into it with `learn` (streams/routing.py forwards behaviour only
    on changed events, and the user stage scores and counts only those)."""
    sessions: dict[str, dict[str, Any]] = {}
    profiles: dict[tuple[str, str], UserProfile] = {}
    out: dict[str, list[float]] = {}
    for e in events:
        if e.session is None:
            continue
        now = e.time.timestamp()
        s = sessions.get(e.session)
        if s is None or now - s["last"] > 86400.0:     # the session stage's TTL
            s = {"b": None, "last": now, "user": None}
        s["last"] = max(s["last"], now)
        s["user"] = e.user or s["user"]
        s["b"] = b = observe(s["b"], now=now, ip=e.ip, user_agent=e.user_agent,
                             event_type=e.type.value, attrs=e.attrs, prefix=network_prefix(e.ip))
        sessions[e.session] = s
        if s["user"] is None or not b.changed:
            continue
        network, client = enricher.network(e.ip), enricher.client(e.user_agent)
        path = e.attrs.get("path") if e.attrs else None
        o = observation(ip=e.ip, now=now, asn=network.asn, country=network.country, city=network.city,
                        user_agent=e.user_agent, ua_family=client.family, os=client.os,
                        path=path if isinstance(path, str) else None)
        key = (e.tenant, s["user"])
        out[e.id] = vector(obs=o, behaviour=b, history=history_for(profiles.get(key), now),
                           population=population, event_type=e.type.value, now=now)
        profiles[key] = learn(profiles.get(key), o, now, b)
    return out


def _vectors(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    values = frame.loc[:, list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    return dict(zip(frame["event_id"], values, strict=True))


def test_the_pipelines_compute_the_vectors_features_define(sim_events, recorded, enricher) -> None:  # type: ignore[no-untyped-def]
    expected = _by_hand(sim_events, enricher, recorded.population)
    got = _vectors(recorded.frame)
    assert len(got) > 500 and set(got) == set(expected)
    for event_id, x in expected.items():
        np.testing.assert_array_equal(got[event_id], np.array(x), err_msg=event_id)
    frame = recorded.frame
    # The simulation exercised history, behaviour and edge features, not just NaN.
    for name in ("lr_ip", "lr_city", "alternations", "prefix_gap_ratio", "sensitive_after_change",
                 "rtt_disagreement_ms", "ja4_changed"):
        assert frame[name].notna().any(), name
    assert (frame["alternations"] > 0).any() and (frame["history_days"] > 0).any()


def test_record_twice_gives_identical_frames(sim_events, recorded, enricher) -> None:  # type: ignore[no-untyped-def]
    again = record(sim_events, enricher=enricher)         # a fresh runner, population recounted
    pd.testing.assert_frame_equal(again.frame, recorded.frame, check_exact=True)
    assert again.population.to_json() == recorded.population.to_json()
    assert again.rule_actions == recorded.rule_actions


def _interleave(events: Sequence[Event], seed: int) -> list[Event]:
    """Another interleaving the worker could see: within each day, sessions' events merged at
    random (each session's own order kept); days stay in order, so every user's history holds
    the same earlier-day events."""
    rng = random.Random(seed)
    days: dict[int, dict[str, list[Event]]] = collections.defaultdict(dict)
    for e in events:
        days[int(e.time.timestamp() // DAY_S)].setdefault(e.session or e.id, []).append(e)
    out: list[Event] = []
    for day in sorted(days):
        queues = [collections.deque(q) for q in days[day].values()]
        while queues:
            i = rng.randrange(len(queues))
            out.append(queues[i].popleft())
            if not queues[i]:
                queues.pop(i)
    return out


@pytest.fixture(scope="module")
def shuffled(sim_events, recorded, enricher):  # type: ignore[no-untyped-def]
    events = _interleave(sim_events, seed=5)
    assert sum(a.id != b.id for a, b in zip(events, sim_events, strict=True)) > len(events) // 2
    return record(events, enricher=enricher, population=recorded.population)


def test_shuffled_interleaving_gives_the_same_vectors(recorded, shuffled) -> None:  # type: ignore[no-untyped-def]
    a, b = _vectors(recorded.frame), _vectors(shuffled.frame)
    assert set(a) == set(b)
    for event_id, x in a.items():
        np.testing.assert_allclose(b[event_id], x, rtol=1e-12, atol=0, equal_nan=True, err_msg=event_id)


def test_shuffled_interleaving_gives_bit_identical_vectors(recorded, shuffled) -> None:  # type: ignore[no-untyped-def]
    a, b = _vectors(recorded.frame), _vectors(shuffled.frame)
    assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)
