"""The traffic simulator: seeded determinism, consistent truth, no raw tokens, checked networks;
the blended attacks, benign look-alikes, history days and edge fingerprints."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta

import pytest

from producers.contract import EventType, decode_event, encode
from sessionwatch.simulation import (
    ATTACK_CLASSES,
    HISTORY_KIND,
    LOOKALIKE_KINDS,
    ORIGINAL_ATTACK_CLASSES,
    SENSITIVE_PATHS,
    START,
    simulate,
)
from sessionwatch.simulation import network_tables as tables
from sessionwatch.simulation import networks as nets
from sessionwatch.simulation.edge import JA4, client_family
from sessionwatch.simulation.truth import Truth
from streams.geo import distance_km


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


# -- blended attacks, benign look-alikes, history days, edge fingerprints ----------------------

NEW_CLASSES = ("replay_same_isp_interleaved", "replay_vpn_interleaved", "ato_sensitive_first")
INTERLEAVED = NEW_CLASSES[:2]
RICH = dict(users=60, seed=8, attacks_per_class=6, history_days=2, edge_fingerprints=0.4)


@pytest.fixture(scope="module")
def rich():
    return simulate(**RICH)


def _by_session(sim) -> dict[str, list]:
    out: dict[str, list] = {}
    for e in sim.events:
        if e.session:
            out.setdefault(e.session, []).append(e)
    return out


def _kind_of_hash(sim) -> dict[str, str]:
    return {h: b.kind for b in sim.truth.benign for h in b.hashes}


def test_new_parts_are_deterministic(rich):
    again = simulate(**RICH)
    assert [encode(e) for e in again.events] == [encode(e) for e in rich.events]
    assert again.truth.to_json() == rich.truth.to_json()


@pytest.mark.parametrize("extra", [{}, {"history_days": 2, "edge_fingerprints": 0.0}])
def test_original_traffic_unchanged_by_the_new_parts(sim, extra):
    """The original classes and population come out byte-identical with everything new added."""
    old = simulate(users=80, seed=5, attacks_per_class=3, classes=ORIGINAL_ATTACK_CLASSES,
                   lookalikes=False)
    new = simulate(users=80, seed=5, attacks_per_class=3, **extra) if extra else sim
    old_ids = {e.id for e in old.events}
    assert [encode(e) for e in new.events if e.id in old_ids] == [encode(e) for e in old.events]
    assert new.truth.attacks[:len(old.truth.attacks)] == old.truth.attacks
    assert {a.cls for a in new.truth.attacks[len(old.truth.attacks):]} == set(NEW_CLASSES)
    assert new.truth.benign[:len(old.truth.benign)] == old.truth.benign
    added = {b.kind for b in new.truth.benign[len(old.truth.benign):]}
    assert added == set(LOOKALIKE_KINDS) | {"ato_victim"} | ({HISTORY_KIND} if extra else set())


def test_new_requests_carry_path_and_status(rich):
    kinds = _kind_of_hash(rich)
    new_kinds = set(LOOKALIKE_KINDS) | {HISTORY_KIND, "ato_victim"}
    new_attacks = {a.id for a in rich.truth.attacks if a.cls in NEW_CLASSES}
    checked = 0
    for e in rich.events:
        if e.type is not EventType.ACTIVITY:
            continue
        if kinds.get(e.session) in new_kinds or rich.malicious.get(e.id) in new_attacks:
            assert isinstance(e.attrs["path"], str) and isinstance(e.attrs["status"], int), e
            checked += 1
    assert checked > 500


def test_interleaved_replays_alternate_with_the_victims_exact_ua(rich, enricher):
    sessions = _by_session(rich)
    attacks = [a for a in rich.truth.attacks if a.cls in INTERLEAVED]
    assert len(attacks) == 2 * RICH["attacks_per_class"]
    for attack in attacks:
        events = [e for e in sessions[attack.sessions[0]] if e.type is EventType.ACTIVITY]
        evil = [e.id in attack.events for e in events]
        assert sum(evil) >= 3 and not evil[0] and not evil[-1]
        pairs = zip(evil, evil[1:], strict=False)
        assert all(not (a and b) for a, b in pairs), "two attacker requests in a row"
        victim_ips = {e.ip for e, bad in zip(events, evil, strict=True) if not bad}
        attacker_ips = {e.ip for e, bad in zip(events, evil, strict=True) if bad}
        assert len(victim_ips) == 1 and len(attacker_ips) == 1 and victim_ips != attacker_ips
        assert len({e.user_agent for e in events}) == 1  # the victim's exact UA string
        victim = enricher.network(victim_ips.pop())
        attacker = enricher.network(attacker_ips.pop())
        if attack.cls == "replay_same_isp_interleaved":
            assert (attacker.asn, attacker.city, attacker.country) == \
                (victim.asn, victim.city, victim.country)
            assert attack.sources[0].rsplit(".", 1)[0] != events[0].ip.rsplit(".", 1)[0]
        else:
            assert attacker.kind == "vpn" and attacker.country == victim.country
        assert any(rich.malicious.get(e.id) == attack.id and e.attrs["path"] in SENSITIVE_PATHS
                   for e in events) or len(attack.events) < 4
        assert attack.catch == ["session", "user"]


def test_ato_logs_in_and_goes_to_sensitive_paths_first(rich, enricher):
    sessions = _by_session(rich)
    victims_home = {b.user: b for b in rich.truth.benign if b.kind == "ato_victim"}
    attacks = [a for a in rich.truth.attacks if a.cls == "ato_sensitive_first"]
    assert len(attacks) == RICH["attacks_per_class"]
    for attack in attacks:
        events = sessions[attack.sessions[0]]
        assert all(e.id in attack.events for e in events)
        auth = [e for e in events if e.type is EventType.AUTHENTICATED]
        assert auth and "previous_session" in auth[0].attrs  # rotated on login
        activity = [e for e in events if e.type is EventType.ACTIVITY]
        assert activity[0].attrs["path"] in SENSITIVE_PATHS
        assert activity[1].attrs["path"] in SENSITIVE_PATHS
        assert activity[-1].attrs["path"] not in SENSITIVE_PATHS
        source = enricher.network(activity[0].ip)
        home = enricher.network(next(iter(victims_home[attack.victims[0]].addresses)))
        # A home line (the enricher calls Reliance Jio's Mumbai home pool "mobile": Jio is both).
        assert nets.source_kind(activity[0].ip) == "home" and source.kind in (None, "mobile")
        assert source.country == home.country
        assert victims_home[attack.victims[0]].end + 1800 < attack.start  # ended well before


def test_lookalikes_present_with_their_kinds(rich):
    per = RICH["attacks_per_class"]
    counts: dict[str, int] = {}
    for b in rich.truth.benign:
        counts[b.kind] = counts.get(b.kind, 0) + 1
    two_sessions = {"two_devices_home", "household_shared"}
    for kind in LOOKALIKE_KINDS:
        assert counts.get(kind) == per * (2 if kind in two_sessions else 1), kind
    sessions = _by_session(rich)

    def spans(kind):
        by_user: dict[str, list] = {}
        for b in rich.truth.benign:
            if b.kind == kind:
                by_user.setdefault(b.user, []).append(b)
        return by_user

    for a, b in spans("two_devices_home").values():
        assert set(a.addresses) == set(b.addresses) and a.start < b.end and b.start < a.end
    for a, b in spans("household_shared").values():
        assert a.start < b.end and b.start < a.end
        uas = {e.user_agent for s in (a, b) for h in s.hashes for e in sessions.get(h, [])}
        assert len(uas - {None}) == 2  # (expiry events carry no UA)
    for b in rich.truth.benign:
        if b.kind == "tab_restore":
            times = sorted(e.time.timestamp() for e in sessions[b.session]
                           if e.type is EventType.ACTIVITY)
            assert any(times[i + 9] - times[i] <= 3.0 for i in range(len(times) - 9))
        if b.kind == "train_commute":
            events = [e for e in sessions[b.session] if e.type is EventType.ACTIVITY]
            assert len({e.ip for e in events}) >= 3
            last_seen: dict[str, float] = {}
            prev = None
            for e in events:
                t = e.time.timestamp()
                if e.ip != prev and e.ip in last_seen:
                    assert t - last_seen[e.ip] > 60, "A, B, A within a minute"
                last_seen[e.ip] = t
                prev = e.ip


def test_dhcp_far_geo_renewals_are_far_apart_in_geoip(rich, enricher):
    seen = 0
    for b in rich.truth.benign:
        if b.kind != "dhcp_far_geo":
            continue
        old, new = sorted(b.addresses, key=lambda ip: b.addresses[ip][0])
        a, c = enricher.network(old), enricher.network(new)
        assert a.asn == c.asn and a.city and c.city
        assert distance_km(a.lat, a.lon, c.lat, c.lon) > 100, (old, new)
        seen += 1
    assert seen == RICH["attacks_per_class"]


def test_dhcp_far_geo_table_and_pool_cities_hold_in_geoip(enricher):
    for metro, network, old, new in tables.DHCP_FAR_GEO:
        pools = dict(tables.HOME_POOLS[metro])
        assert set(old.split()) <= set(pools[network].split()), (metro, old)
        for p in old.split():
            for q in new.split():
                a, c = enricher.network(f"{p}.9"), enricher.network(f"{q}.250")
                assert a.asn == c.asn == network
                assert distance_km(a.lat, a.lon, c.lat, c.lon) > 100, (p, q)
    for metro, pools in tables.HOME_POOLS.items():
        for network, prefixes in pools:
            groups = tables.HOME_POOL_CITIES.get(metro, {"": prefixes})
            for prefix_group in groups.values():
                cities = {enricher.network(f"{p}.{h}").city for p in prefix_group.split()
                          for h in (3, 130, 252)}
                assert len(cities) == 1, (metro, network, cities)


def test_history_days_come_before_start_and_are_benign(rich):
    times = [e.time for e in rich.events]
    assert times == sorted(times)
    kinds = _kind_of_hash(rich)
    before = [e for e in rich.events if e.time < START]
    assert before and min(before, key=lambda e: e.time).time >= START - timedelta(days=2)
    assert not any(e.id in rich.malicious for e in before)
    assert all(kinds.get(e.session) == HISTORY_KIND for e in before if e.session)
    users_before = {e.user for e in before if e.user}
    victims = {v for a in rich.truth.attacks for v in a.victims}
    # Most victims have history; some are new to the app (NEW_USERS), as some users are.
    with_history = len(victims & users_before) / len(victims)
    assert 0.6 < with_history < 1.0, with_history
    for b in rich.truth.benign:  # the idle timeout holds for history sessions too
        if b.kind == HISTORY_KIND:
            assert b.end < START.timestamp() and b.addresses


def test_benign_sessions_of_the_rich_run_are_consistent(rich):
    test_benign_sessions_consistent(rich)
    test_benign_sessions_respect_idle_timeout(rich)
    test_every_attack_class_present_with_consistent_truth(rich)


def test_edge_fingerprints_on_the_requested_share_only(sim, rich):
    assert not any("tcp_rtt_ms" in e.attrs for e in sim.events)
    measured: dict[str, bool] = {}
    for e in rich.events:
        # Expiry is the app's own event; a rejected stale cookie names no live session.
        if e.session and e.type not in (EventType.EXPIRED, EventType.TOKEN_REJECTED):
            has = "tcp_rtt_ms" in e.attrs
            assert measured.setdefault(e.session, has) == has, "measured per session"
    created = [e for e in rich.events if e.type is EventType.CREATED]
    share = sum("tcp_rtt_ms" in e.attrs for e in created) / len(created)
    assert abs(share - RICH["edge_fingerprints"]) < 0.06, share
    kinds = {a.id: a.cls for a in rich.truth.attacks}
    proxied_interleaved = 0
    for e in rich.events:
        if "tcp_rtt_ms" not in e.attrs:
            continue
        tcp, tls, ja4 = e.attrs["tcp_rtt_ms"], e.attrs["tls_rtt_ms"], e.attrs["ja4"]
        assert tcp > 0 and tls > 0 and ja4 in JA4.values()
        attack = rich.malicious.get(e.id)
        proxied = attack is not None and nets.source_kind(e.ip) != "hosting"
        if proxied:
            assert 5 <= tcp <= 20 and 60 <= tls <= 250
            proxied_interleaved += kinds[attack] in INTERLEAVED
        else:
            assert 0 <= tls - tcp <= 5.0 + 1e-9, e
        if attack is None:
            assert ja4 == JA4[client_family(e.user_agent)]
    assert proxied_interleaved > 0
