"""Graceful shutdown of the four long-running commands, as processes (`python -m sessionwatch ...`):
the first SIGTERM finishes the message in hand, confirms its outputs, commits and leaves the
group; a second one exits at once. Committed offsets are read with `Consumer.committed()` and
compared with the true log end (a fetch's high watermark, streams/log_end.py).

Every process is started when the module starts (they take seconds to import and join a group;
started one by one they would take minutes); each test then waits for its own. Each group of
processes has its own embedded broker: what one test sends or freezes touches no other."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import pytest
from confluent_kafka import Producer
from factories import CHROME, COMCAST, CURL, DIGITALOCEAN, make_event
from integration.conftest import RedisServer, read_until

from producers.client import SessionwatchClient
from producers.contract import (
    EVENTS_TOPIC,
    FINDINGS_TOPIC,
    REVOCATIONS_TOPIC,
    Action,
    Reason,
    Revocation,
    Scope,
    Severity,
    encode,
)
from producers.hashing import TokenHasher
from producers.revocation_keys import session_key
from sessionwatch.broker import EmbeddedBroker, free_port
from sessionwatch.processes import (
    ApplierProcess,
    ArchiverProcess,
    ChildProcess,
    ConsoleProcess,
    WorkerProcess,
)
from streams.log_end import group_positions, wait_caught_up

pytestmark = pytest.mark.integration

ARCHIVE_TOPICS = [EVENTS_TOPIC, FINDINGS_TOPIC, REVOCATIONS_TOPIC]
# A stop with nothing left to wait for ends well within this (group leave, clients closed).
STOP_BOUND_S = 15.0
# How long a process must still be running after the first SIGTERM when its graceful path is
# waiting for something that does not come; and how soon the second SIGTERM must end it.
STILL_STOPPING_S = 2.0
AT_ONCE_S = 3.0
P = TypeVar("P", bound=ChildProcess)
CONSOLE_TOKEN = "console-token-" + secrets.token_hex(16)
# A checkpoint every 10 minutes, not every second: within the module's minute the workers hold
# events they processed and have not committed, which only the shutdown's checkpoint commits.
WORKER_SETTINGS = {"commit_interval_s": "600"}


@dataclass
class Stack:
    brokers: dict[str, EmbeddedBroker]
    archiver: ArchiverProcess
    archiver_killed: ArchiverProcess
    applier: ApplierProcess
    applier_outage: ApplierProcess
    outage_redis: RedisServer
    console: ConsoleProcess
    console_killed: ConsoleProcess
    console_ports: dict[str, int]
    worker: WorkerProcess
    worker_killed: WorkerProcess
    groups: dict[str, str]   # log file stem -> consumer group (app id for a worker)

    def bootstrap(self, name: str) -> str:
        return self.brokers[name].bootstrap

    def group(self, proc: ChildProcess) -> str:
        return self.groups[proc.log_path.stem]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, clickhouse_server,
          redis_service) -> Iterator[Stack]:
    where = tmp_path_factory.mktemp("shutdown")
    groups = {name: f"it-shutdown-{name}-{uuid.uuid4().hex[:6]}" for name in (
        "archiver", "archiver-killed", "applier", "applier-outage", "worker", "worker-killed")}
    ports = {"console": free_port(), "console-killed": free_port()}
    procs: list[ChildProcess] = []
    with contextlib.ExitStack() as cleanup:
        brokers = {name: cleanup.enter_context(EmbeddedBroker(log_path=where / f"tansu-{name}.log"))
                   for name in ("archive", "apply", "apply-outage", "worker", "worker-frozen")}
        outage_redis = RedisServer(where).start()
        cleanup.callback(outage_redis.stop)
        # Killed, not stopped, at the end: a SIGTERM would let a test's leftover wait its bound.
        cleanup.callback(lambda: [p.kill() for p in procs])

        def started(proc: P) -> P:
            procs.append(proc)
            return proc

        def archiver(name: str) -> ArchiverProcess:
            return started(ArchiverProcess(
                brokers["archive"].bootstrap, where / f"{name}.log", clickhouse=clickhouse_server.url,
                archive_group=groups[name]))

        def applier(name: str, broker: str, redis: str) -> ApplierProcess:
            return started(ApplierProcess(brokers[broker].bootstrap, where / f"{name}.log",
                                          redis=redis, apply_group=groups[name]))

        def console(name: str) -> ConsoleProcess:
            return started(ConsoleProcess(
                where / f"{name}.log", listen=f"127.0.0.1:{ports[name]}",
                chdb_dir=str(where / f"{name}-archive"),
                env={"SESSIONWATCH_CONSOLE_TOKEN": CONSOLE_TOKEN}))

        def worker(name: str, broker: str) -> WorkerProcess:
            return started(WorkerProcess(
                brokers[broker].bootstrap, where / f"{name}.log", app_id=groups[name],
                partitions=2, data_dir=str(where / f"{name}-state"), **WORKER_SETTINGS))

        # The workers first: they take longest to be ready, and their tests come last.
        yield Stack(brokers=brokers,
                    worker=worker("worker", "worker"),
                    worker_killed=worker("worker-killed", "worker-frozen"),
                    archiver=archiver("archiver"), archiver_killed=archiver("archiver-killed"),
                    applier=applier("applier", "apply", redis_service.url),
                    applier_outage=applier("applier-outage", "apply-outage", outage_redis.url),
                    outage_redis=outage_redis,
                    console=console("console"), console_killed=console("console-killed"),
                    console_ports=ports, groups=groups)


def term(proc: ChildProcess) -> None:
    proc.proc.send_signal(signal.SIGTERM)


def exits(proc: ChildProcess, timeout_s: float) -> int:
    try:
        return proc.proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the {proc.name} did not exit within {timeout_s:.0f} s:\n"
                             f"{proc.tail()}") from None


def still_running_after(proc: ChildProcess, seconds: float) -> None:
    """The process has not exited `seconds` after the first SIGTERM: it is still finishing."""
    try:
        code = proc.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        return
    raise AssertionError(f"the {proc.name} exited ({code}) {seconds:.0f} s into a graceful stop "
                         f"that had work in hand:\n{proc.tail()}")


def wait_logged(proc: ChildProcess, needle: bytes, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while needle not in proc.log_path.read_bytes():
        assert proc.proc.poll() is None, f"the {proc.name} exited:\n{proc.tail()}"
        assert time.monotonic() < deadline, f"{needle!r} not logged:\n{proc.tail()}"
        time.sleep(0.05)


def committed_at_log_end(bootstrap: str, group: str, topics: list[str]) -> dict:
    """Partitions (with data) whose committed offset is not the log end: {} when all are."""
    positions = group_positions(bootstrap, group, topics)
    assert any(end > 0 for _, end in positions.values()), "nothing was sent"
    return {tp: (committed, end) for tp, (committed, end) in positions.items()
            if end > 0 and committed != end}


# --- archive -----------------------------------------------------------------------------------

def archive_events(tenant: str, start: int, n: int) -> list[dict]:
    return [make_event("session.activity", session=f"s{i % 7}", user=f"u{i % 3}", ip=COMCAST,
                       at=i, tenant=tenant, id=f"{tenant}-e{i}") for i in range(start, start + n)]


def send_events(bootstrap: str, events: list[dict]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    for event in events:
        producer.produce(EVENTS_TOPIC, json.dumps(event).encode(), key=event["session"].encode())
    assert producer.flush(10) == 0


def archived_ids(clickhouse_url: str, tenant: str) -> int:
    from storage.clickhouse import ServerBackend

    backend = ServerBackend(clickhouse_url)
    try:
        df = backend.query("SELECT uniqExact(id) AS ids FROM sessionwatch.events "
                           "WHERE tenant = %(tenant)s", {"tenant": tenant})
        return int(df["ids"][0])
    finally:
        backend.close()


def test_archive_first_sigterm_writes_the_batch_in_hand_and_a_second_exits_at_once(
        stack: Stack, clickhouse_server):
    """Both archivers hold a batch ClickHouse cannot take. After one SIGTERM each keeps
    retrying it; a second SIGTERM ends one at once (143); the other, once ClickHouse is back,
    writes the batch, commits up to the log end and exits 0."""
    graceful, killed = stack.archiver, stack.archiver_killed
    bootstrap = stack.bootstrap("archive")
    graceful.wait_ready(90)
    killed.wait_ready(90)
    tenant = f"shutdown-{uuid.uuid4().hex[:8]}"
    send_events(bootstrap, archive_events(tenant, 0, 40))
    for proc in (graceful, killed):
        assert wait_caught_up(bootstrap, stack.group(proc),
                              ARCHIVE_TOPICS, timeout_s=30), proc.tail()
    assert archived_ids(clickhouse_server.url, tenant) == 40

    clickhouse_server.stop()
    try:
        send_events(bootstrap, archive_events(tenant, 40, 60))
        for proc in (graceful, killed):
            wait_logged(proc, b"insert into events: unavailable")
            term(proc)
        still_running_after(graceful, STILL_STOPPING_S)
        assert killed.proc.poll() is None, killed.tail()
        term(killed)
        assert exits(killed, AT_ONCE_S) == 128 + signal.SIGTERM
        assert b"SIGTERM again; exiting at once" in killed.log_path.read_bytes()
        assert graceful.proc.poll() is None, graceful.tail()  # still waiting for ClickHouse
    finally:
        clickhouse_server.start()

    assert exits(graceful, 30) == 0
    assert committed_at_log_end(bootstrap, stack.group(graceful),
                                ARCHIVE_TOPICS) == {}
    # The killed one never wrote the second batch: every id of it is the graceful one's.
    assert archived_ids(clickhouse_server.url, tenant) == 100


# --- apply -------------------------------------------------------------------------------------

def revocation(tenant: str) -> Revocation:
    now = datetime.now(UTC)
    session = f"sess-{uuid.uuid4().hex[:10]}"
    return Revocation(
        id=f"rev-{session}", tenant=tenant, scope=Scope.SESSION, session=session, user="alice",
        source=None, action=Action.REVOKE, not_before=None, expires=None,
        reasons=[Reason(detector="session.ip_change", severity=Severity.HIGH,
                        summary="Session moved from a residential network to a datacenter")],
        event_time=now, decided_at=now, events=["e1"])


def publish(bootstrap: str, revocations: list[Revocation]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    for r in revocations:
        producer.produce(REVOCATIONS_TOPIC, encode(r), key=(r.session or "").encode())
    assert producer.flush(10) == 0


def applied(client, revocations: list[Revocation], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(client.exists(session_key(r.tenant, r.session or "")) for r in revocations):
        assert time.monotonic() < deadline, "the revocations were not applied"
        time.sleep(0.05)


def test_apply_first_sigterm_exits_0_with_what_it_applied_committed(stack: Stack, redis_service):
    proc, bootstrap = stack.applier, stack.bootstrap("apply")
    proc.wait_ready(90)
    revocations = [revocation("shutdown-apply") for _ in range(5)]
    publish(bootstrap, revocations)
    client = redis_service.client()
    applied(client, revocations)
    client.close()
    term(proc)
    assert exits(proc, STOP_BOUND_S) == 0
    assert committed_at_log_end(bootstrap, stack.group(proc) + "-redis", [REVOCATIONS_TOPIC]) == {}


def test_apply_first_sigterm_delivers_the_revocation_in_hand(stack: Stack):
    """Redis is down while a revocation is in hand: the first SIGTERM keeps retrying it; once
    Redis is back it is delivered, committed, and the applier exits 0."""
    proc, bootstrap, server = stack.applier_outage, stack.bootstrap("apply-outage"), stack.outage_redis
    proc.wait_ready(90)
    before = revocation("shutdown-apply")
    publish(bootstrap, [before])
    client = server.client()
    applied(client, [before])
    client.close()
    server.stop()
    try:
        in_hand = revocation("shutdown-apply")
        publish(bootstrap, [in_hand])
        wait_logged(proc, b"apply redis: unavailable")
        term(proc)
        still_running_after(proc, STILL_STOPPING_S)
    finally:
        server.start()
    assert exits(proc, 30) == 0
    client = server.client()
    applied(client, [in_hand], timeout_s=1)
    client.close()
    assert committed_at_log_end(bootstrap, stack.group(proc) + "-redis", [REVOCATIONS_TOPIC]) == {}


# --- console -----------------------------------------------------------------------------------

def test_console_first_sigterm_ends_open_live_streams_and_exits_0(stack: Stack):
    """An open live stream (server-sent events) does not hold the stop up: it ends, the page's
    EventSource reconnects elsewhere."""
    proc = stack.console
    proc.wait_ready(90)
    conn = http.client.HTTPConnection("127.0.0.1", stack.console_ports["console"], timeout=10)
    conn.request("GET", "/live/stream", headers={"Authorization": f"Bearer {CONSOLE_TOKEN}"})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("content-type", "").startswith(
        "text/event-stream")
    assert response.readline().startswith(b"retry:")   # the stream is open
    term(proc)
    response.read()   # to the stream's end; the 10 s socket timeout raises if it never ends
    conn.close()
    assert exits(proc, STOP_BOUND_S) == 0, proc.tail()
    assert b"console: stopping (SIGTERM); send it again to exit at once" in \
        proc.log_path.read_bytes()


def test_console_second_sigterm_exits_at_once_while_a_request_is_in_flight(stack: Stack):
    """A client that sent a form's headers and not its body keeps a request in flight, which a
    graceful stop waits for; the second SIGTERM does not."""
    proc = stack.console_killed
    proc.wait_ready(90)
    client = socket.create_connection(("127.0.0.1", stack.console_ports["console-killed"]), 10)
    try:
        client.sendall(b"POST /signin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Content-Type: application/x-www-form-urlencoded\r\n"
                       b"Content-Length: 64\r\nExpect: 100-continue\r\n\r\n")
        # Sent when the app asks for the body: the request is in the app's hands.
        assert client.recv(100).startswith(b"HTTP/1.1 100 Continue")
        term(proc)
        still_running_after(proc, STILL_STOPPING_S)
        term(proc)
        assert exits(proc, AT_ONCE_S) == 128 + signal.SIGTERM
    finally:
        client.close()


# --- worker ------------------------------------------------------------------------------------

def hijack(bootstrap: str, tenant: str) -> str:
    """A login, activity, and the cookie replayed with curl from a hosting provider, by the real
    SDK; returns once the worker's revocation is on the topic (it has processed all three)."""
    token = secrets.token_urlsafe(24)
    hasher = TokenHasher({"k1": secrets.token_bytes(32)})
    with SessionwatchClient(bootstrap, hasher, tenant=tenant) as client:
        client.authenticated(session_token=token, user="mona", ip=COMCAST, user_agent=CHROME)
        client.activity(session_token=token, user="mona", ip=COMCAST, user_agent=CHROME)
        client.activity(session_token=token, user="mona", ip=DIGITALOCEAN, user_agent=CURL)
        assert client.flush(10)
    session = hasher.hash(token)
    records = read_until(bootstrap, [REVOCATIONS_TOPIC],
                         lambda r: any(v.get("session") == session for _, v in r), timeout_s=30)
    assert any(v.get("session") == session for _, v in records), "no revocation"
    return session


