"""`sessionwatch console` and `sessionwatch replay --publish` on a TLS-secured broker (Tansu behind
stunnel, tests/integration/tls.py), certificates verified, configured by settings alone: the
replay's events, the console's revocation by hand and its own sign-in events are read back over
TLS; a finding published over TLS reaches the console's live feed (server-sent events); a wrong
CA stops both commands within seconds naming the setting. test_kafka_tls.py covers the rest.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from integration.test_queries import ACME, archive_incident
from integration.test_replay import Scenario, by_session
from integration.tls import Pki, StunnelBroker, make_pki

from producers.contract import (
    EVENTS_TOPIC,
    FINDINGS_TOPIC,
    REVOCATIONS_TOPIC,
    Finding,
    Severity,
    decode_event,
    encode,
)
from producers.kafka_options import CAFILE_VAR, KafkaSecurity, librdkafka_options
from sessionwatch.broker import free_port
from sessionwatch.console.accounts import hash_password
from sessionwatch.processes import ConsoleProcess
from storage.clickhouse import ChdbBackend
from storage.clickhouse.rows import event_row
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration

RESPONDER = ("rita", "rita-responds-over-tls!")
CONSOLE_TENANT = "sessionwatch-console"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StunnelBroker]:
    with StunnelBroker(tmp_path_factory.mktemp("tls-broker"), pki) as broker:
        ensure_topics([broker.bootstrap], 2, security=pki.security())
        yield broker


def settings_env(**settings: str) -> dict[str, str]:
    """This process's environment without its SESSIONWATCH_* variables, plus `settings` as them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONWATCH_")}
    env.update({f"SESSIONWATCH_{k.upper()}": v for k, v in settings.items()})
    return env


def read_tls(bootstrap: str, security: KafkaSecurity, topics: list[str],
             done: Callable[[list[tuple[str, dict]]], bool],
             timeout_s: float = 20.0) -> list[tuple[str, dict]]:
    """`topics` from the beginning over TLS (librdkafka, certificate verified) until `done`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, **librdkafka_options(security),
                         "group.id": f"tls-console-{uuid.uuid4()}", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 10})
    records: list[tuple[str, dict]] = []
    try:
        metadata = consumer.list_topics(timeout=10)
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics
                         if t in metadata.topics for p in metadata.topics[t].partitions])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done(records):
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                records.append((msg.topic(), json.loads(msg.value())))
        return records
    finally:
        consumer.close()


# -- replay --------------------------------------------------------------------------------------


def test_replay_publishes_over_tls(tls_broker: StunnelBroker, pki: Pki, tmp_path: Path) -> None:
    scenario = Scenario()
    archive = tmp_path / "archive"
    backend = ChdbBackend(str(archive))
    try:
        backend.migrate()
        backend.insert("events", [event_row(e) for e in scenario.events])
    finally:
        backend.close()  # chDB: the replay process opens the directory next
    topic = f"sessionwatch.replay-{uuid.uuid4().hex[:10]}"
    done = subprocess.run(
        [sys.executable, "-m", "sessionwatch", "replay", "--from", scenario.since.isoformat(),
         "--to", scenario.until.isoformat(), "--tenant", scenario.tenant, "--chdb", str(archive),
         "--publish", "--topic", topic],
        env=settings_env(bootstrap=tls_broker.bootstrap, **pki.env()), capture_output=True,
        timeout=60)
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 0, err
    assert f"{len(scenario.events)} events" in err and topic in err, err

    records = read_tls(tls_broker.bootstrap, pki.security(), [topic],
                       lambda rs: len(rs) >= len(scenario.events))
    assert sorted(v["id"] for _, v in records) == sorted(e.id for e in scenario.events)
    # One key per session, so one partition: each session's events in their archived order.
    got = [decode_event(json.dumps(value)) for _, value in records]
    assert by_session(got) == by_session(scenario.in_order())


# -- console -------------------------------------------------------------------------------------


def write_accounts(path: Path) -> Path:
    path.write_text(f'[[account]]\nname = "{RESPONDER[0]}"\nrole = "responder"\n'
                    f'password_hash = "{hash_password(RESPONDER[1])}"\n', encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def console(tls_broker: StunnelBroker, pki: Pki,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`sessionwatch console` as its own process, the broker reached over TLS by settings only."""
    where = tmp_path_factory.mktemp("console")
    archive = str(where / "archive")
    backend = ChdbBackend(archive)
    try:  # a few hours ago: inside every page's default window
        archive_incident(backend, datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3))
    finally:
        backend.close()
    accounts = write_accounts(where / "accounts.toml")
    port = free_port("127.0.0.1")
    env = {f"SESSIONWATCH_{k.upper()}": v for k, v in pki.env().items()}
    proc = ConsoleProcess(where / "console.log", listen=f"127.0.0.1:{port}",
                          accounts=str(accounts), chdb_dir=archive,
                          bootstrap=tls_broker.bootstrap, env=env)
    try:
        proc.wait_ready(60)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()
        log = (where / "console.log").read_text(encoding="utf-8", errors="replace")
        assert RESPONDER[1] not in log, "a password reached the console's log"


