"""Single sign-on into the console against a real OIDC provider over HTTP.

The provider is a little Starlette app written here and served by uvicorn on a free loopback
port: discovery, JWKS (an RSA key made with cryptography), an authorize endpoint that redirects
straight back with a code for the user the test chose, and a token endpoint that checks the
client's Basic credentials, the code (once), the redirect_uri and the PKCE verifier. It stands
in for Keycloak or Entra ID, which cannot run on this machine; the console's side (discovery,
the token request, the ID token checks against the JWKS) is the real code, unpatched. The
console runs in-process (Starlette's TestClient) on its own chDB archive.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, serve
from starlette.routing import Mount
from starlette.testclient import TestClient

from sessionwatch.console.accounts import Account, hash_password
from sessionwatch.console.app import ConsoleParts, create_app
from sessionwatch.console.archive import SharedArchive
from sessionwatch.console.live import LiveFeed
from sessionwatch.console.oidc import CALLBACK_PATH, OidcClient, OidcConfig
from sessionwatch.console.security import Authenticator
from storage.audit import audit_log
from storage.clickhouse import ChdbBackend

RESPONDERS, VIEWERS = "sec-responders", "sec-viewers"
RITA_PASSWORD = "rita-responds-2026!"
PUBLIC = {"/signin", "/signin/oidc", CALLBACK_PATH}


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with serve() as found:
        yield found


@pytest.fixture(autouse=True)
def fresh_provider(provider: Provider) -> None:
    provider.tamper, provider.sign_with, provider.user, provider.algorithm = {}, None, {}, "RS256"


# -- the console --------------------------------------------------------------------------------


@dataclass
class Console:
    archive: SharedArchive
    auth: Authenticator
    app: Any
    secure_app: Any   # the same console behind TLS (Secure, __Host- cookies)


@pytest.fixture(scope="module")
def console(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    archive = SharedArchive(ChdbBackend(str(tmp_path_factory.mktemp("oidc") / "archive")))
    archive.migrate()
    auth = Authenticator({"rita": Account("rita", "responder", hash_password(RITA_PASSWORD))},
                         token=None)

    def oidc(public_url: str) -> OidcClient:
        return OidcClient(OidcConfig(issuer=provider.issuer, client_id=CLIENT_ID,
                                     client_secret=CLIENT_SECRET, public_url=public_url,
                                     responders=frozenset({RESPONDERS}),
                                     viewers=frozenset({VIEWERS})))

    def app(secure: bool) -> Any:
        return create_app(ConsoleParts(archive=archive, auth=auth, feed=LiveFeed(),
                                       secure_cookies=secure,
                                       oidc=oidc("https://127.0.0.1" if secure else "http://127.0.0.1")))

    yield Console(archive, auth, app(False), app(True))
    archive.close()


def browser(app: Any, secure: bool = False) -> TestClient:
    return TestClient(app, base_url=f"{'https' if secure else 'http'}://127.0.0.1",
                      follow_redirects=False, client=("127.0.0.1", 50000))


def user(name: str, *groups: str, **claims: Any) -> dict[str, Any]:
    return {"sub": f"sub-{name}", "preferred_username": name, "groups": list(groups), **claims}


@dataclass
class Flow:
    start: httpx.Response
    callback_url: str     # path and query, on the console
    code: str
    state: str


def begin(c: TestClient, provider: Provider, claims: dict[str, Any], next_: str = "/live") -> Flow:
    """Start single sign-on in `c` and let the provider sign `claims` in; the callback not yet made."""
    provider.user = claims
    start = c.get("/signin/oidc", params={"next": next_})
    assert start.status_code == 303, start.text
    authorize = httpx.get(start.headers["location"], follow_redirects=False)
    assert authorize.status_code == 302, authorize.text
    back = urlsplit(authorize.headers["location"])
    assert back.path == CALLBACK_PATH
    query = parse_qs(back.query)
    return Flow(start, f"{back.path}?{back.query}", query["code"][0], query["state"][0])


def sso(c: TestClient, provider: Provider, claims: dict[str, Any], next_: str = "/live") -> httpx.Response:
    return c.get(begin(c, provider, claims, next_).callback_url)


def cookies_set(response: httpx.Response) -> dict[str, tuple[str, list[str]]]:
    """name -> (value, sorted attributes without Max-Age's value) of every Set-Cookie."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        first, *attrs = [p.strip() for p in header.split(";")]
        name, _, value = first.partition("=")
        found[name] = (value, sorted(a if not a.startswith("Max-Age=") or a == "Max-Age=0"
                                     else "Max-Age" for a in attrs))
    return found


def audited(console: Console, action: str, actor: str) -> list[dict[str, Any]]:
    rows = audit_log(console.archive, action=action, actor=actor)
    return rows.to_dict("records")


def refused(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert "Sign-in failed." in answer.text
    assert "sessionwatch_console" not in cookies_set(answer)  # no session cookie given


# -- success --------------------------------------------------------------------------------------


def test_a_responder_signs_in_with_single_sign_on(console: Console, provider: Provider) -> None:
    c = browser(console.app)
    answer = sso(c, provider, user("alice", RESPONDERS, "staff"), next_="/detectors")
    assert answer.status_code == 200, answer.text
    # a same-site refresh onwards, so the SameSite=Strict session cookie goes with it
    assert '<meta http-equiv="refresh" content="0;url=/detectors">' in answer.text
    set_ = cookies_set(answer)
    assert set_["sessionwatch_console"][0]
    assert set_["sessionwatch_oidc"] == ("", sorted(["Path=/", "Max-Age=0", "HttpOnly", "SameSite=Lax"]))
    page = c.get("/detectors")
    assert page.status_code == 200
    assert "alice" in page.text and "role-responder" in page.text
    session = console.auth.session(set_["sessionwatch_console"][0])
    assert session is not None and (session.name, session.role) == ("alice", "responder")
    rows = audited(console, "sign_in", "alice")
    assert [(r["role"], r["result"], r["client"]) for r in rows] == [("responder", "ok", "127.0.0.1")]


def test_a_viewer_gets_the_viewer_role_from_its_groups(console: Console, provider: Provider) -> None:
    c = browser(console.app)
    # no preferred_username: the email names the user
    claims = {"sub": "sub-vera", "email": "vera@example.com", "groups": [VIEWERS]}
    assert sso(c, provider, claims).status_code == 200
    page = c.get("/live")
    assert page.status_code == 200 and "vera@example.com" in page.text and "role-viewer" in page.text
    assert "role-responder" not in page.text


def test_the_name_falls_back_to_sub_and_the_groups_claim_may_be_one_string(
        console: Console, provider: Provider) -> None:
    c = browser(console.app)
    assert sso(c, provider, {"sub": "u-123", "groups": RESPONDERS}).status_code == 200
    assert "u-123" in c.get("/live").text


# -- refusals -------------------------------------------------------------------------------------


def test_a_user_in_no_mapped_group_is_refused(console: Console, provider: Provider,
                                              caplog: pytest.LogCaptureFixture) -> None:
    c = browser(console.app)
    with caplog.at_level(logging.WARNING, logger="sessionwatch.console.security"):
        flow = begin(c, provider, user("mallory", "staff", "sales"))
        answer = c.get(flow.callback_url)
    refused(answer)
    assert "no_console_role" in caplog.text and "'mallory'" in caplog.text
    assert flow.code not in caplog.text and flow.state not in caplog.text
    assert CLIENT_SECRET not in caplog.text
    assert c.get("/live").status_code == 303  # still signed out
    rows = audited(console, "sign_in_failed", "mallory")
    assert [(r["role"], r["result"]) for r in rows] == [("", "refused")]


def test_a_wrong_or_missing_state_is_refused(console: Console, provider: Provider) -> None:
    c = browser(console.app)
    flow = begin(c, provider, user("alice", RESPONDERS))
    wrong = flow.callback_url.replace(flow.state, ("A" if flow.state[0] != "A" else "B") + flow.state[1:])
    refused(c.get(wrong))
    refused(c.get(f"{CALLBACK_PATH}?code={flow.code}"))
    before = provider.token_requests
    # the right state from a browser that did not start the sign-in (no pre-session cookie)
    refused(browser(console.app).get(flow.callback_url))
    assert provider.token_requests == before, "the console must refuse before redeeming the code"


def test_a_replayed_state_is_refused(console: Console, provider: Provider) -> None:
    c = browser(console.app)
    flow = begin(c, provider, user("alice", RESPONDERS))
    pre_session = flow.start.cookies["sessionwatch_oidc"]
    assert c.get(flow.callback_url).status_code == 200
    before = provider.token_requests
    again = browser(console.app)
    again.cookies.set("sessionwatch_oidc", pre_session)  # even with the cookie put back
    refused(again.get(flow.callback_url))
    assert provider.token_requests == before


@pytest.mark.parametrize(("case", "reason"), [
    ("another_key", "id_token_signature"),
    ("hs256_with_the_client_secret", "id_token_algorithm"),
    ("wrong_audience", "id_token_audience"),
    ("expired", "id_token_expired"),
    ("nonce_mismatch", "id_token_nonce"),
    ("wrong_issuer", "id_token_issuer"),
])
def test_a_bad_id_token_is_refused(console: Console, provider: Provider,
                                   caplog: pytest.LogCaptureFixture, case: str, reason: str) -> None:
    now = int(time.time())
    if case == "another_key":
        provider.sign_with = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif case == "hs256_with_the_client_secret":  # what a forger who knows the secret would try
        provider.sign_with, provider.algorithm = CLIENT_SECRET, "HS256"
    else:
        provider.tamper = {"wrong_audience": {"aud": "another-client"},
                           "expired": {"iat": now - 900, "exp": now - 600},
                           "nonce_mismatch": {"nonce": "not-the-one-we-sent"},
                           "wrong_issuer": {"iss": "https://idp.example.com"}}[case]
    c = browser(console.app)
    with caplog.at_level(logging.WARNING, logger="sessionwatch.console.security"):
        refused(sso(c, provider, user("alice", RESPONDERS)))
    assert f"single sign-on: {reason})" in caplog.text
    assert c.get("/live").status_code == 303


def test_the_provider_refusing_is_a_neutral_failure(console: Console, provider: Provider) -> None:
    c = browser(console.app)
    flow = begin(c, provider, user("alice", RESPONDERS))
    refused(c.get(f"{CALLBACK_PATH}?error=access_denied&state={flow.state}"))


# -- cookies ------------------------------------------------------------------------------------


def test_the_session_cookie_rotates_and_has_the_password_sign_in_flags(
        console: Console, provider: Provider) -> None:
    c = browser(console.app)
    form = c.get("/signin")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    by_password = c.post("/signin", data={"name": "rita", "password": RITA_PASSWORD, "csrf": token,
                                          "next": "/live"})
    assert by_password.status_code == 303
    first_sid, password_flags = cookies_set(by_password)["sessionwatch_console"]
    by_sso = sso(c, provider, user("alice", RESPONDERS))
    second_sid, sso_flags = cookies_set(by_sso)["sessionwatch_console"]
    assert sso_flags == password_flags == sorted(["Path=/", "Max-Age", "HttpOnly", "SameSite=Strict"])
    assert second_sid != first_sid
    assert console.auth.session(first_sid) is None, "the session held before sign-in must end"
    assert c.get("/live").status_code == 200


def test_behind_tls_every_cookie_is_secure_and_host_prefixed(console: Console,
                                                             provider: Provider) -> None:
    c = browser(console.secure_app, secure=True)
    flow = begin(c, provider, user("alice", RESPONDERS))
    assert cookies_set(flow.start)["__Host-sessionwatch-oidc"][1] == sorted(
        ["Path=/", "Max-Age", "HttpOnly", "SameSite=Lax", "Secure"])
    assert parse_qs(urlsplit(flow.start.headers["location"]).query)["redirect_uri"] == [
        "https://127.0.0.1" + CALLBACK_PATH]
    answer = c.get(flow.callback_url)
    assert answer.status_code == 200
    assert cookies_set(answer)["__Host-sessionwatch"][1] == sorted(
        ["Path=/", "Max-Age", "HttpOnly", "SameSite=Strict", "Secure"])
    assert c.get("/live").status_code == 200


# -- the page and the route table ----------------------------------------------------------------


def test_the_sign_in_page_links_to_single_sign_on(console: Console) -> None:
    page = browser(console.app).get("/signin", params={"next": "/detectors"})
    assert '<a href="/signin/oidc?next=/detectors">Sign in with single sign-on</a>' in page.text
    assert 'name="password"' in page.text  # password accounts still work beside it


def test_only_the_sign_in_paths_are_public(console: Console) -> None:
    c = browser(console.app)
    paths = set()
    for route in console.app.routes:
        if isinstance(route, Mount):
            continue
        paths.add(route.path)
        if route.path in PUBLIC:
            continue
        for method in route.methods - {"HEAD"}:
            answer = c.request(method, re.sub(r"\{[^}]+\}", "x", route.path))
            assert answer.status_code in (303, 401, 403), f"{method} {route.path}"
    assert PUBLIC <= paths
