"""`user.brute_force`: one account's password tried from many sources.

The distributed half of failed-login detection (the per-source half, credential stuffing, is
`source.credential_stuffing`). Sigma's example rule fires at >= 10 failures per user in 5 min;
counting distinct sources (/24 or /64) as well keeps a user who mistypes ten times from one
laptop out of it. Default action `alert`: locking or revoking on failures turns the detector into
a denial-of-service tool against the user (a REFERENCE complaint); tenants may choose
`revoke_user`. One finding per user per dedup window.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.contract import EventType, Severity
from streams.detectors.base import (
    ALERT,
    REVOKE_USER,
    Example,
    Signal,
    Step,
    UserContext,
    UserDetector,
)

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) " \
         "Chrome/131.0.0.0 Safari/537.36"


@dataclass(frozen=True)
class BruteForceParams:
    failures: int = 10        # Sigma: >= 10 failures per user ...
    window_s: float = 300.0   # ... in 5 minutes
    sources: int = 5          # from at least this many /24 or /64 prefixes


class BruteForce(UserDetector):
    id = "user.brute_force"
    title = "Password tried from many sources"
    default_severity = Severity.MEDIUM
    reference = "Sigma failed-logins-per-user example (>= 10 in 5 min); Auth0 brute-force protection"
    Params = BruteForceParams
    actions = (ALERT, REVOKE_USER)
    default_action = ALERT
    event_types = frozenset({EventType.AUTH_FAILED})
    dedup_per_subject = True

    def evaluate(self, ctx: UserContext, params: BruteForceParams) -> Signal | None:
        event = ctx.event
        if event.type is not EventType.AUTH_FAILED:
            return None
        now = event.time.timestamp()
        recent = [f for f in ctx.state.failures if now - f.at <= params.window_s]
        sources = {f.source for f in recent}
        if len(recent) < params.failures or len(sources) < params.sources:
            return None
        return Signal(
            Severity.MEDIUM,
            f"{len(recent)} failed logins from {len(sources)} networks in "
            f"{params.window_s / 60:.0f} min",
            {"failures": len(recent), "sources": len(sources), "window_s": params.window_s},
            sessions=(),
        )

    examples = (
        Example(
            "ten-failures-from-ten-networks",
            tuple(Step(i * 10, f"{45 + i}.79.{i}.7", CHROME, "auth.failed", session=None)
                  for i in range(10)),
            fires=True,
            severity=Severity.MEDIUM,
        ),
        Example(
            "ten-typos-from-one-laptop",
            tuple(Step(i * 10, "73.162.10.20", CHROME, "auth.failed", session=None)
                  for i in range(10)),
            fires=False,
        ),
        Example(
            "spread-over-an-hour",
            tuple(Step(i * 400, f"{45 + i}.79.{i}.7", CHROME, "auth.failed", session=None)
                  for i in range(10)),
            fires=False,
        ),
    )
