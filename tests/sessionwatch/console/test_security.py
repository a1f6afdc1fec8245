"""The console's security layer on a small Starlette app of its own: sign-in, sessions, CSRF,
bearer tokens, redirects, headers, cookies, and the console's own events through the real SDK."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.testclient import TestClient

from producers.client import SessionwatchClient
from producers.contract import decode_event
from producers.errors import ConfigError
from producers.hashing import TokenHasher
from sessionwatch.console import security as security_module
from sessionwatch.console.accounts import Account, hash_password
from sessionwatch.console.middleware import SecurityMiddleware
from sessionwatch.console.own_events import OwnEvents
from sessionwatch.console.security import (
    CSP,
    Authenticator,
    Principal,
    SignInRefused,
    mask_session,
    require_responder,
    safe_next,
)
from sessionwatch.console.signin import security_routes

TEMPLATES = Path(security_module.__file__).parent / "templates"
PASSWORD = "correct horse battery"
TOKEN = "t" * 40
IP = "203.0.113.7"
OTHER_IP = "198.51.100.20"
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
HASHER = TokenHasher({"console": b"c" * 32})


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def accounts() -> dict[str, Account]:
    hashed = hash_password(PASSWORD)
    return {"alice": Account("alice", "responder", hashed), "vic": Account("vic", "viewer", hashed)}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(accounts: dict[str, Account], clock: Clock) -> Authenticator:
    return Authenticator(accounts, token=TOKEN, clock=clock)


def make_app(auth: Authenticator, static: Path, *, secure: bool = True,
             own_events: OwnEvents | None = None) -> Starlette:
    (static / "console.css").write_text("body { color: black; }\n")
    templates = Jinja2Templates(directory=str(TEMPLATES))

    async def home(request: Request) -> Response:
        principal: Principal = request.state.principal
        return JSONResponse({"name": principal.name, "role": principal.role, "csrf": principal.csrf})

    async def act(request: Request) -> Response:
        require_responder(request)
        return PlainTextResponse("done")

    async def things(request: Request) -> Response:
        return JSONResponse([{"id": "r1"}], headers={"cache-control": "max-age=3600"})

    async def add_thing(request: Request) -> Response:
        require_responder(request)
        return JSONResponse(await request.json(), status_code=201)

    routes = [
        *security_routes(auth, templates, own_events),
        Route("/", home),
        Route("/act", act, methods=["POST"]),
        Route("/api/things", things),
        Route("/api/things", add_thing, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(static)), name="static"),
    ]
    middleware = [Middleware(SecurityMiddleware, auth=auth, secure_cookies=secure, own_events=own_events)]
    return Starlette(routes=routes, middleware=middleware)


def browser(app: Starlette, secure: bool = True, ip: str = IP) -> TestClient:
    return TestClient(app, base_url="https://testserver" if secure else "http://testserver",
                      follow_redirects=False, client=(ip, 50000), headers={"user-agent": UA})


@pytest.fixture
def app(auth: Authenticator, tmp_path: Path) -> Starlette:
    return make_app(auth, tmp_path)


def sign_in(client: TestClient, name: str = "alice", password: str = PASSWORD,
            next_: str = "/") -> Any:
    page = client.get("/signin")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return client.post("/signin", data={"name": name, "password": password, "csrf": csrf.group(1),
                                        "next": next_})


def session_csrf(client: TestClient) -> str:
    csrf: str = client.get("/").json()["csrf"]
    return csrf


# -- sign-in, sign-out, rotation ---------------------------------------------------------------

def test_sign_in_sets_a_strict_cookie_and_follows_next(app: Starlette) -> None:
    client = browser(app)
    response = sign_in(client, next_="/api/things?tenant=a")
    assert response.status_code == 303
    assert response.headers["location"] == "/api/things?tenant=a"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("__Host-sessionwatch="))
    attrs = [a.strip() for a in cookie.split(";")]
    assert {"HttpOnly", "SameSite=Strict", "Secure", "Path=/", "Max-Age=28800"} <= set(attrs)
    assert not any(a.lower().startswith("domain") for a in attrs)
    assert client.get("/").json() == {"name": "alice", "role": "responder", "csrf": session_csrf(client)}


def test_loopback_cookies_drop_secure_and_the_host_prefix(auth: Authenticator, tmp_path: Path) -> None:
    client = browser(make_app(auth, tmp_path, secure=False), secure=False)
    page = client.get("/signin")
    assert "Secure" not in page.headers["set-cookie"]
    response = sign_in(client)
    cookies = response.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("sessionwatch_console="))
    assert "HttpOnly" in session and "SameSite=Strict" in session and "Secure" not in session
    assert not any("__Host-" in c for c in cookies)
    assert client.get("/").status_code == 200


def test_bad_credentials_get_a_neutral_401(app: Starlette) -> None:
    client = browser(app)
    for name, password in (("alice", "wrong password"), ("nobody", PASSWORD)):
        response = sign_in(client, name, password)
        assert response.status_code == 401
        assert "Sign-in failed." in response.text
        assert "nobody" not in response.text and "password" not in response.text.split("<form")[0]
        assert "__Host-sessionwatch=" not in response.headers.get("set-cookie", "")


def test_sign_in_without_the_login_csrf_cookie_is_refused(app: Starlette) -> None:
    client = browser(app)
    page = client.get("/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    client.cookies.clear()
    response = client.post("/signin", data={"name": "alice", "password": PASSWORD, "csrf": csrf})
    assert response.status_code == 403
    forged = browser(app)
    forged.get("/signin")
    response = forged.post("/signin", data={"name": "alice", "password": PASSWORD, "csrf": "x.y"})
    assert response.status_code == 403
    assert forged.get("/").status_code == 303  # not signed in


def test_sign_out_ends_the_session_and_clears_the_cookie(app: Starlette, auth: Authenticator) -> None:
    client = browser(app)
    sign_in(client)
    sid = client.cookies["__Host-sessionwatch"]
    assert client.post("/signout").status_code == 403  # CSRF-checked
    response = client.post("/signout", data={"csrf": session_csrf(client)})
    assert response.status_code == 303 and response.headers["location"] == "/signin"
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert auth.session(sid) is None
    client.cookies.set("__Host-sessionwatch", sid, domain="testserver.local")
    assert client.get("/").status_code == 303


def test_sign_in_rotates_and_kills_the_presented_sid(app: Starlette, auth: Authenticator) -> None:
    client = browser(app)
    sign_in(client)
    first = client.cookies["__Host-sessionwatch"]
    sign_in(client)  # presents the first cookie
    second = client.cookies["__Host-sessionwatch"]
    assert second != first
    assert auth.session(first) is None
    assert auth.session(second) is not None
    # a planted id is never adopted
    planted = browser(app)
    planted.cookies.set("__Host-sessionwatch", "attacker-chosen-id", domain="testserver.local")
    sign_in(planted)
    assert planted.cookies["__Host-sessionwatch"] != "attacker-chosen-id"


def test_sessions_are_stored_under_a_digest_only(auth: Authenticator) -> None:
    session = auth.sign_in("alice", PASSWORD, IP)
    assert session.sid not in repr(auth._sessions)
    assert session.sid not in repr(session) and session.principal.csrf not in repr(session)
    assert len(session.sid) >= 43


# -- expiry ------------------------------------------------------------------------------------

def test_idle_expiry_refreshes_on_activity(auth: Authenticator, clock: Clock) -> None:
    sid = auth.sign_in("alice", PASSWORD, IP).sid
    for _ in range(3):
        clock.now += 899
        assert auth.session(sid) is not None
    clock.now += 900
    assert auth.session(sid) is None
    assert auth.session(sid) is None  # stays dead


def test_absolute_expiry_even_when_active(auth: Authenticator, clock: Clock) -> None:
    sid = auth.sign_in("alice", PASSWORD, IP).sid
    start = clock.now
    while clock.now + 600 < start + 28800:
        clock.now += 600
        assert auth.session(sid) is not None
    clock.now = start + 28800
    ended = auth.resolve(sid)
    assert ended is not None and not isinstance(ended, Principal)
    assert ended.reason == "absolute" and ended.name == "alice"
    assert auth.session(sid) is None


def test_an_idle_browser_is_sent_to_sign_in_and_its_cookie_cleared(
    app: Starlette, clock: Clock
) -> None:
    client = browser(app)
    sign_in(client)
    clock.now += 901
    response = client.get("/")
    assert response.status_code == 303 and response.headers["location"] == "/signin?next=%2F"
    assert "__Host-sessionwatch=;" in response.headers["set-cookie"]


# -- rate limiting and logging -----------------------------------------------------------------

def test_rate_limit_by_name_refuses_even_the_right_password(auth: Authenticator, clock: Clock) -> None:
    for i in range(5):
        with pytest.raises(SignInRefused) as refused:
            auth.sign_in("alice", f"guess {i}", f"198.51.100.{i}")
        assert refused.value.reason == "bad_credentials"
        clock.now += 10
    with pytest.raises(SignInRefused) as refused:
        auth.sign_in("alice", PASSWORD, IP)
    assert refused.value.reason == "rate_limited"
    assert refused.value.retry_after_s == 900 - 50
    assert auth.sign_in("vic", PASSWORD, IP)  # another name from another address is fine
    clock.now += 900 - 50
    assert auth.sign_in("alice", PASSWORD, IP).principal.name == "alice"


def test_rate_limit_by_client_address(auth: Authenticator, clock: Clock) -> None:
    for i in range(5):
        with pytest.raises(SignInRefused):
            auth.sign_in(f"user{i}", PASSWORD, IP)
    with pytest.raises(SignInRefused) as refused:
        auth.sign_in("alice", PASSWORD, IP)
    assert refused.value.reason == "rate_limited"
    assert auth.sign_in("alice", PASSWORD, OTHER_IP)
    clock.now += 900
    assert auth.sign_in("alice", PASSWORD, IP)


def test_a_success_does_not_reset_the_address_window(auth: Authenticator) -> None:
    for i in range(4):
        with pytest.raises(SignInRefused):
            auth.sign_in(f"user{i}", PASSWORD, IP)
    auth.sign_in("alice", PASSWORD, IP)  # an attacker's own account cannot buy more guesses
    with pytest.raises(SignInRefused):
        auth.sign_in("user9", PASSWORD, IP)
    with pytest.raises(SignInRefused) as refused:
        auth.sign_in("vic", PASSWORD, IP)
    assert refused.value.reason == "rate_limited"


def test_rate_limited_sign_in_answers_429_with_retry_after(app: Starlette) -> None:
    client = browser(app)
    for _ in range(5):
        assert sign_in(client, "alice", "wrong password").status_code == 401
    response = sign_in(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "900"
    assert "Sign-in failed." in response.text
    assert client.get("/").status_code == 303


def test_every_failure_is_logged_without_the_password(
    auth: Authenticator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sessionwatch.console.security"):
        for password in ("hunter2-secret-a", "hunter2-secret-b", "hunter2-secret-c", "hunter2-secret-d",
                         "hunter2-secret-e", PASSWORD):
            with pytest.raises(SignInRefused):
                auth.sign_in("alice", password, IP)
    failures = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failures) == 6
    assert all("'alice'" in r.getMessage() and IP in r.getMessage() for r in failures)
    assert "rate limited" in failures[-1].getMessage()
    assert "hunter2" not in caplog.text and PASSWORD not in caplog.text


# -- CSRF, roles, bearer -----------------------------------------------------------------------

def test_unsafe_methods_need_the_session_csrf_token(app: Starlette) -> None:
    client = browser(app)
    sign_in(client)
    csrf = session_csrf(client)
    assert client.post("/act").status_code == 403
    assert client.post("/act", data={"csrf": "wrong"}).status_code == 403
    assert client.post("/act", headers={"x-csrf-token": "wrong"}).status_code == 403
    assert client.post("/api/things", json={"a": 1}).status_code == 403
    assert client.post("/act", data={"csrf": csrf}).text == "done"
    assert client.post("/act", headers={"x-csrf-token": csrf}).text == "done"
    response = client.post("/api/things", json={"a": 1}, headers={"x-csrf-token": csrf})
    assert response.status_code == 201 and response.json() == {"a": 1}  # body replayed intact
    assert client.post("/act", files={"csrf": (None, csrf)}).text == "done"  # multipart


def test_csrf_tokens_are_per_session(app: Starlette) -> None:
    first, second = browser(app), browser(app)
    sign_in(first)
    sign_in(second)
    assert session_csrf(first) != session_csrf(second)
    assert first.post("/act", data={"csrf": session_csrf(second)}).status_code == 403


def test_a_viewer_cannot_act(app: Starlette) -> None:
    client = browser(app)
    sign_in(client, "vic")
    assert client.get("/").json()["role"] == "viewer"
    assert client.post("/act", data={"csrf": session_csrf(client)}).status_code == 403


def test_bearer_token_is_a_responder_exempt_from_csrf(app: Starlette) -> None:
    client = browser(app)
    good = {"authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/things", headers=good).json() == [{"id": "r1"}]
    assert client.post("/api/things", json={"b": 2}, headers=good).status_code == 201
    assert client.get("/", headers=good).json()["name"] == "api-token"
    for header in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", "Bearer", ""):
        response = client.get("/api/things", headers={"authorization": header})
        assert response.status_code == 401, header


def test_bearer_refused_when_no_token_is_configured(accounts: dict[str, Account]) -> None:
    auth = Authenticator(accounts, token=None)
    assert auth.bearer(f"Bearer {TOKEN}") is None
    assert auth.bearer("Bearer ") is None


def test_a_short_token_is_refused_at_construction(accounts: dict[str, Account]) -> None:
    with pytest.raises(ConfigError, match="SESSIONWATCH_CONSOLE_TOKEN") as error:
        Authenticator(accounts, token="x" * 31)
    assert "x" * 31 not in str(error.value)
    assert Authenticator(accounts, token="x" * 32).bearer("Bearer " + "x" * 32) is not None


# -- refusals, redirects, headers ----------------------------------------------------------------

def test_api_without_credentials_is_a_401_json(app: Starlette) -> None:
    client = browser(app)
    for method, path in (("GET", "/api/things"), ("POST", "/api/things"), ("GET", "/api/missing"),
                         ("GET", "/api")):
        response = client.request(method, path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert "error" in response.json()


def test_pages_redirect_to_sign_in_with_a_local_next(app: Starlette) -> None:
    client = browser(app)
    response = client.get("/reports?tenant=a&x=1")
    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=%2Freports%3Ftenant%3Da%26x%3D1"
    response = client.get("https://testserver//evil.example/x")
    assert response.headers["location"] == "/signin?next=%2F"
    assert client.post("/signout").status_code == 303


@pytest.mark.parametrize("target", ["//evil.example", "https://evil.example/", "/\\evil.example",
                                    "\\\\evil.example", "evil.example", "/%0d%0a", "/\r\nx", " /x", ""])
def test_sign_in_never_redirects_off_site(app: Starlette, target: str) -> None:
    client = browser(app)
    response = sign_in(client, next_=target)
    assert response.status_code == 303
    expected = "/%0d%0a" if target == "/%0d%0a" else "/"  # an escaped path stays local and inert
    assert response.headers["location"] == expected


def test_safe_next_keeps_local_paths() -> None:
    assert safe_next("/sessions/abc?x=1#t") == "/sessions/abc?x=1#t"
    assert safe_next("//evil.example") == "/"
    assert safe_next("/\\evil.example") == "/"
    assert safe_next("http:/evil.example") == "/"
    assert safe_next(None) == "/"


def test_security_headers_on_every_response(app: Starlette) -> None:
    client = browser(app)
    responses = {
        "signin page": client.get("/signin"),
        "redirect": client.get("/"),
        "401": client.get("/api/things"),
        "static": client.get("/static/console.css"),
        "static 404": client.get("/static/missing.css"),
        "failed sign-in": sign_in(client, "alice", "wrong password"),
    }
    sign_in(client)
    responses["page"] = client.get("/")
    responses["403"] = client.post("/act")
    responses["404"] = client.get("/nowhere")
    responses["405"] = client.delete("/", headers={"x-csrf-token": session_csrf(client)})
    responses["api"] = client.get("/api/things")
    expected_status = {"redirect": 303, "401": 401, "static": 200, "static 404": 404, "403": 403,
                       "404": 404, "405": 405, "failed sign-in": 401}
    for label, response in responses.items():
        assert response.status_code == expected_status.get(label, 200), label
        headers = response.headers
        assert headers["content-security-policy"] == CSP, label
        assert headers["x-content-type-options"] == "nosniff", label
        assert headers["referrer-policy"] == "no-referrer", label
        assert headers["x-frame-options"] == "DENY", label
        assert headers["cross-origin-opener-policy"] == "same-origin", label
        if label.startswith("static"):
            assert "no-store" not in headers.get("cache-control", ""), label
        else:
            assert headers.get_list("cache-control") == ["no-store"], label
    assert "'unsafe-inline'" not in CSP and "frame-ancestors 'none'" in CSP


def test_signin_page_has_no_inline_script_or_style(app: Starlette) -> None:
    html = browser(app).get("/signin").text
    assert "<script" not in html and "<style" not in html and "style=" not in html
    assert 'href="/static/console.css"' in html and 'class="signin"' in html


def test_require_responder_and_mask_session() -> None:
    viewer = Principal("vic", "viewer", "session", session_id="s", csrf="c")
    responder = Principal("alice", "responder", "session", session_id="s", csrf="c")
    token = Principal("api-token", "responder", "token")
    digest = "9f2c4e0b7a1d3c5e8f6a2b4d0c9e7f1a3b5d7c9e0f2a4b6c8d0e1f3a5b7c9d0e"
    assert mask_session(digest, viewer) == "9f2c4e0b…"
    assert mask_session(digest, None) == "9f2c4e0b…"
    assert mask_session(digest, responder) == digest
    assert mask_session(digest, token) == digest
    assert not viewer.can_act and responder.can_act and token.can_act
    assert "session_id" not in repr(responder) and "csrf=" not in repr(responder)


# -- the console's own events ------------------------------------------------------------------

class FakeFuture:
    def add_callback(self, fn: Any) -> FakeFuture:
        fn(object())
        return self

    def add_errback(self, fn: Any) -> FakeFuture:
        return self


class CapturingProducer:
    """What the SDK would hand to Kafka (its `producer_factory` seam)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, value: bytes, key: bytes) -> FakeFuture:
        self.sent.append((topic, key, value))
        return FakeFuture()

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def test_the_console_emits_its_own_session_events(auth: Authenticator, clock: Clock, tmp_path: Path) -> None:
    producer = CapturingProducer()
    sdk = SessionwatchClient("unused:9092", HASHER, producer_factory=lambda: producer)
    app = make_app(auth, tmp_path, own_events=OwnEvents(sdk))
    client = browser(app)
    raw: list[str] = []
    try:
        sign_in(client, "alice", "wrong password")
        sign_in(client)
        raw.append(client.cookies["__Host-sessionwatch"])
        sign_in(client)  # rotation: names the replaced session
        raw.append(client.cookies["__Host-sessionwatch"])
        csrf = session_csrf(client)
        raw.append(csrf)
        client.post("/signout", data={"csrf": csrf})
        sign_in(client)
        raw.append(client.cookies["__Host-sessionwatch"])
        clock.now += 901
        client.get("/")  # idle: expired
        client.cookies.set("__Host-sessionwatch", "never-issued-id", domain="testserver.local")
        client.get("/")
        raw.append("never-issued-id")
        assert sdk.flush(5.0)
    finally:
        sdk.close()
    events = [decode_event(value) for _, _, value in producer.sent]
    assert {topic for topic, _, _ in producer.sent} == {"sessionwatch.events"}
    assert {e.tenant for e in events} == {"sessionwatch-console"}
    assert [e.type.value for e in events] == [
        "auth.failed",
        "session.created", "session.authenticated",
        "session.created", "session.authenticated",  # the second sign-in rotates
        "session.activity",  # GET / for the csrf token
        "session.activity", "session.logout",
        "session.created", "session.authenticated",
        "session.expired",
        "token.rejected",
    ]
    failed = events[0]
    assert failed.user == "alice" and failed.ip == IP and failed.session is None
    assert failed.attrs["reason"] == "bad_credentials"
    first, second = HASHER.hash(raw[0]), HASHER.hash(raw[1])
    assert events[1].session == events[2].session == first
    assert events[2].user == "alice" and events[2].user_agent == UA
    assert "previous_session" not in events[2].attrs
    assert events[4].session == second and events[4].attrs["previous_session"] == first
    assert events[5].session == events[6].session == events[7].session == second
    assert events[10].session == HASHER.hash(raw[3]) and events[10].attrs["reason"] == "idle"
    assert events[11].session == HASHER.hash("never-issued-id")
    for _, key, value in producer.sent:
        for secret in [*raw, PASSWORD, "wrong password"]:
            assert secret.encode() not in value and secret.encode() not in key


