"""Flask middleware: emit session events from Flask-Session and enforce revocations per request.

    sw = SessionWatch(app, client=SessionwatchClient(...), redis=redis.Redis(...))

    @app.post("/login")
    def login():
        ...check the password...
        sw.login(user)              # rotates the session id, emits session.authenticated

Every request with a session cookie is checked against the revocation keys in Redis (one round
trip, `producers/enforcement.py`) before the view runs: a revoked session is cleared from the
store and answered 401 (or redirected to `login_url`); a step-up calls `on_step_up`; a blocked
source gets 403 (or 429). The user reads one neutral sentence whatever fired. Events (hashed
tokens only, through the SDK, never blocking the request):
- `session.created` when a new session is first stored; `session.activity` on every request of
  a known session; `token.rejected` for a cookie whose session does not exist (expired, forged,
  guessed) or was revoked; `session.authenticated` and a new id on `login()` (ASVS 7.2.4);
  `session.refreshed` on `rotate()`; `session.logout` on `logout()`; `auth.failed` and
  `credential.changed` when the app calls `login_failed()` / `credential_changed()`.

Needs a server-side session (Flask-Session): the session id is the token. Behind a reverse proxy
wrap the app in werkzeug's ProxyFix so `request.remote_addr` is the client's address. Give it a
fail-fast Redis client (`socket_timeout=0.5, retry=Retry(NoBackoff(), 1)`): with redis-py's
default retries an outage costs every request seconds before the check fails open.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, jsonify, redirect, request, session

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
    forget_pipe,
    log_refusal,
    names_html,
    refusal_body,
    reindex_pipe,
    retry_after,
    unknown_session_verdict,
)
from producers.errors import ConfigError

log = logging.getLogger("sessionwatch.flask")


class SessionWatch:
    def __init__(
        self,
        app: Flask | None = None,
        *,
        client: SessionwatchClient,
        redis: Any,
        tenant: str | None = None,
        login_url: str | None = None,
        on_step_up: Callable[[], Any] | None = None,
        blocked_status: int = 403,
        fail_open: bool = True,
        session_lifetime_s: int = 43_200,
        client_ip: Callable[[], str | None] | None = None,
    ) -> None:
        check_blocked_status(blocked_status)
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
        self.client_ip = client_ip or (lambda: request.remote_addr)
        self.enforcer = Enforcer(redis, tenant=self.tenant, fail_open=fail_open)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        app.before_request(self._before)
        app.after_request(self._after)
        app.extensions["sessionwatch"] = self

    # -- what the app calls -----------------------------------------------------------------

    def login(self, user: str) -> None:
        """After the password (and second factor) checked out: bind the session to `user`
        under a new id, so an id anyone saw before the login is worthless (fixation)."""
        state = self._state()
        previous = session.sid if state.known else None  # type: ignore[attr-defined]
        old_user = session.get(USER_KEY)
        session[USER_KEY] = user
        session[AUTH_AT_KEY] = time.time()
        self._interface().regenerate(session)  # deletes the old record, mints a new id
        hasher = self.client.hasher
        pipe = reindex_pipe(self.redis, self.tenant,
                            None if previous is None else hasher.hash(previous), old_user,
                            hasher.hash(session.sid), self._store_key(), user,  # type: ignore[attr-defined]
                            session[AUTH_AT_KEY], self.session_lifetime_s)
        best_effort(log, pipe.execute)
        self._emit(self.client.authenticated, user=user, previous_session_token=previous)
        state.handled = True

    def rotate(self) -> None:
        """A new id for the same session (privilege change, periodic rotation)."""
        state = self._state()
        previous = session.sid  # type: ignore[attr-defined]
        self._interface().regenerate(session)
        user = session.get(USER_KEY)
        hasher = self.client.hasher
        pipe = reindex_pipe(self.redis, self.tenant, hasher.hash(previous), user,
                            hasher.hash(session.sid), self._store_key(), user,  # type: ignore[attr-defined]
                            session.get(AUTH_AT_KEY), self.session_lifetime_s)
        best_effort(log, pipe.execute)
        if state.known:
            self._emit(self.client.refreshed, user=user, previous_session_token=previous)
        state.handled = True

    def logout(self) -> None:
        """End the session: the record goes from the store, the cookie from the browser."""
        state = self._state()
        user = session.get(USER_KEY)
        if state.known:
            self._emit(self.client.logout, user=user)
            pipe = forget_pipe(self.redis, self.tenant,
                               self.client.hasher.hash(state.presented or ""), user)
            best_effort(log, pipe.execute)
        session.clear()
        state.handled = True

    def login_failed(self, user: str | None) -> None:
        """A wrong password (or unknown user): feeds brute-force and stuffing detection."""
        self.client.auth_failed(user=user, ip=self._ip(), user_agent=self._ua())

    def credential_changed(self, user: str) -> None:
        """The user changed or reset their password: their other sessions get revoked."""
        token = session.sid if self._state().known or session.get(USER_KEY) else None  # type: ignore[attr-defined]
        self.client.credential_changed(user=user, session_token=token, ip=self._ip(),
                                       user_agent=self._ua())

    @property
    def user(self) -> str | None:
        """The user this request's session belongs to, if any."""
        value = session.get(USER_KEY)
        return value if isinstance(value, str) else None

    # -- hooks --------------------------------------------------------------------------------

    def _before(self) -> Any:
        state = RequestState()
        g._sessionwatch = state
        cookie = request.cookies.get(self._cookie_name())
        if not cookie:
            return None
        presented = self._unsign(cookie)
        state.presented = presented
        state.known = presented is not None and presented == session.sid  # type: ignore[attr-defined]
        if not state.known:
            # No such session in the store (revoked, or never issued, or expired: the store
            # started a new one).
            state.hashes = self.client.hasher.hashes(presented or cookie)
            refusal = unknown_session_verdict(
                self.enforcer.check(sessions=state.hashes, ip=self._ip()))
            if refusal is not None:
                return self._refuse(refusal, state)
            self._emit_token(self.client.token_rejected, presented or cookie,
                             attrs={"reason": "unknown"})
            state.handled = True
            return None
        state.hashes = self.client.hasher.hashes(presented or "")
        verdict = self.enforcer.check(
            sessions=state.hashes,
            user=session.get(USER_KEY),
            authenticated_at=session.get(AUTH_AT_KEY),
            ip=self._ip(),
        )
        if verdict.allowed:
            return None
        return self._refuse(verdict, state)

    def _after(self, response: Response) -> Response:
        state: RequestState | None = g.get("_sessionwatch")
        if state is None or state.handled:
            return response
        if state.known:
            self._emit(self.client.activity, user=session.get(USER_KEY))
        elif session:  # a new session that will be stored: its id goes out in this response
            self._emit(self.client.created, user=session.get(USER_KEY))
        return response

    # -- refusing -------------------------------------------------------------------------------

    def _refuse(self, verdict: Verdict, state: RequestState) -> Any:
        state.handled = True
        log_refusal(log, verdict)
        if verdict.outcome is Outcome.BLOCKED:
            response = self._message(REFUSED_MESSAGE, self.blocked_status)
            retry = retry_after(verdict, self.blocked_status)
            if retry is not None:
                response.headers["Retry-After"] = retry
            return response
        if verdict.outcome is Outcome.STEP_UP and self.on_step_up is not None:
            return self.on_step_up()
        # Revoked (or a step-up the app has no flow for): end the session here and now.
        self._emit_token(self.client.token_rejected, state.presented or "",
                         attrs={"reason": "revoked"})
        state.known = False
        pipe = forget_pipe(self.redis, self.tenant,
                           state.hash_of(self.client.hasher, state.presented or ""),
                           session.get(USER_KEY))
        best_effort(log, pipe.execute)
        session.clear()  # Flask-Session deletes the record and the cookie when saving
        if self.login_url and names_html(request.headers.get("Accept", "")):
            return redirect(self.login_url)
        return self._message(SIGNED_OUT_MESSAGE, 401)

    def _message(self, text: str, status: int) -> Response:
        response = jsonify(refusal_body(text, status))
        response.status_code = status
        response.headers["Cache-Control"] = "no-store"
        return response

    # -- plumbing -------------------------------------------------------------------------------

    def _state(self) -> RequestState:
        state: RequestState | None = g.get("_sessionwatch")
        if state is None:
            state = g._sessionwatch = RequestState()
        return state

    def _interface(self) -> Any:
        from flask import current_app

        interface = current_app.session_interface
        if not hasattr(interface, "regenerate") or not hasattr(interface, "key_prefix"):
            raise ConfigError("sessionwatch needs a server-side session: initialise "
                              "Flask-Session (SESSION_TYPE='redis') before serving requests")
        return interface

    def _store_key(self) -> str:
        return f"{self._interface().key_prefix}{session.sid}"  # type: ignore[attr-defined]

    def _cookie_name(self) -> str:
        from flask import current_app

        return str(current_app.config["SESSION_COOKIE_NAME"])

    def _unsign(self, cookie: str) -> str | None:
        from flask import current_app

        interface = self._interface()
        if not getattr(interface, "use_signer", False):
            return cookie
        try:
            return str(interface._unsign(current_app, cookie))
        except Exception:  # noqa: BLE001 - a bad signature is an unknown token, not an error
            return None

    def _ip(self) -> str:
        return self.client_ip() or "0.0.0.0"

    def _ua(self) -> str | None:
        return request.headers.get("User-Agent")

    def _emit(self, method: Callable[..., Any], **kw: Any) -> None:
        self._emit_token(method, session.sid, **kw)  # type: ignore[attr-defined]

    def _emit_token(self, method: Callable[..., Any], token: str, **kw: Any) -> None:
        try:
            method(session=self._state().hash_of(self.client.hasher, token), ip=self._ip(),
                   user_agent=self._ua(), **kw)
        except Exception:  # noqa: BLE001 - telemetry must never break a request
            log.exception("sessionwatch: could not emit an event")
