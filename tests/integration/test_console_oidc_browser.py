"""Single sign-on into the console in a real browser: Debian's chromium (Playwright), the console
as its own process, and the test OIDC provider (tests/oidc_provider.py, standing in for Keycloak
or Entra ID) on another site — the console at http://localhost, the provider at 127.0.0.1 — so
the provider's redirect back is cross-site, as it is in production.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from oidc_provider import CLIENT_ID, CLIENT_SECRET, serve

from sessionwatch.broker import free_port
from sessionwatch.console.oidc import CALLBACK_PATH
from sessionwatch.processes import ConsoleProcess
from storage.clickhouse import ChdbBackend

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def console_with_sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    where = tmp_path_factory.mktemp("console-sso")
    archive = str(where / "archive")
    backend = ChdbBackend(archive)
    backend.migrate()
    backend.close()
    port = free_port("127.0.0.1")
    public = f"http://localhost:{port}"
    with serve(redirect_uris=(public + CALLBACK_PATH,)) as provider:
        env = {"SESSIONWATCH_CONSOLE_OIDC_ISSUER": provider.issuer,
               "SESSIONWATCH_CONSOLE_OIDC_CLIENT_ID": CLIENT_ID,
               "SESSIONWATCH_CONSOLE_OIDC_CLIENT_SECRET": CLIENT_SECRET,
               "SESSIONWATCH_CONSOLE_PUBLIC_URL": public,
               "SESSIONWATCH_CONSOLE_OIDC_RESPONDERS": "sec-responders"}
        proc = ConsoleProcess(where / "console.log", listen=f"127.0.0.1:{port}", chdb_dir=archive,
                              env=env)
        try:
            proc.wait_ready(60)
            yield public, provider
        finally:
            proc.stop()
            log = (where / "console.log").read_text(encoding="utf-8", errors="replace")
            assert CLIENT_SECRET not in log, "the client secret reached the console's log"


def test_a_responder_signs_in_with_single_sign_on_in_chromium(console_with_sso) -> None:
    from playwright.sync_api import sync_playwright

    public, provider = console_with_sso
    provider.user = {"sub": "u-123", "preferred_username": "rita", "groups": ["sec-responders"]}
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: scripts/test.sh installs it"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{public}/detectors")
            assert "/signin" in page.url
            page.click("a[href^='/signin/oidc']")
            page.wait_for_url(f"{public}/detectors", timeout=15_000)
            assert page.inner_text(".account").startswith("rita")
            assert "responder" in page.inner_text(".role")
            cookies = {c["name"]: c for c in page.context.cookies()}
            session = cookies["sessionwatch_console"]
            assert session["httpOnly"] and session["sameSite"] == "Strict"
            assert errors == [], errors
        finally:
            browser.close()
