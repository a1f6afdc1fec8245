"""Metrics, health and logs of the four long-running processes, by scraping: `sessionwatch worker`,
`apply` (a real Redis), `archive` (chDB) and `console` run as processes with `--metrics-port` and
`--log-format json`; the real SDK sends a hijack; each /metrics, /healthz and /readyz is read over
a real socket, and every log line must parse as JSON and carry none of the planted secrets."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from factories import CHROME, COMCAST, CURL, DIGITALOCEAN
from integration.conftest import eventually, read_until
from prometheus_client.parser import text_string_to_metric_families

from producers.client import SessionwatchClient
from producers.contract import EVENTS_TOPIC, REVOCATIONS_TOPIC
from producers.hashing import TokenHasher
from sessionwatch.broker import free_port
from sessionwatch.processes import (
    ApplierProcess,
    ArchiverProcess,
    ChildProcess,
    ConsoleProcess,
    WorkerProcess,
)
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration

CONSOLE_TOKEN = "console-token-" + secrets.token_hex(24)
# Read by the archiver and the console (a ClickHouse password; chDB ignores it): must never be logged.
ARCHIVE_PASSWORD = "archive-pw-" + secrets.token_hex(12)
SESSION_TOKEN = secrets.token_urlsafe(32)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(base: str) -> list[tuple[str, dict[str, str], float]]:
    status, text = get(base + "/metrics")
    assert status == 200
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples]


def value(found: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    return sum(v for n, lab, v in found if n == name and labels.items() <= lab.items())


class Stack:
    def __init__(self, where: Path, broker: Any, redis_url: str) -> None:
        self.app_id = f"it-metrics-{uuid.uuid4().hex[:6]}"
        self.ports = {name: free_port("127.0.0.1")
                      for name in ("worker", "applier", "archiver", "console", "console_http")}
        flags = {name: ["--metrics-port", str(self.ports[name]), "--log-format", "json"]
                 for name in ("worker", "applier", "archiver", "console")}
        # The worker first: its endpoint answers before it owns partitions.
        self.worker = WorkerProcess(broker.bootstrap, where / "worker.log", app_id=self.app_id,
                                    partitions=2, data_dir=str(where / "state"),
                                    extra_args=flags["worker"])
        self.first_readyz = eventually(lambda: self._reachable("worker"), "the worker's endpoint")
        self.applier = ApplierProcess(broker.bootstrap, where / "applier.log", redis=redis_url,
                                      apply_group=f"{self.app_id}-apply",
                                      extra_args=flags["applier"])
        self.archiver = ArchiverProcess(broker.bootstrap, where / "archiver.log",
                                        chdb_dir=str(where / "archive"),
                                        archive_group=f"{self.app_id}-archive",
                                        clickhouse_password=ARCHIVE_PASSWORD,
                                        extra_args=flags["archiver"])
        self.console = ConsoleProcess(
            where / "console.log", listen=f"127.0.0.1:{self.ports['console_http']}",
            chdb_dir=str(where / "console-archive"), extra_args=flags["console"],
            env={"SESSIONWATCH_CONSOLE_TOKEN": CONSOLE_TOKEN,
                 "SESSIONWATCH_CLICKHOUSE_PASSWORD": ARCHIVE_PASSWORD})
        self.all: list[ChildProcess] = [self.worker, self.applier, self.archiver, self.console]

    def _reachable(self, name: str) -> tuple[int, dict] | None:
        if self.worker.proc.poll() is not None:
            raise AssertionError(f"the worker exited:\n{self.worker.tail()}")
        try:
            status, body = get(self.url(name) + "/readyz")
        except OSError:
            return None
        return status, json.loads(body)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def stop(self) -> None:
        for proc in self.all:
            proc.stop()


@pytest.fixture(scope="module")
def stack(broker, redis_service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ensure_topics([broker.bootstrap], 2)
    s = Stack(tmp_path_factory.mktemp("metrics"), broker, redis_service.url)
    try:
        for proc in s.all:
            proc.wait_ready(60)
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def hijacked(stack: Stack, broker) -> dict[str, Any]:
    """A login, activity, and the cookie replayed with curl from a hosting provider, sent by the
    real SDK; returns once the revocation is on the topic."""
    hasher = TokenHasher({"k1": secrets.token_bytes(32)})
    with SessionwatchClient(broker.bootstrap, hasher, tenant="metrics-it") as client:
        client.authenticated(session_token=SESSION_TOKEN, user="mona", ip=COMCAST,
                             user_agent=CHROME)
        client.activity(session_token=SESSION_TOKEN, user="mona", ip=COMCAST, user_agent=CHROME)
        client.activity(session_token=SESSION_TOKEN, user="mona", ip=DIGITALOCEAN,
                        user_agent=CURL)
        assert client.flush(10)
    session = hasher.hash(SESSION_TOKEN)
    records = read_until(broker.bootstrap, [REVOCATIONS_TOPIC],
                         lambda r: any(v.get("session") == session for _, v in r))
    (revocation,) = [v for _, v in records if v.get("session") == session]
    return {"sent": 3, "session": session, "revocation": revocation}


def test_worker_endpoint_answers_not_ready_before_it_owns_partitions(stack: Stack):
    status, body = stack.first_readyz
    assert status == 503 and body["ready"] is False
    failing = {c["name"] for c in body["checks"] if not c["ok"]}
    assert failing & {"owns partitions", "state recovered", "caught up"}
    assert all(c["detail"] for c in body["checks"] if not c["ok"])  # each says why


def test_worker_counts_events_and_the_revocation(stack: Stack, hijacked):
    detector = hijacked["revocation"]["reasons"][0]["detector"]

    def counted():
        found = samples(stack.url("worker"))
        enough = (value(found, "sessionwatch_events_received_total", stage="session")
                  >= hijacked["sent"]
                  and value(found, "sessionwatch_revocations_total", detector=detector,
                            action="revoke", tenant="metrics-it") >= 1)
        return found if enough else None

    found = eventually(counted, "the worker's counters")
    assert value(found, "sessionwatch_events_processed_total") >= hijacked["sent"]
    assert value(found, "sessionwatch_findings_total", tenant="metrics-it") >= 1
    assert value(found, "sessionwatch_event_to_decision_seconds_count") >= 1
    assert value(found, "process_resident_memory_bytes") > 0

    def events_lag():  # each partition's gauge appears once a Fetch reported its log end
        lags = {int(lab["partition"]): v for n, lab, v in samples(stack.url("worker"))
                if n == "sessionwatch_consumer_lag_messages" and lab["topic"] == EVENTS_TOPIC}
        return lags if set(lags) == {0, 1} else None

    lags = eventually(events_lag, "a lag gauge per events partition")
    assert all(v >= 0 for v in lags.values())
    assert all(lab["group"] == stack.app_id for n, lab, _ in found
               if n == "sessionwatch_consumer_lag_messages")


def test_applier_counts_the_delivery_and_lag(stack: Stack, hijacked):
    def delivered():
        found = samples(stack.url("applier"))
        return found if value(found, "sessionwatch_sink_deliveries_total", sink="redis",
                              outcome="delivered") >= 1 else None

    found = eventually(delivered, "the redis sink's delivery")
    assert value(found, "sessionwatch_sink_unavailable", sink="redis") == 0
    assert value(found, "sessionwatch_sink_delivery_delay_seconds_count", sink="redis") >= 1
    lags = [v for n, lab, v in found if n == "sessionwatch_consumer_lag_messages"
            and lab["topic"] == REVOCATIONS_TOPIC and lab["group"] == f"{stack.app_id}-apply-redis"]
    assert lags and all(v >= 0 for v in lags)


def test_archiver_counts_rows_and_lag(stack: Stack, hijacked):
    def archived():
        found = samples(stack.url("archiver"))
        return found if (value(found, "sessionwatch_archive_rows_total", table="events")
                         >= hijacked["sent"]
                         and value(found, "sessionwatch_archive_rows_total",
                                   table="revocations") >= 1) else None

    found = eventually(archived, "the archived rows")
    assert value(found, "sessionwatch_archive_insert_duration_seconds_count", table="events") >= 1
    assert value(found, "sessionwatch_archive_insert_failures_total") == 0
    topics = {lab["topic"] for n, lab, v in found
              if n == "sessionwatch_consumer_lag_messages" and v >= 0}
    assert {EVENTS_TOPIC, REVOCATIONS_TOPIC} <= topics


def test_console_counts_requests_by_route_on_its_own_port(stack: Stack):
    console = f"http://127.0.0.1:{stack.ports['console_http']}"
    auth = {"Authorization": f"Bearer {CONSOLE_TOKEN}"}
    assert get(console + "/api/detectors", auth)[0] == 200
    assert get(console + "/api/detectors")[0] == 401
    # The console's own port serves no metrics: they are on the metrics port only.
    assert "sessionwatch_console_requests_total" not in get(console + "/metrics", auth)[1]

    def counted():
        found = samples(stack.url("console"))
        ok = value(found, "sessionwatch_console_requests_total", route="get_detectors",
                   method="GET", status="200") >= 1
        return found if ok else None

    found = eventually(counted, "the console's request counter", timeout_s=10)
    # Refused before the router (no token): still counted under its route.
    assert value(found, "sessionwatch_console_requests_total", route="get_detectors",
                 status="401") >= 1
    assert value(found, "sessionwatch_console_request_duration_seconds_count",
                 route="get_detectors") >= 1
    # Route templates, never raw paths, are labels.
    assert not any("/" in lab.get("route", "") for _, lab, _ in found)


def test_every_process_is_alive_and_ready_once_caught_up(stack: Stack, hijacked):
    for name in ("worker", "applier", "archiver", "console"):
        status, body = get(stack.url(name) + "/healthz")
        assert status == 200 and json.loads(body)["alive"] is True, (name, body)
        eventually(lambda n=name: get(stack.url(n) + "/readyz")[0] == 200,
                   f"{name} /readyz 200")
        ready = json.loads(get(stack.url(name) + "/readyz")[1])
        assert ready["ready"] is True and all(c["ok"] for c in ready["checks"]), (name, ready)
        assert get(stack.url(name) + "/nothing-here")[0] == 404


def test_logs_are_json_lines_without_secrets(stack: Stack, hijacked):
    # Everything scraped: the logs are complete once the processes are stopped.
    scraped = "".join(get(stack.url(n) + "/metrics")[1]
                      for n in ("worker", "applier", "archiver", "console"))
    stack.stop()
    planted = [CONSOLE_TOKEN, ARCHIVE_PASSWORD, SESSION_TOKEN]
    for secret in planted:
        assert secret not in scraped
    for proc in stack.all:
        text = Path(proc.log_path).read_text(errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines, f"{proc.name} logged nothing"
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                raise AssertionError(f"{proc.name}: not a JSON line: {line[:300]!r}") from None
            assert {"time", "level", "logger", "message"} <= record.keys(), line
        for secret in planted:
            assert secret not in text, f"{proc.name}'s log carries a planted secret"
