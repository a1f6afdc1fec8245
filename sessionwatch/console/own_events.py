"""The console eats its own cooking: its own sign-ins and sessions become sessionwatch events.

Every method hands the raw session id to the SDK, which hashes it with the console's TokenHasher
(the raw id never leaves the process), queues the event and returns: it never blocks a request
and never raises into one (telemetry must not take the console down).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from producers.client import SessionwatchClient

log = logging.getLogger("sessionwatch.console.security")

TENANT = "sessionwatch-console"
_LOG_EVERY_S = 60.0


class OwnEvents:
    """Emit the console's session lifecycle to `sessionwatch.events` under its own tenant."""

    def __init__(self, client: SessionwatchClient, tenant: str = TENANT) -> None:
        self.client = client
        self.tenant = tenant
        self._last_log = float("-inf")

    def signed_in(self, sid: str, *, user: str, ip: str, user_agent: str | None,
                  previous_sid: str | None = None) -> None:
        """A new session: `session.created`, then `session.authenticated` naming the session
        the browser presented before (rotation on sign-in, so the fixation detector stays quiet)."""
        self._emit(self.client.created, session_token=sid, user=user, ip=ip, user_agent=user_agent)
        self._emit(self.client.authenticated, session_token=sid, user=user, ip=ip,
                   user_agent=user_agent, previous_session_token=previous_sid)

    def activity(self, sid: str, *, user: str, ip: str, user_agent: str | None) -> None:
        self._emit(self.client.activity, session_token=sid, user=user, ip=ip, user_agent=user_agent)

    def signed_out(self, sid: str, *, user: str, ip: str, user_agent: str | None) -> None:
        self._emit(self.client.logout, session_token=sid, user=user, ip=ip, user_agent=user_agent)

    def expired(self, sid: str, *, user: str, ip: str, user_agent: str | None, reason: str) -> None:
        """`reason` is "idle" or "absolute"."""
        self._emit(self.client.expired, session_token=sid, user=user, ip=ip, user_agent=user_agent,
                   attrs={"reason": reason})

    def sign_in_failed(self, *, user: str | None, ip: str, user_agent: str | None,
                       reason: str) -> None:
        """`reason` is "bad_credentials" or "rate_limited"; `user` is the account that was tried,
        None when the name is no account (it may be a password typed in the wrong field)."""
        self._emit(self.client.auth_failed, user=(user or "")[:256] or None, ip=ip,
                   user_agent=user_agent,
                   attrs={"reason": reason})

    def token_rejected(self, sid: str, *, ip: str, user_agent: str | None) -> None:
        """A cookie naming no live session (a console restart, or someone guessing)."""
        self._emit(self.client.token_rejected, session_token=sid, ip=ip, user_agent=user_agent,
                   attrs={"reason": "unknown"})

    def _emit(self, method: Callable[..., Any], **kw: Any) -> None:
        if kw.get("user_agent") is not None:
            kw["user_agent"] = kw["user_agent"][:1024]  # the contract's bound; a long UA is no error
        try:
            method(tenant=self.tenant, **kw)
        except Exception as exc:  # noqa: BLE001 - telemetry must never break a request
            # e.g. a client address that is not an IP (a unix socket): the event cannot be valid
            now = time.monotonic()
            if now - self._last_log >= _LOG_EVERY_S:
                self._last_log = now
                log.warning("console: own event not emitted (%s: %s)", type(exc).__name__, exc)
