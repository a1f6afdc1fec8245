"""ASGI middleware: emit session events from starsessions and enforce revocations per request.

The twin of `producers/flask.py` for Starlette (or any ASGI app) with starsessions' RedisStore:

    app = Starlette(routes=..., middleware=[
        Middleware(SessionMiddleware, store=RedisStore(connection=store_redis)),
        Middleware(SessionWatchMiddleware, client=SessionwatchClient(...), redis=redis_client),
    ])

    async def login_view(request):
        ...check the password...
        await sessionwatch.login(request, user)   # new session id, emits session.authenticated

SessionWatchMiddleware goes INSIDE SessionMiddleware (it needs `scope["session_handler"]`). It
loads the session itself (starsessions loads lazily; `SessionAutoloadMiddleware` is not needed
and harmless), then checks every request carrying a session cookie against the revocation keys
in Redis (one round trip, `producers/enforcement.py`) before the app runs: a revoked session is
cleared (starsessions then deletes the record and the cookie) and answered 401 (or 303 to
`login_url` for a browser asking for HTML); a step-up awaits `on_step_up(request)`; a blocked
source gets 403 (or 429 with Retry-After). The user reads one neutral sentence whatever fired.
A WebSocket handshake is checked the same way and closed (1008) when refused.

Events (hashed tokens only, through the SDK, never blocking the request), as in the Flask twin:
`session.created` when a new session is about to be stored; `session.activity` on every request
of a known session; `token.rejected` for a cookie naming no stored session (reason "unknown") or
a revoked one ("revoked"); `session.authenticated` and a new id on `login()` (ASVS 7.2.4);
`session.refreshed` on `rotate()`; `session.logout` on `logout()`; `auth.failed` and
`credential.changed` on `login_failed()` / `credential_changed()`.

The endpoint helpers find this request's state in `scope["sessionwatch"]`.

Two starsessions behaviours this module compensates for:
- a cookie naming no stored session keeps its id: whatever the app then stores would be saved
  under the id the client chose (session fixation). An unknown id is replaced by a fresh one.
- `regenerate_session_id` only changes the id; the old record stays readable until its TTL.
  `login()` and `rotate()` delete it.

Behind a reverse proxy the client address must be the proxy's X-Forwarded-For entry, not the
proxy itself: wrap the app (see examples/starlette_app/app.py) or pass `client_ip`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starsessions import get_session_handler, load_session, regenerate_session_id
from starsessions.session import SessionHandler
from starsessions.stores.redis import RedisStore

from producers.client import SessionwatchClient
from producers.enforcement import (
    AUTH_AT_KEY,
    REFUSED_MESSAGE,
    SIGNED_OUT_MESSAGE,
    USER_KEY,
    AsyncEnforcer,
    Outcome,
    RequestState,
    Verdict,
    check_blocked_status,
    event_session,
    forget_pipe,
    index_not_updated,
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

log = logging.getLogger("sessionwatch.asgi")

SCOPE_KEY = "sessionwatch"     # where this request's state lives in the ASGI scope

StepUpHook = Callable[[Request], Awaitable[Response]]
ClientIp = Callable[[HTTPConnection], str | None]


@dataclass
class _RequestState(RequestState):
    watch: SessionWatchMiddleware = field(kw_only=True)


class SessionWatchMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        client: SessionwatchClient,
        redis: Any,
        tenant: str | None = None,
        login_url: str | None = None,
        on_step_up: StepUpHook | None = None,
        blocked_status: int = 403,
        fail_open: bool = True,
        session_lifetime_s: int = 43_200,
        client_ip: ClientIp | None = None,
    ) -> None:
        """`redis`: a redis.asyncio client of the Redis the applier writes to (and the store
        lives in, for the index to name its records). Configure it to fail fast (short socket
        timeouts, `retry=Retry(NoBackoff(), 1)`): redis-py's default retries cost seconds per
        command when Redis is down, on every request, before `fail_open` lets it through."""
        check_blocked_status(blocked_status)
        self.app = app
        self.client = client
        self.redis = redis
        self.tenant = tenant or client.tenant
        # Revoked: 401 with a neutral message, or a redirect to sign in again (browsers).
        self.login_url = login_url
        # Step-up: the app's re-authentication (returns a response); without one, a step-up is
        # handled as a revocation - the safe side.
        self.on_step_up = on_step_up
        self.blocked_status = blocked_status
        self.session_lifetime_s = session_lifetime_s
        self.client_ip = client_ip
        self.enforcer = AsyncEnforcer(redis, tenant=self.tenant, fail_open=fail_open)

    # -- the request ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if "session_handler" not in scope:
            raise ConfigError("SessionWatchMiddleware must be placed inside starsessions' "
                              "SessionMiddleware (add it after SessionMiddleware)")
        conn = Request(scope, receive) if scope["type"] == "http" else HTTPConnection(scope)
        handler = get_session_handler(conn)
        _store(handler)
        state = _RequestState(watch=self)
        scope[SCOPE_KEY] = state
        await load_session(conn)  # starsessions loads lazily; a no-op if already loaded

        refusal = await self._before(conn, handler, state)
        if refusal is not None:
            if scope["type"] == "websocket":
                # starsessions saves nothing for a WebSocket: a revoked record goes here.
                if not conn.session and handler.session_id:
                    await handler.destroy()
                await send({"type": "websocket.close", "code": 1008})
                return
            await refusal(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                self._after(conn, handler, state)
            await send(message)

        await self.app(scope, receive, send_wrapper)

    async def _before(self, conn: HTTPConnection, handler: SessionHandler,
                      state: _RequestState) -> Response | None:
        presented = handler.session_id  # starsessions' id is the cookie, unsigned
        if not presented:
            return None
        state.presented = presented
        session = conn.session
        state.known = bool(session)  # a stored record always holds data; a missing one loads {}
        hashes = state.hashes = self.client.hasher.hashes(presented)
        if not state.known:
            # No such session in the store (revoked, or never issued, or expired).
            refusal = unknown_session_verdict(
                await self.enforcer.check(sessions=hashes, ip=self._ip(conn)))
            if refusal is not None:
                return await self._refuse(refusal, conn, handler, state)
            self._emit_token(conn, self.client.token_rejected, presented,
                             attrs={"reason": "unknown"})
            state.handled = True
            # starsessions would store a new session under the id the client chose: mint one.
            regenerate_session_id(conn)
            return None
        verdict = await self.enforcer.check(
            sessions=hashes,
            user=_str(session.get(USER_KEY)),
            authenticated_at=_number(session.get(AUTH_AT_KEY)),
            ip=self._ip(conn),
        )
        if verdict.allowed:
            return None
        return await self._refuse(verdict, conn, handler, state)

    def _after(self, conn: HTTPConnection, handler: SessionHandler, state: _RequestState) -> None:
        if state.handled or not handler.is_loaded:
            return
        session = conn.session
        if state.known:
            self._emit(conn, self.client.activity, user=_str(session.get(USER_KEY)))
        elif session and conn.scope["type"] == "http":
            # A new session that starsessions is about to store: give it its id now (save()
            # would mint one after this point) so the event names the token the client gets.
            if handler.session_id is None:
                regenerate_session_id(conn)
            self._emit(conn, self.client.created, user=_str(session.get(USER_KEY)))

    # -- refusing -------------------------------------------------------------------------------

    async def _refuse(self, verdict: Verdict, conn: HTTPConnection, handler: SessionHandler,
                      state: _RequestState) -> Response:
        state.handled = True
        log_refusal(log, verdict)
        if verdict.outcome is Outcome.BLOCKED:
            response = _message(REFUSED_MESSAGE, self.blocked_status)
            retry = retry_after(verdict, self.blocked_status)
            if retry is not None:
                response.headers["Retry-After"] = retry
            return response
        if (verdict.outcome is Outcome.STEP_UP and self.on_step_up is not None
                and isinstance(conn, Request)):
            return await self.on_step_up(conn)
        # Revoked (or a step-up the app has no flow for): end the session here and now.
        presented = state.presented or ""
        self._emit_token(conn, self.client.token_rejected, presented,
                         attrs={"reason": "revoked"})
        state.known = False
        session = conn.session
        await _best_effort(forget_pipe(self.redis, self.tenant,
                                       state.hash_of(self.client.hasher, presented),
                                       _str(session.get(USER_KEY))))
        session.clear()
        # starsessions clears the cookie and deletes the record of a session emptied during the
        # request - unless it was empty when loaded (no record found). Clear that cookie too.
        handler.initially_empty = False
        if self.login_url and _accepts_html(conn):
            redirect = RedirectResponse(self.login_url, status_code=303)
            redirect.headers["Cache-Control"] = "no-store"
            return redirect
        return _message(SIGNED_OUT_MESSAGE, 401)

    # -- plumbing -------------------------------------------------------------------------------

    def _ip(self, conn: HTTPConnection) -> str:
        if self.client_ip is not None:
            return self.client_ip(conn) or "0.0.0.0"
        return conn.client.host if conn.client else "0.0.0.0"

    def _emit(self, conn: HTTPConnection, method: Callable[..., Any], **kw: Any) -> None:
        token = get_session_handler(conn).session_id
        if token is None:
            return
        self._emit_token(conn, method, token, **kw)

    def _emit_token(self, conn: HTTPConnection, method: Callable[..., Any], token: str | None,
                    **kw: Any) -> None:
        state = conn.scope.get(SCOPE_KEY)
        event_session(kw, state if isinstance(state, _RequestState) else None, self.client.hasher,
                      token)
        try:
            method(ip=self._ip(conn), user_agent=conn.headers.get("user-agent"), **kw)
        except Exception:  # noqa: BLE001 - telemetry must never break a request
            log.exception("sessionwatch: could not emit an event")


# -- what the app calls (in its endpoints) -------------------------------------------------------

async def login(request: HTTPConnection, user: str) -> None:
    """After the password (and second factor) checked out: bind the session to `user` under a
    new id, so an id anyone saw before the login is worthless (fixation)."""
    state, watch, handler = _context(request)
    session = request.session
    previous = handler.session_id if state.known else None
    old_user = _str(session.get(USER_KEY))
    auth_at = time.time()
    session[USER_KEY] = user
    session[AUTH_AT_KEY] = auth_at
    new = regenerate_session_id(request)
    if previous is not None:
        await handler.store.remove(previous)  # starsessions keeps the old record otherwise
    hasher = watch.client.hasher
    await _best_effort(reindex_pipe(
        watch.redis, watch.tenant, None if previous is None else hasher.hash(previous), old_user,
        hasher.hash(new), _store(handler).prefix(new), user, auth_at, watch.session_lifetime_s))
    watch._emit_token(request, watch.client.authenticated, new, user=user,
                      previous_session_token=previous)
    state.handled = True


async def rotate(request: HTTPConnection) -> None:
    """A new id for the same session (privilege change, periodic rotation)."""
    state, watch, handler = _context(request)
    session = request.session
    previous = handler.session_id
    new = regenerate_session_id(request)
    if previous is not None:
        await handler.store.remove(previous)
    user = _str(session.get(USER_KEY))
    hasher = watch.client.hasher
    await _best_effort(reindex_pipe(
        watch.redis, watch.tenant, None if previous is None else hasher.hash(previous), user,
        hasher.hash(new), _store(handler).prefix(new), user, _number(session.get(AUTH_AT_KEY)),
        watch.session_lifetime_s))
    if state.known:
        watch._emit_token(request, watch.client.refreshed, new, user=user,
                          previous_session_token=previous)
    state.handled = True


async def logout(request: HTTPConnection) -> None:
    """End the session: starsessions deletes the record and clears the cookie."""
    state, watch, _ = _context(request)
    session = request.session
    user = _str(session.get(USER_KEY))
    if state.known:
        watch._emit(request, watch.client.logout, user=user)
        await _best_effort(forget_pipe(watch.redis, watch.tenant,
                                       watch.client.hasher.hash(state.presented or ""), user))
    session.clear()
    state.handled = True


def login_failed(request: HTTPConnection, user: str | None) -> None:
    """A wrong password (or unknown user): feeds brute-force and stuffing detection."""
    _, watch, _ = _context(request)
    try:
        watch.client.auth_failed(user=user, ip=watch._ip(request),
                                 user_agent=request.headers.get("user-agent"))
    except Exception:  # noqa: BLE001 - telemetry must never break a request
        log.exception("sessionwatch: could not emit an event")


def credential_changed(request: HTTPConnection, user: str) -> None:
    """The user changed or reset their password: their other sessions get revoked."""
    state, watch, handler = _context(request)
    token = handler.session_id if state.known or request.session.get(USER_KEY) else None
    watch._emit_token(request, watch.client.credential_changed, token, user=user)


def current_user(request: HTTPConnection) -> str | None:
    """The user this request's session belongs to, if any."""
    _context(request)
    return _str(request.session.get(USER_KEY))


# -- helpers -------------------------------------------------------------------------------------

def _context(request: HTTPConnection) -> tuple[_RequestState, SessionWatchMiddleware,
                                               SessionHandler]:
    state = request.scope.get(SCOPE_KEY)
    if not isinstance(state, _RequestState):
        raise ConfigError("sessionwatch: SessionWatchMiddleware is not installed on this app "
                          "(add it inside starsessions' SessionMiddleware)")
    return state, state.watch, get_session_handler(request)


def _store(handler: SessionHandler) -> RedisStore:
    store = handler.store
    if not isinstance(store, RedisStore):
        raise ConfigError("sessionwatch needs a server-side session: starsessions' RedisStore "
                          f"(not {type(store).__name__}), in the Redis the applier writes to")
    return store


def _message(text: str, status: int) -> Response:
    response = JSONResponse(refusal_body(text, status), status_code=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _accepts_html(conn: HTTPConnection) -> bool:
    return names_html(conn.headers.get("accept", ""))


async def _best_effort(pipe: Any) -> None:
    try:
        await pipe.execute()
    except Exception as exc:  # noqa: BLE001 - the index only helps deletion; Redis checks stay
        index_not_updated(log, exc)
