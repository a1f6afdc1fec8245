"""CAEP session-revoked SETs: claims, signatures verified through the served JWKS, RFC 8935 push."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from producers.contract import Action, Reason, Revocation, Scope, Severity
from producers.errors import ConfigError
from storage.caep import (
    DEFAULT_USER_MESSAGE,
    SESSION_REVOKED,
    CaepPushSink,
    CaepReceiver,
    SetSigner,
    build_set,
    generate_key,
    jwk_thumbprint,
    transmitter_app,
)
from storage.sinks import RejectedError, RetryableError

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SESSION_HASH = "5f" * 32
TOKEN = "receiver-bearer-token-do-not-log"


def make_revocation(**overrides: Any) -> Revocation:
    fields: dict[str, Any] = dict(
        id="rev-0001", tenant="acme", scope=Scope.SESSION, session=SESSION_HASH, user="alice",
        source=None, action=Action.REVOKE, not_before=None, expires=None,
        reasons=[Reason(detector="session.ip_change", severity=Severity.HIGH,
                        summary="cookie replayed from a hosting network", evidence={}),
                 Reason(detector="session.ua_change", severity=Severity.HIGH,
                        summary="browser changed mid-session", evidence={})],
        event_time=T0, decided_at=T0 + timedelta(seconds=2), events=["ev-1"],
    )
    fields.update(overrides)
    return Revocation(**fields)


def write_pem(path, key) -> str:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return str(path)


def bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


async def serve(app: web.Application, sock: socket.socket) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


@dataclass
class Receivers:
    """Real RFC 8935 endpoints at /<name>: record each SET, answer with the next queued reply."""

    replies: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    received: dict[str, list[tuple[dict[str, str], str]]] = field(default_factory=dict)
    base: str = ""
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.received.setdefault(name, []).append((dict(request.headers), await request.text()))
        queue = self.replies.get(name) or []
        status, body = queue.pop(0) if queue else (202, None)
        if body is None:
            return web.Response(status=status)
        return web.json_response(body, status=status)

    async def start(self) -> Receivers:
        app = web.Application()
        app.router.add_post("/{name}", self.handle)
        sock = bound_socket()
        self.runner = await serve(app, sock)
        self.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    def receiver(self, name: str, **kwargs: Any) -> CaepReceiver:
        return CaepReceiver(url=f"{self.base}/{name}", audience=f"https://{name}.example.com", **kwargs)

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def push(signer: SetSigner, receivers: list[CaepReceiver], *revocations: Revocation,
               issuer: str = "https://sessionwatch.example.com") -> list[bool | Exception]:
    """Deliver each revocation in turn through one sink; an error is returned, not raised."""
    sink = CaepPushSink(signer, issuer, receivers, timeout_s=2.0)
    await sink.start()
    results: list[bool | Exception] = []
    try:
        for revocation in revocations:
            try:
                results.append(await sink.deliver(revocation, b""))
            except (RetryableError, RejectedError) as exc:
                results.append(exc)
    finally:
        await sink.close()
    return results


@pytest.fixture(params=["ES256", "RS256"])
def signer(request, tmp_path) -> SetSigner:
    return SetSigner(generate_key(tmp_path / "caep.pem", alg=request.param))


def test_set_verifies_with_the_jwks_served_by_the_transmitter(signer):
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], list[tuple[dict[str, str], str]]]:
        sock = bound_socket()
        issuer = f"http://127.0.0.1:{sock.getsockname()[1]}"
        transmitter = await serve(transmitter_app(signer, issuer), sock)
        receivers = await Receivers().start()
        try:
            result = await push(signer, [receivers.receiver("idp", bearer_token=TOKEN)],
                                make_revocation(), issuer=issuer)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{issuer}/.well-known/ssf-configuration") as response:
                    assert response.status == 200
                    assert response.content_type == "application/json"
                    metadata = await response.json()
                async with http.get(metadata["jwks_uri"]) as response:
                    jwks = await response.json()
        finally:
            await receivers.stop()
            await transmitter.cleanup()
        assert result == [True]
        assert metadata == {"spec_version": "1_0", "issuer": issuer,
                            "jwks_uri": f"{issuer}/jwks.json",
                            "delivery_methods_supported": ["urn:ietf:rfc:8935"]}
        return metadata, jwks, receivers.received["idp"]

    metadata, jwks, received = asyncio.run(scenario())
    [(headers, token)] = received
    assert headers["Content-Type"] == "application/secevent+jwt"
    assert headers["Accept"] == "application/json"
    assert headers["Authorization"] == f"Bearer {TOKEN}"

    header = jwt.get_unverified_header(token)
    assert header["typ"] == "secevent+jwt"
    assert header["alg"] == signer.alg
    [jwk] = jwks["keys"]
    assert jwk["kid"] == header["kid"] == signer.kid
    assert jwk["use"] == "sig" and jwk["alg"] == signer.alg
    assert "d" not in jwk and "p" not in jwk, "the JWKS holds the public key only"
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = jwt.decode(token, key=key, algorithms=[signer.alg],
                        audience="https://idp.example.com", issuer=metadata["issuer"],
                        options={"require": ["iss", "aud", "iat", "jti"]})

    assert claims["jti"] == "rev-0001"
    assert claims["iat"] == int((T0 + timedelta(seconds=2)).timestamp())
    assert "exp" not in claims and "sub" not in claims, "SSF forbids both"
    assert claims["sub_id"] == {
        "format": "complex",
        "session": {"format": "opaque", "id": SESSION_HASH},
        "user": {"format": "opaque", "id": "alice"},
        "tenant": {"format": "opaque", "id": "acme"},
    }
    assert list(claims["events"]) == [SESSION_REVOKED]
    assert claims["events"][SESSION_REVOKED] == {
        "event_timestamp": int(T0.timestamp()),
        "initiating_entity": "policy",
        "reason_admin": {"en": "cookie replayed from a hosting network; browser changed mid-session"},
        "reason_user": {"en": DEFAULT_USER_MESSAGE},
    }


# RFC 7638 §3.1's example key and the thumbprint the RFC gives for it.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJEC"
    "PebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Qv"
    "zqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6W"
    "eZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")


def test_thumbprint_matches_rfc7638_example():
    jwk = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_kid_is_the_thumbprint_of_the_served_public_key(signer):
    [jwk] = signer.jwks()["keys"]
    assert signer.kid == jwk_thumbprint(jwk)
    if signer.alg == "ES256":
        assert jwk["crv"] == "P-256" and len(jwt.utils.base64url_decode(jwk["x"])) == 32


def test_user_scope_has_no_session_member_and_uses_not_before():
    cutoff = T0 - timedelta(minutes=5)
    claims = build_set(make_revocation(scope=Scope.USER, session=None, not_before=cutoff),
                       issuer="https://sw.example.com", audience="aud", user_message="Bye.")
    assert claims is not None
    assert claims["sub_id"] == {"format": "complex",
                                "user": {"format": "opaque", "id": "alice"},
                                "tenant": {"format": "opaque", "id": "acme"}}
    event = claims["events"][SESSION_REVOKED]
    assert event["event_timestamp"] == int(cutoff.timestamp())
    assert event["reason_user"] == {"en": "Bye."}


def test_session_scope_without_session_is_rejected_not_widened(tmp_path):
    signer = SetSigner(generate_key(tmp_path / "k.pem"))

    async def scenario() -> list[bool | Exception]:
        receivers = await Receivers().start()
        try:
            return await push(signer, [receivers.receiver("idp")], make_revocation(session=None))
        finally:
            await receivers.stop()

    [result] = asyncio.run(scenario())
    assert isinstance(result, RejectedError) and "rev-0001" in str(result)


@pytest.mark.parametrize("overrides", [
    dict(action=Action.STEP_UP),
    dict(scope=Scope.SOURCE, session=None, user=None, source="167.99.10.10", action=Action.BLOCK),
    dict(scope=Scope.SOURCE, session=None, user=None, source="167.99.10.10"),
    # Lifting a block ends no session: CAEP has no word for it either.
    dict(scope=Scope.SOURCE, session=None, user=None, source="167.99.10.10", action=Action.LIFT),
])
def test_step_up_and_source_block_post_nothing(tmp_path, overrides):
    signer = SetSigner(generate_key(tmp_path / "k.pem"))
    revocation = make_revocation(**overrides)
    assert build_set(revocation, issuer="https://sw.example.com", audience="aud") is None

    async def scenario() -> tuple[list[bool | Exception], Receivers]:
        receivers = await Receivers().start()
        try:
            return await push(signer, [receivers.receiver("idp")], revocation), receivers
        finally:
            await receivers.stop()

    results, receivers = asyncio.run(scenario())
    assert results == [False]
    assert receivers.received == {}


@pytest.mark.parametrize("make_key, described", [
    (lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024), "1024 bits"),
    (lambda: ec.generate_private_key(ec.SECP384R1()), "secp384r1"),
    (lambda: ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
])
def test_weak_or_unsupported_keys_are_config_errors(tmp_path, make_key, described):
    path = write_pem(tmp_path / "key.pem", make_key())
    with pytest.raises(ConfigError, match="caep_key") as caught:
        SetSigner(path)
    message = str(caught.value)
    assert described in message and "P-256" in message and "2048" in message
    assert "PRIVATE KEY" not in message


def test_missing_or_garbage_key_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="caep_key"):
        SetSigner(tmp_path / "absent.pem")
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="caep_key"):
        SetSigner(tmp_path / "junk.pem")


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_generate_key_writes_an_owner_only_pem_and_never_overwrites(tmp_path, alg):
    path = generate_key(tmp_path / "caep.pem", alg=alg)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert SetSigner(path).alg == alg
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        generate_key(path, alg=alg)
    assert path.read_bytes() == before


@pytest.mark.parametrize("reply, expected, words", [
    ((400, {"err": "invalid_audience", "description": "aud does not match"}), RejectedError,
     ["invalid_audience", "aud does not match"]),
    ((400, {"err": "invalid_request", "description": "bad event"}), RejectedError,
     ["invalid_request", "bad event"]),
    ((400, {"err": "authentication_failed", "description": "token expired"}), RetryableError,
     ["authentication_failed", "token expired"]),
    ((400, {"err": "invalid_key", "description": "unknown kid"}), RetryableError, ["invalid_key"]),
    ((400, {"err": "access_denied"}), RetryableError, ["access_denied"]),
    ((401, None), RetryableError, ["401", "bearer token"]),
    ((403, None), RetryableError, ["403"]),
    ((429, None), RetryableError, ["429"]),
    ((503, None), RetryableError, ["503"]),
    ((404, {"detail": "no such stream"}), RejectedError, ["404", "no such stream"]),
])
def test_rfc8935_error_responses(tmp_path, reply, expected, words):
    signer = SetSigner(generate_key(tmp_path / "k.pem"))

    async def scenario() -> list[bool | Exception]:
        receivers = await Receivers(replies={"idp": [reply]}).start()
        try:
            return await push(signer, [receivers.receiver("idp", bearer_token=TOKEN)],
                              make_revocation())
        finally:
            await receivers.stop()

    [result] = asyncio.run(scenario())
    assert type(result) is expected
    message = str(result)
    assert "https://idp.example.com" in message, "the error names the receiver"
    for word in words:
        assert word in message
    assert TOKEN not in message


def test_connection_refused_is_retryable(tmp_path):
    signer = SetSigner(generate_key(tmp_path / "k.pem"))

    async def scenario() -> list[bool | Exception]:
        receivers = await Receivers().start()
        await receivers.stop()  # nothing listens any more
        return await push(signer, [receivers.receiver("idp")], make_revocation())

    [result] = asyncio.run(scenario())
    assert isinstance(result, RetryableError)


def test_retry_after_one_receiver_failed_posts_only_to_that_receiver(tmp_path):
    signer = SetSigner(generate_key(tmp_path / "k.pem"))
    revocation = make_revocation()

    async def scenario() -> tuple[list[bool | Exception], Receivers]:
        receivers = await Receivers(replies={"b": [(503, None)]}).start()
        try:
            both = [receivers.receiver("a"), receivers.receiver("b")]
            # First attempt: a accepts, b is down. Retry: only b. Redelivery: nobody.
            return await push(signer, both, revocation, revocation, revocation), receivers
        finally:
            await receivers.stop()

    results, receivers = asyncio.run(scenario())
    assert isinstance(results[0], RetryableError) and "b.example.com" in str(results[0])
    assert results[1:] == [True, False]
    assert len(receivers.received["a"]) == 1
    assert len(receivers.received["b"]) == 2
    # Each receiver gets its own SET: its own audience, the same jti.
    for name in ("a", "b"):
        token = receivers.received[name][-1][1]
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["aud"] == f"https://{name}.example.com"
        assert claims["jti"] == revocation.id


def test_issuer_with_a_path_is_discovered_under_that_path(tmp_path):
    signer = SetSigner(generate_key(tmp_path / "k.pem"))

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        sock = bound_socket()
        issuer = f"http://127.0.0.1:{sock.getsockname()[1]}/tenant1"
        runner = await serve(transmitter_app(signer, issuer), sock)
        try:
            async with aiohttp.ClientSession() as http:
                root = issuer.removesuffix("/tenant1")
                async with http.get(f"{root}/.well-known/ssf-configuration/tenant1") as response:
                    metadata = await response.json()
                async with http.get(metadata["jwks_uri"]) as response:
                    return metadata, await response.json()
        finally:
            await runner.cleanup()

    metadata, jwks = asyncio.run(scenario())
    assert metadata["jwks_uri"].endswith("/tenant1/jwks.json")
    assert jwks == signer.jwks()


def test_receiver_repr_hides_the_bearer_token():
    receiver = CaepReceiver(url="https://idp.example.com/ssf?x=1", audience="a", bearer_token=TOKEN)
    assert TOKEN not in repr(receiver)
