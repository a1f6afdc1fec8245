"""Which events the session stage forwards to the user and source stages, and under which keys.

The user and source stages see one user's (one network's) events merged from every session
partition, in an order that depends on the partitions' pace; they decide in event time within
the allowed lateness (streams/event_clock.py, streams/user_pipeline.py), so the interleaving
does not change what they decide.

Shared by the worker's session stage (streams/session_stage.py) and the in-process runner
(streams/local.py), so both route exactly alike. The source stage sees every event but a live
session's repeated requests (valid traffic is the baseline that keeps a busy NAT from looking
like a flood); the user stage sees logins, ends, credential changes, failed logins, a heartbeat
of each live session every `HEARTBEAT_S`, and session revocations.
"""

from __future__ import annotations

import msgspec

from models.features import BEHAVIOUR, SCORE_ONLY, behaviour_to_attr
from producers.contract import Event, EventType, Revocation, encode
from streams.state import SessionState

# How often (event time) a live session's activity is forwarded to the user stage: often enough
# that it counts as live there (concurrency counts sessions seen within 30 min by default).
HEARTBEAT_S = 300.0


def user_key(tenant: str, user: str) -> bytes:
    """The user stage's key (and partitioning key): tenant + user."""
    return f"{tenant}\x1f{user}".encode()


def by_user_topic(app_id: str) -> str:
    """The user stage's repartition topic. Per app id, like the changelogs: two deployments (or a
    replaying second group) on one cluster must not feed each other's stages."""
    return f"{app_id}-by-user"


def by_source_topic(app_id: str) -> str:
    return f"{app_id}-by-source"


# Revocations forwarded to the user stage start like this (the contract encoder writes `schema`
# first), which tells them from events without decoding twice.
REVOCATION_PREFIX = b'{"schema":"sessionwatch.revocation/'

# How often (event time) a live session's activity from the same prefix reaches the source stage:
# often enough that it counts among the source's live sessions (windows of >= 5 min) and that a
# session used from a source blocked meanwhile is revoked within a minute.
SOURCE_HEARTBEAT_S = 60.0
# Activity the source stage needs only as a heartbeat; every other type it counts one by one.
_SOURCE_HEARTBEAT_TYPES = frozenset({EventType.ACTIVITY, EventType.REFRESHED})
_USER_TYPES = frozenset({EventType.AUTHENTICATED, EventType.LOGOUT, EventType.EXPIRED,
                         EventType.CREDENTIAL_CHANGED, EventType.AUTH_FAILED})
_HEARTBEAT_TYPES = frozenset({EventType.ACTIVITY, EventType.REFRESHED})


_forwarded_event = msgspec.json.Decoder(Event)


def decode_forwarded(raw: bytes) -> Event:
    """An event the session stage validated and forwarded (repartition topics, the user stage's
    queue): typed decoding only, the contract's checks already passed."""
    return _forwarded_event.decode(raw)


def for_user(event: Event, raw: bytes, state: SessionState | None) -> tuple[bytes, bytes] | None:
    """(key, value) to forward to the user stage, or None. May mark a heartbeat in `state`.

    When a learned score runs (the session tracks its behaviour), an event that changed
    something the model can see goes too, carrying the session's behaviour in `attrs[BEHAVIOUR]`
    (set here, over anything an app put there); only those are scored and counted into the
    user's history, so the rest travel as before.
    """
    user = event.user or (state.user if state is not None else None)
    if user is None:
        return None
    behaviour = state.behaviour if state is not None else None
    if behaviour is not None and not behaviour.changed:
        behaviour = None
    score_only = False
    if event.type not in _USER_TYPES:
        if event.type not in _HEARTBEAT_TYPES or state is None:
            if behaviour is None:
                return None
            score_only = True
        else:
            now = event.time.timestamp()
            if state.user_synced_at is not None and now - state.user_synced_at < HEARTBEAT_S:
                if behaviour is None:
                    return None
                score_only = True  # for the learned score only: not a heartbeat
            else:
                state.user_synced_at = now
    elif event.type is EventType.AUTHENTICATED and state is not None:
        state.user_synced_at = event.time.timestamp()
    if behaviour is not None:
        attrs = {**event.attrs, BEHAVIOUR: behaviour_to_attr(behaviour)}
        if score_only:
            attrs[SCORE_ONLY] = True
        raw = encode(msgspec.structs.replace(event, user=user, attrs=attrs))
    elif event.attrs and (BEHAVIOUR in event.attrs or SCORE_ONLY in event.attrs):
        raw = encode(msgspec.structs.replace(  # an app's, never trusted
            event, user=user, attrs={k: v for k, v in event.attrs.items()
                                     if k not in (BEHAVIOUR, SCORE_ONLY)}))
    elif event.user is None:
        raw = encode(msgspec.structs.replace(event, user=user))
    return user_key(event.tenant, user), raw


def for_source(event: Event, state: SessionState | None) -> bool:
    """Whether the source stage needs this event. May mark a heartbeat in `state`.

    Rejected tokens, new sessions, failed logins, logins and ends are what it counts; a live
    session's requests matter only as "this session is live here", so they go once per prefix
    and `SOURCE_HEARTBEAT_S` (a long session's requests were most of the source stage's input).
    """
    if event.type not in _SOURCE_HEARTBEAT_TYPES or state is None:
        return True
    now = event.time.timestamp()
    if (state.source_synced_at is not None and state.source_synced_prefix == state.prefix
            and now - state.source_synced_at < SOURCE_HEARTBEAT_S):
        return False
    state.source_synced_at = now
    state.source_synced_prefix = state.prefix
    return True


def revocation_for_user(revocation: Revocation) -> tuple[bytes, bytes] | None:
    """A session revocation, for the user stage to stop counting the session as live."""
    if revocation.session is None or revocation.user is None:
        return None
    return user_key(revocation.tenant, revocation.user), encode(revocation)


def output_key(obj: Revocation) -> bytes:
    """Outputs are keyed by their subject: session, else user, else source."""
    return (obj.session or obj.user or obj.source or "").encode()
