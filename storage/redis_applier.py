"""Apply revocations to Redis under the public keys (producers/revocation_keys.py), idempotently.

Started in issue 3's last minutes as the core of issue 4's applier: the write logic and its
rules, tested against a real redis-server. Not yet here: the Kafka consumer loop with commit
after write and retry with backoff (`sessionwatch apply`), session-store deletion, webhook and
CAEP sinks.

Rules (each write is a compare-and-set in a WATCH/MULTI transaction, so concurrent appliers and
redeliveries converge on the same value):
- session: a revoke is never downgraded by a later step_up; TTL `session_ttl_s` (outlives the
  session: default 12 h, the tenant's absolute lifetime).
- user: the latest `not_before` wins; TTL `session_ttl_s` past it (older sessions are dead by then).
- source: the latest `expires` wins; the key expires with the block.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from producers.contract import Action, Revocation, Scope, encode
from producers.revocation_keys import session_key, source_key, user_key


class RedisApplier:
    def __init__(self, client: Any, session_ttl_s: int = 43_200) -> None:
        self.client = client  # a redis.Redis
        self.session_ttl_s = session_ttl_s

    def apply(self, revocation: Revocation) -> bool:
        """Write one revocation; True if it changed what Redis holds (False: already there)."""
        value = encode(revocation)
        if revocation.scope is Scope.SESSION and revocation.session is not None:
            return self._cas(session_key(revocation.tenant, revocation.session), value,
                             self.session_ttl_s, _session_wins)
        if revocation.scope is Scope.USER and revocation.user is not None:
            ttl = self.session_ttl_s
            if revocation.not_before is not None:
                ttl += max(0, int(revocation.not_before.timestamp()
                                  - revocation.decided_at.timestamp()))
            return self._cas(user_key(revocation.tenant, revocation.user), value, ttl,
                             _later("not_before"))
        if revocation.scope is Scope.SOURCE and revocation.source is not None:
            if revocation.expires is None:
                ttl = self.session_ttl_s
            else:
                ttl = int(revocation.expires.timestamp() - revocation.decided_at.timestamp())
            if ttl <= 0:
                return False  # the block is already over
            return self._cas(source_key(revocation.tenant, revocation.source), value, ttl,
                             _later("expires"))
        raise ValueError(f"revocation {revocation.id}: scope {revocation.scope.value} without "
                         "its subject field")

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