def test_worker_first_sigterm_commits_a_checkpoint_and_exits_0(stack: Stack):
    proc, bootstrap = stack.worker, stack.bootstrap("worker")
    proc.wait_ready(90)
    group = stack.group(proc)
    hijack(bootstrap, "shutdown-worker")
    # Processed, not committed yet (WORKER_SETTINGS): only the shutdown's checkpoint can.
    assert committed_at_log_end(bootstrap, group, [EVENTS_TOPIC]) != {}
    term(proc)
    assert exits(proc, STOP_BOUND_S) == 0
    assert committed_at_log_end(bootstrap, group, [EVENTS_TOPIC]) == {}


def test_worker_second_sigterm_exits_at_once(stack: Stack):
    """The broker stops answering (frozen, SIGSTOP) while the worker holds events it processed
    and has not committed: the shutdown's checkpoint waits for the broker; a second SIGTERM
    ends the worker at once (the default action: killed by SIGTERM)."""
    proc, broker = stack.worker_killed, stack.brokers["worker-frozen"]
    proc.wait_ready(90)
    hijack(broker.bootstrap, "shutdown-worker")
    tansu = broker._proc
    assert tansu is not None
    os.killpg(tansu.pid, signal.SIGSTOP)
    try:
        term(proc)
        still_running_after(proc, STILL_STOPPING_S)
        term(proc)
        assert exits(proc, AT_ONCE_S) in (-signal.SIGTERM, 128 + signal.SIGTERM)
    finally:
        os.killpg(tansu.pid, signal.SIGCONT)
