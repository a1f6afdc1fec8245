"""The console's security core: accounts in, principals out (sessions, the bearer token, the
sign-in rate limit, CSRF tokens), and the helpers pages use (roles, masking, safe redirects).
The middleware is in middleware.py, the sign-in routes in signin.py."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from producers.errors import ConfigError, SessionwatchError
from sessionwatch.console.accounts import Account, Role, check_password

if TYPE_CHECKING:

    pass

log = logging.getLogger("sessionwatch.console.security")

TOKEN_SETTING = "SESSIONWATCH_CONSOLE_TOKEN"
MIN_TOKEN_CHARS = 32
TOKEN_PRINCIPAL = "api-token"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
)
SIGN_IN_FAILED = "Sign-in failed."
# Requests a page makes by itself (the live view's event stream): not activity for the idle timer.
PASSIVE_PATHS = frozenset({"/live/stream"})
# What a sign-in route reports to the audit log: (action, actor, role, client, result).
AuditHook = Callable[[str, str, str, str, str], None]
_MAX_FORM_BYTES = 1024 * 1024  # console forms are a few fields; anything bigger is not ours
_MAX_NAME_KEY = 256  # account names are at most this long; longer tries are one key
_MAX_TRACKED_KEYS = 10_000  # names/addresses with recent failures: bounded under a spray
_SWEEP_EVERY_S = 60.0


class SignInRefused(SessionwatchError):
    """`reason` "bad_credentials" (401) or "rate_limited" (429, `retry_after_s` > 0)."""

    def __init__(self, reason: Literal["bad_credentials", "rate_limited"], retry_after_s: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Principal:
    """Who is asking. `session_id` is the raw cookie value: pass it on, never log or render it."""

    name: str
    role: Role
    via: Literal["session", "token"]
    session_id: str | None = field(default=None, repr=False)
    csrf: str | None = field(default=None, repr=False)

    @property
    def can_act(self) -> bool:
        return self.role == "responder"


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in session: set `sid` as the cookie."""

    sid: str = field(repr=False)
    principal: Principal
    expires_at: float


@dataclass(frozen=True)
class EndedSession:
    """A session an idle or absolute limit ended when its cookie came back."""

    sid: str = field(repr=False)
    name: str
    reason: Literal["idle", "absolute"]


@dataclass
class _Record:
    name: str
    role: Role
    csrf: str
    created: float
    last_seen: float


