"""`source.token_guess`: a source presents many session tokens the app never issued.

OWASP's Session Management Cheat Sheet: reject never-issued ids, alert, and detect guessing from
one IP. Counting *distinct* rejected token hashes (a stale cookie retried ten times is one) in a
5-minute window: 20 per address (Panther's brute-force threshold), 50 per /24 or /64, 60 per
network (a botnet rented across one provider's blocks); and only where rejected tokens are at
least 80 % of the distinct tokens seen there, so a busy office NAT whose users come back with
stale cookies after a deploy is not blocked (the "shared NAT blocks a whole office" complaint).
Network-wide floods block the network's announced block only for hosting, VPN and Tor networks;
on a residential or mobile network they are a medium finding (alert), since blocking a carrier's
block locks out its customers.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.contract import EventType, Severity
from streams.detectors.base import Example, Signal, SourceContext, SourceDetector, Step
from streams.source_state import first_flood

ATTACKER = "167.99.10.10"           # DigitalOcean
OFFICE = "81.2.69.142"


@dataclass(frozen=True)
class TokenGuessParams:
    per_address: int = 20
    per_prefix: int = 50
    per_network: int = 60
    window_s: float = 300.0
    min_share: float = 0.8
    # Network kinds whose announced block may be blocked as a whole.
    blockable_networks: tuple[str, ...] = ("hosting", "vpn", "tor")


class TokenGuess(SourceDetector):
    id = "source.token_guess"
    title = "Session tokens guessed from one source"
    default_severity = Severity.HIGH
    reference = "OWASP Session Management Cheat Sheet (ID guessing); Panther brute force (20/IP)"
    Params = TokenGuessParams
    event_types = frozenset({EventType.TOKEN_REJECTED})

    def evaluate(self, ctx: SourceContext, params: TokenGuessParams) -> Signal | None:
        if ctx.event.type is not EventType.TOKEN_REJECTED or ctx.windows.blocked:
            return None
        flood = first_flood(ctx.windows, "rejected",
                            (params.per_address, params.per_prefix, params.per_network),
                            params.window_s, ctx.now,
                            against="valid", min_share=params.min_share)
        if flood is None:
            return None
        return Signal(
            flood.severity(ctx.windows.network_kind, params.blockable_networks),
            f"{flood.count} unknown session tokens from {flood.level.kind} {flood.level.source} "
            f"in {params.window_s / 60:.0f} min",
            {"level": flood.level.kind, "source": flood.level.source, "rejected": flood.count,
             "share_rejected": round(flood.share, 3), "network": ctx.network.asn,
             "network_kind": ctx.windows.network_kind},
            source=flood.level.source,
        )

    examples = (
        Example(
            "twenty-guesses-from-one-address",
            tuple(Step(i, ATTACKER, "python-requests/2.32", "token.rejected", user=None,
                       session=f"guess-{i}") for i in range(20)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "one-stale-cookie-retried",
            tuple(Step(i * 5, OFFICE, "Mozilla/5.0", "token.rejected", user=None,
                       session="stale") for i in range(30)),
            fires=False,
        ),
        Example(
            "busy-office-after-a-deploy",
            tuple(Step(i, OFFICE, "Mozilla/5.0", "session.activity", user=f"u{i}",
                       session=f"live-{i}") for i in range(60))
            + tuple(Step(60 + i, OFFICE, "Mozilla/5.0", "token.rejected", user=None,
                         session=f"stale-{i}") for i in range(25)),
            fires=False,
        ),
        Example(
            "distributed-over-a-slash-24",
            tuple(Step(i, f"167.99.10.{i % 250 + 1}", "curl/8.5.0", "token.rejected", user=None,
                       session=f"guess-{i}") for i in range(50)),
            fires=True,
        ),
        Example(
            "slow-guessing-over-hours",
            tuple(Step(i * 600, ATTACKER, "curl/8.5.0", "token.rejected", user=None,
                       session=f"guess-{i}") for i in range(20)),
            fires=False,
        ),
    )
