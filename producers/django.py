"""Django middleware: emit session events from Django's sessions in Redis and enforce revocations.

The twin of `producers/flask.py` for Django's own session framework, stored in Redis:

    SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": "redis://127.0.0.1:6379/0"}}
    MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware",
                  "producers.django.SessionWatchMiddleware", ...]    # right after sessions
    SESSIONWATCH = {"CLIENT": "myproject.sessionwatch.client",   # a SessionwatchClient, or a
                    "REDIS": "redis://127.0.0.1:6379/0"}         # dotted path to a factory

    from producers import django as sessionwatch

    def login_view(request):
        ...check the password...
        sessionwatch.login(request, user)   # new session id, emits session.authenticated

Every request carrying a session cookie is checked against the revocation keys in Redis (one
round trip, `producers/enforcement.py`) before the rest of the app runs: a revoked session is
flushed (record deleted, cookie cleared) and answered 401 (or 303 to `LOGIN_URL` for a browser
asking for HTML); a step-up calls `ON_STEP_UP(request)`; a blocked source gets 403 (or 429 with
Retry-After). The user reads one neutral sentence whatever fired. Events as in the Flask twin:
`session.created`, `session.activity`, `token.rejected` (reason "unknown" or "revoked"), and
`session.authenticated` / `.refreshed` / `.logout`, `auth.failed`, `credential.changed` from
`login()`, `rotate()`, `logout()`, `login_failed()`, `credential_changed()`.

The store: Django's built-in `RedisCache` (Django >= 4.0) with the cache session engine, not
django-redis. It needs nothing but redis-py, which sessionwatch already uses, and its keys
(`<KEY_PREFIX>:<VERSION>:django.contrib.sessions.cache<id>`, `cache.make_key`) are what the
index names for the applier to delete. django-redis keeps the same key format and is accepted
(not tested here); `cached_db` and `db` are refused: a record the applier cannot delete would
outlive its revocation.
Django's cache store never adopts an id it did not issue (an unknown cookie gets a new id on
save), and a request that saves a session the applier deleted meanwhile fails with Django's
SessionInterrupted instead of writing it back.

A sync middleware (Django runs it in a thread under ASGI). Behind a reverse proxy give
`CLIENT_IP` a function that reads your proxy's X-Forwarded-For entry: REMOTE_ADDR is the proxy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings  # type: ignore[import-untyped]
from django.core.cache import caches  # type: ignore[import-untyped]
from django.http import HttpResponse, JsonResponse  # type: ignore[import-untyped]
from django.middleware.csrf import rotate_token  # type: ignore[import-untyped]
from django.utils.module_loading import import_string  # type: ignore[import-untyped]

from producers.client import SessionwatchClient
from producers.enforcement import (
    AUTH_AT_KEY,
    REFUSED_MESSAGE,
    SIGNED_OUT_MESSAGE,
    USER_KEY,
    Enforcer,
    Outcome,
    RequestState,
    Verdict,
    best_effort,
    check_blocked_status,
    event_session,
    forget_pipe,
    log_refusal,
    names_html,
    refusal_body,
    reindex_pipe,
    retry_after,
    unknown_session_verdict,
)
from producers.enforcement import as_number as _number
from producers.enforcement import as_str as _str
from producers.errors import ConfigError

__all__ = [
    "AUTH_AT_KEY",
    "USER_KEY",
    "SessionWatchMiddleware",
    "credential_changed",
    "current_user",
    "login",
    "login_failed",
    "logout",
    "rotate",
]

log = logging.getLogger("sessionwatch.django")

REQUEST_ATTR = "_sessionwatch"  # where this request's state lives on the HttpRequest

# Django objects are untyped (no stubs shipped): these aliases say what is meant.
Request = Any    # django.http.HttpRequest
Response = Any   # django.http.HttpResponse
Session = Any    # django.contrib.sessions.backends.cache.SessionStore

_OPTIONS = frozenset({"CLIENT", "REDIS", "TENANT", "LOGIN_URL", "ON_STEP_UP", "BLOCKED_STATUS",
                      "FAIL_OPEN", "SESSION_LIFETIME_S", "CLIENT_IP"})
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass
class _RequestState(RequestState):
    watch: SessionWatchMiddleware = field(kw_only=True)


class SessionWatchMiddleware:
    """Configured by `settings.SESSIONWATCH` (or `config=` in tests): CLIENT (required), REDIS
    (required: a URL, a redis-py client or a dotted path to one; the Redis the applier writes
    to), TENANT, LOGIN_URL, ON_STEP_UP, BLOCKED_STATUS (403 or 429), FAIL_OPEN (default True),
    SESSION_LIFETIME_S (default SESSION_COOKIE_AGE), CLIENT_IP (a function of the request)."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[Request], Response], *,
                 config: Mapping[str, Any] | None = None) -> None:
        self.get_response = get_response
        options = dict(getattr(settings, "SESSIONWATCH", {}) if config is None else config)
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigError(f"SESSIONWATCH: unknown option(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(_OPTIONS))}")
        _check_store()
        self.client = _client(options.get("CLIENT"))
        self.redis = _redis(options.get("REDIS"))
        self.tenant: str = options.get("TENANT") or self.client.tenant
        # Revoked: 401 with a neutral message, or a redirect to sign in again (browsers).
        self.login_url: str | None = options.get("LOGIN_URL")
        # Step-up: the app's re-authentication (returns a response); without one, a step-up is
        # handled as a revocation - the safe side.
        self.on_step_up: Callable[[Request], Response] | None = _callable(
            options.get("ON_STEP_UP"), "ON_STEP_UP")
        self.blocked_status = int(options.get("BLOCKED_STATUS", 403))
        check_blocked_status(self.blocked_status, "SESSIONWATCH['BLOCKED_STATUS']")
        # The index must outlive the record it names: Django's record lives SESSION_COOKIE_AGE.
        self.session_lifetime_s = int(options.get("SESSION_LIFETIME_S")
                                      or settings.SESSION_COOKIE_AGE)
        self.client_ip: Callable[[Request], str | None] | None = _callable(
            options.get("CLIENT_IP"), "CLIENT_IP")
        self.enforcer = Enforcer(self.redis, tenant=self.tenant,
                                 fail_open=bool(options.get("FAIL_OPEN", True)))

    # -- the request ----------------------------------------------------------------------------

    def __call__(self, request: Request) -> Response:
        session = getattr(request, "session", None)
        if session is None:
            raise ConfigError("MIDDLEWARE: put 'producers.django.SessionWatchMiddleware' after "
                              "'django.contrib.sessions.middleware.SessionMiddleware'")
        state = _RequestState(watch=self)
        setattr(request, REQUEST_ATTR, state)
        refusal = self._before(request, session, state)
        if refusal is not None:
            return refusal  # SessionMiddleware (outside) then clears the flushed cookie
        response = self.get_response(request)
        self._after(request, session, state, response)
        return response

    def _before(self, request: Request, session: Session, state: _RequestState) -> Response | None:
        presented = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        if not presented:
            return None
        state.presented = str(presented)
        session.keys()  # load now: a cookie naming no stored record leaves no session_key
        state.known = session.session_key == state.presented
        hashes = state.hashes = self.client.hasher.hashes(state.presented)
        if not state.known:
            # No such session in the store (revoked, or never issued, or expired: Django gives
            # a new session a new id).
            refusal = unknown_session_verdict(
                self.enforcer.check(sessions=hashes, ip=self._ip(request)))
            if refusal is not None:
                return self._refuse(refusal, request, session, state)
            self._emit_token(request, self.client.token_rejected, state.presented,
                             attrs={"reason": "unknown"})
            state.handled = True
            return None
        verdict = self.enforcer.check(
            sessions=hashes,
            user=_str(session.get(USER_KEY)),
            authenticated_at=_number(session.get(AUTH_AT_KEY)),
            ip=self._ip(request),
        )
        if verdict.allowed:
            return None
        return self._refuse(verdict, request, session, state)

    def _after(self, request: Request, session: Session, state: _RequestState,
               response: Response) -> None:
        if state.handled:
            return
        if state.known:
            self._emit(request, session, self.client.activity, user=_str(session.get(USER_KEY)))
        elif session.modified and not session.is_empty() and response.status_code < 500:
            # A new session that SessionMiddleware is about to store: save it now (Django
            # would mint its id after this point) so the event names the token the client gets.
            if session.session_key is None:
                session.save()
            self._emit(request, session, self.client.created, user=_str(session.get(USER_KEY)))

    # -- refusing -------------------------------------------------------------------------------

    def _refuse(self, verdict: Verdict, request: Request, session: Session,
                state: _RequestState) -> Response:
        state.handled = True
        log_refusal(log, verdict)
        if verdict.outcome is Outcome.BLOCKED:
            response = _message(REFUSED_MESSAGE, self.blocked_status)
            retry = retry_after(verdict, self.blocked_status)
            if retry is not None:
                response["Retry-After"] = retry
            return response
        if verdict.outcome is Outcome.STEP_UP and self.on_step_up is not None:
            return self.on_step_up(request)
        # Revoked (or a step-up the app has no flow for): end the session here and now.
        presented = state.presented or ""
        self._emit_token(request, self.client.token_rejected, presented,
                         attrs={"reason": "revoked"})
        state.known = False
        _best_effort(forget_pipe(self.redis, self.tenant,
                                 state.hash_of(self.client.hasher, presented),
                                 _str(session.get(USER_KEY))))
        session.flush()  # deletes the record; SessionMiddleware deletes the emptied cookie
        if self.login_url and names_html(request.META.get("HTTP_ACCEPT", "")):
            redirect = HttpResponse(status=303)
            redirect["Location"] = self.login_url
            redirect["Cache-Control"] = "no-store"
            return redirect
        return _message(SIGNED_OUT_MESSAGE, 401)

    # -- plumbing -------------------------------------------------------------------------------

    def _ip(self, request: Request) -> str:
        if self.client_ip is not None:
            return self.client_ip(request) or "0.0.0.0"
        return str(request.META.get("REMOTE_ADDR") or "0.0.0.0")

    def _store_key(self, session: Session) -> str:
        """The Redis key of the session's record, as the cache writes it."""
        return str(caches[settings.SESSION_CACHE_ALIAS].make_key(session.cache_key))

    def _emit(self, request: Request, session: Session, method: Callable[..., Any],
              **kw: Any) -> None:
        token = session.session_key
        if token is not None:  # the app flushed the session itself: nothing to name
            self._emit_token(request, method, str(token), **kw)

    def _emit_token(self, request: Request, method: Callable[..., Any], token: str | None,
                    **kw: Any) -> None:
        state = getattr(request, REQUEST_ATTR, None)
        event_session(kw, state if isinstance(state, _RequestState) else None, self.client.hasher,
                      token)
        try:
            method(ip=self._ip(request), user_agent=request.META.get("HTTP_USER_AGENT"), **kw)
        except Exception:  # noqa: BLE001 - telemetry must never break a request
            log.exception("sessionwatch: could not emit an event")


