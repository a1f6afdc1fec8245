"""Per-session state: what the detectors remember about a session between its events.

Kept small and bounded (lists are capped) because it lives in a faust table for the life of the
session. Times are epoch seconds of *event* time, never the wall clock, so a replay rebuilds the
same state.
"""

from __future__ import annotations

import msgspec

RECENT_IDS = 32          # event ids remembered per session to drop redeliveries
KNOWN_NETWORKS = 8       # networks (ASN or prefix) remembered per session


class SessionState(msgspec.Struct, kw_only=True):
    tenant: str
    session: str
    user: str | None = None
    created_at: float | None = None
    authenticated_at: float | None = None
    first_seen: float = 0.0
    last_seen: float = 0.0
    events: int = 0
    # The last request's origin and client.
    ip: str | None = None
    prefix: str | None = None
    asn: str | None = None
    country: str | None = None
    user_agent: str | None = None
    client_family: str | None = None
    client_os: str | None = None
    client_major: str | None = None
    client_is_tool: bool = False
    # True once the session has been used from a hosting network or a Tor exit.
    datacenter: bool = False
    # Bounded memory of where this session has been (most recent last).
    networks: list[str] = msgspec.field(default_factory=list)
    prefixes: list[str] = msgspec.field(default_factory=list)
    # The last usable location (GeoIP city or the app's attrs.geo) and when it was seen.
    lat: float | None = None
    lon: float | None = None
    accuracy_km: float | None = None
    located_at: float | None = None
    ended_at: float | None = None         # logout or expiry
    end_reason: str | None = None         # "logout", "expired" or "revoked"
    # Where the end came from: a request seconds later from here is in flight, not a replay.
    ended_ip: str | None = None
    ended_user_agent: str | None = None
    revocation: str | None = None         # id of the revocation that ended it, if any
    revoked_at: float | None = None
    # detector id -> event time of its last finding on this session (one finding per window).
    flagged: dict[str, float] = msgspec.field(default_factory=dict)
    recent_ids: list[str] = msgspec.field(default_factory=list)
    # Event time of the last activity forwarded to the user agent (a heartbeat, see routing.py).
    user_synced_at: float | None = None
    # ... and to the source agent, with the prefix it came from.
    source_synced_at: float | None = None
    source_synced_prefix: str | None = None
    # Event time at which the state was last written to the table (see streams/session_store.py).
    persisted_at: float = 0.0
    # The events-topic partition this session lives on (where its changelog records go).
    partition: int = -1

    def material(self) -> tuple[object, ...]:
        """The fields whose change must reach the changelog at once (not just on the next flush)."""
        return (
            self.user, self.created_at, self.authenticated_at, self.ip, self.asn,
            self.client_family, self.client_os, self.client_is_tool, self.ended_at,
            self.revocation, self.lat, self.lon, len(self.flagged),
        )

    def remember_id(self, event_id: str) -> bool:
        """Record an event id; False if it was seen recently (a redelivery to drop)."""
        if event_id in self.recent_ids:
            return False
        self.recent_ids.append(event_id)
        if len(self.recent_ids) > RECENT_IDS:
            del self.recent_ids[0]
        return True


def remember(values: list[str], value: str | None, cap: int = KNOWN_NETWORKS) -> None:
    """Move `value` to the end of a bounded most-recent-last list."""
    if value is None:
        return
    if value in values:
        values.remove(value)
    values.append(value)
    if len(values) > cap:
        del values[0]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SessionState)


def dump_state(state: SessionState) -> bytes:
    return _encoder.encode(state)


def load_state(raw: bytes) -> SessionState:
    return _decoder.decode(raw)
