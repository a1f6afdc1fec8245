"""Distance and implied speed between two located events, with GeoIP error taken into account."""

from __future__ import annotations

import math
from dataclasses import dataclass

EARTH_RADIUS_KM = 6371.0088


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True, slots=True)
class Travel:
    km: float            # great-circle distance between the two points
    tolerance_km: float  # both accuracy radii: the points may be this much closer
    effective_km: float  # km - tolerance, at least 0
    hours: float         # elapsed event time, at least `min_hours`
    kmh: float           # effective_km / hours


def travel(
    lat1: float, lon1: float, acc1: float,
    lat2: float, lon2: float, acc2: float,
    elapsed_s: float,
    min_elapsed_s: float = 60.0,
) -> Travel:
    """The least speed that explains moving between two uncertain points in `elapsed_s`.

    `min_elapsed_s` keeps two requests in the same second from implying infinite speed: it
    bounds how precise event times are across apps and proxies.
    """
    km = distance_km(lat1, lon1, lat2, lon2)
    tolerance = max(acc1, 0.0) + max(acc2, 0.0)
    effective = max(km - tolerance, 0.0)
    hours = max(elapsed_s, min_elapsed_s) / 3600.0
    return Travel(km=km, tolerance_km=tolerance, effective_km=effective, hours=hours,
                  kmh=effective / hours)
