"""Is this request's session revoked? One Redis round trip per request, for any framework.

The middleware (`producers/flask.py`, `producers/asgi.py`) asks `Enforcer.check` (sync, redis-py)
or `AsyncEnforcer.check` (redis.asyncio) with the session's hashes, its user and when it was
authenticated, and the client address. Both read the public keys of
`producers/revocation_keys.py` with one MGET: the session under every hash key still configured,
the user's `not_before`, and every blocked prefix that could cover the address.

The verdict says only what to do. What fired stays in the revocation (for admins); the response
a user sees is the same neutral text whichever signal it was.

The end of the module is what the three middlewares (Flask, ASGI, Django) share whatever the
framework: the session keys, the per-request state, the refusal's body and the index updates.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from producers import session_index
from producers.errors import ConfigError
from producers.hashing import TokenHasher
from producers.revocation_keys import block_lengths_key, session_key, source_key, user_key

log = logging.getLogger("sessionwatch.enforcement")

# What users read, whatever fired: nothing here may tell an attacker which signal it was.
SIGNED_OUT_MESSAGE = "Your session has ended. Please sign in again."
STEP_UP_MESSAGE = "Please confirm it's you to continue."
REFUSED_MESSAGE = "This request cannot be served right now. Please try again later."

# Prefixes always looked up besides those the blocks in force use (revocation_keys docstring).
_ALWAYS = frozenset({(4, 24), (6, 64)})
_WARN_EVERY_S = 10.0


class Outcome(str, Enum):
    ALLOW = "allow"
    REVOKED = "revoked"    # clear the session, answer 401 (or redirect to sign in)
    STEP_UP = "step_up"    # ask the user to re-authenticate (the app's hook)
    BLOCKED = "blocked"    # refuse the request (403 or 429); the session is left alone


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    revocation_id: str | None = None   # for the app's logs; never shown to the user
    retry_after_s: int | None = None   # blocks: seconds until the block ends

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW


ALLOW = Verdict(Outcome.ALLOW)


@dataclass(frozen=True, slots=True)
class _Plan:
    keys: list[str]
    sessions: int      # keys[:sessions] are session keys
    user: bool         # then the user key, if any; the rest are source keys


def _plan(tenant: str, sessions: Sequence[str], user: str | None, ip: str | None,
          lengths: frozenset[tuple[int, int]]) -> _Plan:
    keys = [session_key(tenant, s) for s in sessions]
    if user is not None:
        keys.append(user_key(tenant, user))
    if ip:
        keys.extend(source_key(tenant, s) for s in _covering(ip, lengths))
    return _Plan(keys, len(sessions), user is not None)


def _covering(ip: str, lengths: frozenset[tuple[int, int]]) -> list[str]:
    """The address and every prefix of it a block could name."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return []
    out = [str(addr)]
    for version, bits in sorted(_ALWAYS | lengths):
        if version == addr.version and bits < addr.max_prefixlen:
            out.append(str(ipaddress.ip_network(f"{addr}/{bits}", strict=False)))
    return out


def _verdict(plan: _Plan, values: Sequence[Any], authenticated_at: float | None,
             now: float) -> Verdict:
    step_up: Verdict | None = None
    for raw in values[:plan.sessions]:
        if raw is None:
            continue
        rev = _load(raw)
        if rev.get("action") == "step_up":
            step_up = Verdict(Outcome.STEP_UP, rev.get("id"))
        else:
            return Verdict(Outcome.REVOKED, rev.get("id"))
    rest = values[plan.sessions:]
    if plan.user:
        raw, rest = rest[0], rest[1:]
        if raw is not None:
            rev = _load(raw)
            not_before = _epoch(rev.get("not_before"))
            # A session authenticated before the cut-off is revoked; one we cannot date is too
            # (the conservative side: the user signs in again).
            if authenticated_at is None or not_before is None or authenticated_at < not_before:
                return Verdict(Outcome.REVOKED, rev.get("id"))
    for raw in rest:
        if raw is None:
            continue
        rev = _load(raw)
        expires = _epoch(rev.get("expires"))
        if expires is None or expires > now:
            retry = None if expires is None else max(1, int(expires - now))
            return Verdict(Outcome.BLOCKED, rev.get("id"), retry)
    return step_up or ALLOW


