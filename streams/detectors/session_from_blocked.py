"""`source.session_from_blocked`: a live session used from a source under a block.

A source that floods guesses or stuffed credentials is blocked; a session it then uses was most
likely won by the flood (a guessed token, a stuffed password), so the session is revoked too
("block the source and revoke any valid session that a flooding source touches"). Blocks are
narrow on purpose (see token_guess.py), so this rarely touches a bystander; the block's expiry
bounds it.
"""

from __future__ import annotations

from producers.contract import EventType, Severity
from streams.detectors.base import (
    ALERT,
    REVOKE,
    STEP_UP,
    Example,
    NoParams,
    Signal,
    SourceContext,
    SourceDetector,
    Step,
)
from streams.source_state import LIVE_TYPES

ATTACKER = "167.99.10.10"


class SessionFromBlocked(SourceDetector):
    id = "source.session_from_blocked"
    title = "Session used from a blocked source"
    default_severity = Severity.HIGH
    reference = "OWASP Session Management Cheat Sheet (ID guessing: act on the source)"
    actions = (REVOKE, STEP_UP, ALERT)
    default_action = REVOKE
    event_types = LIVE_TYPES - {EventType.LOGOUT}

    def evaluate(self, ctx: SourceContext, params: NoParams) -> Signal | None:
        event = ctx.event
        if ctx.windows.blocked is None or event.session is None or event.type not in LIVE_TYPES:
            return None
        if event.type is EventType.LOGOUT:
            return None
        return Signal(
            Severity.HIGH,
            f"Session used from {ctx.windows.blocked}, blocked for flooding",
            {"blocked_source": ctx.windows.blocked, "network": ctx.network.asn},
        )

    examples = (
        Example(
            "guess-then-use",
            tuple(Step(i, ATTACKER, "curl/8.5.0", "token.rejected", user=None,
                       session=f"guess-{i}") for i in range(20))
            + (Step(30, ATTACKER, "curl/8.5.0", "session.activity", session="won"),),
            fires=True,
            severity=Severity.HIGH,
            with_detectors=("source.token_guess",),
        ),
        Example(
            "no-block-no-finding",
            (Step(0, ATTACKER, "curl/8.5.0", "session.activity", session="mine"),),
            fires=False,
        ),
    )
