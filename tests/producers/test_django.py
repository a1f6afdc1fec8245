"""The Django middleware (producers/django.py) against a real redis-server, without the broker.

Django's own session framework (the cache engine on Django's RedisCache, in a real Redis) and
SessionWatchMiddleware, driven in-process through Django's test Client. The one stand-in: the
SDK's Kafka producer is replaced by `producer_factory=` capturing what would be sent, because
these tests check the events the middleware emits (types, hashed sessions, attributes), not
their delivery, which the end-to-end test (tests/integration/test_django_e2e.py) covers with the
real broker. The twin of tests/integration/test_asgi_enforcement.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import django
import pytest
import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client, RequestFactory, override_settings
from django.urls import path
from integration.conftest import RedisServer
from integration.web_e2e import CapturingProducer, check_login_lifecycle
from redis.backoff import NoBackoff
from redis.retry import Retry

from producers import django as sessionwatch
from producers.client import SessionwatchClient
from producers.enforcement import REFUSED_MESSAGE, SIGNED_OUT_MESSAGE
from producers.errors import ConfigError
from producers.hashing import TokenHasher
from producers.revocation_keys import (
    session_index_key,
    session_key,
    source_key,
    user_index_key,
    user_key,
)
from sessionwatch.broker import free_port

TENANT = "django-unit"
PREFIX = ":1:django.contrib.sessions.cache"   # cache.make_key(): <KEY_PREFIX>:<VERSION>:<key>
COOKIE = "sessionid"
HOME = "73.162.10.20"
HASHER = TokenHasher({"k1": "django-unit-test-hash-key-0123456789abcdef"})


# -- the app --------------------------------------------------------------------------------------

def login_view(request: HttpRequest) -> HttpResponse:
    user = request.POST.get("user", "")
    if request.POST.get("password") != "right":
        sessionwatch.login_failed(request, user)
        return JsonResponse({"error": "wrong"}, status=401)
    sessionwatch.login(request, user)
    return JsonResponse({"user": sessionwatch.current_user(request)})


def logout_view(request: HttpRequest) -> HttpResponse:
    sessionwatch.logout(request)
    return JsonResponse({"user": None})


def account_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"user": sessionwatch.current_user(request)})


def cart_view(request: HttpRequest) -> HttpResponse:
    request.session["cart"] = ["book"]   # an anonymous session worth storing
    return JsonResponse({"cart": request.session["cart"]})


def password_view(request: HttpRequest) -> HttpResponse:
    user = sessionwatch.current_user(request)
    assert user is not None
    sessionwatch.credential_changed(request, user)
    sessionwatch.rotate(request)
    return JsonResponse({"changed": True})


def revoked_mid_request_view(request: HttpRequest) -> HttpResponse:
    """The applier deletes this session's record while the request runs, then the view writes."""
    from django.core.cache import cache

    cache.delete(request.session.cache_key)
    request.session["cart"] = ["book"]
    return JsonResponse({"ok": True})


urlpatterns = [
    path("login", login_view), path("logout", logout_view), path("account", account_view),
    path("cart", cart_view), path("password", password_view),
    path("revoked-mid-request", revoked_mid_request_view),
]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis-django")).start()
    assert not settings.configured, "another test configured Django first"
    settings.configure(
        SECRET_KEY="django-unit-test-secret", ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__, INSTALLED_APPS=[], DATABASES={},
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware",
                    "producers.django.SessionWatchMiddleware"],
        CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                            "LOCATION": server.url}},
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
        SESSIONWATCH={},
    )
    django.setup()
    yield server.url
    server.stop()


# -- the harness ------------------------------------------------------------------------------------

def client_ip(request: HttpRequest) -> str | None:
    return request.META.get("HTTP_X_FORWARDED_FOR")


