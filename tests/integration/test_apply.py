"""`sessionwatch apply` as a process against the real broker, a real Redis and real HTTP receivers.

At least once and nothing lost: through a Redis outage, through an applier killed mid-stream,
through a webhook answering 503; refused and malformed messages land on the dead-letter topic.
The receivers are aiohttp servers in this process, on loopback ports: real HTTP, real signatures.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from aiohttp import web
from integration.conftest import RedisServer, read_until

from producers.contract import (
    DEADLETTER_TOPIC,
    REVOCATIONS_TOPIC,
    Action,
    Reason,
    Revocation,
    Scope,
    Severity,
    encode,
)
from producers.revocation_keys import session_key
from producers.webhook_signature import verify
from sessionwatch.broker import free_port
from sessionwatch.processes import ApplierProcess

pytestmark = pytest.mark.integration
SECRET = "webhook-secret-for-tests-0123456789"


def revocation(session: str, *, tenant: str = "apply-it", action: Action = Action.REVOKE,
               user: str | None = "alice") -> Revocation:
    now = datetime.now(UTC)
    return Revocation(
        id=f"rev-{session}", tenant=tenant, scope=Scope.SESSION, session=session, user=user,
        source=None, action=action, not_before=None, expires=None,
        reasons=[Reason(detector="session.ip_change", severity=Severity.HIGH,
                        summary="Session moved from a residential network to a datacenter")],
        event_time=now, decided_at=now, events=["e1"])


def publish(producer, revocations: list[Revocation | bytes]) -> None:
    for r in revocations:
        if isinstance(r, bytes):
            producer.produce(REVOCATIONS_TOPIC, r, key=b"garbage")
        else:
            producer.produce(REVOCATIONS_TOPIC, encode(r), key=r.session.encode())
    producer.flush(10)


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def start_applier(broker, tmp_path: Path, name: str, **settings: str) -> ApplierProcess:
    proc = ApplierProcess(broker.bootstrap, tmp_path / f"{name}.log",
                          apply_group=f"it-{name}-{uuid.uuid4().hex[:6]}", **settings)
    proc.wait_ready(60)
    return proc


def test_redis_outage_loses_nothing(broker, producer, tmp_path):
    server = RedisServer(tmp_path).start()
    client = server.client()
    applier = start_applier(broker, tmp_path, "outage", redis=server.url)
    try:
        before = [revocation(f"before-{uuid.uuid4().hex[:8]}") for _ in range(5)]
        publish(producer, before)
        wait_for(lambda: all(client.exists(session_key("apply-it", r.session)) for r in before),
                 30, "revocations before the outage")

        server.stop()
        during = [revocation(f"during-{uuid.uuid4().hex[:8]}") for _ in range(20)]
        publish(producer, during)
        wait_for(lambda: b"unavailable" in applier.log_path.read_bytes(), 30,
                 "the applier to notice Redis is down")
        server.start()   # same port, empty: nothing was persisted
        client = server.client()
        wait_for(lambda: all(client.exists(session_key("apply-it", r.session)) for r in during),
                 60, "every revocation sent during the outage")
        assert b"available again" in applier.log_path.read_bytes()
    finally:
        applier.stop()
        server.stop()


def test_killed_applier_resumes_from_its_committed_offsets(broker, producer, redis_service,
                                                          tmp_path):
    client = redis_service.client()
    group = f"it-kill-{uuid.uuid4().hex[:6]}"
    first = ApplierProcess(broker.bootstrap, tmp_path / "first.log", apply_group=group,
                           redis=redis_service.url)
    first.wait_ready(60)
    batch = [revocation(f"kill-{i}-{uuid.uuid4().hex[:6]}") for i in range(200)]
    publish(producer, batch[:100])
    wait_for(lambda: client.exists(session_key("apply-it", batch[99].session)), 30, "first half")
    first.proc.kill()   # SIGKILL: no goodbye, no final commit
    first.stop()
    publish(producer, batch[100:])
    second = ApplierProcess(broker.bootstrap, tmp_path / "second.log", apply_group=group,
                            redis=redis_service.url)
    try:
        second.wait_ready(60)
        wait_for(lambda: all(client.exists(session_key("apply-it", r.session)) for r in batch),
                 60, "every revocation after the restart")
    finally:
        second.stop()


def test_malformed_messages_go_to_the_dead_letter_topic(broker, producer, redis_service,
                                                        tmp_path):
    client = redis_service.client()
    marker = uuid.uuid4().hex
    good = revocation(f"after-garbage-{marker}")
    applier = start_applier(broker, tmp_path, "garbage", redis=redis_service.url)
    try:
        publish(producer, [f"not json {marker}".encode(), good])
        wait_for(lambda: client.exists(session_key("apply-it", good.session)), 30,
                 "the revocation after the garbage")
        records = read_until(broker.bootstrap, [DEADLETTER_TOPIC], lambda rs: any(
            marker in v.get("value", "") for _, v in rs), timeout_s=30)
        dead = [v for _, v in records if marker in v.get("value", "")]
        assert dead and dead[0]["reason"] == "not_a_revocation"
        assert dead[0]["topic"] == REVOCATIONS_TOPIC
    finally:
        applier.stop()


class Receivers:
    """A webhook and a CAEP push receiver (aiohttp, own thread and loop) that fail on purpose."""

    def __init__(self, webhook_failures: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.webhook_failures = webhook_failures
        self.webhooks: list[tuple[dict, str, bytes]] = []
        self.sets: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Receivers:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_post("/caep", self._caep)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.webhook_failures > 0:
            self.webhook_failures -= 1
            return web.Response(status=503)
        self.webhooks.append((json.loads(body), request.headers["Sessionwatch-Signature"], body))
        return web.Response(status=204)

    async def _caep(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/secevent+jwt"
        self.sets.append((await request.read()).decode())
        return web.Response(status=202)


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    with Receivers(webhook_failures=2) as r:
        yield r


def test_webhook_and_caep_receivers_get_signed_revocations(broker, producer, tmp_path, receivers):
    from storage.caep import generate_key

    key = generate_key(tmp_path / "caep.pem", "ES256")
    jwks_port = free_port()
    issuer = f"http://127.0.0.1:{jwks_port}"
    applier = start_applier(
        broker, tmp_path, "sinks", webhook_url=receivers.url + "/hook", webhook_secret=SECRET,
        caep_receivers=receivers.url + "/caep", caep_key=str(key), caep_issuer=issuer,
        caep_audience="https://rp.example", caep_port=str(jwks_port))
    try:
        marker = uuid.uuid4().hex[:8]
        revoke = revocation(f"hook-{marker}")
        step_up = revocation(f"stepup-{marker}", action=Action.STEP_UP)
        publish(producer, [revoke, step_up])
        # Each sink works through the topic's backlog on its own; the two may sit on
        # different partitions, so wait for each one by id.
        wait_for(lambda: {revoke.id, step_up.id} <= {w[0]["id"] for w in receivers.webhooks},
                 60, "the webhook to get both revocations after two 503s")
        # A revoke behind the step-up on its partition: once its SET arrived, the CAEP sink
        # has passed the step-up too, so "no SET for the step-up" means something.
        trailer = revocation(f"trailer-{marker}")
        producer.produce(REVOCATIONS_TOPIC, encode(trailer), key=step_up.session.encode())
        producer.flush(10)
        wait_for(lambda: {revoke.id, trailer.id} <= {_jti(t) for t in receivers.sets}, 60,
                 "the CAEP receiver to get the revokes' SETs")
        ours = {w[0]["id"]: w for w in receivers.webhooks}
        body, signature, raw = ours[revoke.id]
        assert verify(SECRET, signature, raw)
        assert not verify("another-secret-of-enough-length", signature, raw)
        assert body["reasons"][0]["summary"].startswith("Session moved")  # admins get the why

        # CAEP: only the revoke is a session-revoked SET (a step-up has no CAEP meaning).
        jwks = None
        import urllib.request
        with urllib.request.urlopen(issuer + "/jwks.json", timeout=5) as response:
            jwks = json.loads(response.read())
        decoded = []
        for token in receivers.sets:
            header = jwt.get_unverified_header(token)
            assert header["typ"] == "secevent+jwt"
            jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
            public = jwt.PyJWK(jwk).key
            decoded.append(jwt.decode(token, public, algorithms=[header["alg"]],
                                      audience="https://rp.example", issuer=issuer))
        mine = [c for c in decoded if c["jti"] in (revoke.id, step_up.id)]
        assert trailer.id in {c["jti"] for c in decoded}
        assert [c["jti"] for c in mine] == [revoke.id]
        claims = mine[0]
        assert "exp" not in claims and "sub" not in claims
        assert claims["sub_id"]["session"]["id"] == revoke.session
        (event,) = claims["events"].values()
        assert event["reason_user"]["en"] == "Your session has ended. Please sign in again."
        assert "datacenter" in event["reason_admin"]["en"]
    finally:
        applier.stop()


def _jti(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["jti"]


def test_a_user_scope_revocation_expires_after_the_lifetime_past_not_before(
        broker, producer, redis_service, tmp_path):
    """Keys outlive what they revoke, and no longer: TTL = lifetime (+ not_before lead)."""
    client = redis_service.client()
    applier = start_applier(broker, tmp_path, "ttl", redis=redis_service.url,
                            revocation_ttl_s="900")
    try:
        now = datetime.now(UTC)
        user = f"ttl-user-{uuid.uuid4().hex[:6]}"
        r = Revocation(id=f"rev-{user}", tenant="apply-it", scope=Scope.USER, session=None,
                       user=user, source=None, action=Action.REVOKE,
                       not_before=now + timedelta(seconds=60), expires=None,
                       reasons=[], event_time=now, decided_at=now, events=[])
        producer.produce(REVOCATIONS_TOPIC, encode(r), key=user.encode())
        producer.flush(10)
        key = f"sessionwatch:revoked:user:apply-it:{user}"
        wait_for(lambda: client.exists(key), 30, "the user key")
        assert 900 < client.ttl(key) <= 960
    finally:
        applier.stop()