# -- what the app calls (in its views) -----------------------------------------------------------

def login(request: Request, user: str) -> None:
    """After the password (and second factor) checked out: bind the session to `user` under a
    new id, so an id anyone saw before the login is worthless (fixation). After
    `django.contrib.auth.login()` too: that rotates the id once more, harmlessly."""
    state, watch = _context(request)
    session = request.session
    previous = state.presented if state.known else None
    old_user = _str(session.get(USER_KEY))
    auth_at = time.time()
    session[USER_KEY] = user
    session[AUTH_AT_KEY] = auth_at
    session.cycle_key()  # a new id, stored now; the old record is deleted
    rotate_token(request)  # and a new CSRF secret, as django.contrib.auth.login() does
    new = str(session.session_key)
    _best_effort(_reindex(watch, state, session, previous, old_user, new, user, auth_at))
    watch._emit_token(request, watch.client.authenticated, new, user=user,
                      previous_session_token=previous)
    state.handled = True


def rotate(request: Request) -> None:
    """A new id for the same session (privilege change, periodic rotation)."""
    state, watch = _context(request)
    session = request.session
    previous = session.session_key
    session.cycle_key()
    new = str(session.session_key)
    user = _str(session.get(USER_KEY))
    _best_effort(_reindex(watch, state, session, previous, user, new, user,
                          _number(session.get(AUTH_AT_KEY))))
    if state.known:
        watch._emit_token(request, watch.client.refreshed, new, user=user,
                          previous_session_token=previous)
    state.handled = True