@pytest.fixture
def signed_in(console: str) -> Iterator[tuple[httpx.Client, str]]:
    """An HTTP client signed in (over HTTP, by the form) as the responder, and its session's
    CSRF token."""
    with httpx.Client(base_url=console, follow_redirects=False, timeout=20) as client:
        form = client.get("/signin")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        answer = client.post("/signin", data={"name": RESPONDER[0], "password": RESPONDER[1],
                                              "csrf": token, "next": "/live"})
        assert answer.status_code == 303, answer.text
        page = client.get("/live")
        assert page.status_code == 200, page.text
        yield client, re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def sse_items(client: httpx.Client, want: Callable[[dict], bool], read_s: float) -> list[dict]:
    """The live feed's items from its start (`after=0`), read until one is wanted or the stream
    has been quiet for `read_s`."""
    items: list[dict] = []
    try:
        with client.stream("GET", "/live/stream", params={"after": "0"},
                           timeout=httpx.Timeout(10, read=read_s)) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    items.append(json.loads(line[len("data: "):]))
                    if want(items[-1]):
                        return items
    except httpx.ReadTimeout:
        pass
    return items


def test_console_revokes_by_hand_over_tls(signed_in: tuple[httpx.Client, str],
                                          tls_broker: StunnelBroker, pki: Pki) -> None:
    client, csrf = signed_in
    answer = client.post("/act/revoke", data={"csrf": csrf, "tenant": ACME, "scope": "session",
                                              "subject": "s-home", "action": "revoke",
                                              "back": "/live"})
    assert answer.status_code == 303, answer.text  # 503 if the broker did not take it
    location = answer.headers["location"]
    assert "done=revoke-session" in location, location
    revocation_id = re.search(r"[?&]id=([^&]+)", location).group(1)

    records = read_tls(tls_broker.bootstrap, pki.security(), [REVOCATIONS_TOPIC],
                       lambda rs: any(r.get("id") == revocation_id for _, r in rs))
    published = [r for _, r in records if r.get("id") == revocation_id]
    assert published, f"revocation {revocation_id} not on {REVOCATIONS_TOPIC} over TLS"
    rev = published[0]
    assert (rev["tenant"], rev["scope"], rev["action"], rev["session"]) == (
        ACME, "session", "revoke", "s-home")
    assert rev["reasons"][0]["detector"] == "console.manual"
    assert RESPONDER[0] in rev["reasons"][0]["summary"]


