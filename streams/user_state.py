"""Per-user state: the user's live sessions, last login and recent failed logins.

Lives in the faust table "users" (keyed tenant + user, changelogged like the session table) and is
fed by the user agent from the `<app_id>-by-user` repartition topic. Bounded: capped lists,
pruned on event time, so a user attacked from a million addresses still costs a few KB.
"""

from __future__ import annotations

import msgspec

MAX_SESSIONS = 32       # live sessions remembered per user (the oldest go first)
MAX_FAILURES = 64       # recent failed logins remembered per user
RECENT_IDS = 32


class UserSession(msgspec.Struct, kw_only=True):
    session: str
    authenticated_at: float
    last_seen: float
    ip: str
    country: str | None = None


class Login(msgspec.Struct, kw_only=True):
    """Where and when the user last authenticated (for the cross-session travel check)."""

    at: float
    session: str | None
    ip: str
    lat: float | None = None
    lon: float | None = None
    accuracy_km: float | None = None
    country: str | None = None
    city: str | None = None
    kind: str | None = None        # network kind: hosting / vpn / tor / None


class Failure(msgspec.Struct, array_like=True):
    at: float
    source: str                    # the /24 or /64 the attempt came from


class UserState(msgspec.Struct, kw_only=True):
    tenant: str
    user: str
    sessions: list[UserSession] = msgspec.field(default_factory=list)
    last_login: Login | None = None
    failures: list[Failure] = msgspec.field(default_factory=list)
    credential_changed_at: float | None = None
    flagged: dict[str, float] = msgspec.field(default_factory=dict)
    recent_ids: list[str] = msgspec.field(default_factory=list)
    last_seen: float = 0.0
    persisted_at: float = 0.0
    partition: int = -1

    def live_sessions(self, now: float, idle_s: float, lifetime_s: float) -> list[UserSession]:
        """Sessions seen within `idle_s` and authenticated within `lifetime_s` of `now`."""
        return [s for s in self.sessions
                if now - s.last_seen <= idle_s and now - s.authenticated_at <= lifetime_s]

    def material(self) -> tuple[object, ...]:
        return (tuple(s.session for s in self.sessions), self.last_login is not None
                and self.last_login.at, len(self.failures), self.credential_changed_at,
                len(self.flagged))


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(UserState)


def dump_user(state: UserState) -> bytes:
    return _encoder.encode(state)


def load_user(raw: bytes) -> UserState:
    return _decoder.decode(raw)
