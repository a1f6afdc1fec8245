"""Focused tests of the session detectors beyond their examples: threshold boundaries, overrides,
tolerance, in-flight requests, and the examples again with their `params` and per-session state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from producers.contract import Severity
from streams.detectors import Example, SessionDetector, Step
from streams.detectors.fixation import Fixation
from streams.detectors.impossible_travel import ImpossibleTravel
from streams.detectors.ip_change import IpChange
from streams.detectors.replay_after_end import ReplayAfterEnd
from streams.detectors.timeouts import Timeouts
from streams.detectors.ua_change import UaChange
from streams.geo import distance_km as haversine_km
from streams.pipeline import SessionPipeline
from streams.policy import DetectorRule, Policy, TenantPolicy

DECIDED_AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
SARATOGA, SARATOGA_SAME_24 = "73.162.10.20", "73.162.10.99"
LONDON = "81.2.69.142"
DATACENTER_NJ = "167.99.1.1"
VPN_PRAGUE = "89.187.160.1"
TMOBILE = "172.56.20.30"
V6_HOME, V6_SAME_64 = "2001:4860:4860::8888", "2001:4860:4860::1234"
LOGIN, LOGOUT, CREATED = "session.authenticated", "session.logout", "session.created"
MINE = (ImpossibleTravel, ReplayAfterEnd, Timeouts, Fixation)


def outcomes(enricher, detectors: list[SessionDetector], steps: tuple[Step, ...],
             params: dict[str, dict[str, Any]] | None = None, monitor_only: bool = False) -> list:
    """Run steps through the real pipeline, keeping one state per session as the store does."""
    rules = {d: DetectorRule(params=p) for d, p in (params or {}).items()}
    policy = Policy(default=TenantPolicy(detectors=rules, monitor_only=monitor_only))
    pipeline = SessionPipeline(enricher, policy, detectors)
    states: dict[str | None, Any] = {}
    out = []
    for event in Example("t", steps, fires=False).events():
        outcome = pipeline.process(event, states.get(event.session), DECIDED_AT)
        states[event.session] = outcome.state
        out.append(outcome)
    return out


def last_finding(enricher, detector: type[SessionDetector], *steps: Step, **params: Any):
    out = outcomes(enricher, [detector()], steps, {detector.id: params} if params else None)
    mine = [f for f in out[-1].findings if f.detector == detector.id]
    return mine[0] if mine else None


def geo(lat: float, lon: float, accuracy_km: float = 0.0) -> dict[str, Any]:
    return {"geo": {"lat": lat, "lon": lon, "accuracy_km": accuracy_km}}


CASES = [(d, e) for d in MINE for e in d.examples]


@pytest.mark.parametrize(("detector", "example"), CASES, ids=[f"{d.id}:{e.name}" for d, e in CASES])
def test_examples_with_their_params_and_sessions(enricher, detector, example: Example):
    """The examples again, with `Example.params` applied and state kept per session."""
    out = outcomes(enricher, [detector()], example.steps,
                   {detector.id: example.params} if example.params else None)
    mine = [f for f in out[-1].findings if f.detector == detector.id]
    assert bool(mine) == example.fires, mine
    if example.fires and example.severity is not None:
        assert mine[0].severity is example.severity


@pytest.mark.parametrize("detector", MINE, ids=lambda d: d.id)
def test_params_defaults_are_frozen_and_overridable(detector):
    defaults = detector.Params()
    with pytest.raises(AttributeError):
        defaults.__setattr__(next(iter(vars(defaults))), 0)
    name = next(iter(vars(defaults)))
    assert getattr(detector.params(**{name: 1.0}), name) == 1.0


# --- session.impossible_travel -----------------------------------------------------------------

A, B = (10.0, 20.0), (10.0, 25.0)  # ~547 km apart on the same parallel
A_TO_B_KM = haversine_km(*A, *B)


def test_speed_exactly_at_the_limit_does_not_fire_and_just_above_does(enricher):
    steps = (Step(0, SARATOGA, CHROME, attrs=geo(*A)), Step(3600, SARATOGA, CHROME, attrs=geo(*B)))
    assert last_finding(enricher, ImpossibleTravel, *steps, max_speed_kmh=A_TO_B_KM) is None
    found = last_finding(enricher, ImpossibleTravel, *steps, max_speed_kmh=A_TO_B_KM - 0.01)
    assert found is not None and found.evidence["kmh"] == round(A_TO_B_KM)


def test_short_hop_boundary_is_measured_after_the_tolerance(enricher):
    steps = (Step(0, SARATOGA, CHROME, attrs=geo(*A, 100)),
             Step(60, SARATOGA, CHROME, attrs=geo(*B, 100)))
    gap = A_TO_B_KM - 200
    assert last_finding(enricher, ImpossibleTravel, *steps, min_distance_km=gap) is not None
    assert last_finding(enricher, ImpossibleTravel, *steps, min_distance_km=gap + 0.01) is None


def test_accuracy_radii_absorb_the_distance(enricher):
    wide = (Step(0, SARATOGA, CHROME, attrs=geo(*A, 300)),
            Step(60, SARATOGA, CHROME, attrs=geo(*B, 300)))
    assert last_finding(enricher, ImpossibleTravel, *wide) is None
    narrow = (Step(0, SARATOGA, CHROME, attrs=geo(*A, 5)),
              Step(60, SARATOGA, CHROME, attrs=geo(*B, 5)))
    found = last_finding(enricher, ImpossibleTravel, *narrow)
    assert found is not None and found.evidence["tolerance_km"] == 10


def test_same_second_speed_uses_the_elapsed_floor(enricher):
    steps = (Step(0, SARATOGA, CHROME, attrs=geo(*A)), Step(0, SARATOGA, CHROME, attrs=geo(*B)))
    found = last_finding(enricher, ImpossibleTravel, *steps)
    assert found is not None and found.severity is Severity.HIGH
    assert found.evidence["kmh"] == round(A_TO_B_KM * 60)  # over 60 s, not 0 s
    assert found.evidence["minutes"] == 0.0


def test_late_delivered_event_is_judged_on_the_absolute_gap(enricher):
    steps = (Step(3600, SARATOGA, CHROME), Step(1800, LONDON, CHROME))
    found = last_finding(enricher, ImpossibleTravel, *steps)
    assert found is not None and found.evidence["minutes"] == 30.0


def test_app_geo_locates_a_coarse_carrier_address(enricher):
    coarse = (Step(0, SARATOGA, CHROME), Step(600, TMOBILE, CHROME))
    assert last_finding(enricher, ImpossibleTravel, *coarse) is None
    located = (Step(0, SARATOGA, CHROME), Step(600, TMOBILE, CHROME, attrs=geo(40.71, -74.0, 2)))
    found = last_finding(enricher, ImpossibleTravel, *located)
    assert found is not None and found.evidence["to_location_source"] == "app"


def test_app_geo_on_a_vpn_is_not_downgraded(enricher):
    steps = (Step(0, SARATOGA, CHROME), Step(1800, VPN_PRAGUE, CHROME, attrs=geo(48.86, 2.35, 5)))
    assert last_finding(enricher, ImpossibleTravel, *steps).severity is Severity.HIGH
    assert last_finding(enricher, ImpossibleTravel, steps[0],
                        Step(1800, VPN_PRAGUE, CHROME)).severity is Severity.LOW


def test_a_city_less_geoip_point_counts_a_500_km_radius(enricher):
    # Hetzner FI geolocates to Helsinki without a city, radius 200 km: 400 km away is inside 500.
    helsinki = (60.1708, 24.9375)
    start = (helsinki[0] - 400 / 111.2, helsinki[1])
    steps = (Step(0, SARATOGA, CHROME, attrs=geo(*start)), Step(60, "95.216.1.1", CHROME))
    assert last_finding(enricher, ImpossibleTravel, *steps) is None
    far = (helsinki[0] - 700 / 111.2, helsinki[1])
    found = last_finding(enricher, ImpossibleTravel, Step(0, SARATOGA, CHROME, attrs=geo(*far)),
                         steps[1])
    assert found is not None and found.evidence["tolerance_km"] == 500


def test_domestic_move_to_a_datacenter_stays_high(enricher):
    steps = (Step(0, SARATOGA, CHROME), Step(600, DATACENTER_NJ, CHROME))
    assert last_finding(enricher, ImpossibleTravel, *steps).severity is Severity.HIGH
    handoff = (Step(0, SARATOGA, CHROME), Step(600, "172.56.35.75", CHROME))
    assert last_finding(enricher, ImpossibleTravel, *handoff).severity is Severity.LOW


def test_known_network_is_low_unless_the_app_located_the_device(enricher):
    back = (Step(0, SARATOGA, CHROME), Step(600, LONDON, CHROME), Step(1200, SARATOGA, CHROME))
    out = outcomes(enricher, [ImpossibleTravel()], back, monitor_only=True)  # not revoked at London
    assert [f.severity for o in out for f in o.findings] == [Severity.HIGH, Severity.LOW]
    gps = (Step(0, SARATOGA, CHROME), Step(600, SARATOGA, CHROME, attrs=geo(48.86, 2.35, 5)))
    assert last_finding(enricher, ImpossibleTravel, *gps).severity is Severity.HIGH


def test_invalid_app_geo_falls_back_to_geoip(enricher):
    steps = (Step(0, SARATOGA, CHROME),
             Step(60, SARATOGA_SAME_24, CHROME, attrs={"geo": {"lat": 123, "lon": 2}}))
    assert last_finding(enricher, ImpossibleTravel, *steps) is None


def test_coarse_event_keeps_the_last_precise_point(enricher):
    steps = (Step(0, SARATOGA, CHROME), Step(300, TMOBILE, CHROME), Step(1200, LONDON, CHROME))
    found = last_finding(enricher, ImpossibleTravel, *steps)
    assert found is not None and found.evidence["minutes"] == 20.0
    assert found.evidence["from_country"] is None  # the stored point is not the last network's


def test_tenant_raises_the_speed_limit(enricher):
    steps = (Step(0, SARATOGA, CHROME), Step(1800, LONDON, CHROME))
    assert last_finding(enricher, ImpossibleTravel, *steps) is not None
    assert last_finding(enricher, ImpossibleTravel, *steps, max_speed_kmh=20000) is None


def test_travel_evidence_is_rounded_and_explains_itself(enricher):
    steps = (Step(0, SARATOGA, CHROME), Step(1800, LONDON, CHROME, attrs=geo(51.50735, -0.12776)))
    found = last_finding(enricher, ImpossibleTravel, *steps)
    assert found.evidence["to_point"] == [51.5, -0.1]
    assert {"km", "minutes", "kmh", "tolerance_km", "to_country", "from_country"} <= set(
        found.evidence)
    assert found.evidence["from_country"] == "US"
    assert "km/h" in found.summary


# --- session.replay_after_end --------------------------------------------------------------------

def _after_logout(*steps: Step) -> tuple[Step, ...]:
    return (Step(0, SARATOGA, CHROME), Step(60, SARATOGA, CHROME, type=LOGOUT), *steps)


@pytest.mark.parametrize(("at", "fires"), [(70, False), (70.5, True)])
def test_in_flight_window_boundary(enricher, at, fires):
    steps = _after_logout(Step(at, SARATOGA, CHROME))
    assert (last_finding(enricher, ReplayAfterEnd, *steps) is not None) is fires


def test_in_flight_needs_the_same_client(enricher):
    assert last_finding(enricher, ReplayAfterEnd, *_after_logout(Step(61, SARATOGA, FIREFOX)))
    assert last_finding(enricher, ReplayAfterEnd, *_after_logout(Step(61, SARATOGA, None)))


def test_in_flight_from_the_same_ipv6_64(enricher):
    steps = (Step(0, V6_HOME, CHROME), Step(60, V6_HOME, CHROME, type=LOGOUT),
             Step(62, V6_SAME_64, CHROME))
    assert last_finding(enricher, ReplayAfterEnd, *steps) is None


def test_request_stamped_before_the_logout_and_delivered_late(enricher):
    steps = _after_logout(Step(59, DATACENTER_NJ, "curl/8.5.0"))
    assert last_finding(enricher, ReplayAfterEnd, *steps) is None


def test_tenant_without_in_flight_allowance(enricher):
    steps = _after_logout(Step(61, SARATOGA_SAME_24, CHROME))
    assert last_finding(enricher, ReplayAfterEnd, *steps) is None
    assert last_finding(enricher, ReplayAfterEnd, *steps, in_flight_s=0) is not None


def test_replay_after_logout_is_revoked_by_the_default_policy(enricher):
    out = outcomes(enricher, [ReplayAfterEnd()], _after_logout(Step(600, LONDON, CHROME)))
    assert out[-1].revocation is not None
    assert [r.detector for r in out[-1].revocation.reasons] == ["session.replay_after_end"]
    assert out[-1].state.revocation == out[-1].revocation.id


def test_credential_change_on_a_dead_session_is_a_replay(enricher):
    steps = _after_logout(Step(600, SARATOGA, CHROME, type="credential.changed"))
    assert last_finding(enricher, ReplayAfterEnd, *steps).severity is Severity.HIGH


def test_expired_again_is_not_a_replay(enricher):
    steps = _after_logout(Step(600, SARATOGA, CHROME, type="session.expired"))
    assert last_finding(enricher, ReplayAfterEnd, *steps) is None


def test_revoked_live_session_grace_then_replay(enricher):
    """A session revoked by other detectors: its requests inside the grace are in flight."""
    detectors = [IpChange(), UaChange(), ReplayAfterEnd()]
    attack = (Step(0, SARATOGA, CHROME), Step(60, DATACENTER_NJ, "curl/8.5.0"))
    out = outcomes(enricher, detectors, (*attack, Step(80, DATACENTER_NJ, "curl/8.5.0")))
    assert out[1].revocation is not None and out[1].state.end_reason == "revoked"
    assert out[2].findings == []
    out = outcomes(enricher, detectors, (*attack, Step(300, DATACENTER_NJ, "curl/8.5.0")))
    (finding,) = out[2].findings
    assert finding.detector == "session.replay_after_end"
    assert finding.evidence["end_reason"] == "revoked" and finding.evidence["revoked"] is True
    assert out[2].revocations == []  # one revocation per session


def test_replay_evidence_has_no_user_agent_string(enricher):
    long_ua = CHROME + " x" * 400
    found = last_finding(enricher, ReplayAfterEnd, *_after_logout(Step(600, LONDON, long_ua)))
    assert all(long_ua[:100] not in str(v) for v in found.evidence.values())


# --- session.timeouts ----------------------------------------------------------------------------

@pytest.mark.parametrize(("gap", "fires"), [(1800, False), (1800.5, True)])
def test_idle_boundary(enricher, gap, fires):
    steps = (Step(0, SARATOGA, CHROME, type=LOGIN), Step(gap, SARATOGA, CHROME))
    found = last_finding(enricher, Timeouts, *steps)
    assert (found is not None) is fires
    if fires:
        assert found.evidence["idle_exceeded"] and not found.evidence["absolute_exceeded"]


def _busy(until: float, login_at: tuple[float, ...] = (0,)) -> tuple[Step, ...]:
    times = sorted({*login_at, *range(0, int(until), 1500), until})
    return tuple(Step(t, SARATOGA, CHROME, type=LOGIN if t in login_at else "session.activity")
                 for t in times)


@pytest.mark.parametrize(("until", "fires"), [(43200, False), (43201, True)])
def test_absolute_boundary(enricher, until, fires):
    assert (last_finding(enricher, Timeouts, *_busy(until)) is not None) is fires


def test_absolute_lifetime_restarts_at_re_authentication(enricher):
    assert last_finding(enricher, Timeouts, *_busy(13 * 3600, login_at=(0, 39000))) is None


def test_level_3_tenant_idle_limit(enricher):
    steps = (Step(0, SARATOGA, CHROME, type=LOGIN), Step(1200, SARATOGA, CHROME))
    assert last_finding(enricher, Timeouts, *steps) is None
    found = last_finding(enricher, Timeouts, *steps, idle_s=900)
    assert found is not None and found.evidence["idle_limit_minutes"] == 15.0


def test_late_delivered_event_is_not_idle(enricher):
    steps = (Step(0, SARATOGA, CHROME, type=LOGIN), Step(3000, SARATOGA, CHROME),
             Step(1000, SARATOGA, CHROME))
    out = outcomes(enricher, [Timeouts()], steps)
    assert out[1].findings and not out[2].findings


def test_both_limits_reported_together(enricher):
    steps = (Step(0, SARATOGA, CHROME, type=LOGIN), Step(13 * 3600, SARATOGA, CHROME))
    found = last_finding(enricher, Timeouts, *steps)
    assert found.evidence["idle_exceeded"] and found.evidence["absolute_exceeded"]
    assert "idle" in found.summary and "limit 12 h" in found.summary


def test_timeouts_do_not_judge_ended_sessions(enricher):
    steps = (Step(0, SARATOGA, CHROME, type=LOGIN), Step(60, SARATOGA, CHROME, type=LOGOUT),
             Step(7200, SARATOGA, CHROME))
    out = outcomes(enricher, [Timeouts(), ReplayAfterEnd()], steps)
    assert [f.detector for f in out[-1].findings] == ["session.replay_after_end"]


# --- session.fixation ----------------------------------------------------------------------------

def test_rotated_login_in_its_own_session_never_fires(enricher):
    steps = (Step(0, DATACENTER_NJ, "curl/8.5.0", type=CREATED, user=None, session="pre"),
             Step(600, SARATOGA, CHROME, type=LOGIN, attrs={"previous_session": "pre"}))
    assert last_finding(enricher, Fixation, *steps) is None


def test_previous_session_naming_itself_is_no_rotation(enricher):
    steps = (Step(0, SARATOGA, CHROME, type=CREATED, user=None),
             Step(60, SARATOGA, CHROME, type=LOGIN, attrs={"previous_session": "ex-session"}))
    assert last_finding(enricher, Fixation, *steps).severity is Severity.MEDIUM


@pytest.mark.parametrize(("at", "fires"), [(5, False), (5.5, True)])
def test_issuance_window_boundary(enricher, at, fires):
    steps = (Step(0, SARATOGA, CHROME, type=CREATED, user=None),
             Step(at, SARATOGA, CHROME, type=LOGIN))
    assert (last_finding(enricher, Fixation, *steps) is not None) is fires


def test_issuance_window_needs_the_same_origin(enricher):
    other_client = (Step(0, SARATOGA, "curl/8.5.0", type=CREATED, user=None),
                    Step(1, SARATOGA, CHROME, type=LOGIN))
    assert last_finding(enricher, Fixation, *other_client).severity is Severity.HIGH
    other_net = (Step(0, LONDON, CHROME, type=CREATED, user=None),
                 Step(1, SARATOGA, CHROME, type=LOGIN))
    assert last_finding(enricher, Fixation, *other_net).severity is Severity.HIGH


def test_same_asn_other_prefix_is_not_elsewhere(enricher):
    steps = (Step(0, SARATOGA, CHROME, type=CREATED, user=None),
             Step(120, "73.162.99.1", CHROME, type=LOGIN))
    assert last_finding(enricher, Fixation, *steps).severity is Severity.MEDIUM


def test_lan_subnets_are_not_elsewhere(enricher):
    steps = (Step(0, "10.0.0.5", CHROME, type=CREATED, user=None),
             Step(120, "10.0.1.5", CHROME, type=LOGIN))
    assert last_finding(enricher, Fixation, *steps).severity is Severity.MEDIUM


def test_unknown_client_at_login_is_not_another_client(enricher):
    steps = (Step(0, SARATOGA, CHROME, type=CREATED, user=None),
             Step(120, SARATOGA, None, type=LOGIN))
    assert last_finding(enricher, Fixation, *steps).severity is Severity.MEDIUM


def test_session_created_for_a_user_then_re_authenticated_is_low(enricher):
    steps = (Step(0, SARATOGA, CHROME, type=CREATED), Step(60, SARATOGA, CHROME),
             Step(900, SARATOGA, CHROME, type=LOGIN))
    assert last_finding(enricher, Fixation, *steps).severity is Severity.LOW


def test_pre_login_on_a_domestic_datacenter_is_planted(enricher):
    steps = (Step(0, DATACENTER_NJ, CHROME, type=CREATED, user=None),
             Step(600, SARATOGA, CHROME, type=LOGIN))
    assert last_finding(enricher, Fixation, *steps).severity is Severity.HIGH


def test_cellular_to_wifi_login_is_not_revoked(enricher):
    iphone = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1")
    steps = (Step(0, "172.56.35.75", iphone, type=CREATED, user=None),
             Step(40, SARATOGA, iphone, type=LOGIN))
    out = outcomes(enricher, [Fixation(), IpChange(), ImpossibleTravel()], steps)
    assert {f.detector: f.severity for f in out[-1].findings}["session.fixation"] is Severity.LOW
    assert out[-1].revocation is None


def test_planted_session_is_revoked_at_login(enricher):
    steps = (Step(0, DATACENTER_NJ, "curl/8.5.0", type=CREATED, user=None),
             Step(900, SARATOGA, CHROME, user=None), Step(960, SARATOGA, CHROME, type=LOGIN))
    out = outcomes(enricher, [Fixation()], steps)
    assert out[-1].revocation is not None
    assert out[-1].findings[0].evidence["earlier_networks"] == ["DIGITALOCEAN-ASN", "COMCAST-7922"]
