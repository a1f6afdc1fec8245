"""The per-request check (producers/enforcement.py) against a real Redis, fed by the real applier
writes: the middleware and the applier must agree on every key and value."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
import redis.asyncio
from integration.conftest import RedisServer

from producers.contract import Action, Reason, Revocation, Scope, Severity
from producers.enforcement import AsyncEnforcer, Enforcer, Outcome
from producers.revocation_keys import session_key
from storage.redis_applier import RedisApplier

pytestmark = pytest.mark.integration


def rev(scope: Scope, action: Action = Action.REVOKE, *, id: str = "r1", session=None, user=None,
        source=None, not_before=None, expires=None) -> Revocation:
    now = datetime.now(UTC)
    return Revocation(
        id=id, tenant="shop", scope=scope, session=session, user=user, source=source,
        action=action, not_before=not_before, expires=expires,
        reasons=[Reason(detector="session.ua_change", severity=Severity.HIGH, summary="x")],
        event_time=now, decided_at=now, events=["e1"])


@pytest.fixture
def applier(redis_server) -> RedisApplier:
    redis_server.flushdb()
    return RedisApplier(redis_server, session_ttl_s=3600)


@pytest.fixture
def enforcer(redis_server) -> Enforcer:
    # refresh every call: these tests change blocks between checks
    return Enforcer(redis_server, tenant="shop", lengths_refresh_s=0)


def test_an_unknown_session_is_allowed(applier, enforcer):
    assert enforcer.check(sessions=["h1"], user="alice", authenticated_at=1.0,
                          ip="73.162.10.20").allowed


def test_a_revoked_session_is_refused_under_any_of_its_hashes(applier, enforcer):
    applier.apply(rev(Scope.SESSION, session="old-key-hash"))
    verdict = enforcer.check(sessions=["new-key-hash", "old-key-hash"], ip="73.162.10.20")
    assert verdict.outcome is Outcome.REVOKED and verdict.revocation_id == "r1"


def test_step_up_is_its_own_outcome(applier, enforcer):
    applier.apply(rev(Scope.SESSION, Action.STEP_UP, session="h1"))
    assert enforcer.check(sessions=["h1"]).outcome is Outcome.STEP_UP


def test_user_not_before_revokes_only_older_logins(applier, enforcer):
    cut = datetime.now(UTC)
    applier.apply(rev(Scope.USER, user="alice", not_before=cut))
    older = enforcer.check(sessions=["h1"], user="alice", authenticated_at=cut.timestamp() - 1)
    newer = enforcer.check(sessions=["h2"], user="alice", authenticated_at=cut.timestamp() + 1)
    undated = enforcer.check(sessions=["h3"], user="alice", authenticated_at=None)
    assert older.outcome is Outcome.REVOKED
    assert newer.allowed
    assert undated.outcome is Outcome.REVOKED  # cannot tell: the safe side
    assert enforcer.check(sessions=["h4"], user="bob", authenticated_at=0).allowed


def test_blocks_cover_addresses_and_any_prefix_in_use(applier, enforcer):
    soon = datetime.now(UTC) + timedelta(minutes=15)
    applier.apply(rev(Scope.SOURCE, Action.BLOCK, source="167.99.0.0/16", expires=soon))
    applier.apply(rev(Scope.SOURCE, Action.BLOCK, id="r2", source="2a01:4f8:10::7", expires=soon))
    enforcer.check(ip="1.1.1.1")  # first call learns the prefix lengths in use
    blocked = enforcer.check(sessions=["h1"], ip="167.99.200.3")
    assert blocked.outcome is Outcome.BLOCKED and 800 < blocked.retry_after_s <= 900
    assert enforcer.check(ip="2a01:4f8:10::7").outcome is Outcome.BLOCKED
    assert enforcer.check(ip="2a01:4f8:10::8").allowed
    assert enforcer.check(ip="167.98.200.3").allowed


def test_a_revocation_outranks_a_block_and_a_block_outranks_a_step_up(applier, enforcer):
    soon = datetime.now(UTC) + timedelta(minutes=15)
    applier.apply(rev(Scope.SOURCE, Action.BLOCK, source="203.0.113.9", expires=soon))
    applier.apply(rev(Scope.SESSION, Action.STEP_UP, id="s", session="h1"))
    assert enforcer.check(sessions=["h1"], ip="203.0.113.9").outcome is Outcome.BLOCKED
    applier.apply(rev(Scope.SESSION, id="r", session="h1"))
    assert enforcer.check(sessions=["h1"], ip="203.0.113.9").outcome is Outcome.REVOKED


def test_a_key_written_by_another_tool_still_revokes(redis_server, enforcer):
    redis_server.flushdb()
    redis_server.set(session_key("shop", "h1"), "1")  # not our JSON: existence is the signal
    assert enforcer.check(sessions=["h1"]).outcome is Outcome.REVOKED


def test_redis_down_fails_open_by_default_or_closed_if_asked(tmp_path):
    server = RedisServer(tmp_path).start()
    client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=0.5,
                         socket_connect_timeout=0.5)
    server.stop()
    open_ = Enforcer(client, tenant="shop")
    closed = Enforcer(client, tenant="shop", fail_open=False)
    assert open_.check(sessions=["h1"], ip="73.162.10.20").allowed
    assert closed.check(sessions=["h1"], ip="73.162.10.20").outcome is Outcome.BLOCKED
    assert open_.errors == 1 and closed.errors == 1


def test_the_async_check_agrees(redis_service, applier):
    applier.apply(rev(Scope.SESSION, session="h1"))

    async def run():
        client = redis.asyncio.Redis(host="127.0.0.1", port=redis_service.port)
        try:
            enforcer = AsyncEnforcer(client, tenant="shop")
            return ([await enforcer.check(sessions=["h1"], ip="73.162.10.20"),
                     await enforcer.check(sessions=["h2"], ip="73.162.10.20")])
        finally:
            await client.aclose()

    revoked, allowed = asyncio.run(run())
    assert revoked.outcome is Outcome.REVOKED and allowed.allowed


def test_one_round_trip_per_check(redis_server, enforcer, applier):
    """The cost the issue bounds: count commands Redis executed for 100 checks."""
    enforcer.lengths_refresh_s = 3600
    enforcer.check(sessions=["h0"], ip="73.162.10.20")  # lengths learnt
    before = _calls(redis_server)
    for i in range(100):
        enforcer.check(sessions=[f"h{i}", f"k{i}"], user="alice", authenticated_at=time.time(),
                       ip="73.162.10.20")
    after = _calls(redis_server)
    assert after.get("mget", 0) - before.get("mget", 0) == 100
    assert sum(after.values()) - sum(before.values()) <= 101  # + the INFO reading itself


def _calls(client) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}


def test_values_are_the_revocation_json(redis_server, applier):
    applier.apply(rev(Scope.SESSION, session="h1"))
    value = json.loads(redis_server.get(session_key("shop", "h1")))
    assert value["schema"] == "sessionwatch.revocation/1" and value["action"] == "revoke"
