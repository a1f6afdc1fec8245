"""Per-session state: what the detectors remember about a session between its events.

Kept small and bounded (collections are capped) because it lives in a store for the life of the
session. Times are epoch seconds of *event* time, never the wall clock, so a replay rebuilds the
same state.

The pipeline never mutates a state it was given (the store may still hold it): it makes a shallow
copy and replaces what changed. So the collections are immutable (tuples; `flagged` is replaced,
never updated in place) and a new state shares them with the previous one until they change -
copying them for every event was a sixth of the pipeline's time. The same tuples encode to the
same msgpack arrays the lists did.
"""

from __future__ import annotations

import msgspec

from models.features import SessionBehaviour

RECENT_IDS = 32          # event ids remembered per session to drop redeliveries
KNOWN_NETWORKS = 8       # networks (ASN or prefix) remembered per session


# gc=False: a state holds only strings, numbers, tuples of strings and a str -> float dict, so it
# can never be part of a reference cycle; untracked, the hundreds of thousands of cached states
# cost the cyclic garbage collector nothing (full collections walked every one of them).
class SessionState(msgspec.Struct, kw_only=True, gc=False):
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
    networks: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
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
    recent_ids: tuple[str, ...] = ()
    # Event time of the last activity forwarded to the user stage (a heartbeat, see routing.py).
    user_synced_at: float | None = None
    # ... and to the source stage, with the prefix it came from.
    source_synced_at: float | None = None
    source_synced_prefix: str | None = None
    # What the learned score sees of the session (models/features.py); None unless a model runs.
    behaviour: SessionBehaviour | None = None

    def remember_id(self, event_id: str) -> bool:
        """Record an event id; False if it was seen recently (a redelivery to drop)."""
        if event_id in self.recent_ids:
            return False
        ids = self.recent_ids
        self.recent_ids = (ids[1:] if len(ids) >= RECENT_IDS else ids) + (event_id,)
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


def remembered(
    values: tuple[str, ...], value: str | None, cap: int = KNOWN_NETWORKS
) -> tuple[str, ...]:
    """`values` with `value` moved to the end, bounded, most recent last (as `remember`).

    The same tuple when nothing changes (no value, or it is already the most recent one), which
    is nearly every event: the state then keeps sharing it.
    """
    if value is None or (values and values[-1] == value and len(values) <= cap):
        return values
    if value in values:
        i = values.index(value)
        values = values[:i] + values[i + 1:]
    values += (value,)
    return values[1:] if len(values) > cap else values


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SessionState)


def dump_state(state: SessionState) -> bytes:
    return _encoder.encode(state)


def load_state(raw: bytes) -> SessionState:
    return _decoder.decode(raw)
