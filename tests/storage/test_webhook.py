"""WebhookSink against a real aiohttp receiver on a free port: signature, status mapping, errors."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from aiohttp import web

from producers.contract import Action, Reason, Revocation, Scope, Severity, decode_revocation
from producers.errors import ConfigError
from producers.webhook_signature import verify
from storage.sinks import RejectedError, RetryableError
from storage.webhook import WebhookSink

SECRET = b"webhook-secret-0123456789abcdef"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def make_revocation(**overrides) -> Revocation:
    fields = dict(
        id="rev-0001", tenant="acme", scope=Scope.SESSION, session="a" * 64, user="alice",
        source=None, action=Action.REVOKE, not_before=None, expires=None,
        reasons=[Reason(detector="session.ip_change", severity=Severity.HIGH,
                        summary="cookie replayed from a hosting network", evidence={})],
        event_time=T0, decided_at=T0, events=["ev-1"],
    )
    fields.update(overrides)
    return Revocation(**fields)


@dataclass
class Receiver:
    """A real HTTP endpoint: records each request, answers with the next queued status."""

    statuses: list[int] = field(default_factory=list)
    body: str = ""
    requests: list[tuple[dict[str, str], bytes, str]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read(), request.path_qs))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text=self.body)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self.runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        return self

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def deliver_to(receiver: Receiver, revocation: Revocation, url: str | None = None) -> bool:
    sink = WebhookSink(url or receiver.url, SECRET, timeout_s=2.0,
                       extra_headers={"X-Tenant-Route": "eu"})
    await sink.start()
    try:
        return await sink.deliver(revocation, b"")
    finally:
        await sink.close()


def test_post_is_signed_and_verifies_on_the_receiver_side():
    async def scenario() -> Receiver:
        receiver = await Receiver().start()
        try:
            assert await deliver_to(receiver, make_revocation()) is True
        finally:
            await receiver.stop()
        return receiver

    receiver = asyncio.run(scenario())
    [(headers, body, _)] = receiver.requests
    assert headers["Content-Type"] == "application/json"
    assert headers["Sessionwatch-Revocation-Id"] == "rev-0001"
    assert headers["X-Tenant-Route"] == "eu"
    assert verify(SECRET, headers["Sessionwatch-Signature"], body)
    # The admin's systems get the full revocation, reasons included.
    assert decode_revocation(body) == make_revocation()
    assert json.loads(body)["reasons"][0]["summary"] == "cookie replayed from a hosting network"
    # And a receiver rejects what was not signed as sent.
    assert not verify(SECRET, headers["Sessionwatch-Signature"], body.replace(b"alice", b"bob"))
    assert not verify(b"another-secret-0123456789abcdef", headers["Sessionwatch-Signature"], body)
    assert not verify(SECRET, headers["Sessionwatch-Signature"], body, now=time.time() + 3600)


def test_a_lift_is_delivered_as_it_is():
    # Admins' systems that mirror blocks (a WAF) need the lift as much as the block.
    lift = make_revocation(id="rev-lift", scope=Scope.SOURCE, session=None, user=None,
                           source="203.0.113.0/24", action=Action.LIFT, events=[],
                           reasons=[Reason(detector="console.manual", severity=Severity.LOW,
                                           summary="lift by alice in the console")])

    async def scenario() -> Receiver:
        receiver = await Receiver().start()
        try:
            assert await deliver_to(receiver, lift) is True
        finally:
            await receiver.stop()
        return receiver

    [(headers, body, _)] = asyncio.run(scenario()).requests
    assert headers["Sessionwatch-Revocation-Id"] == "rev-lift"
    assert verify(SECRET, headers["Sessionwatch-Signature"], body)
    assert decode_revocation(body) == lift and json.loads(body)["action"] == "lift"


@pytest.mark.parametrize("status", [503, 500, 429, 408])
def test_unavailable_receiver_is_retryable(status):
    async def scenario() -> None:
        receiver = await Receiver(statuses=[status]).start()
        try:
            with pytest.raises(RetryableError) as caught:
                await deliver_to(receiver, make_revocation(), url=receiver.url + "?token=hush")
        finally:
            await receiver.stop()
        message = str(caught.value)
        assert str(status) in message and receiver.url in message
        assert "hush" not in message, "the query string can hold a token: keep it out of errors"
        assert receiver.requests[0][2] == "/hook?token=hush", "the request itself keeps the query"

    asyncio.run(scenario())


def test_bad_request_is_rejected_with_status_and_body_excerpt():
    async def scenario() -> None:
        receiver = await Receiver(statuses=[400], body="unknown tenant " + "x" * 500).start()
        try:
            with pytest.raises(RejectedError) as caught:
                await deliver_to(receiver, make_revocation())
        finally:
            await receiver.stop()
        message = str(caught.value)
        assert "400" in message and "unknown tenant" in message
        assert "x" * 200 not in message, "only the first 200 characters of the body"
        assert SECRET.decode() not in message

    asyncio.run(scenario())


def test_connection_refused_is_retryable():
    async def scenario() -> None:
        receiver = await Receiver().start()
        await receiver.stop()  # nothing listens on the port any more
        with pytest.raises(RetryableError) as caught:
            await deliver_to(receiver, make_revocation())
        assert receiver.url in str(caught.value)

    asyncio.run(scenario())


def test_timeout_is_retryable():
    async def scenario() -> None:
        release = asyncio.Event()

        async def slow(request: web.Request) -> web.Response:
            await release.wait()  # answers only after the sink gave up
            return web.Response()

        app = web.Application()
        app.router.add_post("/hook", slow)
        runner = web.AppRunner(app)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
        sink = WebhookSink(f"http://127.0.0.1:{sock.getsockname()[1]}/hook", SECRET, timeout_s=0.2)
        await sink.start()
        try:
            with pytest.raises(RetryableError, match="timed out"):
                await sink.deliver(make_revocation(), b"")
        finally:
            release.set()
            await sink.close()
            await runner.cleanup()

    asyncio.run(scenario())


@pytest.mark.parametrize("secret", [b"short", "fifteen-chars!!", b""])
def test_short_secret_is_a_config_error_naming_the_setting(secret):
    with pytest.raises(ConfigError, match="webhook_secret") as caught:
        WebhookSink("https://hooks.example.com/sessionwatch", secret)
    assert not secret or str(secret) not in str(caught.value)


def test_secret_never_appears_in_repr():
    sink = WebhookSink("https://hooks.example.com/sessionwatch?key=abc", SECRET)
    assert SECRET.decode() not in repr(sink) and "abc" not in repr(sink)