class _FailureWindows:
    """Sliding windows of failure times per key (a name, an address), bounded in keys."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        times = self._live(key, now)
        if times is None or len(times) < self.limit:
            return 0.0
        # the attempt that must leave the window to bring the count under the limit
        return times[len(times) - self.limit] + self.window_s - now

    def add(self, key: str, now: float) -> None:
        times = self._live(key, now)
        if times is None:
            times = self._times[key] = deque()
            while len(self._times) > _MAX_TRACKED_KEYS:
                self._times.popitem(last=False)
        self._times.move_to_end(key)
        times.append(now)

    def discard(self, key: str, at: float) -> None:
        times = self._times.get(key)
        if times is not None and at in times:
            times.remove(at)

    def clear(self, key: str) -> None:
        self._times.pop(key, None)

    def _live(self, key: str, now: float) -> deque[float] | None:
        times = self._times.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times


class Authenticator:
    """Accounts + bearer token in, principals out; sessions live in memory (a restart signs
    everyone out). Thread-safe: `sign_in` is meant to run in a worker thread (argon2 is slow)."""

    def __init__(
        self,
        accounts: Mapping[str, Account],
        *,
        token: str | None,
        idle_s: float = 900,
        absolute_s: float = 28800,
        max_failures: int = 5,
        failure_window_s: float = 900,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if token is not None and len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"{TOKEN_SETTING}: {len(token)} characters is too short; use at least "
                f"{MIN_TOKEN_CHARS} random characters (e.g. `openssl rand -hex 32`) or leave it unset"
            )
        if max_failures < 1:
            raise ConfigError("console max_failures: must be at least 1")
        self.accounts = dict(accounts)
        self.idle_s, self.absolute_s = idle_s, absolute_s
        self.clock = clock
        self._token_digest = hashlib.sha256(token.encode()).digest() if token is not None else None
        self._sessions: dict[str, _Record] = {}  # SHA-256(sid) -> record: no live cookie in memory
        self._by_name = _FailureWindows(max_failures, failure_window_s)
        self._by_client = _FailureWindows(max_failures, failure_window_s)
        self._lock = threading.Lock()
        self._next_sweep = clock() + _SWEEP_EVERY_S
        self._signin_key = secrets.token_bytes(32)  # signs login-CSRF tokens; per process

    # -- sign-in ---------------------------------------------------------------------------

    def sign_in(self, name: str, password: str, client: str, *,
                previous_sid: str | None = None) -> ConsoleSession:
        """A new session for valid credentials, or SignInRefused. The sid the browser held before
        (`previous_sid`) is ended either way on success: a session id is never kept across sign-in."""
        now = self.clock()
        key = name[:_MAX_NAME_KEY]
        with self._lock:
            wait = max(self._by_name.retry_after(key, now), self._by_client.retry_after(client, now))
            if wait > 0:
                log.warning("console sign-in refused (rate limited) for %s from %s",
                            self.shown_name(name), client)
                raise SignInRefused("rate_limited", max(1, math.ceil(wait)))
            # counted before the slow check, so parallel guesses cannot all pass the limit
            self._by_name.add(key, now)
            self._by_client.add(client, now)
        account = check_password(self.accounts, name, password)
        with self._lock:
            if account is None:
                log.warning("console sign-in failed (bad credentials) for %s from %s",
                            self.shown_name(name), client)
                raise SignInRefused("bad_credentials")
            self._by_name.clear(key)
            self._by_client.discard(client, now)
            if previous_sid:
                self._sessions.pop(_key(previous_sid), None)
            self._sweep(now)
            sid = secrets.token_urlsafe(32)
            record = _Record(account.name, account.role, secrets.token_urlsafe(32), now, now)
            self._sessions[_key(sid)] = record
        log.info("console sign-in: %r (%s) from %s", account.name, account.role, client)
        return ConsoleSession(sid, self._principal(sid, record), now + self.absolute_s)

    def sign_in_external(self, name: str, role: Role, client: str, *,
                         previous_sid: str | None = None) -> ConsoleSession:
        """A new session for a principal someone else authenticated (the OIDC provider, whose
        ID token the caller has verified): the same rotation, limits and cookie as `sign_in`."""
        now = self.clock()
        with self._lock:
            if previous_sid:
                self._sessions.pop(_key(previous_sid), None)
            self._sweep(now)
            sid = secrets.token_urlsafe(32)
            record = _Record(name, role, secrets.token_urlsafe(32), now, now)
            self._sessions[_key(sid)] = record
        log.info("console sign-in (single sign-on): %r (%s) from %s", name, role, client)
        return ConsoleSession(sid, self._principal(sid, record), now + self.absolute_s)

    def shown_name(self, name: str) -> str:
        """A typed name as logs and events may show it: an account's name, else only its length
        (people type passwords into the name field; those must not reach a log or a topic)."""
        return repr(name) if name in self.accounts else f"an unknown name ({len(name)} characters)"

    def sign_out(self, sid: str) -> Principal | None:
        """End the session; returns whose it was (None if it was not live)."""
        with self._lock:
            record = self._sessions.pop(_key(sid), None)
        return self._principal(sid, record) if record is not None else None

    # -- per request -----------------------------------------------------------------------

    def session(self, sid: str) -> Principal | None:
        """The principal of a live session (and a refreshed idle timer), else None."""
        found = self.resolve(sid)
        return found if isinstance(found, Principal) else None

    def resolve(self, sid: str, *, touch: bool = True) -> Principal | EndedSession | None:
        """Like `session`, but says when a limit just ended the session (for `session.expired`).
        `touch=False` checks without counting as activity (the live view's stream)."""
        now = self.clock()
        key = _key(sid)
        with self._lock:
            record = self._sessions.get(key)
            reason = self._expiry(record, now) if record is not None else None
            if reason is not None:
                del self._sessions[key]
            elif record is not None and touch:
                record.last_seen = now
            if now >= self._next_sweep:  # after the lookup, so this session's end is reported
                self._sweep(now)
        if record is None:
            return None
        if reason is not None:
            return EndedSession(sid, record.name, reason)
        return self._principal(sid, record)

    def alive(self, sid: str) -> bool:
        """Whether the session is still live, without refreshing its idle timer."""
        now = self.clock()
        with self._lock:
            record = self._sessions.get(_key(sid))
            return record is not None and self._expiry(record, now) is None

    def bearer(self, header: str | None) -> Principal | None:
        """The token principal for `Authorization: Bearer <SESSIONWATCH_CONSOLE_TOKEN>`, else None."""
        if self._token_digest is None or not header:
            return None
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        # digests of equal length: the comparison time says nothing about the token's length
        presented = hashlib.sha256(credential.strip().encode()).digest()
        if not hmac.compare_digest(presented, self._token_digest):
            return None
        return Principal(TOKEN_PRINCIPAL, "responder", "token")

    # -- login CSRF (a signed double-submit token, before any session exists) ----------------

    def new_signin_token(self) -> str:
        nonce = secrets.token_urlsafe(24)
        return f"{nonce}.{self._sign(nonce)}"

    def signin_token_ok(self, cookie: str | None, submitted: str | None) -> bool:
        if not cookie or not submitted or not hmac.compare_digest(cookie.encode(), submitted.encode()):
            return False
        nonce, _, signature = cookie.partition(".")
        return hmac.compare_digest(signature.encode(), self._sign(nonce).encode())

    # -- internals --------------------------------------------------------------------------

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._signin_key, nonce.encode(), hashlib.sha256).hexdigest()

    def _expiry(self, record: _Record, now: float) -> Literal["idle", "absolute"] | None:
        if now - record.created >= self.absolute_s:
            return "absolute"
        if now - record.last_seen >= self.idle_s:
            return "idle"
        return None

    def _sweep(self, now: float) -> None:
        """Drop sessions nobody came back to (called under the lock)."""
        self._next_sweep = now + _SWEEP_EVERY_S
        for key in [k for k, r in self._sessions.items() if self._expiry(r, now) is not None]:
            del self._sessions[key]

    @staticmethod
    def _principal(sid: str, record: _Record) -> Principal:
        return Principal(record.name, record.role, "session", session_id=sid, csrf=record.csrf)


