"""The whole console app in-process (Starlette's test client) on a seeded chDB archive: every
route refuses without a session or token (walked from the route table, so a new route cannot be
added unprotected), CSRF, roles, the sign-in rate limit, what viewers see, and the API's
contract (`/api/revocations`, `/api/feedback`) exactly as the issue specifies it.

No broker: revocations by hand are refused with 503 here (the browser test publishes for real).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from integration.test_queries import ACME, archive_incident
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from sessionwatch.console.accounts import Account, hash_password
from sessionwatch.console.api import ROUTES as API_ROUTES
from sessionwatch.console.app import ConsoleParts, create_app
from sessionwatch.console.archive import SharedArchive
from sessionwatch.console.live import LiveFeed
from sessionwatch.console.openapi import openapi
from sessionwatch.console.security import Authenticator
from storage.clickhouse import ChdbBackend
from storage.clickhouse.rows import revocation_row
from storage.manual import manual_revocation

TOKEN = "t0ken-" + "x" * 40
PASSWORDS = {"rita": "rita-responds-2026!", "vic": "vic-only-looks-2026!",
             "lena": "lena-gets-locked-out!"}  # lena: only the rate-limit test signs in as her
LONG_SESSION = "f" * 24 + "0123456789abcdef" * 2 + "e" * 8   # 64 characters, like a real hash
PUBLIC = {"/signin"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    backend = ChdbBackend(str(tmp_path_factory.mktemp("console") / "archive"))
    now = datetime.now(UTC).replace(microsecond=0)
    archive_incident(backend, now - timedelta(hours=3))
    # A revocation of a session with a full-length hash: what viewers must not see in full.
    long = manual_revocation(tenant=ACME, scope="session", action="revoke", session=LONG_SESSION,
                             user="alice", admin="seed", now=now - timedelta(hours=1))
    backend.insert("revocations", [revocation_row(long)])
    archive = SharedArchive(backend)
    archive.migrate()
    accounts = {"rita": Account("rita", "responder", hash_password(PASSWORDS["rita"])),
                "vic": Account("vic", "viewer", hash_password(PASSWORDS["vic"])),
                "lena": Account("lena", "responder", hash_password(PASSWORDS["lena"]))}
    auth = Authenticator(accounts, token=TOKEN, max_failures=5)
    yield create_app(ConsoleParts(archive=archive, auth=auth, feed=LiveFeed(),
                                  secure_cookies=False))
    archive.close()


def client(app: object, address: str = "testclient") -> TestClient:
    return TestClient(app, base_url="http://127.0.0.1", follow_redirects=False,
                      client=(address, 50000))


def signed_in(app: object, name: str) -> tuple[TestClient, str]:
    """A browser-like client signed in as `name`, and its session's CSRF token."""
    c = client(app)
    form = c.get("/signin")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    answer = c.post("/signin", data={"name": name, "password": PASSWORDS[name], "csrf": token,
                                     "next": "/live"})
    assert answer.status_code == 303, answer.text
    page = c.get("/live")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return c, csrf


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def all_routes(app: object) -> list[tuple[str, str]]:
    found = []
    for route in app.routes:  # type: ignore[attr-defined]
        if isinstance(route, Mount):
            continue  # /static: public on purpose (css, js, the icon)
        assert isinstance(route, Route), f"{route!r}: a route kind this test does not know"
        for method in sorted(route.methods - {"HEAD"}):
            found.append((method, route.path))
    return found


# -- nothing without a session or token -------------------------------------------------------


def test_every_route_refuses_without_a_session_or_token(app: object) -> None:
    routes = all_routes(app)
    assert len(routes) >= 25, "the walk found too few routes to be walking the real table"
    c = client(app)
    for method, path in routes:
        if path in PUBLIC:
            continue
        answer = c.request(method, concrete(path))
        where = f"{method} {path}"
        if path.startswith("/api/"):
            assert answer.status_code == 401, where
            assert answer.json()["error"], where
        else:
            assert answer.status_code in (303, 401, 403), where
            if answer.status_code == 303:
                assert answer.headers["location"].startswith("/signin"), where
        # Refusals carry the security headers too.
        assert "default-src 'none'" in answer.headers["content-security-policy"], where