def logout(request: Request) -> None:
    """End the session: the record goes from the store, the cookie from the browser."""
    state, watch = _context(request)
    session = request.session
    user = _str(session.get(USER_KEY))
    token = session.session_key
    if state.known and token is not None:
        watch._emit_token(request, watch.client.logout, str(token), user=user)
        _best_effort(forget_pipe(watch.redis, watch.tenant,
                                 state.hash_of(watch.client.hasher, str(token)), user))
    session.flush()
    state.handled = True


def login_failed(request: Request, user: str | None) -> None:
    """A wrong password (or unknown user): feeds brute-force and stuffing detection."""
    _, watch = _context(request)
    try:
        watch.client.auth_failed(user=user, ip=watch._ip(request),
                                 user_agent=request.META.get("HTTP_USER_AGENT"))
    except Exception:  # noqa: BLE001 - telemetry must never break a request
        log.exception("sessionwatch: could not emit an event")


def credential_changed(request: Request, user: str) -> None:
    """The user changed or reset their password: their other sessions get revoked."""
    state, watch = _context(request)
    session = request.session
    key = session.session_key
    token = str(key) if key is not None and (state.known or session.get(USER_KEY)) else None
    watch._emit_token(request, watch.client.credential_changed, token, user=user)


def current_user(request: Request) -> str | None:
    """The user this request's session belongs to, if any."""
    _context(request)
    return _str(request.session.get(USER_KEY))


