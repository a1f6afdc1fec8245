"""`user.credential_change`: a password or authentication factor changed - end the other sessions.

ASVS 5.0 7.4.3 asks apps to offer ending all other sessions after an authentication-factor change,
and 7.4.2 to end all sessions when an account is disabled; "revocation after a password change is
often incomplete" is a top user complaint. Default: revoke every other session the user stage
knows for the user, and keep the session that made the change (`keep_current`), so the user who
just changed a password is not thrown out. A tenant that wants everything gone, including
sessions the worker never saw, sets the action to `revoke_user` (a user-scope revocation with
`not_before` = the change: every session authenticated before it is revoked).

Decided on arrival, in event time: "the other sessions" are the user's sessions that logged in
before the change, ended since or not (ending an ended session changes nothing for its user, and
leaving it out would make the decision depend on whether its logout arrived first). A login
that arrives after the change but happened before it is ended as it arrives, under the change's
own id, so every interleaving of the partitions gives the same revocations.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.contract import EventType, Severity
from streams.detectors.base import (
    ALERT,
    REVOKE,
    REVOKE_USER,
    Example,
    Signal,
    Step,
    UserContext,
    UserDetector,
)

HOME = "73.162.10.20"
LAPTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) " \
         "Chrome/131.0.0.0 Safari/537.36"


@dataclass(frozen=True)
class CredentialChangeParams:
    # Keep the session the change was made from (ASVS: end the *other* sessions).
    keep_current: bool = True


class CredentialChange(UserDetector):
    id = "user.credential_change"
    title = "Credentials changed: other sessions end"
    default_severity = Severity.HIGH
    reference = "OWASP ASVS 5.0 7.4.3 and 7.4.2"
    Params = CredentialChangeParams
    actions = (REVOKE, REVOKE_USER, ALERT)
    default_action = REVOKE
    on_arrival = True
    judges = EventType.CREDENTIAL_CHANGED

    def evaluate(self, ctx: UserContext, params: CredentialChangeParams) -> Signal | None:
        event = ctx.event
        if event.type is not EventType.CREDENTIAL_CHANGED:
            return None
        others = tuple(dict.fromkeys(
            login.session for login in ctx.logins
            if login.session is not None
            and not (params.keep_current and login.session == event.session)))
        what = str(event.attrs.get("credential", "credential"))[:32] if event.attrs else "credential"
        return Signal(
            Severity.HIGH,
            f"User changed their {what}: {len(others)} other session(s) end",
            {"sessions_ended": len(others), "changed_from_session": event.session is not None,
             "credential": what},
            sessions=others,
        )

    examples = (
        Example(
            "password-change-ends-other-sessions",
            (
                Step(0, HOME, LAPTOP, "session.authenticated", session="laptop"),
                Step(60, HOME, LAPTOP, "session.authenticated", session="phone"),
                Step(600, HOME, LAPTOP, "credential.changed", session="laptop",
                     attrs={"credential": "password"}),
            ),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "reset-without-a-session",
            (
                Step(0, HOME, LAPTOP, "session.authenticated", session="laptop"),
                Step(600, HOME, LAPTOP, "credential.changed", session=None),
            ),
            fires=True,
        ),
        Example(
            "a-login-is-not-a-change",
            (Step(0, HOME, LAPTOP, "session.authenticated", session="laptop"),),
            fires=False,
        ),
    )
