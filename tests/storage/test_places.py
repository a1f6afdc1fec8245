"""storage/places.py: addresses located with the bundled GeoLite2 City file, distances, speeds."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from storage import places


def timeline(*rows: tuple[str, str, str]) -> pd.DataFrame:
    """(kind, time, ip) rows as storage.queries.session_timeline returns them (the columns used)."""
    return pd.DataFrame({"kind": [k for k, _, _ in rows],
                         "time": pd.to_datetime([t for _, t, _ in rows], utc=True),
                         "ip": [ip for _, _, ip in rows], "country": ["" for _ in rows]})


def test_locate_knows_public_addresses_and_never_puts_others_at_0_0() -> None:
    found = places.locate(["73.162.10.20", "10.0.0.1", "127.0.0.1", "2001:db8::1", "not an ip",
                           "73.162.10.20"]).set_index("ip")
    assert len(found) == 5  # one row per distinct address
    home = found.loc["73.162.10.20"]
    assert (home["city"], home["country"]) == ("Saratoga", "US")
    assert home["lat"] == pytest.approx(37.25, abs=0.1) and home["lon"] == pytest.approx(-122.06, abs=0.1)
    for ip in ("10.0.0.1", "127.0.0.1", "2001:db8::1", "not an ip"):
        assert math.isnan(found.loc[ip, "lat"]) and math.isnan(found.loc[ip, "lon"]), ip
        assert found.loc[ip, "city"] == ""


def test_session_places_measures_the_move_from_home_to_a_datacenter() -> None:
    tl = timeline(("event", "2029-11-08T08:00:00Z", "73.162.10.20"),
                  ("event", "2029-11-08T08:00:30Z", "10.1.2.3"),       # behind a VPN: no place
                  ("finding", "2029-11-08T08:01:00Z", "167.99.10.10"),  # not an event: left out
                  ("event", "2029-11-08T08:01:00Z", "167.99.10.10"),
                  ("event", "2029-11-08T09:01:00Z", "167.99.10.10"))
    got = places.session_places(tl)
    assert list(got.columns) == places.PLACE_COLUMNS
    assert list(got["ip"]) == ["73.162.10.20", "10.1.2.3", "167.99.10.10", "167.99.10.10"]
    assert math.isnan(got["lat"].iloc[1]) and math.isnan(got["km_from_first"].iloc[1])
    # Saratoga CA -> North Bergen NJ: about 4,100 km, in one minute.
    assert got["km_from_first"].iloc[0] == 0.0
    assert got["km_from_previous"].iloc[2] == pytest.approx(4_117, rel=0.01)
    assert got["speed_kmh"].iloc[2] == pytest.approx(4_117 * 60, rel=0.01)
    assert got["km_from_previous"].iloc[3] == 0.0 and got["speed_kmh"].iloc[3] == 0.0
    assert got["km_from_first"].iloc[3] == pytest.approx(got["km_from_first"].iloc[2])


def test_session_places_of_an_empty_or_unlocated_timeline() -> None:
    assert places.session_places(pd.DataFrame()).empty
    got = places.session_places(timeline(("event", "2029-11-08T08:00:00Z", "192.168.1.2")))
    assert len(got) == 1 and got[["lat", "lon", "km_from_first"]].isna().all(axis=None)


def test_distance_matches_the_stream_detectors() -> None:
    from streams.geo import distance_km

    assert places.distance_km(37.25, -122.06, 40.79, -74.02) == pytest.approx(
        distance_km(37.25, -122.06, 40.79, -74.02))
