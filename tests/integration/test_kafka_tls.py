"""Every process on a TLS-secured broker by settings alone: Tansu behind stunnel (tests/integration/
tls.py), certificates verified. A hijack revoked end to end over TLS (SDK -> worker -> applier ->
Redis), a wrong CA refused within seconds naming the setting, mTLS with and without a client
certificate."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from factories import CHROME, COMCAST, CURL, DIGITALOCEAN
from integration.tls import Pki, StunnelBroker, make_pki

# tests/integration is on sys.path (rootdir conftest, no __init__.py): test_apply's poll helper.
from test_apply import wait_for

from producers.client import SessionwatchClient
from producers.contract import EVENTS_TOPIC, REVOCATIONS_TOPIC, decode_revocation
from producers.hashing import TokenHasher
from producers.kafka_options import (
    CAFILE_VAR,
    CERTFILE_VAR,
    KafkaConnectError,
    aiokafka_options,
    librdkafka_options,
    preflight,
)
from producers.revocation_keys import session_key
from sessionwatch.processes import ApplierProcess, WorkerProcess
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration
TENANT = "tls-it"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StunnelBroker]:
    with StunnelBroker(tmp_path_factory.mktemp("tls-broker"), pki) as broker:
        yield broker


@pytest.fixture(scope="module")
def mtls_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StunnelBroker]:
    with StunnelBroker(tmp_path_factory.mktemp("mtls-broker"), pki, mtls=True) as broker:
        yield broker


def read_revocation(bootstrap: str, security, session: str, timeout_s: float = 30.0) -> dict | None:
    """sessionwatch.revocations over TLS with librdkafka (the options the worker uses)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, **librdkafka_options(security),
                         "group.id": f"tls-it-{uuid.uuid4()}", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 10})
    try:
        metadata = consumer.list_topics(REVOCATIONS_TOPIC, timeout=10)
        consumer.assign([TopicPartition(REVOCATIONS_TOPIC, p, OFFSET_BEGINNING)
                         for p in metadata.topics[REVOCATIONS_TOPIC].partitions])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                value = json.loads(msg.value())
                if value.get("session") == session:
                    return value
        return None
    finally:
        consumer.close()


def test_hijack_revoked_end_to_end_over_tls(tls_broker, pki, redis_service, tmp_path):
    security = pki.security()
    worker = WorkerProcess(tls_broker.bootstrap, tmp_path / "worker.log", app_id="tls-it",
                           partitions=2, data_dir=str(tmp_path / "state"), **pki.env())
    applier = None
    client = None
    try:
        worker.wait_ready(60)   # it created the topics over TLS (kafka-python admin) first
        applier = ApplierProcess(tls_broker.bootstrap, tmp_path / "applier.log",
                                 apply_group=f"tls-it-{uuid.uuid4().hex[:6]}",
                                 redis=redis_service.url, **pki.env())
        client = SessionwatchClient(tls_broker.bootstrap, TokenHasher({"k1": secrets.token_bytes(32)}),
                                    tenant=TENANT, security=security)
        token = secrets.token_urlsafe(32)
        login = client.authenticated(session_token=token, user="alice", ip=COMCAST,
                                     user_agent=CHROME)
        client.activity(session_token=token, user="alice", ip=COMCAST, user_agent=CHROME)
        # the cookie replayed from a hosting provider with another client
        client.activity(session_token=token, user="alice", ip=DIGITALOCEAN, user_agent=CURL)
        assert client.flush(15), "the SDK did not deliver over TLS"
        assert client.stats.sent == 3 and client.stats.failed == 0

        revocation = read_revocation(tls_broker.bootstrap, security, login.session)
        assert revocation is not None, f"no revocation over TLS:\n{worker.tail()}"
        decode_revocation(json.dumps(revocation))
        assert revocation["action"] == "revoke" and revocation["tenant"] == TENANT
        assert {"session.ua_change", "session.ip_change"} <= {r["detector"]
                                                              for r in revocation["reasons"]}

        applier.wait_ready(60)
        redis = redis_service.client()
        wait_for(lambda: redis.exists(session_key(TENANT, login.session)), 30,
                 "the applier to write the revocation to Redis over TLS")
    finally:
        if client is not None:
            client.close(2)
        for proc in (applier, worker):
            if proc is not None:
                proc.stop()


