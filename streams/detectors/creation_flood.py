"""`source.creation_flood`: a source creates sessions faster than people do.

Creating server-side sessions costs the app memory; a flood of them is a denial of service (the
seed issue), and a classic precursor of fixation. Auth0 throttles 50 sign-ups per IP per minute;
we count distinct sessions created per minute: 50 per address, 100 per /24 or /64, 300 per
network (blocks of hosting, VPN and Tor networks only, as for token guessing), and only where
new sessions are at least 80 % of the sessions seen from there: people behind a NAT create a
session and then use it (or log in, which rotates it into a live one), a flood never does. That
keeps carrier NAT and campus gateways, which create many sessions, out of it.
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
    per_prefix: int = 100
    per_network: int = 300
    window_s: float = 60.0
    min_share: float = 0.8
    blockable_networks: tuple[str, ...] = ("hosting", "vpn", "tor")


class CreationFlood(SourceDetector):
    id = "source.creation_flood"
    title = "Sessions created in a flood"
    default_severity = Severity.HIGH
    reference = "Auth0 suspicious-IP throttling (50 sign-ups/IP/min); OWASP DoS cheat sheet"
    Params = CreationFloodParams
    event_types = frozenset({EventType.CREATED})

    def evaluate(self, ctx: SourceContext, params: CreationFloodParams) -> Signal | None:
        if ctx.event.type is not EventType.CREATED or ctx.windows.blocked:
            return None
        flood = first_flood(ctx.windows, "created",
                            (params.per_address, params.per_prefix, params.per_network),
                            params.window_s, ctx.now,
                            against="valid", min_share=params.min_share)
        if flood is None:
            return None
        return Signal(
            flood.severity(ctx.windows.network_kind, params.blockable_networks),
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
            "campus-gateway-creating-and-using-sessions",
            # 80 people behind one gateway, each using the session a second after getting it
            # (in event time: the source stage takes events in that order).
            tuple(step for i in range(80) for step in (
                Step(i * 0.5, OFFICE, "Mozilla/5.0", "session.created", user=None,
                     session=f"new-{i}"),
                Step(i * 0.5 + 1.0, OFFICE, "Mozilla/5.0", "session.activity",
                     session=f"new-{i}"))),
            fires=False,
        ),
        Example(
            "office-morning",
            tuple(Step(i * 10, OFFICE, "Mozilla/5.0", "session.created", user=None,
                       session=f"new-{i}") for i in range(60)),
            fires=False,
        ),
    )
