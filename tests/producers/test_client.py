"""SessionwatchClient without a broker.

These tests are about what happens in the app's process: validation in the caller's thread,
token hashing, message keys, buffering, drop accounting, flush and close. They use a small
in-test fake producer (same `send`/`flush`/`close` surface as kafka-python's KafkaProducer)
because a real broker would make buffer-full and broker-down cases slow and nondeterministic,
and would hide what the client itself does. The real-broker path (kafka-python against Tansu)
is covered by tests/integration.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from producers.client import SessionwatchClient
from producers.contract import EVENTS_TOPIC, EventType, decode_event
from producers.errors import InvalidEvent
from producers.hashing import TokenHasher, mint_session_token

HASHER = TokenHasher({"k1": b"k" * 32})
IP = "203.0.113.9"
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


@dataclass(frozen=True)
class Sent:
    topic: str
    key: bytes
    value: bytes

    @property
    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.value)
        return doc


class FakeFuture:
    """kafka-python's FutureRecordMetadata, resolved at once."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error

    def add_callback(self, fn: Any) -> FakeFuture:
        if self.error is None:
            fn(object())
        return self

    def add_errback(self, fn: Any) -> FakeFuture:
        if self.error is not None:
            fn(self.error)
        return self


class FakeProducer:
    def __init__(self, *, fail_sends: bool = False, raise_on_send: bool = False) -> None:
        self.sent: list[Sent] = []
        self.flushes = 0
        self.closes = 0
        self.fail_sends = fail_sends
        self.raise_on_send = raise_on_send

    def send(self, topic: str, value: bytes, key: bytes) -> FakeFuture:
        if self.raise_on_send:
            raise BufferError("local queue full")
        self.sent.append(Sent(topic, key, value))
        return FakeFuture(TimeoutError("no ack") if self.fail_sends else None)

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1

    def close(self, timeout: float | None = None) -> None:
        self.closes += 1


def broker_down() -> FakeProducer:
    raise ConnectionError("NoBrokersAvailable")


@pytest.fixture
def fake() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def client(fake: FakeProducer):
    c = SessionwatchClient("unused:9092", HASHER, producer_factory=lambda: fake)
    yield c
    c.close(timeout=2)


def delivered(client: SessionwatchClient, fake: FakeProducer) -> list[Sent]:
    assert client.flush(timeout=5) is True
    return fake.sent


# -- validation happens in the caller -----------------------------------------------------------


def test_bad_ip_raises_invalid_event_in_the_caller(client, fake):
    with pytest.raises(InvalidEvent) as info:
        client.activity(session_token="t" * 32, ip="999.1.1.1")
    assert info.value.code == "invalid" and "$.ip" in info.value.detail
    assert client.stats.queued == 0
    assert delivered(client, fake) == []


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("activity", {"ip": IP}),  # no session
        ("authenticated", {"session_token": "t" * 32, "ip": IP}),  # no user
        ("activity", {"session_token": "t" * 32, "ip": IP, "time": datetime(2026, 3, 2)}),
        ("activity", {"session_token": "t" * 32, "ip": IP, "id": "x" * 129}),
        ("activity", {"session_token": "t" * 32, "ip": IP, "user": ""}),
        ("activity", {"session_token": "t" * 32, "ip": IP, "user_agent": "a" * 1025}),
        ("credential_changed", {"ip": IP}),  # no user
    ],
    ids=["no-session", "no-user", "naive-time", "long-id", "empty-user", "long-ua",
         "credential-no-user"],
)
def test_contract_violations_raise_invalid_event(client, fake, method, kwargs):
    with pytest.raises(InvalidEvent):
        getattr(client, method)(**kwargs)
    assert client.stats.queued == 0
    assert delivered(client, fake) == []


def test_unknown_type_raises_invalid_event(client):
    with pytest.raises(InvalidEvent):
        client.emit("session.hijacked", session_token="t" * 32, ip=IP)


# -- what reaches the producer --------------------------------------------------------------------


