"""The traffic simulator: seeded determinism, consistent truth, no raw tokens, checked networks."""

from __future__ import annotations

import ipaddress
import re

import pytest

from producers.contract import EventType, decode_event, encode
from sessionwatch.simulation import ATTACK_CLASSES, simulate
from sessionwatch.simulation import network_tables as tables
from sessionwatch.simulation import networks as nets
from sessionwatch.simulation.truth import Truth


@pytest.fixture(scope="module")
def sim():
    return simulate(users=80, seed=5, attacks_per_class=3)


def test_same_seed_same_events(sim):
    again = simulate(users=80, seed=5, attacks_per_class=3)
    assert [encode(e) for e in again.events] == [encode(e) for e in sim.events]
    assert again.truth.to_json() == sim.truth.to_json()


def test_another_seed_other_events(sim):
    other = simulate(users=80, seed=6, attacks_per_class=3)
    assert [e.id for e in other.events[:50]] != [e.id for e in sim.events[:50]]


def test_events_are_valid_and_in_time_order(sim):
    times = [e.time for e in sim.events]
    assert times == sorted(times)
    for event in sim.events[:3000]:
        assert decode_event(encode(event)) == event


def test_every_attack_class_present_with_consistent_truth(sim):
    by_id = {e.id: e for e in sim.events}
    assert {a.cls for a in sim.truth.attacks} == set(ATTACK_CLASSES)
    for attack in sim.truth.attacks:
        assert attack.first_event in by_id
        assert attack.events[0] == attack.first_event
        assert all(sim.malicious[eid] == attack.id for eid in attack.events)
        assert attack.sources and attack.catch
        first = by_id[attack.first_event]
        assert first.time.timestamp() == attack.start
        assert all(by_id[eid].time >= first.time for eid in attack.events)
        session_events = {by_id[eid].session for eid in attack.events}
        for s in attack.sessions:
            assert re.fullmatch(r"[0-9a-f]{64}", s)
            assert s in session_events or attack.cls == "fixation"


def test_benign_sessions_consistent(sim):
    sessions = {e.session for e in sim.events if e.session}
    assert len(sim.truth.benign) > 100
    for b in sim.truth.benign:
        assert set(b.hashes) <= sessions and b.session in b.hashes
        assert b.authenticated_at is not None and b.start <= b.authenticated_at <= b.end
        assert b.addresses


def test_benign_sessions_respect_idle_timeout(sim):
    last: dict[str, float] = {}
    benign = {h for b in sim.truth.benign for h in b.hashes}
    for e in sim.events:
        if e.session in benign and e.type is EventType.ACTIVITY:
            t = e.time.timestamp()
            if e.session in last:
                assert t - last[e.session] < 1800
            last[e.session] = t


def test_no_raw_tokens_leave_the_app(sim):
    # Tokens are 64 hex chars before hashing; only HMACs may appear, and every session field is one.
    hashes = {e.session for e in sim.events if e.session}
    for e in sim.events[:5000]:
        blob = encode(e).decode()
        for value in re.findall(r"[0-9a-f]{64}", blob):
            assert value in hashes or value == e.attrs.get("previous_session")
    from sessionwatch.simulation.world import World

    w = World(5)
    token = w.token()
    assert w.hasher.hash(token) != token


def test_truth_round_trips_json(sim, tmp_path):
    path = tmp_path / "truth.json"
    sim.truth.save(path)
    assert Truth.load(path).to_json() == sim.truth.to_json()


def test_fixation_keeps_the_planted_id_and_replay_follows_logout(sim):
    by_session: dict[str, list] = {}
    for e in sim.events:
        if e.session:
            by_session.setdefault(e.session, []).append(e)
    for attack in sim.truth.attacks:
        events = by_session[attack.sessions[0]] if attack.sessions else []
        if attack.cls == "fixation":
            auth = [e for e in events if e.type is EventType.AUTHENTICATED]
            assert auth and "previous_session" not in auth[0].attrs
            assert events[0].id == attack.first_event
        if attack.cls == "replay_after_logout":
            logout = next(e for e in events if e.type is EventType.LOGOUT)
            assert all(e.time > logout.time for e in events if e.id in attack.events)


def _geo():
    geoip2fast = pytest.importorskip("geoip2fast")
    geolite2 = pytest.importorskip("geolite2")
    import os

    asn = geoip2fast.GeoIP2Fast(geoip2fast_data_file=os.path.join(
        os.path.dirname(geoip2fast.__file__), "geoip2fast-asn-ipv6.dat.gz"), verbose=False)
    return asn, geolite2.geolite2.reader()


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    import math

    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 6371 * 2 * math.asin(math.sqrt(a))


def test_home_blocks_map_to_their_network_and_metro():
    asn, city = _geo()
    for metro, pools in tables.HOME_POOLS.items():
        country, lat, lon = tables.METROS[metro]
        for network, prefixes in pools:
            for prefix in prefixes.split()[::3]:
                ip = f"{prefix}.77"
                assert asn.lookup(ip).asn_name == network, ip
                rec = city.get(ip)
                assert rec["country"]["iso_code"] == country, ip
                loc = rec["location"]
                assert _km(lat, lon, loc["latitude"], loc["longitude"]) < 100, (ip, metro)


@pytest.mark.parametrize("table", ["CARRIER_BLOCKS", "HOSTING_BLOCKS", "TOR_BLOCKS", "VPN_BLOCKS",
                                   "RESIDENTIAL_BLOCKS"])
def test_other_blocks_map_to_their_network_and_country(table):
    asn, city = _geo()
    for country, network, prefixes in getattr(tables, table):
        for prefix in prefixes.split():
            ip = f"{prefix}.200"
            assert asn.lookup(ip).asn_name == network, ip
            assert city.get(ip)["country"]["iso_code"] == country, ip


def test_v6_blocks_map_to_their_network():
    asn, _ = _geo()
    import random

    for metro, (network, block) in tables.HOME_V6.items():
        ip = nets.v6_host(random.Random(1), block)
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(block)
        assert asn.lookup(ip).asn_name == network, (metro, ip)