# -- helpers -------------------------------------------------------------------------------------

def _context(request: Request) -> tuple[_RequestState, SessionWatchMiddleware]:
    state = getattr(request, REQUEST_ATTR, None)
    if not isinstance(state, _RequestState):
        raise ConfigError("sessionwatch: add 'producers.django.SessionWatchMiddleware' to "
                          "MIDDLEWARE, after Django's SessionMiddleware")
    return state, state.watch


def _reindex(watch: SessionWatchMiddleware, state: _RequestState, session: Session,
             previous: str | None, previous_user: str | None, new: str, user: str | None,
             authenticated_at: float | None) -> Any:
    """The index moved from the `previous` id to the `new` one (the pipeline, to execute)."""
    hasher = watch.client.hasher
    return reindex_pipe(watch.redis, watch.tenant,
                        None if previous is None else state.hash_of(hasher, previous),
                        previous_user, hasher.hash(new), watch._store_key(session),
                        user, authenticated_at, watch.session_lifetime_s)


def _check_store() -> None:
    from django.contrib.sessions.backends.cache import (  # type: ignore[import-untyped]
        SessionStore as CacheStore,
    )
    from django.core.cache.backends.redis import RedisCache  # type: ignore[import-untyped]

    engine = import_string(f"{settings.SESSION_ENGINE}.SessionStore")
    if not (isinstance(engine, type) and issubclass(engine, CacheStore)):
        raise ConfigError(
            f"SESSION_ENGINE: sessionwatch needs 'django.contrib.sessions.backends.cache' "
            f"(records in Redis, which the applier deletes on revocation), not "
            f"{settings.SESSION_ENGINE!r}")
    alias = settings.SESSION_CACHE_ALIAS
    cache = caches[alias]
    backend = type(cache)
    if not (isinstance(cache, RedisCache) or backend.__module__.startswith("django_redis.")):
        raise ConfigError(
            f"CACHES[{alias!r}]['BACKEND'] (SESSION_CACHE_ALIAS): sessionwatch needs "
            f"'django.core.cache.backends.redis.RedisCache' (or django-redis) in the Redis the "
            f"applier writes to, not {backend.__module__}.{backend.__qualname__}")


def _resolve(value: Any, name: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return import_string(value)
    except ImportError as exc:
        raise ConfigError(f"SESSIONWATCH[{name!r}]: cannot import {value!r} ({exc}); give a "
                          f"dotted path such as 'myproject.sessionwatch.{name.lower()}'") from None


def _client(value: Any) -> SessionwatchClient:
    if value is None:
        raise ConfigError("SESSIONWATCH['CLIENT']: required; a SessionwatchClient or the dotted "
                          "path of a function returning one (called once, at start-up)")
    value = _resolve(value, "CLIENT")
    if not isinstance(value, SessionwatchClient) and callable(value):
        value = value()
    if not isinstance(value, SessionwatchClient):
        raise ConfigError(f"SESSIONWATCH['CLIENT']: a SessionwatchClient, not "
                          f"{type(value).__name__}")
    return value


def _redis(value: Any) -> Any:
    if value is None:
        raise ConfigError("SESSIONWATCH['REDIS']: required; the URL (or a redis-py client) of "
                          "the Redis the applier writes revocations to")
    if isinstance(value, str) and value.startswith(_REDIS_SCHEMES):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Fail fast: with redis-py's default retries an outage costs every request seconds
        # before the check fails open (or closed).
        return redis.Redis.from_url(value, socket_timeout=0.5, socket_connect_timeout=0.5,
                                    retry=Retry(NoBackoff(), 1))
    value = _resolve(value, "REDIS")
    if not hasattr(value, "mget") and callable(value):
        value = value()
    if not (hasattr(value, "mget") and hasattr(value, "pipeline")):
        raise ConfigError(f"SESSIONWATCH['REDIS']: a redis:// URL or a redis-py client, not "
                          f"{type(value).__name__}")
    return value


def _callable(value: Any, name: str) -> Any:
    if value is None:
        return None
    value = _resolve(value, name)
    if not callable(value):
        raise ConfigError(f"SESSIONWATCH[{name!r}]: a function of the request (or its dotted "
                          f"path), not {type(value).__name__}")
    return value


def _message(text: str, status: int) -> Response:
    response = JsonResponse(refusal_body(text, status), status=status)
    response["Cache-Control"] = "no-store"
    return response


def _best_effort(pipe: Any) -> None:
    best_effort(log, pipe.execute)
