"""`source.creation_flood`: a source creates sessions faster than people do.

Creating server-side sessions costs the app memory; a flood of them is a denial of service (the
seed issue), and a classic precursor of fixation. Auth0 throttles 50 sign-ups per IP per minute;
we count distinct sessions created per minute: 50 per address, 150 per /24 or /64, 500 per
network (blocks of hosting, VPN and Tor networks only, as for token guessing). An office NAT at
nine in the morning creates a few per minute.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.contract import EventType, Severity
from streams.detectors.base import Example, Signal, SourceContext, SourceDetector, Step
from streams.source_state import first_flood

BOT = "159.203.20.20"        # DigitalOcean, Toronto
OFFICE = "81.2.69.142"


@dataclass(frozen=True)
class CreationFloodParams:
    per_address: int = 50
    per_prefix: int = 150
    per_network: int = 500
    window_s: float = 60.0
    blockable_networks: tuple[str, ...] = ("hosting", "vpn", "tor")


class CreationFlood(SourceDetector):
    id = "source.creation_flood"
    title = "Sessions created in a flood"
    default_severity = Severity.HIGH
    reference = "Auth0 suspicious-IP throttling (50 sign-ups/IP/min); OWASP DoS cheat sheet"
    Params = CreationFloodParams

    def evaluate(self, ctx: SourceContext, params: CreationFloodParams) -> Signal | None:
        if ctx.event.type is not EventType.CREATED or ctx.windows.blocked:
            return None
        flood = first_flood(ctx.windows, "created",
                            (params.per_address, params.per_prefix, params.per_network),
                            params.window_s, ctx.event.time.timestamp())
        if flood is None:
            return None
        severity = Severity.HIGH
        if flood.network_wide and ctx.windows.network_kind not in params.blockable_networks:
            severity = Severity.MEDIUM
        return Signal(
            severity,
            f"{flood.count} sessions created from {flood.level.kind} {flood.level.source} in "
            f"{params.window_s:.0f} s",
            {"level": flood.level.kind, "source": flood.level.source, "sessions": flood.count,
             "network": ctx.network.asn, "network_kind": ctx.windows.network_kind},
            source=flood.level.source,
        )

    examples = (
        Example(
            "fifty-sessions-in-a-minute",
            tuple(Step(i, BOT, "Go-http-client/2.0", "session.created", user=None,
                       session=f"new-{i}") for i in range(50)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "office-morning",
            tuple(Step(i * 10, OFFICE, "Mozilla/5.0", "session.created", user=None,
                       session=f"new-{i}") for i in range(60)),
            fires=False,
        ),
    )
