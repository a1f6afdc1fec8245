"""The producer SDK: what a web app calls to emit session events without ever blocking a request.

The caller's thread only builds, validates and encodes the event (a few microseconds) and puts the
bytes on a bounded in-memory buffer. A background thread owns the Kafka producer. When the broker
is slow or down the buffer fills up and further events are dropped, counted and logged (rate
limited) instead of stalling the app: losing telemetry beats taking the site down.
"""

from __future__ import annotations

import logging
import queue
import threading
import time as _time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from producers.contract import EVENT_SCHEMA, EVENTS_TOPIC, Event, EventType, decode_event, encode
from producers.errors import InvalidEvent
from producers.hashing import TokenHasher
from producers.kafka_options import KafkaSecurity, kafka_python_options

log = logging.getLogger("sessionwatch.sdk")

_DROP_LOG_EVERY_S = 10.0


class Producer(Protocol):
    """The part of kafka-python's KafkaProducer the sender thread uses (a seam for other clients)."""

    def send(self, topic: str, value: bytes, key: bytes) -> Any: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def close(self, timeout: float | None = None) -> None: ...


@dataclass
class ClientStats:
    """Counters an app can export as metrics. `dropped` > 0 means the buffer overflowed."""

    queued: int = 0
    sent: int = 0
    dropped: int = 0
    failed: int = 0


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


def kafka_python_producer(bootstrap: str, *, security: KafkaSecurity | None = None,
                          **overrides: Any) -> Producer:
    """A kafka-python producer tuned for small JSON events: short linger, bounded blocking.
    `security`: TLS / SASL (producers/kafka_options.py); None is plaintext."""
    # imported late: constructing the client must not need a broker
    from kafka import KafkaProducer  # type: ignore[import-untyped]

    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap.split(","),
        "client_id": "sessionwatch-sdk",
        "acks": 1,
        "enable_idempotence": False,  # acks=1 for latency; ids make redelivery harmless anyway
        "linger_ms": 5,
        "max_block_ms": 5000,
        "retries": 3,
        **kafka_python_options(security),
    }
    config.update(overrides)
    producer: Producer = KafkaProducer(**config)
    return producer


