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
- lift (an admin undoing a source block, scope source only; session and user scopes refuse it):
  deletes the block key unless the stored block was decided after the lift (`decided_at`: a
  newer block wins over an older lift), and leaves a tombstone, `sessionwatch:lifted:source:
  <tenant>:<source>` (the lift's JSON; the applier's own key, apps never read it), that
  refuses any block decided at or before the lift: a redelivered old block does not come back.
  The tombstone lives as long as the longer of the lifted block's remaining TTL and the lift's
  own (`expires - decided_at`, or `session_ttl_s` without `expires`). A lift names the source
  exactly as the block did ("203.0.113.0/24" lifts that key only). The prefix lengths set is
  left alone: other blocks may use the same length, and an unused length costs one lookup.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from producers.contract import Action, Revocation, Scope, encode
from producers.revocation_keys import (
    PREFIX,
    block_lengths_key,
    session_index_key,
    session_key,
    source_key,
    user_index_key,
    user_key,
)

Wins = Callable[[dict[str, Any], dict[str, Any]], bool]


def lifted_key(tenant: str, source: str) -> str:
    """The tombstone a lift leaves (module docstring): the applier's own key, not public."""
    return f"{PREFIX}:lifted:source:{tenant}:{source}"


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
        if revocation.action is Action.LIFT and revocation.scope is not Scope.SOURCE:
            raise ValueError(f"revocation {revocation.id}: action lift undoes a source block; "
                             f"it cannot apply to scope {revocation.scope.value} (end a revoke "
                             "by letting it expire, or publish the lift with scope source)")
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
            if revocation.action is Action.LIFT:
                return self._lift(revocation, value)
            ttl = self._source_ttl(revocation)
            if ttl <= 0:
                return False  # the block is already over
            tombstone = lifted_key(tenant, revocation.source)
            lift = self.client.get(tombstone)
            if lift is not None and _lift_stands(json.loads(value), json.loads(lift)):
                return False  # lifted after it was decided: checked again in the transaction
            self._note_length(tenant, revocation.source, ttl)
            return self._cas(source_key(tenant, revocation.source), value, ttl,
                             _later("expires"), guard=tombstone)
        raise ValueError(f"revocation {revocation.id}: scope {revocation.scope.value} without "
                         "its subject field")

    def _source_ttl(self, revocation: Revocation) -> int:
        if revocation.expires is None:
            return self.ttl(revocation.tenant)
        return int(revocation.expires.timestamp() - revocation.decided_at.timestamp())

    def _lift(self, lift: Revocation, value: bytes) -> bool:
        """Delete the block unless it was decided after `lift`; leave the tombstone."""
        import redis

        assert lift.source is not None
        key, tombstone = source_key(lift.tenant, lift.source), lifted_key(lift.tenant, lift.source)
        lifted_at = lift.decided_at.timestamp()
        while True:
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(key, tombstone)
                    block = pipe.get(key)
                    if block is not None and _decided(block) > lifted_at:
                        return False  # blocked again after this lift was decided: that stands
                    old = pipe.get(tombstone)
                    # This lift, or a later one, is already in place.
                    keep = old is not None and _decided(old) >= lifted_at
                    if block is None and keep:
                        return False
                    # pttl is -1 for a block without a TTL (another tool's): the lift's own TTL.
                    remaining_ms = max(0, pipe.pttl(key)) if block is not None else 0
                    ttl_ms = 0 if keep else max(remaining_ms, self._source_ttl(lift) * 1000)
                    if block is None and ttl_ms <= 0:
                        return False  # nothing blocked, and the lift is already over
                    pipe.multi()
                    if block is not None:
                        pipe.delete(key)
                    if ttl_ms > 0:
                        pipe.set(tombstone, value, px=ttl_ms)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue  # a block or lift was written meanwhile: decide again

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

    def _cas(self, key: str, value: bytes, ttl: int, wins: Wins, guard: str | None = None) -> bool:
        """Set `key` to `value` if it `wins` over what is there, and (with `guard`, a lift's
        tombstone) unless a lift decided at or after it stands."""
        import redis

        while True:
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(key, *(() if guard is None else (guard,)))
                    current = pipe.get(key)
                    if current == value:
                        return False
                    new = json.loads(value)
                    if current is not None and not wins(new, json.loads(current)):
                        return False
                    if guard is not None:
                        lift = pipe.get(guard)
                        if lift is not None and _lift_stands(new, json.loads(lift)):
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


def _lift_stands(block: dict[str, Any], lift: dict[str, Any]) -> bool:
    # At the same instant the lift wins: the admin lifted what they saw.
    return _time(block.get("decided_at")) <= _time(lift.get("decided_at"))


def _decided(raw: bytes) -> float:
    """`decided_at` of a stored value; a value another tool wrote has none, and an admin's
    lift removes it (-inf: older than any lift)."""
    try:
        value = json.loads(raw)
        return _time(value.get("decided_at")) if isinstance(value, dict) else float("-inf")
    except (TypeError, ValueError):
        return float("-inf")


def _later(field: str) -> Wins:
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

        from storage.sinks import RejectedError, RetryableError

        assert self.applier is not None, "start() first"
        try:
            # redis-py is blocking: a thread keeps the other sinks' loops running meanwhile.
            return await asyncio.to_thread(self.applier.apply, revocation)
        except ValueError as exc:
            # A revocation this applier can never apply (a lift of a session, no subject):
            # dead-letter it; retrying would stall every later revocation behind it.
            raise RejectedError(str(exc)) from None
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
