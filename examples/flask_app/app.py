"""A small Flask app protected by sessionwatch: Flask-Session in Redis, the middleware in front.

    python examples/flask_app/app.py --port 5000 --redis redis://127.0.0.1:6379/0 \
        --bootstrap 127.0.0.1:9092

Environment: SESSIONWATCH_HASH_KEY (32+ bytes, the same key the worker's events are hashed
with; the demo key below is for trying it out only) and FLASK_SECRET_KEY.

Users: alice / alice-password, bob / bob-password (in memory, hashed with werkzeug), and with
--extra-users N user1..userN / extra-user-password.
Routes: GET / (who am I), POST /login, POST /logout, POST /password, GET /account.
It trusts one proxy's X-Forwarded-For (werkzeug ProxyFix), as an app behind nginx would; the
end-to-end test plays that proxy to come from different countries.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import redis
from flask import Flask, jsonify, request
from flask_session import Session
from redis.backoff import NoBackoff
from redis.retry import Retry
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.security import check_password_hash, generate_password_hash

from producers.client import SessionwatchClient
from producers.flask import SessionWatch
from producers.hashing import TokenHasher

DEMO_HASH_KEY = "example-only-hash-key-0123456789abcdef"  # never in production


def create_app(redis_url: str, bootstrap: str, *, hash_key: str | None = None,
               tenant: str = "example", client: SessionwatchClient | None = None,
               extra_users: int = 0) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ.get("FLASK_SECRET_KEY", "example-only-secret"),
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis.from_url(redis_url),
        SESSION_PERMANENT=False,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    Session(app)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]

    key = hash_key or os.environ.get("SESSIONWATCH_HASH_KEY") or DEMO_HASH_KEY
    client = client or SessionwatchClient(bootstrap, TokenHasher({"k1": key}), tenant=tenant)
    # The check gets its own fail-fast client: with redis-py's default retries a Redis outage
    # would cost every request seconds before the check fails open.
    check_redis = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5,
                                       retry=Retry(NoBackoff(), 1))
    sw = SessionWatch(app, client=client, redis=check_redis, tenant=tenant)
    app.extensions["sessionwatch_client"] = client

    passwords = {"alice": generate_password_hash("alice-password"),
                 "bob": generate_password_hash("bob-password")}
    # user1..userN with password "<user>-password": load and latency runs need many users.
    shared = generate_password_hash("extra-user-password")
    passwords.update({f"user{i}": shared for i in range(1, extra_users + 1)})

    @app.get("/")
    def home() -> Any:
        return jsonify(user=sw.user)

    @app.post("/login")
    def login() -> Any:
        user = request.form.get("user", "")
        password = request.form.get("password", "")
        stored = passwords.get(user)
        if stored is None or not check_password_hash(stored, password):
            sw.login_failed(user or None)
            return jsonify(error="wrong user or password"), 401
        sw.login(user)
        return jsonify(user=user)

    @app.post("/logout")
    def logout() -> Any:
        sw.logout()
        return jsonify(user=None)

    @app.post("/password")
    def change_password() -> Any:
        user = sw.user
        if user is None:
            return jsonify(error="sign in first"), 401
        if not check_password_hash(passwords[user], request.form.get("old", "")):
            return jsonify(error="wrong password"), 403
        passwords[user] = generate_password_hash(request.form.get("new", ""))
        sw.credential_changed(user)   # sessionwatch revokes the user's other sessions
        sw.rotate()                   # and this one continues under a new id
        return jsonify(changed=True)

    @app.get("/account")
    def account() -> Any:
        if sw.user is None:
            return jsonify(error="sign in first"), 401
        return jsonify(user=sw.user, balance="1,234.56")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--tenant", default="example")
    parser.add_argument("--extra-users", type=int, default=0,
                        help="also user1..userN, password 'extra-user-password'")
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from werkzeug.serving import make_server

    app = create_app(args.redis, args.bootstrap, tenant=args.tenant,
                     extra_users=args.extra_users)
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"example app on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
