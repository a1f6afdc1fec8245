"""A small Starlette app protected by sessionwatch: starsessions' RedisStore, the middleware inside.

    python examples/starlette_app/app.py --port 8000 --redis redis://127.0.0.1:6379/0 \
        --bootstrap 127.0.0.1:9092

The twin of examples/flask_app/app.py (same users, routes and answers), tenant "example-asgi".
Environment: SESSIONWATCH_HASH_KEY (32+ bytes, the same key the worker's events are hashed
with; the demo key below is for trying it out only).

Users: alice / alice-password, bob / bob-password (in memory, hashed with werkzeug), and with
--extra-users N user1..userN / extra-user-password.
Routes: GET / (who am I), POST /login, POST /logout, POST /password, GET /account.
It trusts one proxy's X-Forwarded-For hop, as an app behind nginx would: `TrustOneProxy` below
(the last entry, what werkzeug's ProxyFix(x_for=1) does). Not uvicorn's proxy_headers with
forwarded_allow_ips="*": that takes the first entry, which the client itself can write. The
end-to-end test plays that proxy to come from different countries.
Cookies are sent over plain http here (cookie_https_only=False): behind TLS, leave it True.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starsessions import SessionMiddleware
from starsessions.stores.redis import RedisStore
from werkzeug.security import check_password_hash, generate_password_hash

from producers import asgi as sessionwatch
from producers.asgi import SessionWatchMiddleware
from producers.client import SessionwatchClient
from producers.hashing import TokenHasher

DEMO_HASH_KEY = "example-only-hash-key-0123456789abcdef"  # never in production
SESSION_LIFETIME_S = 43_200


class TrustOneProxy:
    """Take the client address from the last X-Forwarded-For entry: the one our proxy added.
    Only correct when exactly one trusted proxy sits in front of the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
            hops = [h.strip() for h in ",".join(values).split(",") if h.strip()]
            if hops:
                port = scope["client"][1] if scope.get("client") else 0
                scope = dict(scope, client=(hops[-1], port))
        await self.app(scope, receive, send)


async def _form(request: Request) -> dict[str, str]:
    """An url-encoded form body (Starlette's request.form() needs python-multipart)."""
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def create_app(redis_url: str, bootstrap: str, *, hash_key: str | None = None,
               tenant: str = "example-asgi", client: SessionwatchClient | None = None,
               extra_users: int = 0) -> ASGIApp:
    key = hash_key or os.environ.get("SESSIONWATCH_HASH_KEY") or DEMO_HASH_KEY
    client = client or SessionwatchClient(bootstrap, TokenHasher({"k1": key}), tenant=tenant)
    store_redis = aioredis.Redis.from_url(redis_url)
    # The revocation checks get their own client that fails fast: with redis-py's default
    # retries a refused connection costs ~4 s per command, on every request of an outage,
    # before fail_open lets the request through.
    check_redis = aioredis.Redis.from_url(redis_url, socket_timeout=0.5,
                                          socket_connect_timeout=0.5,
                                          retry=Retry(NoBackoff(), 1))

    passwords = {"alice": generate_password_hash("alice-password"),
                 "bob": generate_password_hash("bob-password")}
    # user1..userN with password "<user>-password": load and latency runs need many users.
    shared = generate_password_hash("extra-user-password")
    passwords.update({f"user{i}": shared for i in range(1, extra_users + 1)})

    async def home(request: Request) -> Response:
        return JSONResponse({"user": sessionwatch.current_user(request)})

    async def login(request: Request) -> Response:
        form = await _form(request)
        user = form.get("user", "")
        password = form.get("password", "")
        stored = passwords.get(user)
        if stored is None or not check_password_hash(stored, password):
            sessionwatch.login_failed(request, user or None)
            return JSONResponse({"error": "wrong user or password"}, status_code=401)
        await sessionwatch.login(request, user)
        return JSONResponse({"user": user})

    async def logout(request: Request) -> Response:
        await sessionwatch.logout(request)
        return JSONResponse({"user": None})

    async def change_password(request: Request) -> Response:
        user = sessionwatch.current_user(request)
        if user is None:
            return JSONResponse({"error": "sign in first"}, status_code=401)
        form = await _form(request)
        if not check_password_hash(passwords[user], form.get("old", "")):
            return JSONResponse({"error": "wrong password"}, status_code=403)
        passwords[user] = generate_password_hash(form.get("new", ""))
        sessionwatch.credential_changed(request, user)  # sessionwatch revokes the other sessions
        await sessionwatch.rotate(request)               # and this one continues under a new id
        return JSONResponse({"changed": True})

    async def account(request: Request) -> Response:
        user = sessionwatch.current_user(request)
        if user is None:
            return JSONResponse({"error": "sign in first"}, status_code=401)
        return JSONResponse({"user": user, "balance": "1,234.56"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        client.close(5)   # flush the events still buffered
        await store_redis.aclose()
        await check_redis.aclose()

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/password", change_password, methods=["POST"]),
            Route("/account", account),
        ],
        middleware=[
            # Session-only cookie (as the Flask example); the record lives as long as a session.
            Middleware(SessionMiddleware, store=RedisStore(connection=store_redis,
                                                           gc_ttl=SESSION_LIFETIME_S),
                       cookie_https_only=False),
            # Inside SessionMiddleware: it reads the session handler starsessions puts in scope.
            Middleware(SessionWatchMiddleware, client=client, redis=check_redis, tenant=tenant,
                       session_lifetime_s=SESSION_LIFETIME_S),
        ],
        lifespan=lifespan,
    )
    return TrustOneProxy(app)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--tenant", default="example-asgi")
    parser.add_argument("--extra-users", type=int, default=0,
                        help="also user1..userN, password 'extra-user-password'")
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    app = create_app(args.redis, args.bootstrap, tenant=args.tenant,
                     extra_users=args.extra_users)
    print(f"example app on http://{args.host}:{args.port}", flush=True)
    # proxy_headers off: TrustOneProxy decides the client address.
    uvicorn.run(app, host=args.host, port=args.port, proxy_headers=False, log_level="warning")


if __name__ == "__main__":
    main()
