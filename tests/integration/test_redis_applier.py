"""The applier's Redis writes against a real redis-server: exact public keys, TTLs, idempotence."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from producers.contract import Action, Reason, Revocation, Scope, Severity
from producers.revocation_keys import (
    block_lengths_key,
    session_index_key,
    session_key,
    source_key,
    user_index_key,
    user_key,
)
from storage.redis_applier import RedisApplier, RedisSink, lifted_key
from storage.sinks import RejectedError

pytestmark = pytest.mark.integration
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def rev(scope: Scope, action: Action = Action.REVOKE, *, id: str = "r1", session: str | None = None,
        user: str | None = None, source: str | None = None, not_before: datetime | None = None,
        expires: datetime | None = None, tenant: str = "shop",
        decided_at: datetime = NOW) -> Revocation:
    return Revocation(
        id=id, tenant=tenant, scope=scope, session=session, user=user, source=source,
        action=action, not_before=not_before, expires=expires,
        reasons=[Reason(detector="session.ua_change", severity=Severity.HIGH, summary="x")],
        event_time=NOW, decided_at=decided_at, events=["e1"],
    )


@pytest.fixture
def applier(redis_server) -> RedisApplier:
    redis_server.flushdb()
    return RedisApplier(redis_server, session_ttl_s=3600)


def test_the_public_key_names_are_exact():
    assert session_key("shop", "ab12") == "sessionwatch:revoked:session:shop:ab12"
    assert user_key("shop", "alice") == "sessionwatch:revoked:user:shop:alice"
    assert source_key("shop", "203.0.113.0/24") == "sessionwatch:blocked:source:shop:203.0.113.0/24"


def test_session_revocation_is_written_once_with_a_ttl(applier, redis_server):
    r = rev(Scope.SESSION, session="ab12", user="alice")
    assert applier.apply(r) is True
    assert applier.apply(r) is False  # a redelivery changes nothing
    key = session_key("shop", "ab12")
    assert json.loads(redis_server.get(key))["id"] == "r1"
    assert 3500 < redis_server.ttl(key) <= 3600


def test_a_step_up_never_downgrades_a_revoke(applier, redis_server):
    applier.apply(rev(Scope.SESSION, session="ab12"))
    assert applier.apply(rev(Scope.SESSION, Action.STEP_UP, id="r2", session="ab12")) is False
    assert json.loads(redis_server.get(session_key("shop", "ab12")))["action"] == "revoke"
    applier.apply(rev(Scope.SESSION, Action.STEP_UP, id="r3", session="cd34"))
    assert applier.apply(rev(Scope.SESSION, id="r4", session="cd34")) is True  # revoke upgrades


def test_the_latest_user_not_before_wins(applier, redis_server):
    later = rev(Scope.USER, id="late", user="alice", not_before=NOW + timedelta(seconds=30.5))
    earlier = rev(Scope.USER, id="early", user="alice", not_before=NOW + timedelta(seconds=30))
    assert applier.apply(later) is True
    assert applier.apply(earlier) is False  # string order would get .5 vs no fraction wrong
    assert json.loads(redis_server.get(user_key("shop", "alice")))["id"] == "late"


def test_a_source_block_expires_with_the_block(applier, redis_server):
    block = rev(Scope.SOURCE, Action.BLOCK, source="203.0.113.0/24",
                expires=NOW + timedelta(seconds=900))
    assert applier.apply(block) is True
    assert 890 < redis_server.ttl(source_key("shop", "203.0.113.0/24")) <= 900
    over = rev(Scope.SOURCE, Action.BLOCK, id="old", source="198.51.100.7", expires=NOW)
    assert applier.apply(over) is False
    assert redis_server.get(source_key("shop", "198.51.100.7")) is None


def test_tenants_do_not_share_keys(applier, redis_server):
    applier.apply(rev(Scope.SESSION, session="ab12", tenant="bank"))
    assert redis_server.get(session_key("shop", "ab12")) is None
    assert redis_server.get(session_key("bank", "ab12")) is not None


def index_session(client, tenant: str, session: str, store_key: str, user: str,
                  authenticated_at: float) -> None:
    """What the middleware writes at login (producers/session_index.py does it for real)."""
    client.set(session_index_key(tenant, session), store_key)
    client.zadd(user_index_key(tenant, user), {session: authenticated_at})


def test_a_revoked_session_is_deleted_from_the_apps_store(applier, redis_server):
    redis_server.set("session:raw-sid-1", b"flask-session-data")
    index_session(redis_server, "shop", "ab12", "session:raw-sid-1", "alice", NOW.timestamp())
    applier.apply(rev(Scope.SESSION, session="ab12", user="alice"))
    assert redis_server.get("session:raw-sid-1") is None
    assert redis_server.get(session_index_key("shop", "ab12")) is None
    # A step-up leaves the record alone: the user re-authenticates in it.
    redis_server.set("session:raw-sid-2", b"data")
    index_session(redis_server, "shop", "cd34", "session:raw-sid-2", "bob", NOW.timestamp())
    applier.apply(rev(Scope.SESSION, Action.STEP_UP, id="r2", session="cd34"))
    assert redis_server.get("session:raw-sid-2") == b"data"


def test_a_user_revocation_deletes_only_sessions_from_before_not_before(applier, redis_server):
    cut = NOW + timedelta(seconds=60)
    for sid, at in (("old1", 0), ("old2", 59.5), ("new", 61)):
        redis_server.set(f"session:{sid}", b"data")
        index_session(redis_server, "shop", f"h-{sid}", f"session:{sid}", "alice",
                      NOW.timestamp() + at)
    applier.apply(rev(Scope.USER, user="alice", not_before=cut))
    assert redis_server.get("session:old1") is None
    assert redis_server.get("session:old2") is None
    assert redis_server.get("session:new") == b"data"
    assert redis_server.zrange(user_index_key("shop", "alice"), 0, -1) == [b"h-new"]


def test_a_cidr_block_registers_its_prefix_length(applier, redis_server):
    applier.apply(rev(Scope.SOURCE, Action.BLOCK, source="167.99.0.0/16",
                      expires=NOW + timedelta(seconds=900)))
    applier.apply(rev(Scope.SOURCE, Action.BLOCK, id="r2", source="2a01:4f8::/32",
                      expires=NOW + timedelta(seconds=300)))
    assert redis_server.smembers(block_lengths_key("shop")) == {b"4/16", b"6/32"}
    assert 890 < redis_server.ttl(block_lengths_key("shop")) <= 900  # the longest block's


def test_ttl_follows_the_tenants_session_lifetime(redis_server):
    redis_server.flushdb()
    applier = RedisApplier(redis_server, session_ttl_s=43_200, tenant_ttl_s={"bank": 900})
    applier.apply(rev(Scope.SESSION, session="ab12", tenant="bank"))
    applier.apply(rev(Scope.SESSION, session="ab12", tenant="shop"))
    assert 890 < redis_server.ttl(session_key("bank", "ab12")) <= 900
    assert 43_100 < redis_server.ttl(session_key("shop", "ab12")) <= 43_200


# -- lifting a source block (an admin's decision from the console) ---------------------------------

SOURCE = "203.0.113.0/24"


def block(id: str = "b1", *, at: timedelta = timedelta(0), for_s: float = 900) -> Revocation:
    return rev(Scope.SOURCE, Action.BLOCK, id=id, source=SOURCE, decided_at=NOW + at,
               expires=NOW + at + timedelta(seconds=for_s))


def lift(id: str = "l1", *, at: timedelta = timedelta(seconds=60),
         expires: datetime | None = None) -> Revocation:
    return rev(Scope.SOURCE, Action.LIFT, id=id, source=SOURCE, decided_at=NOW + at,
               expires=expires)


def stored(redis_server, key: str) -> str | None:
    raw = redis_server.get(key)
    return None if raw is None else json.loads(raw)["id"]


def test_a_lift_unblocks_the_source_and_leaves_a_tombstone_as_long_as_the_block(applier,
                                                                                redis_server):
    applier.session_ttl_s = 600  # shorter than the block: the block's remaining TTL decides
    assert applier.apply(block(for_s=3600)) is True
    assert applier.apply(lift()) is True
    assert redis_server.get(source_key("shop", SOURCE)) is None
    assert stored(redis_server, lifted_key("shop", SOURCE)) == "l1"
    assert 3590 < redis_server.ttl(lifted_key("shop", SOURCE)) <= 3600
    # The prefix length stays registered (other blocks may use it); it costs one lookup.
    assert redis_server.smembers(block_lengths_key("shop")) == {b"4/24"}


def test_a_redelivered_older_block_does_not_come_back_after_the_lift(applier, redis_server):
    applier.apply(block())
    applier.apply(lift())
    assert applier.apply(block()) is False
    assert applier.apply(block("b0", at=timedelta(seconds=-300))) is False
    assert applier.apply(block("b-same", at=timedelta(seconds=60))) is False  # a tie: lifted
    assert redis_server.get(source_key("shop", SOURCE)) is None


def test_a_lift_delivered_before_its_block_still_lifts_it(applier, redis_server):
    assert applier.apply(lift()) is True  # nothing blocked yet: only the tombstone
    assert applier.apply(block()) is False
    assert redis_server.get(source_key("shop", SOURCE)) is None
    assert 3590 < redis_server.ttl(lifted_key("shop", SOURCE)) <= 3600  # the session TTL


def test_a_block_decided_after_the_lift_blocks_again(applier, redis_server):
    applier.apply(block())
    applier.apply(lift())
    again = block("b2", at=timedelta(seconds=120))
    assert applier.apply(again) is True
    assert stored(redis_server, source_key("shop", SOURCE)) == "b2"
    assert 890 < redis_server.ttl(source_key("shop", SOURCE)) <= 900
    # The older lift, redelivered, does not undo the newer block.
    assert applier.apply(lift()) is False
    assert stored(redis_server, source_key("shop", SOURCE)) == "b2"
    # A later lift does.
    assert applier.apply(lift("l2", at=timedelta(seconds=180))) is True
    assert redis_server.get(source_key("shop", SOURCE)) is None
    assert stored(redis_server, lifted_key("shop", SOURCE)) == "l2"


def test_lifting_twice_is_idempotent(applier, redis_server):
    applier.apply(block())
    assert applier.apply(lift()) is True
    assert applier.apply(lift()) is False
    older = lift("l0", at=timedelta(seconds=30))  # an older lift does not replace the newer one
    assert applier.apply(older) is False
    assert stored(redis_server, lifted_key("shop", SOURCE)) == "l1"


def test_a_lift_with_expires_keeps_its_tombstone_that_long(applier, redis_server):
    assert applier.apply(lift(expires=NOW + timedelta(seconds=60 + 7200))) is True
    assert 7190 < redis_server.ttl(lifted_key("shop", SOURCE)) <= 7200
    # Already over and nothing blocked: nothing to write.
    assert applier.apply(lift("l9", at=timedelta(seconds=99), expires=NOW)) is False


def test_a_lift_names_the_source_exactly_and_its_tenant(applier, redis_server):
    applier.apply(block())
    applier.apply(rev(Scope.SOURCE, Action.BLOCK, id="one", source="203.0.113.9",
                      expires=NOW + timedelta(seconds=900)))
    applier.apply(rev(Scope.SOURCE, Action.BLOCK, id="bank", source=SOURCE, tenant="bank",
                      expires=NOW + timedelta(seconds=900)))
    applier.apply(lift())
    assert stored(redis_server, source_key("shop", "203.0.113.9")) == "one"
    assert stored(redis_server, source_key("bank", SOURCE)) == "bank"


def test_a_lift_of_a_session_or_user_is_refused_and_dead_lettered(applier, redis_server,
                                                                  redis_service):
    for scope, subject in ((Scope.SESSION, {"session": "ab12"}), (Scope.USER, {"user": "alice"})):
        wrong = rev(scope, Action.LIFT, id=f"l-{scope.value}", **subject)
        with pytest.raises(ValueError, match="action lift undoes a source block"):
            applier.apply(wrong)
    assert redis_server.keys("sessionwatch:*") == []

    async def deliver() -> None:
        sink = RedisSink(redis_service.url)
        await sink.start()
        try:
            with pytest.raises(RejectedError, match="scope user"):
                await sink.deliver(wrong, b"")
        finally:
            await sink.close()

    asyncio.run(deliver())
