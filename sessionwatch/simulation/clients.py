"""User-Agent strings of the simulated population and of attack tools."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def chrome_win(v: int) -> str:
    return (f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{v}.0.0.0 Safari/537.36")


def chrome_mac(v: int) -> str:
    return (f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like "
            f"Gecko) Chrome/{v}.0.0.0 Safari/537.36")


def chrome_android(v: int) -> str:
    return (f"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{v}.0.0.0 Mobile Safari/537.36")


def firefox_win(v: int) -> str:
    return f"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0"


def edge_win(v: int) -> str:
    return chrome_win(v) + f" Edg/{v}.0.0.0"


def safari_mac(v: int) -> str:
    return (f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
            f"Gecko) Version/{v}.1 Safari/605.1.15")


def safari_iphone(v: int) -> str:
    return (f"Mozilla/5.0 (iPhone; CPU iPhone OS {v}_1 like Mac OS X) AppleWebKit/605.1.15 "
            f"(KHTML, like Gecko) Version/{v}.1 Mobile/15E148 Safari/604.1")


@dataclass(frozen=True)
class Browser:
    build: Callable[[int], str]
    version: int
    phone: bool

    def ua(self, bump: int = 0) -> str:
        return self.build(self.version + bump)


DESKTOPS = (Browser(chrome_win, 130, False), Browser(chrome_mac, 130, False),
            Browser(firefox_win, 132, False), Browser(edge_win, 130, False),
            Browser(safari_mac, 17, False))
PHONES = (Browser(chrome_android, 130, True), Browser(safari_iphone, 17, True))
TOOL_UAS = ("curl/8.5.0", "python-requests/2.32.3", "Go-http-client/2.0", "okhttp/4.12.0",
            "python-httpx/0.27.0")
# What a credential-stuffing or flooding bot sends: a plausible browser string, often stale.
BOT_BROWSER_UAS = (chrome_win(120), chrome_win(124), firefox_win(115), chrome_mac(122))
