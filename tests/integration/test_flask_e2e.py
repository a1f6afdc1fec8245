"""The loop closed, end to end: a real Flask app (Flask-Session in a real Redis) behind the
middleware, the real worker on the embedded broker, and `sessionwatch apply` writing to Redis.

The test plays the reverse proxy in front of the app: the app trusts one X-Forwarded-For hop
(werkzeug ProxyFix), which is how one machine's loopback client comes from different countries.
Nothing else is simulated.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sessionwatch.broker import free_port
from sessionwatch.processes import ApplierProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/130.0.0.0 Safari/537.36")
FIREFOX_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:131.0) Gecko/20100101 "
               "Firefox/131.0")
CURL = "curl/8.5.0"
HOME_US = "73.162.10.20"        # Comcast, US
HOME_US_BOB = "73.162.40.7"
HETZNER_DE = "88.198.5.10"      # a German datacenter: where the stolen cookie is replayed
HIJACKS = 20                    # hijacks timed for the latency figures


@pytest.fixture(scope="module")
def applier(broker, worker, redis_service, tmp_path_factory) -> Iterator[ApplierProcess]:
    log = tmp_path_factory.mktemp("applier") / "apply.log"
    proc = ApplierProcess(broker.bootstrap, log, redis=redis_service.url,
                          apply_group="sessionwatch-it-apply")
    try:
        proc.wait_ready(60)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def app_url(broker, redis_service, tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = open(tmp_path_factory.mktemp("flask") / "app.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "flask_app" / "app.py"), "--port", str(port),
         "--redis", redis_service.url, "--bootstrap", broker.bootstrap,
         "--extra-users", str(HIJACKS)],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/", timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("the example app did not start")
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


class Browser:
    """One client: its own cookie jar, address and User-Agent."""

    def __init__(self, url: str, ip: str, ua: str, cookies: httpx.Cookies | None = None):
        self.http = httpx.Client(base_url=url, cookies=cookies,
                                 headers={"User-Agent": ua, "X-Forwarded-For": ip}, timeout=5)

    def login(self, user: str, password: str) -> None:
        r = self.http.post("/login", data={"user": user, "password": password})
        assert r.status_code == 200, r.text

    def account(self) -> httpx.Response:
        return self.http.get("/account")

    def cookie(self) -> str:
        return self.http.cookies["session"]


def until_refused(browser: Browser, deadline_s: float, every_s: float = 0.005) -> float | None:
    """Poll /account until 401; the time of the refusal (None if the deadline passed)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        r = browser.account()
        if r.status_code == 401:
            return time.monotonic()
        time.sleep(every_s)
    return None


def replay(url: str, victim: Browser) -> Browser:
    """The attacker: the victim's cookie, a German datacenter, a command-line tool."""
    jar = httpx.Cookies()
    jar.set("session", victim.cookie(), domain="127.0.0.1")
    return Browser(url, HETZNER_DE, CURL, cookies=jar)


def test_a_replayed_cookie_stops_working_for_the_attacker_and_the_victim(
        app_url, applier, redis_service):
    alice = Browser(app_url, HOME_US, CHROME)
    alice.login("alice", "alice-password")
    assert alice.account().status_code == 200
    bob = Browser(app_url, HOME_US_BOB, FIREFOX_MAC)
    bob.login("bob", "bob-password")

    stolen = alice.cookie()
    attacker = replay(app_url, alice)
    first = attacker.account()
    assert first.status_code == 200  # the hijack event itself is served: that is how it is seen
    refused_at = until_refused(attacker, 10)
    assert refused_at is not None, f"the replayed cookie was never refused:\n{applier.tail()}"

    r = alice.account()
    assert r.status_code == 401
    # Neutral: no signal named, and the same words whatever fired.
    assert r.json()["message"] == "Your session has ended. Please sign in again."
    for word in ("country", "travel", "agent", "address", "ip", "hijack", "detector"):
        assert word not in r.text.lower()
    assert bob.account().status_code == 200

    # The app's own session record is gone too, not only refused at the door; bob's stays.
    client = redis_service.client()
    assert client.exists(f"session:{stolen}") == 0
    assert client.exists(f"session:{bob.cookie()}") == 1


def test_a_password_change_ends_the_users_other_sessions(app_url, applier, redis_service):
    laptop = Browser(app_url, HOME_US, CHROME)
    laptop.login("alice", "alice-password")
    phone = Browser(app_url, HOME_US, FIREFOX_MAC)
    phone.login("alice", "alice-password")
    assert phone.account().status_code == 200
    bob = Browser(app_url, HOME_US_BOB, FIREFOX_MAC)
    bob.login("bob", "bob-password")
    time.sleep(0.5)  # let the logins reach the user stage before the change (they are events)

    r = laptop.http.post("/password", data={"old": "alice-password", "new": "n3w-passw0rd!"})
    assert r.status_code == 200, r.text
    # The applier deletes the phone's record from the app's store before the phone comes back
    # (found through the middleware's index): no request of the phone is needed for that.
    store = redis_service.client()
    deadline = time.monotonic() + 15
    while store.exists(f"session:{phone.cookie()}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not store.exists(f"session:{phone.cookie()}"), "the record outlived the revocation"
    assert phone.account().status_code == 401
    assert laptop.account().status_code == 200   # the session that changed it goes on
    assert bob.account().status_code == 200


def test_hijack_to_first_refused_request_latency(app_url, applier):
    """Figures for the issue's goal (p99 <= 1 s); printed, and asserted only as 'refused'."""
    delays = []
    for i in range(1, HIJACKS + 1):
        victim = Browser(app_url, f"73.162.{10 + i}.20", CHROME)
        victim.login(f"user{i}", "extra-user-password")
        assert victim.account().status_code == 200
        attacker = replay(app_url, victim)
        started = time.monotonic()
        attacker.account()          # the request whose event reveals the hijack
        refused = until_refused(attacker, 10)
        assert refused is not None, f"hijack {i} was never refused"
        delays.append(refused - started)
    delays.sort()
    p50 = statistics.median(delays)
    p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))]
    print(f"\nhijack event -> first refused request, {len(delays)} hijacks: "
          f"p50 {1000 * p50:.0f} ms, p99 {1000 * p99:.0f} ms, max {1000 * delays[-1]:.0f} ms")
