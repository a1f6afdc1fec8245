"""Log lines about one message name it, in the processes' JSON logs (`--log-format json`): the
worker's dead letters and decisions and the applier's retries and dead letters carry topic,
partition and offset - as the producer was told on delivery - and tenant and event id when the
message decoded. The same RocksDB worker reports its stores' size (`sessionwatch_state_*`,
streams/state_size.py). Its own broker: on the shared one, other tests' garbage in the backlog
would fill the dead-letter log's rate limit."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from factories import CURL, DIGITALOCEAN
from integration.conftest import RedisServer, eventually, make_event
from prometheus_client.parser import text_string_to_metric_families

from producers.contract import (
    DEADLETTER_TOPIC,
    EVENTS_TOPIC,
    REVOCATIONS_TOPIC,
    Action,
    Reason,
    Revocation,
    Scope,
    Severity,
    encode,
)
from producers.revocation_keys import session_key
from sessionwatch.broker import EmbeddedBroker, free_port
from sessionwatch.processes import ApplierProcess, WorkerProcess
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration
TENANT = "logs-it"


class Sent:
    """A producer that remembers where each message landed (the delivery report)."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
        self.at: dict[str, tuple[int, int]] = {}   # name -> (partition, offset)

    def send(self, name: str, topic: str, value: bytes, key: bytes) -> tuple[int, int]:
        def delivered(err: Any, msg: Any) -> None:
            assert err is None, err
            self.at[name] = (msg.partition(), msg.offset())

        self.producer.produce(topic, value, key=key, on_delivery=delivered)
        self.producer.flush(10)
        return self.at[name]


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedBroker, Path]]:
    where = tmp_path_factory.mktemp("message-logs")
    with EmbeddedBroker(log_path=where / "tansu.log") as broker:
        ensure_topics([broker.bootstrap], 2)
        yield broker, where


def json_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"{path.name}: not a JSON line: {line[:300]!r}") from None
    return out


def line_where(path: Path, match: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    return eventually(lambda: next((r for r in json_lines(path) if match(r)), None), what)


def position(record: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(record.get(k) for k in ("topic", "partition", "offset", "tenant", "event_id"))


def state_gauges(port: int) -> dict[tuple[str, str], float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, s.labels["store"]): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name in ("sessionwatch_state_entries", "sessionwatch_state_bytes")}


def test_worker_lines_name_their_message_and_its_rocksdb_state_is_measured(own):
    broker, where = own
    port = free_port("127.0.0.1")
    log = where / "worker.log"
    worker = WorkerProcess(broker.bootstrap, log, app_id="message-logs", partitions=2,
                           store="rocksdb", data_dir=str(where / "state"),
                           extra_args=["--metrics-port", str(port), "--log-format", "json"])
    sent = Sent(broker.bootstrap)
    marker = uuid.uuid4().hex[:8]
    session = secrets.token_hex(32)
    try:
        worker.wait_ready()
        garbage = sent.send("garbage", EVENTS_TOPIC, f"not json {marker}".encode(), b"garbage")
        login = make_event("session.authenticated", session=session, tenant=TENANT,
                           id=f"login-{marker}")
        replay = make_event(session=session, ip=DIGITALOCEAN, user_agent=CURL, at=30,
                            tenant=TENANT, id=f"replay-{marker}", user=login["user"])
        sent.send("login", EVENTS_TOPIC, json.dumps(login).encode(), session.encode())
        replayed = sent.send("replay", EVENTS_TOPIC, json.dumps(replay).encode(),
                             session.encode())

        dead = line_where(log, lambda r: r.get("message", "").startswith("dead-lettered")
                          and (r.get("partition"), r.get("offset")) == garbage,
                          "the garbage's dead-letter line")
        assert position(dead) == (EVENTS_TOPIC, *garbage, None, None)
        decided = line_where(log, lambda r: f"on event replay-{marker}" in r.get("message", ""),
                             "the revocation's line")
        assert position(decided) == (EVENTS_TOPIC, *replayed, TENANT, f"replay-{marker}")

        # The session and the user it logged in as are in the stores (sampled every 10 s).
        def measured() -> dict[tuple[str, str], float] | None:
            g = state_gauges(port)
            return g if all(g.get((f"sessionwatch_state_{m}", s), 0) > 0
                            for m in ("entries", "bytes") for s in ("session", "user")) else None

        gauges = eventually(measured, "the state gauges of both stores", timeout_s=40)
        assert gauges[("sessionwatch_state_entries", "session")] < 100   # one session, not junk
    finally:
        worker.stop()
    text = log.read_text(errors="replace")
    assert session not in text   # the session's hash only as a prefix
    json_lines(log)   # every line JSON


def revocation(session: str) -> Revocation:
    now = datetime.now(UTC)
    return Revocation(
        id=f"rev-{session[:12]}", tenant=TENANT, scope=Scope.SESSION, session=session,
        user="alice", source=None, action=Action.REVOKE, not_before=None, expires=None,
        reasons=[Reason(detector="session.ip_change", severity=Severity.HIGH,
                        summary="Session moved from a residential network to a datacenter")],
        event_time=now, decided_at=now, events=["e1"])


def test_applier_lines_name_what_they_retry_and_dead_letter(own):
    broker, where = own
    redis = RedisServer(where).start()
    log = where / "applier.log"
    applier = ApplierProcess(broker.bootstrap, log, redis=redis.url,
                             apply_group=f"logs-{uuid.uuid4().hex[:6]}",
                             extra_args=["--log-format", "json"])
    sent = Sent(broker.bootstrap)
    try:
        applier.wait_ready(60)
        garbage = sent.send("garbage", REVOCATIONS_TOPIC, b"not a revocation", b"garbage")
        dead = line_where(log, lambda r: "dead-lettered" in r.get("message", ""),
                          "the dead-letter line")
        assert position(dead) == (REVOCATIONS_TOPIC, *garbage, None, None)

        redis.stop()
        r = revocation(secrets.token_hex(32))
        assert r.session is not None
        at = sent.send("revocation", REVOCATIONS_TOPIC, encode(r), r.session.encode())
        retry = line_where(log, lambda x: "retrying" in x.get("message", ""), "a retry line")
        assert position(retry) == (REVOCATIONS_TOPIC, *at, TENANT, r.id)
        redis.start()
        client = redis.client()
        eventually(lambda: client.exists(session_key(TENANT, r.session)),
                   "the revocation delivered once Redis is back")
    finally:
        applier.stop()
        redis.stop()
    # Its dead letter reached the topic too (the log line is not all there is).
    from integration.conftest import read_until

    records = read_until(broker.bootstrap, [DEADLETTER_TOPIC], lambda rs: any(
        v.get("value") == "not a revocation" for _, v in rs))
    assert any(v.get("value") == "not a revocation" for _, v in records)
    json_lines(log)