class Harness:
    def __init__(self, redis_url: str, **options: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.step_ups: list[str] = []
        self.client = SessionwatchClient(
            "unused:9092", HASHER, tenant=TENANT,
            producer_factory=lambda: CapturingProducer(self.events, self.raw))
        self.redis = redis.Redis.from_url(redis_url)
        # A URL by default: the middleware builds its own fail-fast client from it.
        self.config: dict[str, Any] = {"CLIENT": self.client, "REDIS": redis_url,
                                       "TENANT": TENANT, "CLIENT_IP": client_ip,
                                       "ON_STEP_UP": self.step_up, **options}

    def step_up(self, request: HttpRequest) -> HttpResponse:
        self.step_ups.append(request.path)
        return JsonResponse({"error": "step_up"}, status=401)

    def browser(self, ip: str = HOME) -> Client:
        # A new Client loads the middleware anew, under this harness's SESSIONWATCH.
        return Client(headers={"X-Forwarded-For": ip, "User-Agent": "Mozilla/5.0"})

    def sent(self) -> list[dict[str, Any]]:
        assert self.client.flush(5)
        return self.events


@contextmanager
def running(redis_url: str, **options: Any) -> Iterator[Harness]:
    """A harness whose SESSIONWATCH settings are in force for the block."""
    h = Harness(redis_url, **options)
    try:
        with override_settings(SESSIONWATCH=h.config):
            yield h
    finally:
        h.client.close(5)
        h.redis.close()


@pytest.fixture
def harness(redis_url: str) -> Iterator[Harness]:
    with running(redis_url) as h:
        yield h


def login(browser: Client, user: str) -> str:
    r = browser.post("/login", {"user": user, "password": "right"})
    assert r.status_code == 200, r.content
    return cookie(browser) or ""


def cookie(browser: Client) -> str | None:
    """The session cookie the browser holds (a deleted cookie stays in the jar, emptied)."""
    morsel = browser.cookies.get(COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


# -- the tests --------------------------------------------------------------------------------------

def test_lifecycle_events_carry_hashes_only(harness: Harness) -> None:
    h = harness
    b = h.browser()
    assert b.get("/account").status_code == 200   # no cookie, nothing stored
    assert cookie(b) is None
    b.get("/cart")
    anonymous = cookie(b)
    assert anonymous and h.redis.exists(PREFIX + anonymous)

    new = login(b, "alice")
    assert new != anonymous
    # The old id is worthless: its record is gone, not merely unreferenced.
    assert not h.redis.exists(PREFIX + anonymous)
    assert h.redis.exists(PREFIX + new)
    index = session_index_key(TENANT, HASHER.hash(new))
    assert h.redis.get(index) == (PREFIX + new).encode()   # the key the applier deletes
    assert h.redis.zscore(user_index_key(TENANT, "alice"), HASHER.hash(new))

    assert b.get("/account").json() == {"user": "alice"}
    b.post("/logout")
    assert cookie(b) is None
    assert not h.redis.exists(PREFIX + new)
    assert not h.redis.exists(index)
    assert b.get("/account").json() == {"user": None}

    check_login_lifecycle(h.sent(), h.raw, HASHER, anonymous, new, HOME, TENANT)


def test_login_from_a_fresh_session_has_no_previous(harness: Harness) -> None:
    b = harness.browser()
    login(b, "alice")
    assert b.post("/login", {"user": "alice", "password": "wrong"}).status_code == 401
    first, failed, activity = harness.sent()
    assert activity["type"] == "session.activity"
    assert first["type"] == "session.authenticated"
    assert "previous_session" not in first["attrs"]
    assert failed["type"] == "auth.failed" and failed["user"] == "alice"


def test_an_unknown_cookie_is_rejected_and_never_adopted(harness: Harness) -> None:
    chosen = "a" * 32
    b = harness.browser()
    b.cookies[COOKIE] = chosen
    assert b.get("/cart").status_code == 200
    assert not harness.redis.exists(PREFIX + chosen)
    issued = cookie(b)
    assert issued and issued != chosen and harness.redis.exists(PREFIX + issued)
    [rejected] = harness.sent()
    assert rejected["type"] == "token.rejected"
    assert rejected["attrs"]["reason"] == "unknown"
    assert rejected["session"] == HASHER.hash(chosen)


def test_a_revoked_session_is_signed_out_and_its_record_deleted(harness: Harness) -> None:
    h = harness
    b = h.browser()
    token = login(b, "carol")
    h.redis.set(session_key(TENANT, HASHER.hash(token)),
                json.dumps({"id": "rev-1", "action": "revoke"}))
    r = b.get("/account")
    assert r.status_code == 401
    assert r.json() == {"error": "signed_out", "message": SIGNED_OUT_MESSAGE}
    assert r["Cache-Control"] == "no-store"
    assert cookie(b) is None
    assert not h.redis.exists(PREFIX + token)
    assert not h.redis.exists(session_index_key(TENANT, HASHER.hash(token)))

    # The same cookie again (the record is gone): still the neutral 401, cookie cleared.
    b.cookies[COOKIE] = token
    r = b.get("/account")
    assert r.status_code == 401 and r.json()["message"] == SIGNED_OUT_MESSAGE
    assert cookie(b) is None
    types = [(e["type"], e["attrs"].get("reason")) for e in h.sent()]
    assert types == [("session.authenticated", None), ("token.rejected", "revoked"),
                     ("token.rejected", "revoked")]


def test_a_revoked_browser_is_redirected_to_sign_in(redis_url: str) -> None:
    with running(redis_url, LOGIN_URL="/signin") as h:
        b = h.browser()
        token = login(b, "dave")
        h.redis.set(session_key(TENANT, HASHER.hash(token)), "{}")
        r = b.get("/account", headers={"Accept": "text/html,*/*;q=0.8"})
        assert r.status_code == 303 and r["Location"] == "/signin"
        assert r["Cache-Control"] == "no-store" and cookie(b) is None
        token = login(b, "dave")
        h.redis.set(session_key(TENANT, HASHER.hash(token)), "{}")
        assert b.get("/account", headers={"Accept": "*/*"}).status_code == 401  # API: JSON


def test_password_change_rotates_and_a_user_revocation_ends_older_logins(harness: Harness) -> None:
    h = harness
    laptop, phone = h.browser(), h.browser()
    login(laptop, "erin")
    login(phone, "erin")
    before = cookie(laptop)
    assert before and laptop.post("/password").status_code == 200
    assert cookie(laptop) != before      # rotated
    assert not h.redis.exists(PREFIX + before)
    # A user-scope revocation (`revoke_user`): sessions authenticated before it end.
    cutoff = (datetime.now(UTC) - timedelta(milliseconds=1)).isoformat()
    h.redis.set(user_key(TENANT, "erin"), json.dumps({"not_before": cutoff}))
    time.sleep(0.01)  # the cut-off is in the past for the check, not a synchronisation
    assert phone.get("/account").status_code == 401
    changed, refreshed = [e for e in h.sent() if e["type"] in (
        "credential.changed", "session.refreshed")]
    assert changed["type"] == "credential.changed" and changed["user"] == "erin"
    assert changed["session"] == HASHER.hash(before)
    assert refreshed["attrs"]["previous_session"] == HASHER.hash(before)


@pytest.mark.parametrize("status", [403, 429])
def test_a_blocked_source_is_refused_and_the_session_kept(redis_url: str, status: int) -> None:
    attacker = f"198.51.100.{status % 256}"
    with running(redis_url, BLOCKED_STATUS=status) as h:
        expires = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        h.redis.set(source_key(TENANT, attacker), json.dumps({"expires": expires}))
        try:
            b = h.browser()
            token = login(b, f"frank{status}")
            r = b.get("/account", headers={"X-Forwarded-For": attacker})
            assert r.status_code == status
            assert r.json() == {"error": "refused", "message": REFUSED_MESSAGE}
            if status == 429:
                assert 200 < int(r["Retry-After"]) <= 300
            else:
                assert not r.has_header("Retry-After")
            assert h.redis.exists(PREFIX + token)
            assert b.get("/account").status_code == 200   # from home: served
        finally:
            h.redis.delete(source_key(TENANT, attacker))


def test_step_up_calls_the_hook(harness: Harness) -> None:
    b = harness.browser()
    token = login(b, "gina")
    harness.redis.set(session_key(TENANT, HASHER.hash(token)), json.dumps({"action": "step_up"}))
    r = b.get("/account")
    assert r.status_code == 401 and r.json() == {"error": "step_up"}
    assert harness.step_ups == ["/account"]
    assert harness.redis.exists(PREFIX + token)  # the session stays for the step-up


def test_step_up_without_a_hook_is_a_revocation(redis_url: str) -> None:
    with running(redis_url, ON_STEP_UP=None) as h:
        b = h.browser()
        token = login(b, "hal")
        h.redis.set(session_key(TENANT, HASHER.hash(token)), json.dumps({"action": "step_up"}))
        r = b.get("/account")
        assert r.status_code == 401 and r.json()["message"] == SIGNED_OUT_MESSAGE
        assert not h.redis.exists(PREFIX + token)


@pytest.mark.parametrize("fail_open", [True, False])
def test_revocation_redis_down(redis_url: str, fail_open: bool) -> None:
    """The session store is up, the Redis the revocations are read from is not."""
    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5,
                       retry=Retry(NoBackoff(), 0))
    with running(redis_url, REDIS=dead, FAIL_OPEN=fail_open) as h:
        b = h.browser()
        login(b, "ivy")  # the index write fails quietly
        r = b.get("/account")
        if fail_open:
            assert r.status_code == 200 and r.json() == {"user": "ivy"}
        else:
            assert r.status_code == 403 and r.json()["message"] == REFUSED_MESSAGE


def test_a_session_deleted_mid_request_is_not_written_back(harness: Harness) -> None:
    """What the applier deletes stays deleted: Django's cache store refuses to save a session
    whose record vanished during the request (SessionInterrupted, 400)."""
    b = harness.browser()
    token = login(b, "jill")
    assert b.get("/revoked-mid-request").status_code == 400
    assert not harness.redis.exists(PREFIX + token)


# -- configuration ----------------------------------------------------------------------------------

def make(config: dict[str, Any]) -> sessionwatch.SessionWatchMiddleware:
    return sessionwatch.SessionWatchMiddleware(lambda request: HttpResponse(), config=config)


def test_configuration_errors_name_the_setting(harness: Harness) -> None:
    with pytest.raises(ConfigError, match="CLIENT"):
        make({"REDIS": "redis://127.0.0.1:1/0"})
    with pytest.raises(ConfigError, match="REDIS"):
        make({"CLIENT": harness.client})
    with pytest.raises(ConfigError, match="unknown option.*FAILOPEN"):
        make({**harness.config, "FAILOPEN": False})
    with pytest.raises(ConfigError, match="CLIENT.*cannot import"):
        make({**harness.config, "CLIENT": "nowhere.client"})
    with pytest.raises(ConfigError, match="BLOCKED_STATUS"):
        make({**harness.config, "BLOCKED_STATUS": 401})


def test_a_store_the_applier_cannot_clear_is_refused(harness: Harness) -> None:
    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies"):
        with pytest.raises(ConfigError, match="SESSION_ENGINE"):
            make(harness.config)
    with override_settings(CACHES={"default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}):
        with pytest.raises(ConfigError, match=r"CACHES\['default'\]\['BACKEND'\]"):
            make(harness.config)


def test_it_must_come_after_the_session_middleware(harness: Harness) -> None:
    middleware = make(harness.config)
    with pytest.raises(ConfigError, match="after 'django.contrib.sessions"):
        middleware(RequestFactory().get("/account"))