def test_own_events_never_break_a_request(auth: Authenticator, tmp_path: Path) -> None:
    producer = CapturingProducer()
    sdk = SessionwatchClient("unused:9092", HASHER, producer_factory=lambda: producer)
    app = make_app(auth, tmp_path, own_events=OwnEvents(sdk))
    client = browser(app, ip="testclient")  # not an IP: the events are invalid, the console works
    try:
        assert sign_in(client).status_code == 303
        assert client.get("/").status_code == 200
        assert sdk.flush(5.0)
    finally:
        sdk.close()
    assert producer.sent == []


def test_bodies_past_the_form_limit_are_refused(app: Starlette) -> None:
    client = browser(app)
    response = client.post("/signin", content=b"a" * (1024 * 1024 + 1),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    assert response.headers["content-security-policy"] == CSP


def test_payloads_are_json(tmp_path: Path) -> None:
    # guard for the assertions above: decode_event reads what the SDK produced
    producer = CapturingProducer()
    with SessionwatchClient("unused:9092", HASHER, producer_factory=lambda: producer) as sdk:
        OwnEvents(sdk).activity("sid-value", user="alice", ip=IP, user_agent=UA)
        assert sdk.flush(5.0)
    assert json.loads(producer.sent[0][2])["type"] == "session.activity"