def test_raw_token_never_leaves_the_app_its_hmac_does(client, fake):
    token = mint_session_token()
    event = client.authenticated(session_token=token, user="alice", ip=IP, user_agent=UA)
    [sent] = delivered(client, fake)
    digest = HASHER.hash(token)
    assert token.encode() not in sent.value and token.encode() not in sent.key
    assert digest.encode() in sent.value
    assert sent.doc["session"] == digest == event.session
    assert sent.doc["attrs"]["hash_key_id"] == "k1"
    assert sent.topic == EVENTS_TOPIC
    assert decode_event(sent.value) == event


def test_payload_is_a_valid_v1_event(client, fake):
    client.activity(session_token="t" * 32, ip="2001:db8::1", user_agent=UA,
                    attrs={"path": "/account"}, tenant="acme")
    [sent] = delivered(client, fake)
    event = decode_event(sent.value)
    assert event.schema == "sessionwatch.event/1"
    assert event.type is EventType.ACTIVITY and event.tenant == "acme"
    assert event.time.tzinfo is not None
    assert event.attrs == {"path": "/account", "hash_key_id": "k1"}


def test_message_key_is_session_else_user_else_ip(client, fake):
    token = "t" * 32
    client.activity(session_token=token, user="alice", ip=IP)
    client.activity(session="f" * 64, ip=IP)  # an already hashed session
    client.auth_failed(user="bob", ip=IP)
    client.auth_failed(ip=IP)
    client.credential_changed(user="carol", ip=IP)
    keys = [s.key for s in delivered(client, fake)]
    assert keys == [HASHER.hash(token).encode(), b"f" * 64, b"bob", IP.encode(), b"carol"]


def test_refreshed_hashes_the_previous_token_into_attrs(client, fake):
    old, new = mint_session_token(), mint_session_token()
    event = client.refreshed(session_token=new, previous_session_token=old, ip=IP,
                             attrs={"reason": "rotation"})
    [sent] = delivered(client, fake)
    assert event.type is EventType.REFRESHED
    assert sent.doc["session"] == HASHER.hash(new)
    assert sent.doc["attrs"]["previous_session"] == HASHER.hash(old)
    assert sent.doc["attrs"]["reason"] == "rotation"
    for raw in (old, new):
        assert raw.encode() not in sent.value


def test_login_that_rotates_the_token_carries_the_previous_hash(client, fake):
    anonymous, logged_in = mint_session_token(), mint_session_token()
    client.authenticated(session_token=logged_in, previous_session_token=anonymous,
                         user="alice", ip=IP)
    [sent] = delivered(client, fake)
    assert sent.doc["attrs"]["previous_session"] == HASHER.hash(anonymous)
    assert anonymous.encode() not in sent.value


def test_events_arrive_in_order_with_the_given_ids_and_times(client, fake):
    when = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    for i in range(50):
        client.activity(session_token="t" * 32, ip=IP, id=f"e-{i}", time=when)
    sent = delivered(client, fake)
    assert [s.doc["id"] for s in sent] == [f"e-{i}" for i in range(50)]
    assert {s.doc["time"] for s in sent} == {"2026-03-02T09:00:00Z"}


# -- buffering, flush, close -------------------------------------------------------------------


def test_flush_returns_true_once_the_producer_got_everything(client, fake):
    for _ in range(200):
        client.activity(session_token="t" * 32, ip=IP)
    assert client.flush(timeout=5) is True
    assert len(fake.sent) == 200 and fake.flushes >= 1
    assert client.stats.queued == client.stats.sent == 200
    assert client.stats.dropped == client.stats.failed == 0


