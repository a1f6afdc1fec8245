"""`session.ip_change`: a session's requests move to another network.

IP binding is a detection aid, not a trustworthy binding (OWASP Session Management Cheat Sheet):
Wi-Fi/cellular handoff, DHCP renewals, ISP rotation, CGNAT and IPv6 privacy addresses all move
addresses legitimately. So: the same /24 or /64 is nothing; the same network (ASN) or a network
this session already used is at most low; only a network new to the session is medium - and a
medium alone never revokes under the default policy: it needs corroboration (a client change),
following Panther's "new ASN and UA similarity < 0.95" stolen-session rule.

One move is high on its own: a session that lived on residential, mobile or VPN networks moving
into a datacenter or a Tor exit. People browse from homes, phones and offices; a replayed cookie
comes from a VPS or Tor (Elastic's AiTM rule keys on the same contrast), even when the attacker
copies the victim's User-Agent exactly. Commercial VPN exits are their own kind ("vpn") and stay
medium; a company whose staff browse through a cloud proxy allowlists its network.
"""

from __future__ import annotations

from producers.contract import Severity
from streams.detectors.base import Context, Example, NoParams, SessionDetector, Signal, Step

CHROME_WIN = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)


class IpChange(SessionDetector):
    id = "session.ip_change"
    title = "Session moved to another network"
    default_severity = Severity.MEDIUM
    reference = "OWASP Session Management Cheat Sheet; Panther okta_potentially_stolen_session"

    def evaluate(self, ctx: Context, params: NoParams) -> Signal | None:
        prev = ctx.previous
        if prev is None or prev.ip is None or prev.ip == ctx.event.ip:
            return None
        if ctx.prefix == prev.prefix:
            return None  # DHCP renewal, IPv6 privacy address rotation
        net = ctx.network
        evidence = {
            "from_ip": prev.ip,
            "to_ip": ctx.event.ip,
            "from_network": prev.asn,
            "to_network": net.asn,
            "from_country": prev.country,
            "to_country": net.country,
        }
        if net.private or net.asn is None or prev.asn is None:
            # A LAN or unannounced address: nothing to compare networks with.
            return Signal(Severity.LOW, "Session address changed (network unknown)", evidence)
        if net.asn == prev.asn:
            return Signal(Severity.LOW, f"Session address changed within {net.asn}", evidence)
        if net.asn in prev.networks:
            return Signal(
                Severity.LOW,
                f"Session returned to a network it used before ({net.asn})",
                evidence,
            )
        evidence["to_network_kind"] = net.kind
        if net.kind in ("hosting", "tor") and not prev.datacenter:
            return Signal(
                Severity.HIGH,
                f"Session moved from {prev.asn} ({prev.country}) into {net.kind} network "
                f"{net.asn} ({net.country})",
                evidence,
            )
        return Signal(
            Severity.MEDIUM,
            f"Session moved to a new network: {prev.asn} ({prev.country}) -> "
            f"{net.asn} ({net.country})",
            evidence,
        )

    examples = (
        Example(
            "new-asn",
            (Step(0, "81.2.69.142", CHROME_WIN), Step(60, "86.150.216.52", CHROME_WIN)),
            fires=True,
            severity=Severity.MEDIUM,
        ),
        Example(
            "home-into-a-datacenter-same-browser",
            (Step(0, "73.162.10.20", CHROME_WIN), Step(60, "167.99.10.10", CHROME_WIN)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "home-to-a-commercial-vpn",
            (Step(0, "73.162.10.20", CHROME_WIN), Step(60, "89.187.160.1", CHROME_WIN)),
            fires=True,
            severity=Severity.MEDIUM,
        ),
        Example(
            "home-to-the-phone-carrier",
            (Step(0, "73.162.10.20", CHROME_WIN), Step(60, "172.56.20.30", CHROME_WIN)),
            fires=True,
            severity=Severity.MEDIUM,
        ),
        Example(
            "same-prefix-dhcp",
            (Step(0, "81.2.69.142", CHROME_WIN), Step(60, "81.2.69.17", CHROME_WIN)),
            fires=False,
        ),
        Example(
            "isp-rotation-same-asn",
            (Step(0, "24.24.24.24", CHROME_WIN), Step(60, "24.24.9.9", CHROME_WIN)),
            fires=True,
            severity=Severity.LOW,
        ),
        Example(
            "ipv6-privacy-address",
            (
                Step(0, "2001:4860:4860::8888", CHROME_WIN),
                Step(60, "2001:4860:4860::1234", CHROME_WIN),
            ),
            fires=False,
        ),
        Example(
            "back-to-known-network",
            (
                Step(0, "81.2.69.142", CHROME_WIN),
                Step(60, "86.150.216.52", CHROME_WIN),
                Step(120, "81.2.69.142", CHROME_WIN),
            ),
            fires=True,
            severity=Severity.LOW,
        ),
        Example("same-ip", (Step(0, "8.8.8.8"), Step(5, "8.8.8.8")), fires=False),
    )
