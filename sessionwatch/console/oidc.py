"""Console sign-in with an OpenID Connect provider: the authorization code flow with PKCE (S256)
as a confidential client, and every check on the ID token before it names a principal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import jwt

from producers.errors import SessionwatchError
from sessionwatch.console.accounts import Role
from sessionwatch.console.security import CookiePolicy

log = logging.getLogger("sessionwatch.console.security")

START_PATH = "/signin/oidc"
CALLBACK_PATH = "/signin/oidc/callback"
# Asymmetric only: `none` and HS* would let anyone who knows the client secret (or nobody) sign.
ALGORITHMS = ("RS256", "ES256")
PENDING_S = 600  # a started sign-in must come back within 10 minutes, once
SCOPE = "openid profile email"
_MAX_PENDING = 10_000  # started sign-ins held at once: bounded under a flood of starts
_MAX_BODY = 1024 * 1024
_METADATA_TTL_S = 3600.0
_MAX_NAME = 256


class OidcRefused(SessionwatchError):
    """A sign-in that did not complete. `reason` is a fixed word for the log and the audit (never a
    token, code, secret or claim value); `user` is the verified name when the ID token was good but
    the user has no console role."""

    def __init__(self, reason: str, user: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.user = user


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    public_url: str
    roles_claim: str = "groups"
    responders: frozenset[str] = frozenset()
    viewers: frozenset[str] = frozenset()
    leeway_s: float = 60.0
    timeout_s: float = 10.0

    @property
    def redirect_uri(self) -> str:
        return self.public_url.rstrip("/") + CALLBACK_PATH

    @classmethod
    def from_settings(cls, settings: Any) -> OidcConfig | None:
        """The config from the `console_oidc_*` settings (Settings has validated them); None if off."""
        if not settings.console_oidc_issuer:
            return None
        return cls(issuer=settings.console_oidc_issuer, client_id=settings.console_oidc_client_id,
                   client_secret=settings.console_oidc_client_secret.reveal(),
                   public_url=settings.console_public_url,
                   roles_claim=settings.console_oidc_roles_claim.strip(),
                   responders=settings.console_oidc_responder_groups,
                   viewers=settings.console_oidc_viewer_groups)


@dataclass(frozen=True)
class Identity:
    """Who the provider says signed in, with the console role their groups map to."""

    name: str
    role: Role
    subject: str


@dataclass(frozen=True)
class ProviderMetadata:
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


@dataclass(frozen=True)
class _Pending:
    nonce: str = field(repr=False)
    verifier: str = field(repr=False)
    next: str
    created: float


class OidcClient:
    """One provider: discovery (cached an hour), started sign-ins (in memory, keyed by a digest of
    the state, 10 minutes, single use) and the callback's checks. Blocking I/O: call `start` and
    `finish` from a worker thread."""

    def __init__(self, config: OidcConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._lock = threading.Lock()
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = float("-inf")
        self._jwks: jwt.PyJWKClient | None = None

    # -- the flow ---------------------------------------------------------------------------------

    def start(self, next_: str) -> tuple[str, str]:
        """(the provider's authorization URL to redirect to, the state: the browser keeps it in the
        pre-session cookie, so the callback is finished only by the browser that started it)."""
        metadata = self.metadata()
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 characters: RFC 7636 allows 43-128
        challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
        now = self.clock()
        with self._lock:
            self._prune(now)
            self._pending[_key(state)] = _Pending(nonce, verifier, next_, now)
            while len(self._pending) > _MAX_PENDING:
                self._pending.popitem(last=False)
        query = urlencode({"response_type": "code", "client_id": self.config.client_id,
                           "redirect_uri": self.config.redirect_uri, "scope": SCOPE, "state": state,
                           "nonce": nonce, "code_challenge": challenge,
                           "code_challenge_method": "S256"})
        endpoint = metadata.authorization_endpoint
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}", state

    def finish(self, *, state: str | None, cookie: str | None, code: str | None,
               error: str | None = None) -> tuple[Identity, str]:
        """The verified identity and the `next` path the sign-in started with, else OidcRefused.
        The state is used up whatever happens: a callback URL works once."""
        if not state:
            raise OidcRefused("missing_state")
        with self._lock:
            pending = self._pending.pop(_key(state), None)
        if pending is None:
            raise OidcRefused("unknown_state")  # never started here, already used, or pruned
        if self.clock() - pending.created >= PENDING_S:
            raise OidcRefused("expired_state")
        if not cookie or not hmac.compare_digest(cookie.encode(), state.encode()):
            raise OidcRefused("state_of_another_browser")
        if error:
            raise OidcRefused("provider_refused")  # e.g. access_denied: the user cancelled
        if not code:
            raise OidcRefused("missing_code")
        id_token = self._exchange(code, pending.verifier)
        claims = self._verify(id_token, pending.nonce)
        return self._identity(claims), pending.next

    # -- discovery ----------------------------------------------------------------------------------

    def metadata(self) -> ProviderMetadata:
        """The provider's endpoints from `{issuer}/.well-known/openid-configuration`."""
        now = self.clock()
        with self._lock:
            if self._metadata is not None and now - self._metadata_at < _METADATA_TTL_S:
                return self._metadata
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = _json(self._fetch(urllib.request.Request(url, headers={"accept": "application/json"}),
                                "discovery"), "discovery")
        # a document served for another issuer would make us trust that issuer's tokens
        if doc.get("issuer") != self.config.issuer:
            raise OidcRefused("discovery_issuer_mismatch")
        endpoints = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(name)
            if not isinstance(value, str) or not _web_url(value):
                raise OidcRefused(f"discovery_bad_{name}")
            endpoints[name] = value
        methods = doc.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise OidcRefused("discovery_no_s256")
        auth_methods = doc.get("token_endpoint_auth_methods_supported")
        if isinstance(auth_methods, list) and "client_secret_basic" not in auth_methods:
            raise OidcRefused("discovery_no_client_secret_basic")
        metadata = ProviderMetadata(**endpoints)
        with self._lock:
            if self._metadata is None or metadata.jwks_uri != self._metadata.jwks_uri:
                self._jwks = jwt.PyJWKClient(metadata.jwks_uri, cache_keys=True, lifespan=3600,
                                             timeout=self.config.timeout_s)
            self._metadata, self._metadata_at = metadata, now
        return metadata

    # -- the token endpoint and the ID token -------------------------------------------------------

    def _exchange(self, code: str, verifier: str) -> str:
        metadata = self.metadata()
        body = urlencode({"grant_type": "authorization_code", "code": code,
                          "redirect_uri": self.config.redirect_uri,
                          "code_verifier": verifier}).encode()
        # client_secret_basic: each part form-encoded before base64 (RFC 6749 section 2.3.1)
        basic = base64.b64encode(f"{quote(self.config.client_id, safe='')}:"
                                 f"{quote(self.config.client_secret, safe='')}".encode()).decode()
        request = urllib.request.Request(
            metadata.token_endpoint, data=body, method="POST",
            headers={"authorization": f"Basic {basic}", "accept": "application/json",
                     "content-type": "application/x-www-form-urlencoded"})
        answer = _json(self._fetch(request, "token"), "token")
        id_token = answer.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise OidcRefused("token_no_id_token")
        return id_token

    def _verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise OidcRefused("id_token_malformed") from None
        if header.get("alg") not in ALGORITHMS:
            raise OidcRefused("id_token_algorithm")
        key = self._signing_key(id_token, header)
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token, key, algorithms=list(ALGORITHMS), audience=self.config.client_id,
                issuer=self.config.issuer, leeway=self.config.leeway_s,
                options={"require": ["iss", "aud", "exp", "iat", "sub"]})
        except jwt.InvalidSignatureError:
            raise OidcRefused("id_token_signature") from None
        except jwt.ExpiredSignatureError:
            raise OidcRefused("id_token_expired") from None
        except jwt.InvalidAudienceError:
            raise OidcRefused("id_token_audience") from None
        except jwt.InvalidIssuerError:
            raise OidcRefused("id_token_issuer") from None
        except (jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError):
            raise OidcRefused("id_token_not_yet_valid") from None
        except jwt.PyJWTError:
            raise OidcRefused("id_token_invalid") from None
        # minted for this exchange: an old token replayed with a fresh exp is not a sign-in now
        if claims["iat"] < self.clock() - PENDING_S - self.config.leeway_s:
            raise OidcRefused("id_token_stale")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.config.client_id:
            raise OidcRefused("id_token_azp")
        token_nonce = claims.get("nonce")
        if not isinstance(token_nonce, str) or not hmac.compare_digest(token_nonce.encode(),
                                                                       nonce.encode()):
            raise OidcRefused("id_token_nonce")
        return claims

    def _signing_key(self, id_token: str, header: dict[str, Any]) -> Any:
        client = self._jwks
        if client is None:
            raise OidcRefused("jwks_unknown")
        try:
            if header.get("kid") is None:  # a provider with one key may leave kid out
                keys = client.get_signing_keys()
                if len(keys) != 1:
                    raise OidcRefused("id_token_no_kid")
                return keys[0].key
            return client.get_signing_key_from_jwt(id_token).key
        except jwt.PyJWKClientConnectionError:
            raise OidcRefused("jwks_unreachable") from None
        except jwt.PyJWTError:
            raise OidcRefused("id_token_key_unknown") from None

    def _identity(self, claims: dict[str, Any]) -> Identity:
        name = next((v for v in (claims.get("preferred_username"), claims.get("email"), claims["sub"])
                     if isinstance(v, str) and v.strip()), None)
        if name is None or len(name) > _MAX_NAME:
            raise OidcRefused("id_token_no_name")
        raw = claims.get(self.config.roles_claim)
        groups: set[str] = set()
        if isinstance(raw, str):
            groups.add(raw)
        elif isinstance(raw, list):
            groups.update(g for g in raw if isinstance(g, str))
        if groups & self.config.responders:
            return Identity(name, "responder", str(claims["sub"]))
        if groups & self.config.viewers:
            return Identity(name, "viewer", str(claims["sub"]))
        raise OidcRefused("no_console_role", user=name)

    # -- internals ----------------------------------------------------------------------------------

    def _fetch(self, request: urllib.request.Request, what: str) -> bytes:
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                body: bytes = response.read(_MAX_BODY + 1)
        except urllib.error.HTTPError as exc:
            raise OidcRefused(f"{what}_http_{exc.code}") from None
        except (urllib.error.URLError, OSError):
            raise OidcRefused(f"{what}_unreachable") from None
        if len(body) > _MAX_BODY:
            raise OidcRefused(f"{what}_too_large")
        return body

    def _prune(self, now: float) -> None:
        """Drop started sign-ins past their 10 minutes (oldest first; called under the lock)."""
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if now - oldest.created < PENDING_S:
                return
            self._pending.popitem(last=False)


# -- the pre-session cookie --------------------------------------------------------------------------

def pending_cookie_name(policy: CookiePolicy) -> str:
    return "__Host-sessionwatch-oidc" if policy.secure else "sessionwatch_oidc"


def pending_cookie_header(policy: CookiePolicy, value: str, max_age: int) -> str:
    """The state cookie. SameSite=Lax, unlike every other console cookie: the provider's redirect
    back is a cross-site navigation, on which browsers never send a Strict cookie."""
    parts = [f"{pending_cookie_name(policy)}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly",
             "SameSite=Lax"]
    if policy.secure:
        parts.append("Secure")
    return "; ".join(parts)


def _key(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        raise OidcRefused(f"{what}_not_json") from None
    if not isinstance(doc, dict):
        raise OidcRefused(f"{what}_not_json")
    return doc


def _web_url(value: str) -> bool:
    """https, or http to a loopback host (a provider on this machine)."""
    parts = urlsplit(value)
    host = parts.hostname or ""
    if parts.scheme == "https":
        return bool(host)
    if parts.scheme != "http":
        return False
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
