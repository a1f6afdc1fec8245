"""The index from session hash to the app's own session record, for the applier to delete it.

Written by the middleware at login and rotation, removed at logout (keys in
producers/revocation_keys.py). The value is the store's key of the record (Flask-Session's
`session:<sid>`, starsessions' `<prefix><sid>`): the store already names records by the raw
id, in the same Redis, so the index adds no new place where a token can be read.

The functions queue commands on a redis-py pipeline, sync or asyncio alike; the caller executes.
"""

from __future__ import annotations

from typing import Any

from producers.revocation_keys import session_index_key, user_index_key


def record(pipe: Any, tenant: str, session: str, store_key: str, user: str | None,
           authenticated_at: float | None, ttl_s: int) -> None:
    """Queue: session hash -> store key (TTL), and the user's sorted set of sessions by login."""
    pipe.set(session_index_key(tenant, session), store_key, ex=ttl_s)
    if user is not None and authenticated_at is not None:
        index = user_index_key(tenant, user)
        pipe.zadd(index, {session: authenticated_at})
        # Entries older than a session can live are dead weight: trim them as we go.
        pipe.zremrangebyscore(index, "-inf", authenticated_at - ttl_s)
        pipe.expire(index, ttl_s)


def forget(pipe: Any, tenant: str, session: str, user: str | None) -> None:
    """Queue: remove a session that ended (logout, rotation, revocation) from the index."""
    pipe.delete(session_index_key(tenant, session))
    if user is not None:
        pipe.zrem(user_index_key(tenant, user), session)
