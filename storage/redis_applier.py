"""Apply revocations to Redis under the public keys (producers/revocation_keys.py), idempotently.

Besides the denylist keys it deletes the app's own session records where the middleware left
an index (`sessionwatch:index:*`, see producers/revocation_keys.py): a revoked session is then
gone from Flask-Session's or starsessions' store too, not only refused at the door.
`RedisSink` runs it inside `sessionwatch apply` (storage/applier.py).

Rules (each write is a compare-and-set in a WATCH/MULTI transaction, so concurrent appliers and
redeliveries converge on the same value):
- session: a revoke is never downgraded by a later step_up; TTL `session_ttl_s` (outlives the
  session: default 12 h, the tenant's absolute lifetime).
- user: the latest `not_before` wins; TTL `session_ttl_s` past it (older sessions are dead by then).
- source: the latest `expires` wins; the key expires with the block.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from producers.contract import Action, Revocation, Scope, encode
from producers.revocation_keys import (
    block_lengths_key,
    session_index_key,
    session_key,
    source_key,
    user_index_key,
    user_key,
)


class RedisApplier:
    def __init__(self, client: Any, session_ttl_s: int = 43_200,
                 tenant_ttl_s: Mapping[str, int] | None = None) -> None:
        self.client = client  # a redis.Redis
        self.session_ttl_s = session_ttl_s
        # Per tenant (its absolute session lifetime, from the policy); others get session_ttl_s.
        self.tenant_ttl_s = dict(tenant_ttl_s or {})

    def ttl(self, tenant: str) -> int:
        return self.tenant_ttl_s.get(tenant, self.session_ttl_s)

    def apply(self, revocation: Revocation) -> bool:
        """Write one revocation; True if it changed what Redis holds (False: already there).

        The app's session records are deleted every time (idempotent), so a redelivery after a
        crash between the two writes still finishes the job.
        """
        value = encode(revocation)
        tenant = revocation.tenant
        if revocation.scope is Scope.SESSION and revocation.session is not None:
            changed = self._cas(session_key(tenant, revocation.session), value,
                                self.ttl(tenant), _session_wins)
            if revocation.action is Action.REVOKE:
                self.delete_store_records(tenant, [revocation.session])
            return changed
        if revocation.scope is Scope.USER and revocation.user is not None:
            ttl = self.ttl(tenant)
            if revocation.not_before is not None:
                ttl += max(0, int(revocation.not_before.timestamp()
                                  - revocation.decided_at.timestamp()))
            changed = self._cas(user_key(tenant, revocation.user), value, ttl,
                                _later("not_before"))
            if revocation.action is Action.REVOKE:
                self._delete_user_sessions(revocation)
            return changed
        if revocation.scope is Scope.SOURCE and revocation.source is not None:
            if revocation.expires is None:
                ttl = self.ttl(tenant)
            else:
                ttl = int(revocation.expires.timestamp() - revocation.decided_at.timestamp())
            if ttl <= 0:
                return False  # the block is already over
            self._note_length(tenant, revocation.source, ttl)
            return self._cas(source_key(tenant, revocation.source), value, ttl,
                             _later("expires"))
        raise ValueError(f"revocation {revocation.id}: scope {revocation.scope.value} without "
                         "its subject field")

    def delete_store_records(self, tenant: str, sessions: list[str]) -> int:
        """Delete the app's session records the middleware indexed; returns how many."""
        if not sessions:
            return 0
        index_keys = [session_index_key(tenant, s) for s in sessions]
        store_keys = [k for k in self.client.mget(index_keys) if k is not None]
        pipe = self.client.pipeline(transaction=False)
        for key in store_keys:
            pipe.delete(key)
        pipe.delete(*index_keys)
        deleted = pipe.execute()
        return sum(deleted[:len(store_keys)])

    def _delete_user_sessions(self, revocation: Revocation) -> None:
        assert revocation.user is not None
        index = user_index_key(revocation.tenant, revocation.user)
        cutoff = revocation.not_before.timestamp() if revocation.not_before else "+inf"
        # Exclusive: a session authenticated exactly at not_before is the one that may live.
        bound = f"({cutoff}" if revocation.not_before else cutoff
        sessions = [s.decode() if isinstance(s, bytes) else s
                    for s in self.client.zrangebyscore(index, "-inf", bound)]
        self.delete_store_records(revocation.tenant, sessions)
        if sessions:
            self.client.zrem(index, *sessions)

    def _note_length(self, tenant: str, source: str, ttl: int) -> None:
        # The middleware looks up only the prefix lengths blocks use (revocation_keys docstring).
        try:
            net = ipaddress.ip_network(source, strict=False)
        except ValueError:
            return
        key = block_lengths_key(tenant)
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(key, f"{net.version}/{net.prefixlen}")
        pipe.expire(key, ttl, gt=True)
        pipe.expire(key, ttl, nx=True)
        pipe.execute()

    def _cas(self, key: str, value: bytes, ttl: int, wins: Any) -> bool:
        import redis

        while True:
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    current = pipe.get(key)
                    if current == value:
                        return False
                    if current is not None and not wins(json.loads(value), json.loads(current)):
                        return False
                    pipe.multi()
                    pipe.set(key, value, ex=ttl)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue  # another applier wrote meanwhile: decide again


def _session_wins(new: dict[str, Any], old: dict[str, Any]) -> bool:
    # A revoke stands; a step-up never replaces it.
    return not (old.get("action") == Action.REVOKE.value
                and new.get("action") != Action.REVOKE.value)


def _later(field: str) -> Any:
    def wins(new: dict[str, Any], old: dict[str, Any]) -> bool:
        return _time(new.get(field)) > _time(old.get(field))
    return wins


def _time(value: Any) -> float:
    # Parsed, not compared as text: "09:00:00.5Z" sorts before "09:00:00Z" as a string.
    return datetime.fromisoformat(value).timestamp() if value else float("-inf")


class RedisSink:
    """The applier's Redis sink: RedisApplier behind the Sink protocol (storage/sinks.py)."""

    name = "redis"

    def __init__(self, url: str, session_ttl_s: int = 43_200,
                 tenant_ttl_s: Mapping[str, int] | None = None) -> None:
        self.url = url
        self.session_ttl_s = session_ttl_s
        self.tenant_ttl_s = tenant_ttl_s
        self.applier: RedisApplier | None = None

    async def start(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
        self.applier = RedisApplier(client, self.session_ttl_s, self.tenant_ttl_s)

    async def deliver(self, revocation: Revocation, raw: bytes) -> bool:
        import redis

        from storage.sinks import RetryableError

        assert self.applier is not None, "start() first"
        try:
            # redis-py is blocking: a thread keeps the other sinks' loops running meanwhile.
            return await asyncio.to_thread(self.applier.apply, revocation)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
                redis.ReadOnlyError) as exc:
            raise RetryableError(f"redis {_safe_url(self.url)}: {exc}") from exc

    async def close(self) -> None:
        if self.applier is not None:
            self.applier.client.close()


def _safe_url(url: str) -> str:
    """The URL without a password, for messages."""
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, _ = head.partition("://")
    return f"{scheme}://***@{tail}"
