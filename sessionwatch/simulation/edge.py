"""What an edge proxy in front of the app measures per request: TCP and TLS round trips, and JA4.

A client connecting directly has a TLS handshake round trip close to its TCP one. Through a proxy
that terminates TCP (a residential proxy, a proxy-style VPN exit, a Tor exit) the edge's TCP round
trip is to the exit node, a few ms, while the TLS handshake travels end to end to the attacker.
Draws come from the model's own generator, so turning fingerprints on never changes the traffic.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from sessionwatch.simulation import networks as nets

# JA4-shaped fingerprints of each client's TLS ClientHello (fixed per browser family: JA4 sorts
# ciphers and extensions, so Chrome's extension shuffling does not change it).
JA4 = {
    "chrome": "t13d1516h2_8daaf6152771_02713d6af862",
    "firefox": "t13d1715h2_5b57614c22b0_3d5424432f57",
    "safari": "t13d2014h2_a09f3c656075_14788d8d241b",
    "curl": "t13d3112h2_e8f1e7e78f70_6bebaf5329ac",
    "python": "t13d1812h1_85036bcba153_375ca2c5e164",
    "go": "t13d1311h2_f57a46bbacb6_e7c285222651",
    "okhttp": "t13d1613h2_46e7e9700bed_eca864cca44a",
}
# The TLS stacks a replay tool uses when it does not impersonate a browser.
TOOL_STACKS = ("go", "python", "curl")
# Round trip to the edge by kind of network: (least, spread) in ms; homes are the default.
PATH_RTT_MS = {"carrier": (25.0, 90.0), "hosting": (8.0, 120.0), "vpn": (20.0, 120.0),
               "tor": (80.0, 200.0), "residential": (40.0, 200.0)}
# Share of attack instances whose client impersonates the browser's ClientHello too.
BROWSER_IMPERSONATION_P = 0.6


def client_family(ua: str | None) -> str:
    """The JA4 family of a User-Agent string (browsers first: Edge is Chromium)."""
    s = (ua or "").lower()
    if "firefox/" in s:
        return "firefox"
    if "chrome/" in s or "edg/" in s:
        return "chrome"
    if "safari/" in s:
        return "safari"
    if s.startswith("curl/"):
        return "curl"
    if s.startswith(("python-", "python/")):
        return "python"
    if s.startswith("go-http"):
        return "go"
    if s.startswith("okhttp/"):
        return "okhttp"
    return "chrome"


class EdgeModel:
    """Per-request edge measurements for the sessions `sample` picked (a fraction of them)."""

    def __init__(self, seed: int, fraction: float) -> None:
        self.seed, self.fraction = seed, fraction
        self.rng = random.Random(f"sessionwatch-edge/{seed}")

    def sample(self) -> bool:
        """Whether a new session is measured."""
        return self.rng.random() < self.fraction

    def _unit(self, *parts: str) -> float:
        digest = hashlib.blake2b("|".join((str(self.seed), *parts)).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def measure(self, ip: str, ua: str | None, attack: str | None) -> dict[str, Any]:
        """tcp_rtt_ms, tls_rtt_ms and ja4 of one request from `ip` (by attack `attack`, if any)."""
        rng = self.rng
        ja4 = JA4[client_family(ua)]
        if attack is not None:
            if self._unit(attack, "impersonates") >= BROWSER_IMPERSONATION_P:
                ja4 = JA4[TOOL_STACKS[int(self._unit(attack, "stack") * len(TOOL_STACKS))]]
            if nets.source_kind(ip) != "hosting":  # through a proxy: the edge sees the exit
                end_to_end = 60 + 170 * self._unit(attack, ip, "end-to-end")
                tcp = rng.uniform(5, 20)
                tls = min(250.0, max(60.0, end_to_end * rng.uniform(0.92, 1.1)))
                return {"tcp_rtt_ms": round(tcp, 1), "tls_rtt_ms": round(tls, 1), "ja4": ja4}
        # A direct client (a layer-3 VPN tunnel included: TCP runs end to end inside it): the
        # path's round trip, jittered, and TLS a few ms above TCP.
        low, spread = PATH_RTT_MS.get(nets.source_kind(ip), (6.0, 40.0))
        tcp = round((low + spread * self._unit(ip, "path")) * rng.uniform(0.9, 1.15), 1)
        tls = round(tcp + rng.uniform(0, 5), 1)
        return {"tcp_rtt_ms": tcp, "tls_rtt_ms": tls, "ja4": ja4}
