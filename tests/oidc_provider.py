"""A small OpenID Connect provider for tests, served by uvicorn on a free loopback port: discovery,
JWKS (an RSA key made with cryptography), an authorize endpoint that redirects straight back with
a code for the user the test chose, and a token endpoint that checks the client's Basic
credentials, the code (once), the redirect_uri and the PKCE verifier. It stands in for Keycloak
or Entra ID, which cannot run on this machine. Used by tests/sessionwatch/console/test_oidc.py
(the console in-process) and tests/integration/test_console_oidc_browser.py (in chromium).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from sessionwatch.console.oidc import CALLBACK_PATH

CLIENT_ID = "sessionwatch-console"
CLIENT_SECRET = "console-secret-" + "s" * 24


@dataclass
class Provider:
    issuer: str = ""
    key: Any = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537,
                                                                      key_size=2048))
    kid: str = "provider-key-1"
    user: dict[str, Any] = field(default_factory=dict)     # claims of whoever "signs in" next
    tamper: dict[str, Any] = field(default_factory=dict)   # a test's changes to the next ID token
    sign_with: Any = None                                  # a test's key for the next ID token
    algorithm: str = "RS256"
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: int = 0
    redirect_uris: tuple[str, ...] = ("http://127.0.0.1" + CALLBACK_PATH,
                                      "https://127.0.0.1" + CALLBACK_PATH)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/.well-known/openid-configuration", self.discovery),
            Route("/jwks", self.jwks),
            Route("/authorize", self.authorize),
            Route("/token", self.token, methods=["POST"]),
        ])

    async def discovery(self, request: Request) -> Response:
        return JSONResponse({
            "issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"], "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"]})

    async def jwks(self, request: Request) -> Response:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return JSONResponse({"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]})

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if (q.get("response_type") != "code" or q.get("client_id") != CLIENT_ID
                or q.get("redirect_uri") not in self.redirect_uris
                or "openid" not in q.get("scope", "").split()
                or q.get("code_challenge_method") != "S256" or not q.get("code_challenge")
                or not q.get("state") or not q.get("nonce")):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(24)
        self.codes[code] = {"redirect_uri": q["redirect_uri"], "challenge": q["code_challenge"],
                            "nonce": q["nonce"], "user": dict(self.user)}
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}",
                                302)

    async def token(self, request: Request) -> Response:
        self.token_requests += 1
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        form = await request.form()
        grant = self.codes.pop(str(form.get("code", "")), None)  # a code works once
        if form.get("grant_type") != "authorization_code" or grant is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
        if challenge.decode() != grant["challenge"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE"}, status_code=400)
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                  "nonce": grant["nonce"], **grant["user"], **self.tamper}
        id_token = jwt.encode(claims, self.sign_with or self.key, algorithm=self.algorithm,
                              headers={"kid": self.kid})
        return JSONResponse({"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                             "expires_in": 300, "id_token": id_token})


@contextmanager
def serve(**fields: Any) -> Iterator[Provider]:
    """A Provider on a free loopback port for the life of the `with` block."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    provider = Provider(issuer=f"http://127.0.0.1:{sock.getsockname()[1]}", **fields)
    server = uvicorn.Server(uvicorn.Config(provider.app(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test provider did not start"
        time.sleep(0.01)
    try:
        yield provider
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