def test_a_wrong_or_short_bearer_token_is_refused_everywhere_under_api(app: object) -> None:
    c = client(app)
    for method, path in all_routes(app):
        if not path.startswith("/api/"):
            continue
        for token in (TOKEN[:-1] + "y", TOKEN[:20], ""):
            answer = c.request(method, concrete(path), headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 401, f"{method} {path} with a bad token"


def test_the_openapi_document_lists_exactly_the_api_routes(app: object) -> None:
    c = client(app)
    doc = c.get("/api/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {(m, re.sub(r":\w+\}", "}", p)) for m, p in all_routes(app) if p.startswith("/api/")}
    assert documented == served
    assert doc == openapi(API_ROUTES)


# -- CSRF and roles -----------------------------------------------------------------------------


def test_forms_and_cookie_authenticated_api_posts_need_the_csrf_token(app: object) -> None:
    c, csrf = signed_in(app, "rita")
    form = {"target": "r-revoke-acme-e05", "verdict": "dismissed", "back": "/live"}
    assert c.post("/act/verdict", data=form).status_code == 403
    assert c.post("/act/verdict", data={**form, "csrf": "forged"}).status_code == 403
    assert c.post("/api/feedback", json={"target": "r-revoke-acme-e05",
                                         "verdict": "dismissed"}).status_code == 403
    done = c.post("/act/verdict", data={**form, "csrf": csrf})
    assert done.status_code == 303 and "done=" in done.headers["location"]
    api = c.post("/api/feedback", json={"target": "r-revoke-acme-e05", "verdict": "dismissed"},
                 headers={"X-CSRF-Token": csrf})
    assert api.status_code == 201
    assert c.post("/signout", data={}).status_code == 403  # signing out is a POST like any other


def test_a_viewer_reads_but_cannot_act(app: object) -> None:
    c, csrf = signed_in(app, "vic")
    assert c.get("/revocations/r-revoke-acme-e05").status_code == 200
    assert c.get("/api/revocations").status_code == 200
    headers = {"X-CSRF-Token": csrf}
    for path, data in (("/act/verdict", {"target": "r-revoke-acme-e05", "verdict": "confirmed"}),
                       ("/act/revoke", {"tenant": ACME, "scope": "session", "subject": "s-home"})):
        assert c.post(path, data={**data, "csrf": csrf}).status_code == 403, path
    assert c.post("/api/feedback", json={"target": "r-revoke-acme-e05", "verdict": "confirmed"},
                  headers=headers).status_code == 403
    assert c.post("/api/revocations", json={"tenant": ACME, "scope": "user", "user": "alice"},
                  headers=headers).status_code == 403
    page = c.get("/revocations/r-revoke-acme-e05").text
    assert "Confirm compromised" not in page and "/act/" not in page


def test_viewers_never_see_a_full_session_hash(app: object) -> None:
    viewer, _ = signed_in(app, "vic")
    responder, _ = signed_in(app, "rita")
    for path in ("/live", "/users/acme/alice", "/api/revocations", "/api/users/acme/alice",
                 f"/api/sessions/acme/{LONG_SESSION[:16]}", f"/sessions/acme/{LONG_SESSION[:16]}"):
        seen = viewer.get(path)
        assert seen.status_code == 200, path
        assert LONG_SESSION not in seen.text, f"{path}: a viewer saw the full hash"
        assert LONG_SESSION[:8] in seen.text, f"{path}: the session is not shown at all"
    assert LONG_SESSION in responder.get("/api/revocations").text