def _run(command: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONWATCH_")}
    full.update({f"SESSIONWATCH_{k.upper()}": v for k, v in env.items()})
    return subprocess.Popen([sys.executable, "-m", "sessionwatch", command], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_wrong_ca_stops_every_process_within_seconds(tls_broker, pki, redis_service, tmp_path):
    base = {"bootstrap": tls_broker.bootstrap, **pki.env(cafile=pki.wrong_ca)}
    started = time.monotonic()
    procs = {"worker": _run("worker", {**base, "data_dir": str(tmp_path / "state")}),
             "apply": _run("apply", {**base, "redis": redis_service.url}),
             "archive": _run("archive", {**base, "chdb_dir": str(tmp_path / "chdb")})}
    for name, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=max(0.1, 10 - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            for p in procs.values():
                p.kill()
            pytest.fail(f"sessionwatch {name} still running 10 s after start with a wrong CA")
        text = out.decode(errors="replace")
        assert proc.returncode == 2, f"{name}: exit {proc.returncode}\n{text}"
        assert CAFILE_VAR in text and "not trusted" in text, f"{name}:\n{text}"
    assert time.monotonic() - started < 10


def test_mtls_needs_the_client_certificate(mtls_broker, pki, tmp_path):
    # Without a certificate: refused before any client starts, naming the setting.
    with pytest.raises(KafkaConnectError, match=CERTFILE_VAR):
        preflight(mtls_broker.bootstrap, pki.security())
    proc = _run("worker", {"bootstrap": mtls_broker.bootstrap, **pki.env(),
                           "data_dir": str(tmp_path / "state")})
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 2 and CERTFILE_VAR in out.decode(), out.decode()

    # With it: the admin creates the topics, the SDK sends, an aiokafka consumer reads it back.
    security = pki.security(mtls=True)
    preflight(mtls_broker.bootstrap, security)
    ensure_topics([mtls_broker.bootstrap], 1, security=security)
    with SessionwatchClient(mtls_broker.bootstrap, TokenHasher({"k1": secrets.token_bytes(32)}),
                            tenant=TENANT, security=security) as client:
        sent = client.activity(session_token="t" * 32, ip=COMCAST, user_agent=CHROME)
        assert client.flush(15) and client.stats.sent == 1

    async def read() -> list[bytes]:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(EVENTS_TOPIC, bootstrap_servers=mtls_broker.bootstrap,
                                    auto_offset_reset="earliest", **aiokafka_options(security))
        await consumer.start()
        try:
            deadline = time.monotonic() + 20
            values: list[bytes] = []
            while time.monotonic() < deadline and not any(sent.id.encode() in v for v in values):
                batches = await consumer.getmany(timeout_ms=500)
                values += [m.value for ms in batches.values() for m in ms]
            return values
        finally:
            await consumer.stop()

    assert any(sent.id.encode() in v for v in asyncio.run(read()))


def test_preflight_names_what_to_fix(tls_broker, pki):
    with pytest.raises(KafkaConnectError, match="subjectAltName"):
        preflight(f"localhost:{tls_broker.tls_port}", pki.security())   # the SAN is 127.0.0.1
    with pytest.raises(KafkaConnectError, match="SESSIONWATCH_BOOTSTRAP"):
        preflight("127.0.0.1:1", pki.security())
    # one broker of the list down is not fatal: the clients use the others
    preflight(["127.0.0.1:1", tls_broker.bootstrap], pki.security())
