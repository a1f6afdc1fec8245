"""Per-user state: logins and credential changes as they arrive, and the in-order view.

Lives in the user stage's store (keyed tenant + user, changelogged by Quix Streams). Two parts:
- what is decided on arrival (streams/user_pipeline.py): `logins` and `changes`, kept sorted by
  event time whatever order they came in, so a credential change ends every session that logged
  in before it - even one whose login arrives after the change - and a login is compared with
  every earlier login, however late either arrives;
- what is decided in event-time order once final (streams/event_clock.py): `pending` holds
  events still within the allowed lateness; `sessions` and `failures` are the in-order view
  the concurrency and brute-force detectors read.
Bounded: capped lists, pruned on event time, so a user attacked from a million addresses costs a
few KB.
"""

from __future__ import annotations

import bisect

import msgspec

from models.features import UserProfile

MAX_SESSIONS = 32       # live sessions remembered per user (the oldest go first)
MAX_FAILURES = 64       # recent failed logins remembered per user
MAX_LOGINS = 32         # logins remembered for credential changes and travel (by event time)
MAX_CHANGES = 8         # credential changes remembered
MAX_PENDING = 256       # events waiting for the allowed lateness; beyond, the oldest go early
RECENT_IDS = 64         # ids of arrived events and notes (redeliveries are dropped)


class UserSession(msgspec.Struct, kw_only=True):
    session: str
    authenticated_at: float
    last_seen: float
    ip: str


class LoginRecord(msgspec.Struct, kw_only=True):
    """One login (session.authenticated) as the arrival-time detectors need it."""

    at: float
    event_id: str
    session: str | None
    ip: str
    lat: float | None = None
    lon: float | None = None
    accuracy_km: float | None = None
    country: str | None = None
    city: str | None = None
    kind: str | None = None          # network kind: hosting / vpn / tor / mobile / None
    # The highest severity the on-arrival login detectors reported for it ("low", "high"...).
    reported: str | None = None


class Change(msgspec.Struct, kw_only=True):
    """One credential.changed."""

    at: float
    event_id: str
    session: str | None              # the session it was made from, if any
    ip: str
    credential: str = "credential"


class Failure(msgspec.Struct, array_like=True):
    at: float
    source: str                    # the /24 or /64 the attempt came from


class Pending(msgspec.Struct, array_like=True):
    """An event (or a session-revocation note) waiting until it is final."""

    at: float
    id: str
    raw: bytes


class UserState(msgspec.Struct, kw_only=True):
    tenant: str
    user: str
    # -- decided on arrival
    logins: list[LoginRecord] = msgspec.field(default_factory=list)
    changes: list[Change] = msgspec.field(default_factory=list)
    recent_ids: list[str] = msgspec.field(default_factory=list)
    # -- decided in event-time order
    pending: list[Pending] = msgspec.field(default_factory=list)
    sessions: list[UserSession] = msgspec.field(default_factory=list)
    failures: list[Failure] = msgspec.field(default_factory=list)
    flagged: dict[str, float] = msgspec.field(default_factory=dict)
    # The newest event time seen for this user (arrival) - for expiry.
    last_seen: float = 0.0
    # -- the learned score (models/features.py): the user's history, and the highest severity
    # reported per session (session -> rank), oldest first
    profile: UserProfile | None = None
    anomaly_reported: dict[str, int] = msgspec.field(default_factory=dict)

    def note_anomaly(self, session: str, rank: int) -> None:
        self.anomaly_reported.pop(session, None)
        self.anomaly_reported[session] = rank
        while len(self.anomaly_reported) > MAX_SESSIONS:
            del self.anomaly_reported[next(iter(self.anomaly_reported))]

    def live_sessions(self, now: float, idle_s: float, lifetime_s: float) -> list[UserSession]:
        """Sessions seen within `idle_s` and authenticated within `lifetime_s` of `now`."""
        return [s for s in self.sessions
                if now - s.last_seen <= idle_s and now - s.authenticated_at <= lifetime_s]

    def add_login(self, login: LoginRecord) -> None:
        _insort(self.logins, login, MAX_LOGINS)

    def add_change(self, change: Change) -> None:
        _insort(self.changes, change, MAX_CHANGES)

    def add_pending(self, item: Pending) -> Pending | None:
        """Keep `item` in event-time order; returns the oldest one if over the cap (it must go
        through now, ahead of its lateness)."""
        bisect.insort(self.pending, item, key=lambda p: (p.at, p.id))
        if len(self.pending) > MAX_PENDING:
            return self.pending.pop(0)
        return None

    def take_final(self, before: float) -> list[Pending]:
        """Remove and return the pending events older than `before`, in order."""
        n = 0
        for p in self.pending:
            if p.at >= before:
                break
            n += 1
        taken, self.pending = self.pending[:n], self.pending[n:]
        return taken

    @property
    def next_due(self) -> float | None:
        return self.pending[0].at if self.pending else None


def _insort(items: list, item: msgspec.Struct, cap: int) -> None:
    """Insert by (at, event_id); drop the oldest beyond `cap`."""
    bisect.insort(items, item, key=lambda x: (x.at, x.event_id))
    if len(items) > cap:
        del items[0]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(UserState)


def dump_user(state: UserState) -> bytes:
    return _encoder.encode(state)


def load_user(raw: bytes) -> UserState:
    return _decoder.decode(raw)
