"""Decisions do not depend on how partitions interleave (ARCHITECTURE principle 7).

The user and source stages read events merged from every session partition. Here the simulator's
labelled traffic (every attack class, benign logins, logouts, password changes, floods) is split
into partitions by session key, and each partition is delayed by its own lag that drifts over
time - up to 90 % of the allowed lateness, as a worker replaying a backlog or rebalancing would
lag - and the partitions are merged by arrival time. Every such interleaving must give the
in-process runner exactly the revocations of the event-time order.
"""

from __future__ import annotations

import random
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.contract import Event, EventType, Revocation
from sessionwatch.simulation import simulate
from streams.local import LocalRunner

LATENESS_S = 60.0
PARTITIONS = 4


@pytest.fixture(scope="module")
def traffic() -> list[Event]:
    sim = simulate(users=240, seed=31, attacks_per_class=4)
    return sorted(sim.events, key=lambda e: (e.time, e.id))


def decided(runner: LocalRunner, events: list[Event]) -> set[tuple]:
    revocations: list[Revocation] = []
    for event in events:
        revocations += runner.process(event)[1]
    revocations += runner.finish()[1]
    return {(r.id, r.scope.value, r.session or r.user or r.source, r.action.value,
             r.not_before, r.expires, r.event_time) for r in revocations}


def interleave(events: list[Event], seed: int, max_lag_s: float) -> list[Event]:
    """Partition by key, give each partition a lag drifting in [0, max_lag_s], merge by arrival.

    Within a partition the order is kept (Kafka keeps it); an event's arrival is its event time
    plus its partition's lag then, so nothing arrives more than `max_lag_s` behind an event
    with a later time."""
    rng = random.Random(seed)
    lag = [rng.uniform(0, max_lag_s) for _ in range(PARTITIONS)]
    last_arrival = [float("-inf")] * PARTITIONS
    arrivals = []
    for n, event in enumerate(events):
        p = zlib.crc32(event.key.encode()) % PARTITIONS
        if rng.random() < 0.02:  # the lag drifts: a partition speeds up or falls behind
            lag[p] = rng.uniform(0, max_lag_s)
        at = max(last_arrival[p], event.time.timestamp() + lag[p])
        last_arrival[p] = at
        arrivals.append((at, p, n, event))
    arrivals.sort(key=lambda a: (a[0], a[1], a[2]))
    return [a[3] for a in arrivals]


def test_the_simulated_attacks_reach_the_user_and_source_stages(traffic, enricher):
    """The property below means something only if those stages decide on this traffic."""
    runner = LocalRunner(enricher=enricher, allowed_lateness_s=LATENESS_S)
    out = decided(runner, traffic)
    kinds = {kind for _, kind, *_ in out}
    assert {"session", "source"} <= kinds
    revocations = []
    runner = LocalRunner(enricher=enricher, allowed_lateness_s=LATENESS_S)
    for event in traffic:
        revocations += runner.process(event)[1]
    revocations += runner.finish()[1]
    detectors = {reason.detector for r in revocations for reason in r.reasons}
    for wanted in ("user.credential_change", "user.concurrent_sessions", "source.token_guess",
                   "source.credential_stuffing", "source.creation_flood"):
        assert wanted in detectors, wanted
    assert any(e.type is EventType.CREDENTIAL_CHANGED for e in traffic)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_any_interleaving_within_the_lateness_decides_the_same(traffic, enricher, seed):
    in_order = decided(LocalRunner(enricher=enricher, allowed_lateness_s=LATENESS_S), traffic)
    shuffled_events = interleave(traffic, seed, max_lag_s=0.9 * LATENESS_S)
    assert shuffled_events != traffic  # the interleaving really differs
    shuffled = decided(LocalRunner(enricher=enricher, allowed_lateness_s=LATENESS_S),
                       shuffled_events)
    assert shuffled == in_order, (len(in_order - shuffled), len(shuffled - in_order))


def test_a_password_change_ends_a_session_whose_login_arrives_after_it(enricher):
    """The change is before the login in arrival order, after it in event time."""
    import json

    from factories import make_event

    from producers.contract import decode_event

    def ev(*a, **kw):
        return decode_event(json.dumps(make_event(*a, **kw)))

    login_laptop = ev("session.authenticated", session="laptop", user="carol", at=0)
    login_phone = ev("session.authenticated", session="phone", user="carol", at=10)
    change = ev("credential.changed", session="laptop", user="carol", at=30,
                attrs={"credential": "password"})
    runner = LocalRunner(enricher=enricher)
    got = []
    for event in (login_laptop, change, login_phone):  # the phone's login arrives late
        got += runner.process(event)[1]
    got += runner.finish()[1]
    ended = {r.session for r in got if "user.credential_change" in
             {x.detector for x in r.reasons}}
    assert ended == {"phone"}  # the laptop made the change and stays signed in


def test_without_the_lateness_the_same_interleavings_decide_differently(traffic, enricher):
    """The control: the runner without holding anything (lateness 0) is order-dependent on this
    very traffic, so the property above is not vacuous."""
    differs = 0
    for seed in (1, 2):
        shuffled = interleave(traffic, seed, max_lag_s=0.9 * LATENESS_S)
        a = decided(LocalRunner(enricher=enricher, allowed_lateness_s=0.0), traffic)
        b = decided(LocalRunner(enricher=enricher, allowed_lateness_s=0.0), shuffled)
        differs += a != b
    assert differs
