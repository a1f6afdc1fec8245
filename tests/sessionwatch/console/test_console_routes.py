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


# -- what the review found (each a regression test) ----------------------------------------------


def test_viewers_get_no_full_hash_from_the_audit_log_either(app: object) -> None:
    from sessionwatch.console.actions import Actions, Actor

    responder, _ = signed_in(app, "rita")
    # A revocation by hand: audited with the full session hash as its target.
    Actions(app.state.archive, CapturingPublisher()).revoke(  # type: ignore[attr-defined]
        Actor("rita", "responder", "127.0.0.1"), tenant=ACME, scope="session",
        subject=LONG_SESSION[:16])
    viewer, _ = signed_in(app, "vic")
    for path in ("/api/audit", "/audit"):
        seen = viewer.get(path).text
        assert LONG_SESSION[:8] in seen and LONG_SESSION not in seen, path
    assert LONG_SESSION in responder.get("/api/audit").text


def test_a_reference_cannot_be_grown_into_the_full_hash(app: object) -> None:
    viewer, _ = signed_in(app, "vic")
    assert viewer.get(f"/api/sessions/acme/{LONG_SESSION[:16]}").status_code == 200
    for length in (17, 20, 40, 63):  # a correct longer prefix answers like a wrong one
        assert viewer.get(f"/api/sessions/acme/{LONG_SESSION[:length]}").status_code == 404
    assert viewer.get(f"/api/sessions/acme/{LONG_SESSION}").status_code == 200


def test_bad_inputs_get_clear_refusals_not_500s(app: object) -> None:
    c = client(app)
    long_target = c.post("/api/feedback", headers=bearer(),
                         json={"target": "x" * 300, "verdict": "confirmed"})
    assert long_target.status_code == 404
    huge = c.post("/api/feedback", headers=bearer(), content=b'{"note": "' + b"a" * 100_000 + b'"}')
    assert huge.status_code == 413
    assert c.post("/api/revocations", headers=bearer(),
                  json={"tenant": ACME, "scope": "user", "user": "u" * 300}).status_code in (422, 503)


def test_flash_messages_and_back_links_cannot_be_forged(app: object) -> None:
    c, csrf = signed_in(app, "rita")
    page = c.get("/live?done=Session expired: re-enter your password at https://evil.example").text
    assert "evil.example" not in page
    assert "published: " not in c.get("/live?done=revoke-session&id=<script>").text
    for back in ("/\\evil.example", "//evil.example", "https://evil.example/"):
        answer = c.post("/act/verdict", data={"csrf": csrf, "target": "r-revoke-acme-e05",
                                              "verdict": "confirmed", "back": back})
        assert answer.status_code == 303
        location = answer.headers["location"]
        assert location.startswith("/") and not location.startswith("//"), back
        assert "evil" not in location.split("?")[0], back


def test_sign_ins_and_sign_outs_are_audited_and_unknown_names_are_not_logged(
        app: object, caplog: pytest.LogCaptureFixture) -> None:
    c = client(app, "203.0.113.77")
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/signin").text).group(1)
    with caplog.at_level("INFO"):
        c.post("/signin", data={"name": "hunter2-typed-as-a-name", "password": "x", "csrf": token})
    assert "hunter2-typed-as-a-name" not in caplog.text
    assert "unknown name (23 characters)" in caplog.text
    responder, csrf = signed_in(app, "rita")
    responder.post("/signout", data={"csrf": csrf})
    log = client(app).get("/api/audit?limit=50", headers=bearer()).json()
    actions = [(e["action"], e["actor"], e["result"]) for e in log]
    assert ("sign_in", "rita", "ok") in actions and ("sign_out", "rita", "ok") in actions
    failed = next(e for e in log if e["action"] == "sign_in_failed" and e["client"] == "203.0.113.77")
    assert failed["actor"] == "" and "hunter2" not in str(failed)


def test_the_live_stream_does_not_keep_a_session_alive(app: object) -> None:
    auth = app.state.auth  # type: ignore[attr-defined]
    session = auth.sign_in("rita", PASSWORDS["rita"], "192.0.2.10")
    sid = session.sid
    assert auth.alive(sid)
    record_seen = auth.resolve(sid, touch=False)
    assert record_seen is not None and auth.alive(sid)
    auth.sign_out(sid)
    assert not auth.alive(sid) and auth.resolve(sid, touch=False) is None


class CapturingPublisher:
    """Stands in for the broker in this in-process test only (the browser test publishes to the
    real embedded broker): records what would be published."""

    def __init__(self) -> None:
        self.published: list[object] = []

    def publish(self, revocation: object) -> None:
        self.published.append(revocation)


def test_acts_check_the_subject_exists_and_a_double_submit_publishes_once(app: object) -> None:
    from sessionwatch.console.actions import ActionError, Actions, Actor

    publisher = CapturingPublisher()
    acts = Actions(app.state.archive, publisher)  # type: ignore[attr-defined]
    rita = Actor("rita", "responder", "127.0.0.1")
    for scope, subject in (("session", "s-nope"), ("user", "nobody"), ("source", "10.9.9.9")):
        with pytest.raises(ActionError) as refused:
            acts.revoke(rita, tenant=ACME, scope=scope, subject=subject,
                        action="lift" if scope == "source" else "revoke")
        assert refused.value.status == 404, scope
    with pytest.raises(ActionError):
        acts.revoke(rita, tenant="no-such-tenant", scope="user", subject="alice")
    first = acts.revoke(rita, tenant=ACME, scope="session", subject=LONG_SESSION[:16])
    again = acts.revoke(rita, tenant=ACME, scope="session", subject=LONG_SESSION[:16])
    assert first.session == LONG_SESSION and again.id == first.id
    assert publisher.published == [first]
    lifted = acts.revoke(rita, tenant=ACME, scope="source", subject="185.220.101.1", action="lift")
    assert lifted.action.value == "lift" and len(publisher.published) == 2


def test_the_app_imports_matplotlib_before_any_request_thread_can() -> None:
    """The console's first chart requests arrive together (a page has three); matplotlib imported
    by several threads at once half-initialised in a demo run ("no attribute 'get_data_path'",
    every chart broken). A race is not reproducible on demand, so this checks the cure: building
    the app, in a fresh process, has already imported every part of matplotlib the plots use."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from sessionwatch.console.app import ConsoleParts, create_app\n"
        "from sessionwatch.console.live import LiveFeed\n"
        "from sessionwatch.console.security import Authenticator\n"
        "assert 'matplotlib' not in sys.modules, 'imported before the app was built'\n"
        "create_app(ConsoleParts(archive=None, auth=Authenticator({}, token='t' * 32),\n"
        "                        feed=LiveFeed()))\n"
        "parts = ['axes', 'backends.backend_agg', 'dates', 'figure', 'lines', 'patches',\n"
        "         'transforms']\n"
        "print([p for p in parts if 'matplotlib.' + p not in sys.modules])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=str(Path(__file__).resolve().parents[3]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"not imported by create_app: {done.stdout}"
