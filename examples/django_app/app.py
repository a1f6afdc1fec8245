"""A small Django project in one file, protected by sessionwatch: cache sessions in Redis.

    python examples/django_app/app.py --port 8001 --redis redis://127.0.0.1:6379/0 \
        --bootstrap 127.0.0.1:9092

The twin of examples/flask_app/app.py (same users, routes and answers), tenant "example-django".
Settings (`configure()`), URLs and views are below. After `configure()`,
`get_wsgi_application()` is a plain WSGI app (gunicorn, uWSGI or mod_wsgi serve it as they would
any project's wsgi.py); `main()` serves it with Django's own threaded WSGI server (runserver's).
Environment: SESSIONWATCH_HASH_KEY (32+ bytes, the same key the worker's events are hashed
with; the demo key below is for trying it out only) and DJANGO_SECRET_KEY.

Users: alice / alice-password, bob / bob-password (in memory, hashed with Django's scrypt
hasher), and with --extra-users N user1..userN / extra-user-password.
Routes: GET / (who am I; sets the csrftoken cookie), POST /login, POST /logout, POST /password,
GET /account. POSTs need the CSRF token (header X-CSRFToken): CsrfViewMiddleware stays on.
It trusts one proxy's X-Forwarded-For hop (`client_ip` below: the last entry), as an app behind
nginx would; the end-to-end test plays that proxy to come from different countries.
Cookies are sent over plain http here (SESSION_COOKIE_SECURE=False): behind TLS, set it True.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import get_token
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from producers import django as sessionwatch
from producers.client import SessionwatchClient
from producers.hashing import TokenHasher

DEMO_HASH_KEY = "example-only-hash-key-0123456789abcdef"  # never in production
SESSION_LIFETIME_S = 43_200
PASSWORDS: dict[str, str] = {}   # user -> Django password hash (a real app: its user model)


def client_ip(request: HttpRequest) -> str | None:
    """The last X-Forwarded-For entry: the one our proxy added. Only correct when exactly one
    trusted proxy sits in front of the app (the first entry is whatever the client wrote)."""
    hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    hops = [h for h in hops if h]
    return hops[-1] if hops else request.META.get("REMOTE_ADDR")


def configure(redis_url: str, bootstrap: str, *, hash_key: str | None = None,
              tenant: str = "example-django", client: SessionwatchClient | None = None,
              extra_users: int = 0) -> SessionwatchClient:
    """The project's settings (what settings.py holds), then the users."""
    import django
    from django.conf import settings

    key = hash_key or os.environ.get("SESSIONWATCH_HASH_KEY") or DEMO_HASH_KEY
    client = client or SessionwatchClient(bootstrap, TokenHasher({"k1": key}), tenant=tenant)
    settings.configure(
        DEBUG=False,
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only-secret"),
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],   # no models: sessions live in the cache, users in PASSWORDS
        DATABASES={},
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            # Right after SessionMiddleware: a revoked request goes no further.
            "producers.django.SessionWatchMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
        # Sessions in Redis through Django's built-in Redis cache: the applier deletes a revoked
        # session's record there (found through the middleware's index).
        CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                            "LOCATION": redis_url}},
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
        SESSION_COOKIE_AGE=SESSION_LIFETIME_S,
        SESSION_EXPIRE_AT_BROWSER_CLOSE=True,   # session-only cookie, as the Flask example
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=False,
        PASSWORD_HASHERS=["django.contrib.auth.hashers.ScryptPasswordHasher"],
        SESSIONWATCH={
            "CLIENT": client,
            # A URL: the middleware builds its own fail-fast client for the checks.
            "REDIS": redis_url,
            "TENANT": tenant,
            "CLIENT_IP": client_ip,
            "SESSION_LIFETIME_S": SESSION_LIFETIME_S,
        },
        USE_TZ=True,
    )
    django.setup()
    from django.contrib.auth.hashers import make_password

    PASSWORDS.update({"alice": make_password("alice-password"),
                      "bob": make_password("bob-password")})
    # user1..userN with password "<user>-password": load and latency runs need many users.
    shared = make_password("extra-user-password")
    PASSWORDS.update({f"user{i}": shared for i in range(1, extra_users + 1)})
    return client


def _check(user: str, password: str) -> bool:
    from django.contrib.auth.hashers import check_password

    stored = PASSWORDS.get(user)
    return stored is not None and check_password(password, stored)


# -- views ---------------------------------------------------------------------------------------

@require_GET
def home(request: HttpRequest) -> JsonResponse:
    get_token(request)   # hands out the csrftoken cookie the POSTs need
    return JsonResponse({"user": sessionwatch.current_user(request)})


@require_POST
def login(request: HttpRequest) -> JsonResponse:
    user = request.POST.get("user", "")
    if not _check(user, request.POST.get("password", "")):
        sessionwatch.login_failed(request, user or None)
        return JsonResponse({"error": "wrong user or password"}, status=401)
    sessionwatch.login(request, user)
    return JsonResponse({"user": user})


@require_POST
def logout(request: HttpRequest) -> JsonResponse:
    sessionwatch.logout(request)
    return JsonResponse({"user": None})


@require_POST
def change_password(request: HttpRequest) -> JsonResponse:
    from django.contrib.auth.hashers import make_password

    user = sessionwatch.current_user(request)
    if user is None:
        return JsonResponse({"error": "sign in first"}, status=401)
    if not _check(user, request.POST.get("old", "")):
        return JsonResponse({"error": "wrong password"}, status=403)
    PASSWORDS[user] = make_password(request.POST.get("new", ""))
    sessionwatch.credential_changed(request, user)   # sessionwatch revokes the other sessions
    sessionwatch.rotate(request)                     # and this one continues under a new id
    return JsonResponse({"changed": True})


@require_GET
def account(request: HttpRequest) -> JsonResponse:
    user = sessionwatch.current_user(request)
    if user is None:
        return JsonResponse({"error": "sign in first"}, status=401)
    return JsonResponse({"user": user, "balance": "1,234.56"})


urlpatterns = [
    path("", home),
    path("login", login),
    path("logout", logout),
    path("password", change_password),
    path("account", account),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--tenant", default="example-django")
    parser.add_argument("--extra-users", type=int, default=0,
                        help="also user1..userN, password 'extra-user-password'")
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    client = configure(args.redis, args.bootstrap, tenant=args.tenant,
                       extra_users=args.extra_users)
    from django.core.servers.basehttp import run
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"example app on http://{args.host}:{args.port}", flush=True)
    try:
        run(args.host, args.port, application, threading=True)
    finally:
        client.close(5)   # flush the events still buffered


if __name__ == "__main__":
    main()
