"""The console in a real browser: Debian's chromium driven by Playwright, against
`sessionwatch console` running as its own process on a seeded chDB archive and the embedded
broker. An analyst signs in, opens a revocation, follows it to the session's timeline, confirms
it, revokes a session by hand — and that revocation is on `sessionwatch.revocations`.

Screenshots of every page go to $CONSOLE_SCREENSHOTS (default: the test's temp dir); the
README's come from a run with CONSOLE_SCREENSHOTS=docs/console.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from integration.conftest import read_until
from integration.test_queries import ACME, archive_incident

from producers.contract import EVENTS_TOPIC, REVOCATIONS_TOPIC
from sessionwatch.broker import EmbeddedBroker, free_port
from sessionwatch.console.accounts import hash_password
from sessionwatch.processes import ConsoleProcess
from storage.clickhouse import ChdbBackend
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
RESPONDER = ("rita", "rita-responds-2026!")
VIEWER = ("vic", "vic-only-looks-2026!")
TOKEN = "console-token-" + "7" * 40


@pytest.fixture(scope="module")
def console(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    where = tmp_path_factory.mktemp("console")
    archive = str(where / "archive")
    backend = ChdbBackend(archive)
    try:  # the incident a few hours ago: inside every page's default window
        archive_incident(backend, datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3))
    finally:
        backend.close()  # chDB: the console process opens the directory next
    accounts = where / "accounts.toml"
    accounts.write_text(
        f'[[account]]\nname = "{RESPONDER[0]}"\nrole = "responder"\n'
        f'password_hash = "{hash_password(RESPONDER[1])}"\n\n'
        f'[[account]]\nname = "{VIEWER[0]}"\nrole = "viewer"\n'
        f'password_hash = "{hash_password(VIEWER[1])}"\n', encoding="utf-8")
    accounts.chmod(0o600)
    ensure_topics([broker.bootstrap], 2)
    port = free_port("127.0.0.1")
    proc = ConsoleProcess(where / "console.log", listen=f"127.0.0.1:{port}",
                          accounts=str(accounts), chdb_dir=archive, bootstrap=broker.bootstrap,
                          env={"SESSIONWATCH_CONSOLE_TOKEN": TOKEN})
    try:
        proc.wait_ready(60)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()
        log = (where / "console.log").read_text(encoding="utf-8", errors="replace")
        for secret in (RESPONDER[1], VIEWER[1], TOKEN):
            assert secret not in log, "a password or the token reached the console's log"


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: scripts/test.sh installs it"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def sign_in(browser: object, base: str, who: tuple[str, str]) -> object:
    context = browser.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors  # CSP violations show up as console errors
    page.goto(f"{base}/live")
    assert page.url.startswith(f"{base}/signin"), "an anonymous visit must land on the sign-in page"
    page.fill("input[name=name]", who[0])
    page.fill("input[name=password]", who[1])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/live*")
    return page


def shot(page: object, screenshots: Path, name: str) -> None:
    path = screenshots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    assert path.stat().st_size > 10_000, f"{name}: the screenshot is (nearly) empty"


def until(page: object, script: str, timeout_s: float = 15.0) -> None:
    """Poll `script` (run through the DevTools protocol, which the page's CSP does not govern;
    Playwright's wait_for_function evaluates strings inside the page, which the CSP refuses)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(script):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"not true within {timeout_s}s: {script}"
        page.wait_for_timeout(100)  # type: ignore[attr-defined]


LIVE = "() => document.getElementById('live-status').textContent === 'live'"
CHARTS = ("() => [...document.querySelectorAll('img.chart')].every("
          "i => i.complete && i.naturalWidth > 100)")


def test_analyst_follows_a_revocation_confirms_it_and_revokes_by_hand(
        console: str, browser: object, screenshots: Path, broker: EmbeddedBroker) -> None:
    page = sign_in(browser, console, RESPONDER)
    assert page.locator("#live-status").inner_text() in ("live", "connecting…")
    until(page, LIVE)
    assert page.locator("table#live a[href='/revocations/r-revoke-acme-e05']").count() == 1
    shot(page, screenshots, "live")

    # Open the revocation: its reasons in an admin's words, and the evidence.
    page.click("table#live a[href='/revocations/r-revoke-acme-e05']")
    page.wait_for_url("**/revocations/r-revoke-acme-e05")
    assert "session.ip_change" in page.inner_text("ul.reasons")
    assert page.locator("section.evidence").count() >= 1
    shot(page, screenshots, "revocation")

    # Follow it to the session's timeline: events, findings, the revocation, charts drawn.
    page.click("#to-session")
    page.wait_for_url(f"**/sessions/{ACME}/s-home")
    kinds = page.locator("table#timeline tbody tr td:nth-child(2)").all_inner_texts()
    assert kinds.count("revocation") == 1 and kinds.count("finding") >= 2
    for img in page.locator("img.chart").all():
        img.scroll_into_view_if_needed()
    until(page, CHARTS)
    shot(page, screenshots, "session")

    # Confirm the revocation as compromised.
    page.go_back()
    page.fill("form.verdict input[name=note]", "the user confirmed they were not in Germany")
    page.click("form.verdict button[value=confirmed]")
    page.wait_for_url("**/revocations/r-revoke-acme-e05?done=*")
    assert "verdict recorded" in page.inner_text("p.flash")
    assert "confirmed" in page.inner_text("td.verdict-confirmed")

    # Revoke another session of the user by hand (the browser asks first: accept).
    page.goto(f"{console}/users/{ACME}/alice")
    shot(page, screenshots, "user")
    other = page.locator("table#sessions a").filter(has_not_text="s-home").first
    other.click()
    page.wait_for_url(f"**/sessions/{ACME}/*")
    session = page.url.rsplit("/", 1)[1]
    page.once("dialog", lambda d: d.accept())
    page.click("form.revoke button")
    page.wait_for_url("**?done=*")
    flash = page.inner_text("p.flash")
    revocation_id = re.search(r"published: (\S+)", flash).group(1)

    records = read_until(broker.bootstrap, [REVOCATIONS_TOPIC],
                         lambda rs: any(r.get("id") == revocation_id for _, r in rs))
    published = next(r for _, r in records if r.get("id") == revocation_id)
    assert published["scope"] == "session" and published["action"] == "revoke"
    assert published["session"].startswith(session) and published["tenant"] == ACME
    assert published["reasons"][0]["detector"] == "console.manual"
    assert RESPONDER[0] in published["reasons"][0]["summary"]

    # The live view picked it up from the broker, pushed by server-sent events.
    page.goto(f"{console}/live")
    page.wait_for_selector(f"table#live a[href='/revocations/{revocation_id}']", timeout=15_000)

    # Every act is in the audit log with who did it.
    page.goto(f"{console}/audit")
    rows = page.locator("table#audit tbody tr").all_inner_texts()
    assert any("revoke_session" in r and RESPONDER[0] in r and "ok" in r for r in rows)
    assert any("verdict" in r and RESPONDER[0] in r for r in rows)
    shot(page, screenshots, "audit")

    page.goto(f"{console}/detectors")
    until(page, CHARTS)
    shot(page, screenshots, "detectors")
    assert page.errors == [], f"browser console errors (a CSP violation?): {page.errors}"


def test_the_console_emits_its_own_session_events_without_the_cookie(
        console: str, browser: object, broker: EmbeddedBroker, screenshots: Path) -> None:
    context = browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(f"{console}/signin")
    shot(page, screenshots, "signin")
    context.close()
    page = sign_in(browser, console, RESPONDER)
    cookie = next(c["value"] for c in page.context.cookies() if c["name"].startswith(
        ("sessionwatch", "__Host-sessionwatch")) and "signin" not in c["name"])

    def signed_in(records: list[tuple[str, dict]]) -> bool:
        return any(r.get("tenant") == "sessionwatch-console" and r.get("user") == RESPONDER[0]
                   and r.get("type") == "session.authenticated" for _, r in records)

    records = read_until(broker.bootstrap, [EVENTS_TOPIC], signed_in)
    assert signed_in(records), "the console's sign-in never reached sessionwatch.events"
    ours = [r for _, r in records if r.get("tenant") == "sessionwatch-console"]
    assert {"session.created", "session.authenticated"} <= {r["type"] for r in ours}
    assert cookie not in repr(ours), "a raw console cookie reached the events topic"


def test_live_view_pushes_a_new_revocation_without_a_reload(
        console: str, browser: object, broker: EmbeddedBroker) -> None:
    page = sign_in(browser, console, VIEWER)
    until(page, LIVE)
    before = page.locator("table#live tbody tr").count()
    # Automation, with the bearer token, lifts a block: a revocation on the topic.
    answer = httpx.post(f"{console}/api/revocations", headers={"Authorization": f"Bearer {TOKEN}"},
                        json={"tenant": ACME, "scope": "source", "source": "185.220.101.1",
                              "action": "lift"}, timeout=20)
    assert answer.status_code == 201, answer.text
    lifted = answer.json()["id"]
    page.wait_for_selector(f"table#live a[href='/revocations/{lifted}']", timeout=15_000)
    assert page.locator("table#live tbody tr").count() == before + 1
    assert page.locator("form.act").count() == 0  # a viewer gets no act buttons


def test_a_viewer_cannot_act_even_by_posting_the_form(console: str, browser: object) -> None:
    page = sign_in(browser, console, VIEWER)
    page.goto(f"{console}/revocations/r-revoke-acme-e05")
    assert page.locator("form.verdict").count() == 0
    csrf = page.eval_on_selector("form[action='/signout'] input[name=csrf]", "i => i.value")
    answer = page.request.post(f"{console}/act/verdict", form={
        "csrf": csrf, "target": "r-revoke-acme-e05", "verdict": "dismissed"})
    assert answer.status == 403
