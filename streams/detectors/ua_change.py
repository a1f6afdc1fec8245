"""`session.ua_change`: a session's client software changes mid-session.

A session cookie lives in one browser, so the client family does not change in an honest
session; versions do (Chrome ships every few weeks), so versions are ignored. A non-browser
client (curl, python-requests, Go's http client) appearing mid-session is the signature of cookie
replay (Elastic's AiTM rule) and is high on its own; a different browser or OS family is medium
(desktop-site toggles and webviews exist) and revokes when the network changed too.
"""

from __future__ import annotations

from producers.contract import Severity
from streams.detectors.base import Context, Example, NoParams, SessionDetector, Signal, Step

CHROME_130 = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36"
)
CHROME_131 = CHROME_130.replace("Chrome/130", "Chrome/131")
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
CURL = "curl/8.5.0"
IP = "81.2.69.142"


class UaChange(SessionDetector):
    id = "session.ua_change"
    title = "Session used by different client software"
    default_severity = Severity.HIGH
    reference = "OWASP Session Management Cheat Sheet; Elastic AiTM session cookie replay"

    def evaluate(self, ctx: Context, params: NoParams) -> Signal | None:
        prev = ctx.previous
        if prev is None or prev.client_family is None or ctx.event.user_agent is None:
            return None
        if ctx.event.user_agent == prev.user_agent:
            return None
        client = ctx.client
        evidence = {
            "from_client": f"{prev.client_family} on {prev.client_os}",
            "to_client": f"{client.family} on {client.os}",
            "to_user_agent": ctx.event.user_agent[:256],
        }
        if client.is_tool and not prev.client_is_tool:
            return Signal(
                Severity.HIGH,
                f"Non-browser client {client.family} took over a {prev.client_family} session",
                evidence,
            )
        if client.family == prev.client_family and client.os == prev.client_os:
            return None  # a version bump: browsers auto-update mid-session
        return Signal(
            Severity.MEDIUM,
            f"Client changed mid-session: {prev.client_family}/{prev.client_os} -> "
            f"{client.family}/{client.os}",
            evidence,
        )

    examples = (
        Example(
            "tool-takes-over",
            (Step(0, IP, CHROME_130), Step(30, IP, CURL)),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "python-requests-takes-over",
            (Step(0, IP, CHROME_130), Step(30, IP, "python-requests/2.32.3")),
            fires=True,
            severity=Severity.HIGH,
        ),
        Example(
            "other-browser-and-os",
            (Step(0, IP, CHROME_130), Step(30, IP, FIREFOX_LINUX)),
            fires=True,
            severity=Severity.MEDIUM,
        ),
        Example("browser-update", (Step(0, IP, CHROME_130), Step(30, IP, CHROME_131)), False),
        Example("same-ua", (Step(0, IP, CHROME_130), Step(30, IP, CHROME_130)), fires=False),
        Example("ua-missing", (Step(0, IP, CHROME_130), Step(30, IP, None)), fires=False),
    )