class SessionwatchClient:
    """Emit session lifecycle events to `sessionwatch.events`.

    >>> client = SessionwatchClient("127.0.0.1:9092", TokenHasher({"k1": key}))
    >>> client.authenticated(session_token=token, user="alice", ip="203.0.113.9", user_agent=ua)

    A secured broker: `security=KafkaSecurity(protocol="SASL_SSL", ...)`, or
    `KafkaSecurity.from_env(os.environ)` for the `SESSIONWATCH_KAFKA_*` variables.
    """

    def __init__(
        self,
        bootstrap: str,
        hasher: TokenHasher,
        *,
        tenant: str = "default",
        topic: str = EVENTS_TOPIC,
        buffer_size: int = 10_000,
        producer_factory: Callable[[], Producer] | None = None,
        security: KafkaSecurity | None = None,
    ) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self.hasher = hasher
        self.tenant = tenant
        self.topic = topic
        self.stats = ClientStats()
        self._factory = producer_factory or (lambda: kafka_python_producer(bootstrap, security=security))
        self._queue: queue.Queue[object] = queue.Queue(maxsize=buffer_size)
        self._last_drop_log = float("-inf")
        self._last_error_log = float("-inf")
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="sessionwatch-sdk", daemon=True)
        self._thread.start()

    # -- building events -------------------------------------------------------------------

    def emit(
        self,
        type: EventType | str,
        *,
        ip: str,
        session_token: str | bytes | None = None,
        session: str | None = None,
        previous_session_token: str | bytes | None = None,
        user: str | None = None,
        user_agent: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        time: datetime | None = None,
        id: str | None = None,
        tenant: str | None = None,
    ) -> Event:
        """Validate, encode and queue one event; returns it. Never blocks on the broker.

        Pass the raw `session_token` (hashed here, never sent) or an already hashed `session`.
        On login or rotation, `previous_session_token` (the token this one replaces) is hashed
        into `attrs.previous_session`, which the fixation detector relies on.
        Raises `InvalidEvent` for a contract violation: that is a bug in the calling app.
        """
        if session_token is not None:
            session = self.hasher.hash(session_token)
        extras = dict(attrs) if attrs else {}
        if previous_session_token is not None:
            extras["previous_session"] = self.hasher.hash(previous_session_token)
        if session is not None:
            extras.setdefault("hash_key_id", self.hasher.current_key_id)
        try:
            event_type = EventType(type)
        except ValueError:
            raise InvalidEvent("invalid", f"`$.type`: {type!r} is not an event type") from None
        event = Event(
            schema=EVENT_SCHEMA,
            id=id or str(uuid.uuid4()),
            type=event_type,
            time=time or datetime.now(UTC),
            tenant=tenant or self.tenant,
            session=session,
            user=user,
            ip=ip,
            user_agent=user_agent,
            attrs=extras,
        )
        payload = encode(event)
        decode_event(payload)  # the worker's own validation, so a bad event fails in the app
        self._enqueue(event.key.encode(), payload)
        return event

    def created(self, **kw: Any) -> Event:
        return self.emit(EventType.CREATED, **kw)

    def authenticated(self, **kw: Any) -> Event:
        return self.emit(EventType.AUTHENTICATED, **kw)

    def activity(self, **kw: Any) -> Event:
        return self.emit(EventType.ACTIVITY, **kw)

    def refreshed(self, **kw: Any) -> Event:
        """Token rotation: pass `previous_session_token` too."""
        return self.emit(EventType.REFRESHED, **kw)

    def logout(self, **kw: Any) -> Event:
        return self.emit(EventType.LOGOUT, **kw)

    def expired(self, **kw: Any) -> Event:
        return self.emit(EventType.EXPIRED, **kw)

    def token_rejected(self, **kw: Any) -> Event:
        return self.emit(EventType.TOKEN_REJECTED, **kw)

    def auth_failed(self, **kw: Any) -> Event:
        return self.emit(EventType.AUTH_FAILED, **kw)

    def credential_changed(self, **kw: Any) -> Event:
        return self.emit(EventType.CREDENTIAL_CHANGED, **kw)

    # -- delivery ---------------------------------------------------------------------------

    def _enqueue(self, key: bytes, payload: bytes) -> None:
        if self._closed:
            raise RuntimeError("SessionwatchClient is closed")
        try:
            self._queue.put_nowait((key, payload))
            self.stats.queued += 1
        except queue.Full:
            self.stats.dropped += 1
            now = _time.monotonic()
            if now - self._last_drop_log >= _DROP_LOG_EVERY_S:
                self._last_drop_log = now
                log.warning(
                    "sessionwatch: event buffer full (%d), %d events dropped so far; "
                    "is the broker reachable?",
                    self._queue.maxsize,
                    self.stats.dropped,
                )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event was handed to the broker; False if `timeout` passed."""
        marker = _Flush()
        deadline = _time.monotonic() + timeout
        while True:
            try:
                self._queue.put(marker, timeout=0.05)
                break
            except queue.Full:
                if _time.monotonic() >= deadline:
                    return False
        return marker.done.wait(max(0.0, deadline - _time.monotonic()))

    def close(self, timeout: float = 10.0) -> None:
        """Flush what can be flushed within `timeout`, then stop the sender thread."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def __enter__(self) -> SessionwatchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the sender thread ------------------------------------------------------------------

    def _run(self) -> None:
        producer: Producer | None = None
        backoff = 0.5
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            while producer is None:
                try:
                    producer = self._factory()
                    backoff = 0.5
                except Exception as exc:  # broker down at start: keep the app running, retry
                    log.warning("sessionwatch: cannot reach the broker yet (%s); retrying", exc)
                    if self._drain_on_stop(backoff):
                        return
                    backoff = min(backoff * 2, 10.0)
            if isinstance(item, _Flush):
                try:
                    producer.flush(timeout=10.0)
                except Exception as exc:
                    log.warning("sessionwatch: flush failed: %s", exc)
                item.done.set()
                continue
            key, payload = cast(tuple[bytes, bytes], item)
            try:
                future = producer.send(self.topic, value=payload, key=key)
                future.add_callback(self._on_sent)
                future.add_errback(self._on_error)
            except Exception as exc:
                self._on_error(exc)
        if producer is not None:
            try:
                producer.flush(timeout=5.0)
                producer.close(timeout=5.0)
            except Exception as exc:
                log.warning("sessionwatch: closing the producer failed: %s", exc)

    def _drain_on_stop(self, wait: float) -> bool:
        """Sleep `wait` seconds; True if close() asked the thread to stop meanwhile."""
        _time.sleep(wait)
        return self._closed

    def _on_sent(self, _metadata: object) -> None:
        self.stats.sent += 1

    def _on_error(self, exc: BaseException) -> None:
        self.stats.failed += 1
        now = _time.monotonic()
        if now - self._last_error_log >= _DROP_LOG_EVERY_S:  # a broker outage is not a log flood
            self._last_error_log = now
            log.warning("sessionwatch: event not delivered (%s); %d failed so far",
                        type(exc).__name__, self.stats.failed)