def test_console_emits_its_own_events_over_tls(signed_in: tuple[httpx.Client, str],
                                               tls_broker: StunnelBroker, pki: Pki) -> None:
    cookie = signed_in[0].cookies["sessionwatch_console"]

    def signed_in(records: list[tuple[str, dict]]) -> bool:
        return any(r.get("tenant") == CONSOLE_TENANT and r.get("user") == RESPONDER[0]
                   and r.get("type") == "session.authenticated" for _, r in records)

    records = read_tls(tls_broker.bootstrap, pki.security(), [EVENTS_TOPIC], signed_in)
    assert signed_in(records), f"the console's sign-in never reached {EVENTS_TOPIC} over TLS"
    ours = [r for _, r in records if r.get("tenant") == CONSOLE_TENANT]
    assert {"session.created", "session.authenticated"} <= {r["type"] for r in ours}
    assert cookie not in json.dumps(ours), "a raw console cookie reached the events topic"


def test_live_feed_shows_a_finding_published_over_tls(signed_in: tuple[httpx.Client, str],
                                                      tls_broker: StunnelBroker, pki: Pki) -> None:
    client, _ = signed_in
    producer = Producer({"bootstrap.servers": tls_broker.bootstrap,
                         **librdkafka_options(pki.security()), "linger.ms": 0})
    sent: set[str] = set()
    seen: list[dict] = []
    # The feed starts at the topics' end once its consumer is assigned, which the test cannot
    # observe: a finding published before then is (rightly) not shown, so publish a fresh one
    # until one arrives.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(i.get("id") in sent for i in seen):
        finding = Finding(
            id=f"f-tls-{uuid.uuid4().hex[:12]}", tenant=ACME, session="s-tls", user="alice",
            ip="167.99.10.10", detector="session.ip_change", severity=Severity.HIGH,
            summary="session.ip_change fired over TLS", evidence={"km": 8_900},
            event_time=datetime.now(UTC), events=["e-tls"])
        producer.produce(FINDINGS_TOPIC, encode(finding), key=b"s-tls")
        assert producer.flush(10) == 0, "the finding was not delivered over TLS"
        sent.add(finding.id)
        seen = sse_items(client, lambda i: i.get("id") in sent, read_s=2.0)
    shown = [i for i in seen if i.get("id") in sent]
    assert shown, f"none of {len(sent)} findings published over TLS reached the live feed"
    assert (shown[0]["kind"], shown[0]["tenant"], shown[0]["detector"], shown[0]["severity"]) == (
        "finding", ACME, "session.ip_change", "high")


# -- a wrong CA ----------------------------------------------------------------------------------


def test_wrong_ca_stops_console_and_replay_within_seconds(tls_broker: StunnelBroker, pki: Pki,
                                                          tmp_path: Path) -> None:
    env = settings_env(bootstrap=tls_broker.bootstrap, **pki.env(cafile=pki.wrong_ca))
    # Everything else right (an accounts file, a fresh archive directory): only the CA is wrong.
    accounts = write_accounts(tmp_path / "accounts.toml")
    commands = {
        "console": ["console", "--listen", f"127.0.0.1:{free_port('127.0.0.1')}",
                    "--accounts", str(accounts), "--chdb-dir", str(tmp_path / "console-archive")],
        "replay": ["replay", "--from", "2026-03-02T09:00:00Z", "--to", "2026-03-02T10:00:00Z",
                   "--chdb", str(tmp_path), "--publish", "--topic", "sessionwatch.replay-wrong-ca"],
    }
    started = time.monotonic()
    procs = {name: subprocess.Popen([sys.executable, "-m", "sessionwatch", *args], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for name, args in commands.items()}
    try:
        for name, proc in procs.items():
            try:
                out, _ = proc.communicate(timeout=max(0.1, 10 - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                pytest.fail(f"sessionwatch {name} still running 10 s after start with a wrong CA")
            text = out.decode(errors="replace")
            assert proc.returncode == 2, f"{name}: exit {proc.returncode}\n{text}"
            assert CAFILE_VAR in text and "not trusted" in text, f"{name}:\n{text}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
