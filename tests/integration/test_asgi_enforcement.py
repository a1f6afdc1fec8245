"""The ASGI middleware (producers/asgi.py) against a real redis-server, without the broker.

A Starlette app with starsessions' RedisStore and SessionWatchMiddleware, driven in-process
through httpx's ASGI transport. The one stand-in: the SDK's Kafka producer is replaced by
`producer_factory=` capturing what would be sent, because these tests check the events the
middleware emits (types, hashed sessions, attributes), not their delivery, which the
end-to-end test (test_asgi_e2e.py) covers with the real broker.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import redis.asyncio as aioredis
from integration.web_e2e import CapturingProducer, check_login_lifecycle
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from starsessions import SessionMiddleware
from starsessions.stores.redis import RedisStore

from producers import asgi as sessionwatch
from producers.asgi import SessionWatchMiddleware
from producers.client import SessionwatchClient
from producers.enforcement import REFUSED_MESSAGE, SIGNED_OUT_MESSAGE
from producers.hashing import TokenHasher
from producers.revocation_keys import (
    session_index_key,
    session_key,
    source_key,
    user_index_key,
    user_key,
)
from sessionwatch.broker import free_port

TENANT = "asgi-unit"
PREFIX = "starsessions."
HOME = "73.162.10.20"
HASHER = TokenHasher({"k1": "asgi-unit-test-hash-key-0123456789abcdef"})


class Harness:
    def __init__(self, redis_url: str, **options: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.client = SessionwatchClient(
            "unused:9092", HASHER, tenant=TENANT,
            producer_factory=lambda: CapturingProducer(self.events, self.raw))
        self.redis = aioredis.Redis.from_url(redis_url)
        watch_redis = options.pop("watch_redis", self.redis)
        self.step_ups: list[str] = []

        async def login(request: Request) -> Response:
            form = parse_qs((await request.body()).decode())
            user = form.get("user", [""])[0]
            if form.get("password") != ["right"]:
                sessionwatch.login_failed(request, user)
                return JSONResponse({"error": "wrong"}, status_code=401)
            await sessionwatch.login(request, user)
            return JSONResponse({"user": sessionwatch.current_user(request)})

        async def logout(request: Request) -> Response:
            await sessionwatch.logout(request)
            return JSONResponse({"user": None})

        async def account(request: Request) -> Response:
            return JSONResponse({"user": sessionwatch.current_user(request)})

        async def cart(request: Request) -> Response:
            request.session["cart"] = ["book"]   # an anonymous session worth storing
            return JSONResponse({"cart": request.session["cart"]})

        async def password(request: Request) -> Response:
            user = sessionwatch.current_user(request)
            assert user is not None
            sessionwatch.credential_changed(request, user)
            await sessionwatch.rotate(request)
            return JSONResponse({"changed": True})

        async def step_up(request: Request) -> Response:
            self.step_ups.append(request.url.path)
            return JSONResponse({"error": "step_up"}, status_code=401)

        async def ws(websocket: WebSocket) -> None:
            await websocket.accept()
            await websocket.send_json({"user": sessionwatch.current_user(websocket)})
            await websocket.close()

        def client_ip(conn: HTTPConnection) -> str | None:
            return conn.headers.get("x-forwarded-for")

        options.setdefault("on_step_up", step_up)
        self.app = Starlette(
            routes=[Route("/login", login, methods=["POST"]),
                    Route("/logout", logout, methods=["POST"]),
                    Route("/password", password, methods=["POST"]),
                    Route("/account", account), Route("/cart", cart),
                    WebSocketRoute("/ws", ws)],
            middleware=[
                Middleware(SessionMiddleware, store=RedisStore(connection=self.redis, prefix=PREFIX),
                           cookie_https_only=False),
                Middleware(SessionWatchMiddleware, client=self.client, redis=watch_redis,
                           tenant=TENANT, client_ip=client_ip, **options),
            ])

    def browser(self, ip: str = HOME) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                 base_url="http://testserver",
                                 headers={"X-Forwarded-For": ip, "User-Agent": "Mozilla/5.0"})

    def sent(self) -> list[dict[str, Any]]:
        assert self.client.flush(5)
        return self.events

    async def close(self) -> None:
        self.client.close(5)
        await self.redis.aclose()


def scenario(redis_service: Any, body: Callable[[Harness], Awaitable[None]],
             **options: Any) -> Harness:
    async def run() -> Harness:
        harness = Harness(redis_service.url, **options)
        try:
            await body(harness)
        finally:
            await harness.close()
        return harness

    return asyncio.run(run())


async def login(browser: httpx.AsyncClient, user: str) -> str:
    r = await browser.post("/login", data={"user": user, "password": "right"})
    assert r.status_code == 200, r.text
    return browser.cookies["session"]


def test_lifecycle_events_carry_hashes_only(redis_service: Any) -> None:
    async def body(h: Harness) -> None:
        async with h.browser() as b:
            assert (await b.get("/account")).status_code == 200  # no cookie, nothing stored
            assert "session" not in b.cookies
            await b.get("/cart")
            anonymous = b.cookies["session"]
            assert await h.redis.exists(PREFIX + anonymous)

            new = await login(b, "alice")
            assert new != anonymous
            # The old id is worthless: its record is gone, not merely unreferenced.
            assert not await h.redis.exists(PREFIX + anonymous)
            assert await h.redis.exists(PREFIX + new)
            index = session_index_key(TENANT, HASHER.hash(new))
            assert (await h.redis.get(index)) == (PREFIX + new).encode()
            assert await h.redis.zscore(user_index_key(TENANT, "alice"), HASHER.hash(new))

            assert (await b.get("/account")).json() == {"user": "alice"}
            await b.post("/logout")
            assert "session" not in b.cookies
            assert not await h.redis.exists(PREFIX + new)
            assert not await h.redis.exists(index)
            assert (await b.get("/account")).json() == {"user": None}

            check_login_lifecycle(h.sent(), h.raw, HASHER, anonymous, new, HOME, TENANT)

    scenario(redis_service, body)


def test_login_from_a_fresh_session_has_no_previous(redis_service: Any) -> None:
    async def body(h: Harness) -> None:
        async with h.browser() as b:
            await login(b, "alice")
            r = await b.post("/login", data={"user": "alice", "password": "wrong"})
            assert r.status_code == 401
        first, failed, activity = h.sent()
        assert activity["type"] == "session.activity"
        assert first["type"] == "session.authenticated"
        assert "previous_session" not in first["attrs"]
        assert failed["type"] == "auth.failed" and failed["user"] == "alice"

    scenario(redis_service, body)


def test_an_unknown_cookie_is_rejected_and_never_adopted(redis_service: Any) -> None:
    chosen = "a" * 32

    async def body(h: Harness) -> None:
        async with h.browser() as b:
            b.cookies.set("session", chosen, domain="testserver.local")
            r = await b.get("/cart")
            assert r.status_code == 200
            # starsessions alone would store the new session under the id the client chose.
            assert not await h.redis.exists(PREFIX + chosen)
            issued = b.cookies["session"]
            assert issued != chosen and await h.redis.exists(PREFIX + issued)
        [rejected] = h.sent()
        assert rejected["type"] == "token.rejected"
        assert rejected["attrs"]["reason"] == "unknown"
        assert rejected["session"] == HASHER.hash(chosen)

    scenario(redis_service, body)


def test_a_revoked_session_is_signed_out_and_its_record_deleted(redis_service: Any) -> None:
    async def body(h: Harness) -> None:
        async with h.browser() as b:
            token = await login(b, "carol")
            await h.redis.set(session_key(TENANT, HASHER.hash(token)),
                              json.dumps({"id": "rev-1", "action": "revoke"}))
            r = await b.get("/account")
            assert r.status_code == 401
            assert r.json() == {"error": "signed_out", "message": SIGNED_OUT_MESSAGE}
            assert r.headers["cache-control"] == "no-store"
            assert "session" not in b.cookies
            assert not await h.redis.exists(PREFIX + token)
            assert not await h.redis.exists(session_index_key(TENANT, HASHER.hash(token)))

            # The same cookie again (the record is gone): still the neutral 401, cookie cleared.
            b.cookies.set("session", token, domain="testserver.local")
            r = await b.get("/account")
            assert r.status_code == 401 and r.json()["message"] == SIGNED_OUT_MESSAGE
            assert "session" not in b.cookies
        types = [(e["type"], e["attrs"].get("reason")) for e in h.sent()]
        assert types == [("session.authenticated", None), ("token.rejected", "revoked"),
                         ("token.rejected", "revoked")]

    scenario(redis_service, body)


def test_a_revoked_browser_is_redirected_to_sign_in(redis_service: Any) -> None:
    async def body(h: Harness) -> None:
        async with h.browser() as b:
            token = await login(b, "dave")
            await h.redis.set(session_key(TENANT, HASHER.hash(token)), "{}")
            r = await b.get("/account", headers={"Accept": "text/html,*/*;q=0.8"})
            assert r.status_code == 303 and r.headers["location"] == "/signin"
            token = await login(b, "dave")
            await h.redis.set(session_key(TENANT, HASHER.hash(token)), "{}")
            r = await b.get("/account", headers={"Accept": "*/*"})  # an API client: JSON
            assert r.status_code == 401

    scenario(redis_service, body, login_url="/signin")


def test_password_change_rotates_and_a_user_revocation_ends_older_logins(redis_service: Any) -> None:
    async def body(h: Harness) -> None:
        async with h.browser() as laptop, h.browser() as phone:
            await login(laptop, "erin")
            await login(phone, "erin")
            before = laptop.cookies["session"]
            assert (await laptop.post("/password")).status_code == 200
            assert laptop.cookies["session"] != before      # rotated
            assert not await h.redis.exists(PREFIX + before)
            # A user-scope revocation (`revoke_user`): sessions authenticated before it end.
            cutoff = (datetime.now(UTC) - timedelta(milliseconds=1)).isoformat()
            await h.redis.set(user_key(TENANT, "erin"), json.dumps({"not_before": cutoff}))
            await asyncio.sleep(0.01)
            assert (await phone.get("/account")).status_code == 401
        changed, refreshed = [e for e in h.sent() if e["type"] in (
            "credential.changed", "session.refreshed")]
        assert changed["type"] == "credential.changed" and changed["user"] == "erin"
        assert changed["session"] == HASHER.hash(before)
        assert refreshed["attrs"]["previous_session"] == HASHER.hash(before)

    scenario(redis_service, body)


@pytest.mark.parametrize("status", [403, 429])
def test_a_blocked_source_is_refused_and_the_session_kept(redis_service: Any, status: int) -> None:
    attacker = f"198.51.100.{status % 256}"

    async def body(h: Harness) -> None:
        expires = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        await h.redis.set(source_key(TENANT, attacker), json.dumps({"expires": expires}))
        try:
            async with h.browser() as b:
                token = await login(b, f"frank{status}")
                r = await b.get("/account", headers={"X-Forwarded-For": attacker})
                assert r.status_code == status
                assert r.json() == {"error": "refused", "message": REFUSED_MESSAGE}
                if status == 429:
                    assert 200 < int(r.headers["retry-after"]) <= 300
                else:
                    assert "retry-after" not in r.headers
                assert await h.redis.exists(PREFIX + token)
                assert (await b.get("/account")).status_code == 200   # from home: served
        finally:
            await h.redis.delete(source_key(TENANT, attacker))

    scenario(redis_service, body, blocked_status=status)


def test_step_up_calls_the_hook(redis_service: Any) -> None:
    async def body(h: Harness) -> None:
        async with h.browser() as b:
            token = await login(b, "gina")
            await h.redis.set(session_key(TENANT, HASHER.hash(token)),
                              json.dumps({"action": "step_up"}))
            r = await b.get("/account")
            assert r.status_code == 401 and r.json() == {"error": "step_up"}
            assert h.step_ups == ["/account"]
            assert await h.redis.exists(PREFIX + token)  # the session stays for the step-up

    scenario(redis_service, body)


def test_step_up_without_a_hook_is_a_revocation(redis_service: Any) -> None:
    async def body(h: Harness) -> None:
        async with h.browser() as b:
            token = await login(b, "hal")
            await h.redis.set(session_key(TENANT, HASHER.hash(token)),
                              json.dumps({"action": "step_up"}))
            r = await b.get("/account")
            assert r.status_code == 401 and r.json()["message"] == SIGNED_OUT_MESSAGE
            assert not await h.redis.exists(PREFIX + token)

    scenario(redis_service, body, on_step_up=None)


@pytest.mark.parametrize("fail_open", [True, False])
def test_revocation_redis_down(redis_service: Any, fail_open: bool) -> None:
    """The session store is up, the Redis the revocations are read from is not. The client is
    configured to fail fast, as it should be: redis-py's default retries cost ~4 s a command
    when the connection is refused, on every request of the outage."""
    async def body(h: Harness) -> None:
        async with h.browser() as b:
            await login(b, "ivy")  # the index write fails quietly
            r = await b.get("/account")
            if fail_open:
                assert r.status_code == 200 and r.json() == {"user": "ivy"}
            else:
                assert r.status_code == 403 and r.json()["message"] == REFUSED_MESSAGE

    dead = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5,
                          retry=Retry(NoBackoff(), 0))
    scenario(redis_service, body, watch_redis=dead, fail_open=fail_open)



async def websocket(app: Any, cookie: str) -> list[dict[str, Any]]:
    """One WebSocket connection, raw ASGI (httpx's transport speaks HTTP only)."""
    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "path": "/ws",
             "raw_path": b"/ws", "root_path": "", "query_string": b"", "subprotocols": [],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
             "headers": [(b"host", b"testserver"), (b"cookie", f"session={cookie}".encode()),
                         (b"x-forwarded-for", HOME.encode())]}
    inbox: list[dict[str, Any]] = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_a_websocket_handshake_is_checked_too(redis_service: Any) -> None:
    async def body(h: Harness) -> None:
        async with h.browser() as b:
            token = await login(b, "jane")
        accepted = await websocket(h.app, token)
        assert accepted[0]["type"] == "websocket.accept"
        assert json.loads(accepted[1]["text"]) == {"user": "jane"}
        await h.redis.set(session_key(TENANT, HASHER.hash(token)), "{}")
        assert await websocket(h.app, token) == [{"type": "websocket.close", "code": 1008}]
        assert not await h.redis.exists(PREFIX + token)  # starsessions saves nothing for a socket
        types = [(e["type"], e["attrs"].get("reason")) for e in h.sent()]
        assert types == [("session.authenticated", None), ("session.activity", None),
                         ("token.rejected", "revoked")]

    scenario(redis_service, body)
