"""Where a session's addresses are, for its map: latitude, longitude, city and country per
address from a GeoLite2 City database, and how far and how fast the session moved.

Offline: the database `maxminddb-geolite2` ships (July 2018: old, so places are approximate)
unless a current mmdb file is given. Private, reserved and unknown addresses get NaN, never 0,0
(a point off the coast of Africa that is no place at all).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from storage.clickhouse.frames import STRING_DTYPE

EARTH_RADIUS_KM = 6371.0088  # the mean radius, as streams/geo.py uses
PLACE_COLUMNS = ["time", "ip", "lat", "lon", "accuracy_km", "city", "country", "km_from_first",
                 "km_from_previous", "speed_kmh"]


def bundled_city_db() -> str:
    """The path of the GeoLite2 City database the `maxminddb-geolite2` package ships."""
    from geolite2 import geolite2

    path: str = geolite2.filename  # type: ignore[attr-defined]
    return path


@lru_cache(maxsize=4)
def _reader(path: str) -> Any:
    # One reader per file per process: opening maps the file, lookups are thread-safe.
    import maxminddb

    return maxminddb.open_database(path)


def locate(ips: Iterable[str], city_db: str | None = None) -> pd.DataFrame:
    """One row per distinct address (in first-seen order): ip, lat, lon, accuracy_km, city,
    country. NaN / '' where the address is private, reserved, unparseable or not in the file."""
    reader = _reader(city_db or bundled_city_db())
    rows = []
    for ip in dict.fromkeys(str(i) for i in ips):
        rows.append({"ip": ip, **_lookup(reader, ip)})
    frame = pd.DataFrame(rows, columns=["ip", "lat", "lon", "accuracy_km", "city", "country"])
    for c in ("lat", "lon", "accuracy_km"):
        frame[c] = frame[c].astype("float64")
    for c in ("ip", "city", "country"):
        frame[c] = frame[c].astype(STRING_DTYPE)
    return frame


def _lookup(reader: Any, ip: str) -> dict[str, Any]:
    nowhere = {"lat": math.nan, "lon": math.nan, "accuracy_km": math.nan, "city": "", "country": ""}
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return nowhere
    if not addr.is_global:  # private, loopback, documentation ranges...: no place on a map
        return nowhere
    rec = reader.get(str(addr)) or {}
    loc = rec.get("location") or {}
    country = (rec.get("country") or rec.get("registered_country") or {}).get("iso_code") or ""
    city = ((rec.get("city") or {}).get("names") or {}).get("en") or ""
    if loc.get("latitude") is None or loc.get("longitude") is None:
        return {**nowhere, "country": country}
    return {"lat": float(loc["latitude"]), "lon": float(loc["longitude"]),
            "accuracy_km": float(loc.get("accuracy_radius") or math.nan), "city": city,
            "country": country}


def distance_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Any:
    """Great-circle (haversine) distance, element-wise; NaN in, NaN out."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(a)))


def session_places(timeline: pd.DataFrame, city_db: str | None = None) -> pd.DataFrame:
    """The places of a session's events (`storage.queries.session_timeline`), in time order:
    time, ip, lat, lon, accuracy_km, city, country, km_from_first (from the first located
    event), km_from_previous and speed_kmh (from the previous located event; NaN for the first,
    and speed NaN when no time passed). Findings and revocations are left out; so are events
    without an address. An event whose address has no place keeps its row, with NaN, so the
    count of events still adds up; distances skip it."""
    if timeline.empty or "ip" not in timeline:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in PLACE_COLUMNS})
    events = timeline[(timeline["kind"] == "event") & timeline["ip"].notna()
                      & (timeline["ip"].astype(str) != "")].reset_index(drop=True)
    places = events[["time"]].assign(ip=events["ip"].astype(STRING_DTYPE))
    places = places.merge(locate(places["ip"], city_db), on="ip", how="left")
    if "country" in events:
        # The archiver's own enrichment (at the time of the event) where the file knows none.
        archived = events["country"].fillna("").astype(STRING_DTYPE)
        places["country"] = places["country"].where(places["country"] != "", archived)
    located = places["lat"].notna()
    first = places[located].head(1)
    places["km_from_first"] = np.nan
    places["km_from_previous"] = np.nan
    places["speed_kmh"] = np.nan
    if not first.empty:
        lat0, lon0 = float(first["lat"].iloc[0]), float(first["lon"].iloc[0])
        places.loc[located, "km_from_first"] = distance_km(
            lat0, lon0, places.loc[located, "lat"], places.loc[located, "lon"])
        prev = places[located].shift(1)
        step = distance_km(prev["lat"], prev["lon"], places.loc[located, "lat"],
                           places.loc[located, "lon"])
        hours = (places.loc[located, "time"] - prev["time"]).dt.total_seconds() / 3600.0
        places.loc[located, "km_from_previous"] = step
        places.loc[located, "speed_kmh"] = np.where(hours > 0, step / hours.where(hours > 0, 1.0),
                                                    np.nan)
    return places[PLACE_COLUMNS]
