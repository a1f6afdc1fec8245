"""Revocations an admin decides by hand in the console (revoke a session or a user, block or lift
a source), built as the contract's `Revocation` so the applier enforces them like any other.

Pure: no I/O and no clock (the caller passes `now`), so the same decision gives the same id.
The admin is the cause: one reason with detector `console.manual`, no triggering events.
"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime
from enum import Enum
from typing import TypeVar

from producers.contract import Action, Reason, Revocation, Scope, Severity
from storage.clickhouse.rows import epoch_ms

MANUAL_DETECTOR = "console.manual"
MAX_ADMIN = 200
MAX_NOTE = 2_000
# The namespace of streams/policy.py's ids (storage may not import streams); the "manual/1|"
# prefix keeps these ids apart from the policy's.
ID_NAMESPACE = uuid.UUID("6f1d3c1e-5b0a-4c55-9a57-2f1f4a7e9c10")

# What an admin may decide per scope. No step-up of a user: the middleware reads a user key as
# "revoked before not_before" whatever its action, so it would sign the user out.
ALLOWED: dict[Scope, frozenset[Action]] = {
    Scope.SESSION: frozenset({Action.REVOKE, Action.STEP_UP}),
    Scope.USER: frozenset({Action.REVOKE}),
    Scope.SOURCE: frozenset({Action.BLOCK, Action.LIFT}),
}
E = TypeVar("E", bound=Enum)
_SEVERITY = {Action.REVOKE: Severity.HIGH, Action.BLOCK: Severity.HIGH,
             Action.STEP_UP: Severity.MEDIUM, Action.LIFT: Severity.LOW}


class ManualRevocationError(ValueError):
    """The decision cannot be published as given; nothing was built."""


def manual_revocation(
    *,
    tenant: str,
    scope: Scope | str,
    action: Action | str,
    session: str | None = None,
    user: str | None = None,
    source: str | None = None,
    admin: str,
    note: str = "",
    now: datetime,
    expires: datetime | None = None,
    not_before: datetime | None = None,
) -> Revocation:
    """The revocation for `admin`'s decision at `now` (aware; kept to the microsecond).

    - session: `session` (a session hash) is required; `user` may name its user.
    - user: `user` is required; `not_before` defaults to `now` (every session signed in before
      the decision ends).
    - source: `source` (an address or CIDR) is required, spelled exactly as the block to lift
      names it (the applier's keys are the text). A block needs `expires`; a lift's optional
      `expires` is how long it refuses redelivered older blocks (storage/redis_applier.py).

    `note` is checked for length but never put in the revocation: it travels to webhooks and
    the archive, and free text may say more than they should (keep it in the console's records).
    Raises ManualRevocationError (a ValueError) naming the field at fault.
    """
    scope = _enum(Scope, scope, "scope")
    action = _enum(Action, action, "action")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ManualRevocationError(f"now: give an aware time (tzinfo=UTC), not {now.isoformat()}")
    tenant = tenant.strip()
    if not tenant:
        raise ManualRevocationError("tenant: name the tenant the decision applies to")
    admin = admin.strip()
    if not admin:
        raise ManualRevocationError("admin: say who decides (the console's signed-in account)")
    if len(admin) > MAX_ADMIN:
        raise ManualRevocationError(f"admin: {len(admin)} characters; at most {MAX_ADMIN}")
    if len(note) > MAX_NOTE:
        raise ManualRevocationError(f"note: {len(note)} characters; at most {MAX_NOTE}")
    if action not in ALLOWED[scope]:
        allowed = ", ".join(sorted(a.value for a in ALLOWED[scope]))
        raise ManualRevocationError(f"action: {action.value!r} is not for scope {scope.value!r}; "
                                    f"use one of {allowed}")
    subject = _subject(scope, session, user, source)
    if scope is Scope.USER:
        not_before = not_before or now
    elif not_before is not None:
        raise ManualRevocationError(f"not_before: only a user revocation has one, not scope "
                                    f"{scope.value!r}")
    _check_time("not_before", not_before)
    _check_time("expires", expires)
    if action is Action.BLOCK and expires is None:
        raise ManualRevocationError("expires: a block needs an end (e.g. now + 1 hour)")
    if expires is not None and expires <= now:
        raise ManualRevocationError(f"expires: {expires.isoformat()} is not after now "
                                    f"({now.isoformat()})")
    cause = "|".join((tenant, scope.value, subject, action.value, admin, str(epoch_ms(now))))
    return Revocation(
        id=str(uuid.uuid5(ID_NAMESPACE, "manual/1|" + cause)),
        tenant=tenant,
        scope=scope,
        session=session if scope is Scope.SESSION else None,
        user=user if scope is not Scope.SOURCE else None,
        source=source if scope is Scope.SOURCE else None,
        action=action,
        not_before=not_before,
        expires=expires,
        reasons=[Reason(detector=MANUAL_DETECTOR, severity=_SEVERITY[action],
                        summary=f"{action.value} by {admin} in the console",
                        evidence={"admin": admin})],
        event_time=now,
        decided_at=now,
        events=[],
    )


def is_manual(revocation: Revocation) -> bool:
    """True if an admin decided `revocation` by hand (a backtest leaves these out)."""
    return any(r.detector == MANUAL_DETECTOR for r in revocation.reasons)


def _enum(kind: type[E], value: object, name: str) -> E:
    try:
        return kind(value)
    except ValueError:
        raise ManualRevocationError(f"{name}: {value!r} is not one of "
                                    f"{', '.join(m.value for m in kind)}") from None


def _subject(scope: Scope, session: str | None, user: str | None, source: str | None) -> str:
    given = {"session": session, "user": user, "source": source}
    # A session revocation may name its user too (the contract's `user`); nothing else may.
    named = {Scope.SESSION: ("session", "user"), Scope.USER: ("user",),
             Scope.SOURCE: ("source",)}[scope]
    for name, value in given.items():
        if value and name not in named:
            raise ManualRevocationError(f"{name}: a {scope.value} decision names only its "
                                        f"{named[0]}; leave {name} out")
    subject = given[named[0]]
    if not subject:
        what = {Scope.SESSION: "the session hash to revoke",
                Scope.USER: "the user whose sessions to revoke",
                Scope.SOURCE: "the address or CIDR to block or lift"}[scope]
        raise ManualRevocationError(f"{named[0]}: give {what}")
    if scope is Scope.SOURCE:
        try:
            ipaddress.ip_network(subject, strict=False)
        except ValueError:
            raise ManualRevocationError(f"source: {subject[:64]!r} is not an IP address or CIDR "
                                        "(e.g. 203.0.113.9 or 203.0.113.0/24)") from None
    return subject


def _check_time(name: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ManualRevocationError(f"{name}: give an aware time (tzinfo=UTC), not "
                                    f"{value.isoformat()}")
