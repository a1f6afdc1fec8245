"""Event factories for tests: `make_event(type=..., ip=...)` with contract-valid defaults."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/130.0.0.0 Safari/537.36")
CHROME_NEXT = CHROME.replace("Chrome/130", "Chrome/131")
CURL = "curl/8.5.0"
COMCAST = "73.162.10.20"       # home ISP, US
COMCAST_OTHER = "73.162.11.5"  # same ISP and city, another /24 (ISP rotation)
TMOBILE = "172.56.20.30"       # US mobile carrier
DIGITALOCEAN = "167.99.10.10"  # hosting: where a replayed cookie comes from


def make_event(
    type: str = "session.activity",
    *,
    session: str | None = "s-default",
    user: str | None = "alice",
    ip: str = COMCAST,
    user_agent: str | None = CHROME,
    at: float = 0.0,
    tenant: str = "default",
    id: str | None = None,
    t0: datetime = T0,
    **extra: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema": "sessionwatch.event/1",
        "id": id or str(uuid.uuid4()),
        "type": type,
        "time": (t0 + timedelta(seconds=at)).isoformat().replace("+00:00", "Z"),
        "tenant": tenant,
        "ip": ip,
    }
    for name, value in (("session", session), ("user", user), ("user_agent", user_agent)):
        if value is not None:
            event[name] = value
    event.update(extra)
    return event