def test_full_buffer_drops_and_counts_without_blocking(caplog):
    """Broker down: the sender thread cannot build a producer, so the buffer fills up."""
    client = SessionwatchClient("unused:9092", HASHER, buffer_size=10,
                                producer_factory=broker_down)
    try:
        session = HASHER.hash("t" * 32)
        client.activity(session=session, ip=IP)  # warm-up; the sender thread takes it
        with caplog.at_level(logging.WARNING, logger="sessionwatch.sdk"):
            slowest = 0.0
            for _ in range(1000):
                started = time.perf_counter()
                client.activity(session=session, ip=IP)
                slowest = max(slowest, time.perf_counter() - started)
        # Not a speed figure (a loaded CI machine took 116 ms for all 1000): a blocking emit
        # would wait on the full queue for good, so any single call near a second means it blocked.
        assert slowest < 0.5, f"an emit took {slowest * 1000:.0f} ms with the buffer full"
        stats = client.stats
        assert stats.queued + stats.dropped == 1001
        assert stats.queued <= 10 + 1 and stats.dropped >= 1001 - 11
        assert stats.sent == 0
        full = [r for r in caplog.records if "buffer full" in r.getMessage()]
        # One warning per 10 s, not one per drop. (The limiter starts at monotonic() == 0, so
        # on a host up for less than 10 s the first warning is suppressed too.)
        assert len(full) == (1 if time.monotonic() >= 10 else 0), "the warning is rate limited"
        assert client.flush(timeout=0.1) is False
    finally:
        started = time.perf_counter()
        client.close(timeout=0.2)
        assert time.perf_counter() - started < 2, "close must not hang on a dead broker"


def test_sender_retries_until_the_broker_is_reachable(fake):
    attempts = []

    def flaky() -> FakeProducer:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise ConnectionError("NoBrokersAvailable")
        return fake

    with SessionwatchClient("unused:9092", HASHER, producer_factory=flaky) as client:
        client.activity(session_token="t" * 32, ip=IP, id="first")
        client.activity(session_token="t" * 32, ip=IP, id="second")
        assert client.flush(timeout=5) is True
    assert len(attempts) == 2
    assert [s.doc["id"] for s in fake.sent] == ["first", "second"]


@pytest.mark.parametrize("mode", ["errback", "send-raises"])
def test_delivery_failures_are_counted_not_raised(mode):
    fake = FakeProducer(fail_sends=mode == "errback", raise_on_send=mode == "send-raises")
    with SessionwatchClient("unused:9092", HASHER, producer_factory=lambda: fake) as client:
        for _ in range(5):
            client.activity(session_token="t" * 32, ip=IP)
        assert client.flush(timeout=5) is True
        assert client.stats.failed == 5 and client.stats.sent == 0


def test_close_is_idempotent_and_closes_the_producer_once(fake):
    client = SessionwatchClient("unused:9092", HASHER, producer_factory=lambda: fake)
    client.activity(session_token="t" * 32, ip=IP)
    client.close(timeout=2)
    client.close(timeout=2)
    assert fake.closes == 1
    assert len(fake.sent) == 1, "close flushes what was queued"
    assert not client._thread.is_alive()


def test_emit_after_close_raises(fake):
    client = SessionwatchClient("unused:9092", HASHER, producer_factory=lambda: fake)
    client.close(timeout=2)
    with pytest.raises(RuntimeError, match="closed"):
        client.activity(session_token="t" * 32, ip=IP)
    assert client.stats.queued == 0


def test_context_manager_closes(fake):
    with SessionwatchClient("unused:9092", HASHER, producer_factory=lambda: fake) as client:
        client.logout(session_token="t" * 32, ip=IP)
    assert fake.closes == 1 and len(fake.sent) == 1
    with pytest.raises(RuntimeError):
        client.expired(session_token="t" * 32, ip=IP)


def test_constructing_needs_no_broker():
    """The factory runs in the sender thread, never in the constructor (app start-up)."""
    calls = []

    def factory() -> FakeProducer:
        calls.append(threading.current_thread().name)
        return FakeProducer()

    client = SessionwatchClient("unused:9092", HASHER, producer_factory=factory)
    try:
        assert calls == []
        client.activity(session_token="t" * 32, ip=IP)
        assert client.flush(timeout=5)
        assert calls == ["sessionwatch-sdk"]
    finally:
        client.close(timeout=2)


def test_buffer_size_must_be_positive():
    with pytest.raises(ValueError):
        SessionwatchClient("unused:9092", HASHER, buffer_size=0, producer_factory=FakeProducer)