def _load(raw: Any) -> dict[str, Any]:
    # The key existing is the signal; its JSON only refines it. A value another tool wrote
    # that is not our JSON still revokes (or blocks): the safe reading.
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


def names_html(accept: str) -> bool:
    """The Accept header names HTML (a browser navigating): redirect it to sign in. `*/*` (curl,
    fetch, API clients) gets the JSON 401 instead of a redirect into a login page."""
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() not in _HTML_TYPES:
            continue
        q = next((p.partition("=")[2] for p in params if p.lower().startswith("q=")), "1")
        try:
            if float(q) > 0:
                return True
        except ValueError:
            continue
    return False


def _epoch(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except (TypeError, ValueError):
        return None


class _Base:
    def __init__(self, redis: Any, *, tenant: str = "default", fail_open: bool = True,
                 lengths_refresh_s: float = 1.0) -> None:
        self.redis = redis
        self.tenant = tenant
        # Redis down: let requests through (True, the default: an outage of the denylist must
        # not sign everyone out) or refuse them (False: 503, for those who prefer closed).
        self.fail_open = fail_open
        self.lengths_refresh_s = lengths_refresh_s
        self.errors = 0
        self._lengths: frozenset[tuple[int, int]] = frozenset()
        self._lengths_at = float("-inf")
        self._last_warning = float("-inf")

    # The lengths are refreshed in the same pipeline as a request's MGET, so a block of a new
    # prefix length is seen from the second request after it (at most ~1 s late).
    def _lengths_stale(self, now: float) -> bool:
        return now - self._lengths_at >= self.lengths_refresh_s

    def _set_lengths(self, members: Any, now: float) -> None:
        parsed = set()
        for m in members or ():
            text = m.decode() if isinstance(m, bytes) else str(m)
            version, _, bits = text.partition("/")
            if version in ("4", "6") and bits.isdigit():
                parsed.add((int(version), int(bits)))
        self._lengths = frozenset(parsed)
        self._lengths_at = now

    def _lookup(self, plan: _Plan) -> Any:
        """None: a plain MGET will do. Else a pipeline (sync or asyncio alike) that is still one
        round trip: the MGET plus the prefix lengths for the next requests, once a second."""
        if not self._lengths_stale(time.monotonic()):
            return None
        pipe = self.redis.pipeline(transaction=False)
        pipe.mget(plan.keys)
        pipe.smembers(block_lengths_key(self.tenant))
        return pipe

    def _answer(self, plan: _Plan, replies: Any, piped: bool, authenticated_at: float | None,
                now: float) -> Verdict:
        if piped:
            self._set_lengths(replies[1], time.monotonic())
            replies = replies[0]
        return _verdict(plan, replies, authenticated_at, now)

    def _failed(self, exc: Exception) -> Verdict:
        self.errors += 1
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            log.warning("sessionwatch: revocation check failed (%s: %s); %s", type(exc).__name__,
                        exc, "letting requests through" if self.fail_open else "refusing requests")
        return ALLOW if self.fail_open else Verdict(Outcome.BLOCKED)


class Enforcer(_Base):
    """Synchronous check (redis-py), for WSGI apps."""

    def check(self, *, sessions: Sequence[str] = (), user: str | None = None,
              authenticated_at: float | None = None, ip: str | None = None) -> Verdict:
        """`sessions`: the token's hashes under every key (`TokenHasher.hashes`)."""
        now = time.time()
        plan = _plan(self.tenant, sessions, user, ip, self._lengths)
        if not plan.keys:
            return ALLOW
        try:
            pipe = self._lookup(plan)
            replies = pipe.execute() if pipe is not None else self.redis.mget(plan.keys)
        except Exception as exc:  # noqa: BLE001 - any Redis failure takes the fail-open path
            return self._failed(exc)
        return self._answer(plan, replies, pipe is not None, authenticated_at, now)


class AsyncEnforcer(_Base):
    """Asynchronous check (redis.asyncio), for ASGI apps."""

    async def check(self, *, sessions: Sequence[str] = (), user: str | None = None,
                    authenticated_at: float | None = None, ip: str | None = None) -> Verdict:
        now = time.time()
        plan = _plan(self.tenant, sessions, user, ip, self._lengths)
        if not plan.keys:
            return ALLOW
        try:
            pipe = self._lookup(plan)
            replies = await (pipe.execute() if pipe is not None else self.redis.mget(plan.keys))
        except Exception as exc:  # noqa: BLE001 - any Redis failure takes the fail-open path
            return self._failed(exc)
        return self._answer(plan, replies, pipe is not None, authenticated_at, now)


# -- what the middlewares share -------------------------------------------------------------------

USER_KEY = "_sw_user"          # who the session belongs to (set by login())
AUTH_AT_KEY = "_sw_auth_at"    # when it was authenticated, epoch seconds (user not_before)


@dataclass
class RequestState:
    presented: str | None = None   # the session id the client sent, if any
    known: bool = False            # it named a stored session
    handled: bool = False          # an event for this request was already emitted
    # `presented` under every hash key, current first: computed once for the check and reused
    # by this request's event and index updates (an HMAC per use saved on every request).
    hashes: list[str] = field(default_factory=list)

    def hash_of(self, hasher: TokenHasher, token: str) -> str:
        return self.hashes[0] if self.hashes and token == self.presented else hasher.hash(token)


def check_blocked_status(status: int, name: str = "blocked_status") -> None:
    if status not in (403, 429):
        raise ConfigError(f"{name}: 403 or 429")


def unknown_session_verdict(verdict: Verdict) -> Verdict | None:
    """For a cookie naming no stored session: what to refuse, or None (an unknown token).

    Revoked (the applier deleted its record): the user signs in again, the same as a live
    revoked session (a step-up too: there is no session left to step up). Otherwise an id we
    never issued, or whose session expired."""
    if verdict.outcome in (Outcome.REVOKED, Outcome.STEP_UP):
        return Verdict(Outcome.REVOKED, verdict.revocation_id)
    if verdict.outcome is Outcome.BLOCKED:
        return verdict
    return None


def log_refusal(logger: logging.Logger, verdict: Verdict) -> None:
    logger.info("sessionwatch: request refused (%s, revocation %s)", verdict.outcome.value,
                verdict.revocation_id)


def refusal_body(text: str, status: int) -> dict[str, str]:
    """The JSON of a refusal (401 signed out, 403/429 refused): one neutral sentence."""
    return {"error": "signed_out" if status == 401 else "refused", "message": text}


def retry_after(verdict: Verdict, blocked_status: int) -> str | None:
    """The Retry-After header of a block, answered 429 only."""
    if blocked_status == 429 and verdict.retry_after_s:
        return str(verdict.retry_after_s)
    return None


def forget_pipe(redis: Any, tenant: str, session: str, user: str | None) -> Any:
    """A pipeline (sync or asyncio) dropping the session from the index; the caller executes."""
    pipe = redis.pipeline(transaction=False)
    session_index.forget(pipe, tenant, session, user)
    return pipe


def reindex_pipe(redis: Any, tenant: str, previous: str | None, previous_user: str | None,
                 session: str, store_key: str, user: str | None, authenticated_at: float | None,
                 ttl_s: int) -> Any:
    """A pipeline (sync or asyncio) moving the index from the `previous` session hash (if any)
    to the new one, after a login or rotation; the caller executes."""
    pipe = redis.pipeline(transaction=False)
    if previous is not None:
        session_index.forget(pipe, tenant, previous, previous_user)
    session_index.record(pipe, tenant, session, store_key, user, authenticated_at, ttl_s)
    return pipe


def best_effort(logger: logging.Logger, execute: Callable[[], Any]) -> None:
    try:
        execute()
    except Exception as exc:  # noqa: BLE001 - the index only helps deletion; Redis checks stay
        index_not_updated(logger, exc)


def index_not_updated(logger: logging.Logger, exc: Exception) -> None:
    logger.warning("sessionwatch: session index not updated (%s)", exc)


def event_session(kw: dict[str, Any], state: RequestState | None, hasher: TokenHasher,
                  token: str | None) -> None:
    """Name the event's session in `kw`: its hash (reusing this request's), or the raw token
    for the SDK to hash when no state is at hand (or None: no session)."""
    if token is not None and state is not None:
        kw["session"] = state.hash_of(hasher, token)
    else:
        kw["session_token"] = token


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