def _key(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


# -- helpers for routes and templates ------------------------------------------------------------

def require_responder(request: HTTPConnection) -> Principal:
    """The principal if it may act; HTTPException 403 for a viewer (or nobody)."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal) or not principal.can_act:
        raise HTTPException(403, "This needs the responder role.")
    return principal


def mask_session(hash: str, principal: Principal | None) -> str:
    """A session hash as this principal may see it: whole for responders, 8 characters for viewers."""
    if principal is not None and principal.can_act:
        return hash
    return hash[:8] + "…" if len(hash) > 8 else hash


_UNSAFE_NEXT = re.compile(r"[\x00-\x20\x7f\\]")


def safe_next(value: str | None) -> str:
    """`value` if it is a path on this site, else "/": never a redirect to somewhere else."""
    if not value or not value.startswith("/") or value.startswith("//") or _UNSAFE_NEXT.search(value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


@dataclass(frozen=True)
class CookiePolicy:
    """Cookie names and attributes: `__Host-` names and Secure unless the console is on loopback."""

    secure: bool

    @property
    def session_name(self) -> str:
        return "__Host-sessionwatch" if self.secure else "sessionwatch_console"

    @property
    def signin_name(self) -> str:
        return "__Host-sessionwatch-signin" if self.secure else "sessionwatch_signin"

    def header(self, name: str, value: str, max_age: int) -> str:
        """A Set-Cookie value; `max_age` 0 deletes the cookie."""
        parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)


def cookie_policy(request: HTTPConnection) -> CookiePolicy:
    policy = request.scope.get("state", {}).get("cookie_policy")
    if not isinstance(policy, CookiePolicy):
        raise RuntimeError("the console's routes must run behind SecurityMiddleware")
    return policy


def client_address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


# -- the middleware --------------------------------------------------------------------------------
