"""The metrics and health endpoint, scraped over a real socket."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from sessionwatch.metrics import WorkerMetrics
from sessionwatch.observability import Health, caught_up, start


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


@pytest.fixture
def served():
    registry, clock = CollectorRegistry(), Clock()
    health = Health(max_age_s=10, clock=clock)
    server = start(0, registry=registry, health=health)
    yield server, registry, health, clock
    server.stop()


def test_metrics_are_scraped_in_prometheus_text_format(served):
    server, registry, _, _ = served
    metrics = WorkerMetrics(registry)
    metrics.received("session")
    metrics.dead_lettered("session", "not_json")
    metrics.set_lag("sessionwatch.events", 3, high_watermark=120, position=100, group="sw")

    status, content_type, body = get(server.url + "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("sessionwatch_events_received_total", (("stage", "session"),))] == 1
    assert samples[("sessionwatch_events_dead_lettered_total",
                    (("reason", "not_json"), ("stage", "session")))] == 1
    assert samples[("sessionwatch_consumer_lag_messages",
                    (("group", "sw"), ("partition", "3"), ("topic", "sessionwatch.events")))] == 20
    assert "process_resident_memory_bytes" in families  # RSS, for the soak and on-call


def test_healthz_follows_the_heartbeat(served):
    server, _, health, clock = served
    status, _, body = get(server.url + "/healthz")
    assert status == 200 and json.loads(body)["alive"] is True
    clock.now += 10.5  # the loop stopped turning past the bound
    status, _, body = get(server.url + "/healthz")
    assert status == 503 and json.loads(body) == {"alive": False, "heartbeat_age_s": 10.5,
                                                  "bound_s": 10}
    health.beat()
    assert get(server.url + "/healthz")[0] == 200


def test_readyz_lists_each_check_and_why(served):
    server, _, health, clock = served
    owned: set[tuple[str, int]] = set()
    lag = {"s": None}
    health.add_check("owns partitions", lambda: (bool(owned), f"{len(owned)} partition(s)"))
    health.add_check("caught up", caught_up(lambda: lag["s"], bound_s=5))
    health.add_check("sink reachable", lambda: 1 / 0)  # a broken check is a failed check

    status, content_type, body = get(server.url + "/readyz")
    assert status == 503 and content_type == "application/json"
    checks = {c["name"]: c for c in json.loads(body)["checks"]}
    assert checks["alive"]["ok"] is True
    assert checks["owns partitions"] == {"name": "owns partitions", "ok": False,
                                         "detail": "0 partition(s)"}
    assert checks["caught up"]["detail"] == "not measured yet"
    assert checks["sink reachable"]["detail"] == "check raised ZeroDivisionError: division by zero"

    owned.add(("sessionwatch.events", 0))
    lag["s"] = 1.5
    health.add_check("sink reachable", lambda: True)
    status, _, body = get(server.url + "/readyz")
    assert status == 200, body
    answer = json.loads(body)
    assert answer["ready"] is True and all(c["ok"] for c in answer["checks"])

    clock.now += 60  # alive no more: not ready either
    assert get(server.url + "/readyz")[0] == 503


def test_readyz_details_never_carry_credentials(served):
    server, _, health, _ = served
    health.add_check("sink reachable",
                     lambda: (False, "redis://app:s3cr3t-pw@10.0.0.5:6379/0 refused"))
    _, _, body = get(server.url + "/readyz")
    assert b"s3cr3t-pw" not in body and b"redis://app:[redacted]@10.0.0.5" in body


def test_nothing_else_is_served(served):
    server, _, _, _ = served
    for path in ("/", "/metrics/x", "/favicon.ico", "/healthz/../metrics"):
        assert get(server.url + path)[0] == 404, path
    request = urllib.request.Request(server.url + "/metrics", method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code == 501


def test_binds_loopback_by_default_and_stops(served):
    server, _, _, _ = served
    assert server.host == "127.0.0.1"
    port = server.port
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    again = start(port)  # the port is free again at once
    again.stop()


def test_a_taken_port_names_the_setting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="SESSIONWATCH_METRICS_PORT"):
            start(taken.getsockname()[1])