def test_sign_in_is_rate_limited_and_failures_are_neutral(app: object) -> None:
    c = client(app, "198.51.100.7")  # an address of its own: the limit counts per address too
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/signin").text).group(1)
    statuses = [c.post("/signin", data={"name": "lena", "password": f"guess-{i}", "csrf": token})
                for i in range(5)]
    assert [s.status_code for s in statuses] == [401] * 5
    assert all("Sign-in failed." in s.text for s in statuses)
    assert "password" not in statuses[0].text.split("Sign-in failed.")[1].split("<")[0]
    blocked = c.post("/signin", data={"name": "lena", "password": PASSWORDS["lena"],
                                      "csrf": token})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0


# -- the API's contract ------------------------------------------------------------------------


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def test_get_revocations_since_and_tenant_newest_first_id_first(app: object) -> None:
    c = client(app)
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    answer = c.get(f"/api/revocations?since={since}&tenant={ACME}", headers=bearer())
    assert answer.status_code == 200
    revs = answer.json()
    assert revs and all(r["tenant"] == ACME for r in revs)
    assert all(next(iter(r)) == "id" for r in revs)
    times = [r["event_time"] for r in revs]
    assert times == sorted(times, reverse=True)
    assert {"scope", "action", "reasons", "event_time", "decided_at", "events"} <= set(revs[0])
    later = c.get("/api/revocations?since=2999-01-01T00:00:00Z", headers=bearer())
    assert later.status_code == 200 and later.json() == []
    assert c.get("/api/revocations?since=yesterday", headers=bearer()).status_code == 422
    assert c.get("/api/revocations?since=2026-01-01T00:00:00", headers=bearer()).status_code == 422


def test_post_and_get_feedback(app: object) -> None:
    c = client(app)
    made = c.post("/api/feedback", headers=bearer(),
                  json={"target": "f-session.ip_change-acme-e05", "verdict": "confirmed",
                        "note": "called the user"})
    assert made.status_code == 201, made.text
    assert made.json()["target_kind"] == "finding"
    assert c.post("/api/feedback", headers=bearer(),
                  json={"target": "no-such-id", "verdict": "confirmed"}).status_code == 404
    assert c.post("/api/feedback", headers=bearer(),
                  json={"target": "r-revoke-acme-e05", "verdict": "maybe"}).status_code == 422
    got = c.get("/api/feedback?target=f-session.ip_change-acme-e05", headers=bearer())
    assert got.status_code == 200
    assert [v["verdict"] for v in got.json()] == ["confirmed"]
    assert got.json()[0]["analyst"] == "api-token"


def test_revoking_by_hand_without_a_broker_is_refused_and_audited(app: object) -> None:
    c = client(app)
    answer = c.post("/api/revocations", headers=bearer(),
                    json={"tenant": ACME, "scope": "session", "session": "s-phone"})
    assert answer.status_code == 503 and "--bootstrap" in answer.json()["error"]
    log = c.get("/api/audit", headers=bearer()).json()
    assert log[0]["action"] == "revoke_session" and log[0]["result"] == "refused"
    assert c.post("/api/revocations", headers=bearer(),
                  json={"tenant": ACME, "scope": "source", "action": "revoke",
                        "source": "1.2.3.4"}).status_code == 422


def test_pages_answer_for_the_incident(app: object, tmp_path: Path) -> None:
    c, _ = signed_in(app, "rita")
    for path in ("/live", "/detectors", "/audit", "/revocations/r-revoke-acme-e05",
                 "/sessions/acme/s-home", "/users/acme/alice"):
        assert c.get(path).status_code == 200, path
    for path in ("/charts/session/acme/s-home.png", "/charts/places/acme/s-home.png",
                 "/charts/distance/acme/s-home.png", "/charts/detectors.png"):
        png = c.get(path)
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n", path
    assert c.get("/revocations/nope").status_code == 404
    assert c.get("/sessions/acme/nope").status_code == 404
