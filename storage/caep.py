"""CAEP `session-revoked` Security Event Tokens, signed and pushed to SSF receivers (sink `caep`).

Lets an IdP, a SaaS app or a gateway that speaks the OpenID Shared Signals Framework kill the
hijacked session on its side too, without sessionwatch-specific code there. Followed:
- CAEP 1.0 §2 (optional event claims: `event_timestamp`, `initiating_entity`, `reason_admin`,
  `reason_user`) and §3.1 (Session Revoked; a complex subject revokes every matching session).
- SSF 1.0 "Subject Members" (top-level `sub_id`, complex subject of session/user/tenant),
  "Security Event Token Profile" (`typ: secevent+jwt`; no `sub`, no `exp`; one event per SET;
  `txn`; one SET per receiver when receivers are not known to be one entity) and "Transmitter
  Configuration Discovery" (`/.well-known/ssf-configuration`, `jwks_uri`).
- RFC 8417 (SET claims `iss`, `jti`, `iat`, `aud`, `events`), RFC 7638 (key thumbprint as `kid`).
- RFC 8935 §2.1 (POST, `application/secevent+jwt`), §2.2 (202 Accepted), §2.3 (400 with
  `{"err", "description"}`) and §2.4 (the error codes).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from yarl import URL

from producers.contract import Action, Revocation, Scope
from producers.errors import ConfigError
from storage.sinks import RejectedError, RetryableError
from storage.webhook import public_url

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
PUSH_DELIVERY = "urn:ietf:rfc:8935"
SET_CONTENT_TYPE = "application/secevent+jwt"
DEFAULT_USER_MESSAGE = "Your session has ended. Please sign in again."
MIN_RSA_BITS = 2048
_KEY_ADVICE = ("use an EC P-256 key (ES256) or an RSA key of at least 2048 bits (RS256); "
               "`sessionwatch caep-key` writes a new one")

# RFC 8935 §2.4 codes that mean "the receiver is not configured to trust us yet": the operator
# fixes keys or credentials, and the revocation must still arrive afterwards, so keep retrying.
_RETRYABLE_ERR = frozenset({"invalid_key", "authentication_failed", "access_denied"})
_RETRYABLE_STATUS = frozenset({401, 403, 408, 429})
_MAX_ERROR_BODY = 4096


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return _b64url(value.to_bytes(size, "big"))


def jwk_thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 SHA-256 thumbprint (base64url) of a public EC or RSA JWK."""
    # §3.2: only the required members, sorted, no whitespace; `kid`, `use`, `alg` do not count.
    required = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    canonical = json.dumps({name: jwk[name] for name in required}, sort_keys=True,
                           separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


class SetSigner:
    """Signs SETs with one private key; `kid` is the RFC 7638 thumbprint of its public key."""

    def __init__(self, key_path: str | Path) -> None:
        path = Path(key_path)
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"caep_key {path}: cannot read it ({exc.strerror}); "
                              "point caep_key at a PEM private key file") from None
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            # TypeError: the key is encrypted. No detail from the key itself goes in the message.
            raise ConfigError(f"caep_key {path}: not an unencrypted PEM private key ({exc}); "
                              f"{_KEY_ADVICE}") from None
        self._key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            self.alg = "ES256"
            numbers = key.public_key().public_numbers()
            # RFC 7518 §6.2.1: x and y are the full 32-byte field elements, leading zeros kept.
            public: dict[str, str] = {"crv": "P-256", "kty": "EC",
                                      "x": _uint(numbers.x, 32), "y": _uint(numbers.y, 32)}
        elif isinstance(key, rsa.RSAPrivateKey) and key.key_size >= MIN_RSA_BITS:
            self.alg = "RS256"
            rsa_numbers = key.public_key().public_numbers()
            public = {"e": _uint(rsa_numbers.e), "kty": "RSA", "n": _uint(rsa_numbers.n)}
        else:
            raise ConfigError(f"caep_key {path}: {_describe(key)} is not accepted; {_KEY_ADVICE}")
        self._key = key
        self.kid = jwk_thumbprint(public)
        self._public_jwk = {**public, "kid": self.kid, "use": "sig", "alg": self.alg}

    def __repr__(self) -> str:
        return f"SetSigner(alg={self.alg!r}, kid={self.kid!r})"

    def sign(self, claims: dict[str, Any]) -> str:
        """The compact JWS of `claims`, explicitly typed as a SET (RFC 8417 §2.3)."""
        return jwt.encode(claims, self._key, algorithm=self.alg,
                          headers={"typ": "secevent+jwt", "kid": self.kid, "alg": self.alg})

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set receivers fetch from `jwks_uri` to verify our SETs."""
        return {"keys": [dict(self._public_jwk)]}


def _describe(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"an RSA key of {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"an EC key on curve {key.curve.name}"
    return f"a {type(key).__name__.lstrip('_')}"


def generate_key(path: str | Path, alg: str = "ES256") -> Path:
    """Write a new PEM (PKCS#8) signing key to `path`, readable by its owner only.

    Refuses to overwrite: receivers trust the old key's `kid` until they refetch the JWKS.
    """
    if alg == "ES256":
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = ec.generate_private_key(ec.SECP256R1())
    elif alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    else:
        raise ConfigError(f"caep_key algorithm {alg!r} is not supported; use ES256 or RS256")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    target = Path(path)
    try:
        # O_EXCL + 0600 at creation: the key is never, even briefly, readable by others.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"caep_key {target} already exists; move it away first (receivers "
                          "trust its kid) or choose another path") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return target


def is_session_revoked(revocation: Revocation) -> bool:
    """True if CAEP session-revoked describes `revocation` (see `build_set`)."""
    return revocation.action is Action.REVOKE and revocation.scope in (Scope.SESSION, Scope.USER)


def build_set(
    revocation: Revocation,
    *,
    issuer: str,
    audience: str,
    user_message: str = DEFAULT_USER_MESSAGE,
) -> dict[str, Any] | None:
    """The SET claims announcing `revocation` to `audience`, or None if CAEP has no word for it.

    Only revokes of a session or of a user's sessions are session-revoked events. A step-up
    keeps the session alive (CAEP 1.0 has no "re-authenticate" event), and a source block (or
    the lift of one) names an address, not a session: sending any of them as session-revoked
    would log users out wrongly.
    Raises ValueError if the revocation lacks its subject (the sink dead-letters it).
    """
    if not is_session_revoked(revocation):
        return None
    subject: dict[str, Any] = {"format": "complex"}
    if revocation.scope is Scope.SESSION:
        if revocation.session is None:
            # Without it the subject would match every session of the user: refuse, never widen.
            raise ValueError(f"revocation {revocation.id}: scope session without `session`")
        subject["session"] = {"format": "opaque", "id": revocation.session}
        event_time = revocation.event_time
    else:
        if revocation.user is None:
            raise ValueError(f"revocation {revocation.id}: scope user without `user`")
        # Every session of the user from before this instant is revoked.
        event_time = revocation.not_before or revocation.event_time
    if revocation.user is not None:
        subject["user"] = {"format": "opaque", "id": revocation.user}
    subject["tenant"] = {"format": "opaque", "id": revocation.tenant}

    event: dict[str, Any] = {"event_timestamp": int(event_time.timestamp()),
                             "initiating_entity": "policy"}
    if revocation.reasons:  # CAEP: the object MUST hold at least one language
        event["reason_admin"] = {"en": "; ".join(r.summary for r in revocation.reasons)}
    if user_message:
        event["reason_user"] = {"en": user_message}
    # `iat` from the decision, not the clock: a retry signs the same claims. `txn` (SSF SHOULD)
    # ties SETs born of one revocation together.
    return {
        "iss": issuer,
        "jti": revocation.id,
        "iat": int(revocation.decided_at.timestamp()),
        "aud": audience,
        "txn": revocation.id,
        "sub_id": subject,
        "events": {SESSION_REVOKED: event},
    }


@dataclass(frozen=True)
class CaepReceiver:
    """One RFC 8935 push endpoint. `audience` goes in `aud`; the token never prints."""

    url: str
    audience: str
    bearer_token: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"CAEP receiver {public_url(self.url)} (aud {self.audience!r})"


class CaepPushSink:
    """Sink `caep`: one signed SET per receiver per revocation, pushed per RFC 8935.

    Receivers that accepted a revocation are remembered (in memory, for the last `remember`
    revocation ids) so a retry caused by one receiver's outage does not re-post to the others.
    After a restart they may see a SET again; they dedupe on `jti`, which is the revocation id.
    """

    name = "caep"

    def __init__(
        self,
        signer: SetSigner,
        issuer: str,
        receivers: Sequence[CaepReceiver],
        *,
        user_message: str = DEFAULT_USER_MESSAGE,
        timeout_s: float = 5.0,
        remember: int = 10_000,
    ) -> None:
        if not receivers:
            raise ConfigError("caep_receivers is empty; configure at least one receiver URL "
                              "and audience, or disable the caep sink")
        self.signer = signer
        self.issuer = issuer
        self.receivers = tuple(receivers)
        self.user_message = user_message
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._remember = remember
        self._accepted: OrderedDict[str, set[CaepReceiver]] = OrderedDict()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(self, revocation: Revocation, raw: bytes) -> bool:
        if self._session is None:
            raise RuntimeError("CaepPushSink.deliver called before start(): the applier must start sinks")
        if not is_session_revoked(revocation):
            return False  # step-ups, source blocks and lifts: nothing to tell a CAEP receiver
        accepted = self._accepted_by(revocation.id)
        sent = False
        retryable: list[str] = []
        rejected: list[str] = []
        for receiver in self.receivers:
            if receiver in accepted:
                continue
            try:
                claims = build_set(revocation, issuer=self.issuer, audience=receiver.audience,
                                   user_message=self.user_message)
            except ValueError as exc:
                raise RejectedError(str(exc)) from None
            assert claims is not None  # is_session_revoked said so
            try:
                await self._post(self._session, receiver, self.signer.sign(claims))
            except RetryableError as exc:
                retryable.append(str(exc))
                continue  # the other receivers should not wait for this one's outage
            except RejectedError as exc:
                rejected.append(str(exc))
                continue
            accepted.add(receiver)
            sent = True
        if retryable:
            # Retry first: once the outage ends, a rejection still dead-letters the revocation.
            raise RetryableError(f"revocation {revocation.id}: " + "; ".join(retryable + rejected))
        if rejected:
            raise RejectedError(f"revocation {revocation.id}: " + "; ".join(rejected))
        return sent

    def _accepted_by(self, revocation_id: str) -> set[CaepReceiver]:
        accepted = self._accepted.get(revocation_id)
        if accepted is None:
            accepted = self._accepted[revocation_id] = set()
            while len(self._accepted) > self._remember:
                self._accepted.popitem(last=False)
        else:
            self._accepted.move_to_end(revocation_id)
        return accepted

    async def _post(self, session: aiohttp.ClientSession, receiver: CaepReceiver, token: str) -> None:
        headers = {"Content-Type": SET_CONTENT_TYPE, "Accept": "application/json"}
        if receiver.bearer_token:
            headers["Authorization"] = f"Bearer {receiver.bearer_token}"
        try:
            # No redirects: aiohttp would turn a redirected POST into a bodyless GET.
            async with session.post(receiver.url, data=token.encode("ascii"), headers=headers,
                                    allow_redirects=False) as response:
                status = response.status
                if 200 <= status < 300:
                    return
                if status in _RETRYABLE_STATUS or status >= 500:
                    hint = " (check its bearer token)" if status in (401, 403) else ""
                    raise RetryableError(f"{receiver.label}: HTTP {status}{hint}; will retry")
                if 300 <= status < 400:
                    raise RetryableError(f"{receiver.label}: HTTP {status} redirect, not followed; "
                                         "configure the final URL")
                # Read more than the excerpt: an RFC 8935 error body must parse as JSON.
                text = (await response.content.read(_MAX_ERROR_BODY)).decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            kind = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise RetryableError(f"{receiver.label}: {kind}; will retry") from exc
        err, description = _set_error(text) if status == 400 else (None, None)
        if err is None:
            raise RejectedError(f"{receiver.label}: refused with HTTP {status}: {text[:200]!r}")
        message = f"{receiver.label}: refused the SET: {err}: {description or '(no description)'}"
        if err in _RETRYABLE_ERR:
            raise RetryableError(f"{message}; fix the receiver's trust in this transmitter "
                                 "(keys, credentials), will retry")
        raise RejectedError(message)


def _set_error(body: str) -> tuple[str | None, str | None]:
    """`err` and `description` of an RFC 8935 §2.3 error body, or (None, None)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("err"), str):
        return None, None
    description = parsed.get("description")
    return parsed["err"][:64], description[:200] if isinstance(description, str) else None


def transmitter_app(signer: SetSigner, issuer: str) -> web.Application:
    """SSF transmitter metadata and the JWKS, for receivers to discover and verify our SETs.

    Served under the issuer's path: per SSF discovery, issuer `https://h/t1` has its metadata
    at `/.well-known/ssf-configuration/t1` and, here, its keys at `/t1/jwks.json`.
    """
    # `issuer` verbatim: SSF requires it identical to the `iss` of our SETs.
    base = issuer.rstrip("/")
    path = URL(base).path.rstrip("/")
    metadata = {
        "spec_version": "1_0",
        "issuer": issuer,
        "jwks_uri": f"{base}/jwks.json",
        "delivery_methods_supported": [PUSH_DELIVERY],
    }

    async def configuration(request: web.Request) -> web.Response:
        return web.json_response(metadata)

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response(signer.jwks())

    app = web.Application()
    app.router.add_get(f"/.well-known/ssf-configuration{path}", configuration)
    app.router.add_get(f"{path}/jwks.json", jwks)
    return app
