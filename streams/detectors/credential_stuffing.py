"""`source.credential_stuffing`: one source fails to log in as many different users.

Credential stuffing tries leaked username/password pairs, so one source fails across many
accounts. Panther blocks at 20 failures per IP; we count *distinct users* failing in 5 minutes:
10 per address, 20 per /24 or /64, 50 per network (blocks of hosting, VPN and Tor networks only),
and only where failures are at least half of the source's login attempts (failed users vs users
who logged in), so an office where people mistype passwords at 9:00 is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.contract import EventType, Severity
from streams.detectors.base import Example, Signal, SourceContext, SourceDetector, Step
from streams.source_state import first_flood

STUFFER = "51.38.1.1"      # OVH
OFFICE = "81.2.69.142"


@dataclass(frozen=True)
class CredentialStuffingParams:
    per_address: int = 10
    per_prefix: int = 20
    per_network: int = 50
    window_s: float = 300.0
    min_share: float = 0.5
    blockable_networks: tuple[str, ...] = ("hosting", "vpn", "tor")


class CredentialStuffing(SourceDetector):
    id = "source.credential_stuffing"
    title = "Logins failing for many users from one source"
    default_severity = Severity.HIGH
    reference = "Panther brute force by IP (20); Auth0 credential-stuffing protection"
    Params = CredentialStuffingParams
    event_types = frozenset({EventType.AUTH_FAILED})

    def evaluate(self, ctx: SourceContext, params: CredentialStuffingParams) -> Signal | None:
        if ctx.event.type is not EventType.AUTH_FAILED or ctx.windows.blocked:
            return None
        flood = first_flood(ctx.windows, "failed",
                            (params.per_address, params.per_prefix, params.per_network),
                            params.window_s, ctx.now,
                            against="logins", min_share=params.min_share)
        if flood is None:
            return None
        return Signal(
            flood.severity(ctx.windows.network_kind, params.blockable_networks),
            f"Logins failed for {flood.count} users from {flood.level.kind} "
            f"{flood.level.source} in {params.window_s / 60:.0f} min",
            {"level": flood.level.kind, "source": flood.level.source, "users": flood.count,
             "share_failed": round(flood.share, 3), "network": ctx.network.asn,
             "network_kind": ctx.windows.network_kind},
            source=flood.level.source,
        )

    examples = (
        Example(
            "ten-users-from-one-address",
            tuple(Step(i * 3, STUFFER, "python-requests/2.32", "auth.failed", user=f"victim{i}",
                       session=None) for i in range(10)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "one-user-many-typos",
            tuple(Step(i * 3, OFFICE, "Mozilla/5.0", "auth.failed", user="alice", session=None)
                  for i in range(15)),
            fires=False,
        ),
        Example(
            "office-with-typos-and-logins",
            tuple(Step(i, OFFICE, "Mozilla/5.0", "session.authenticated", user=f"u{i}",
                       session=f"s{i}") for i in range(40))
            + tuple(Step(40 + i, OFFICE, "Mozilla/5.0", "auth.failed", user=f"t{i}", session=None)
                    for i in range(12)),
            fires=False,
        ),
    )
