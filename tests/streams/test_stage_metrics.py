"""The worker's stages feed Prometheus (sessionwatch/metrics.py) with the same counts as WorkerStats.

The three stages run in process, wired the way streams/engine.py wires them (session stage
outputs routed to the user and source stages by topic), with dict-backed state in place of
Quix's stores.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from producers.contract import REVOCATIONS_TOPIC, Event, EventType, decode_revocation, encode
from sessionwatch.metrics import WorkerMetrics
from sessionwatch.simulation import simulate
from streams.outputs import Output
from streams.pipeline import SessionPipeline
from streams.policy import Policy
from streams.routing import by_source_topic, by_user_topic
from streams.session_stage import SessionStage
from streams.source_order import OrderedSource
from streams.source_pipeline import SourcePipeline
from streams.source_stage import SourceStage
from streams.stats import WorkerStats
from streams.user_pipeline import UserPipeline
from streams.user_stage import UserStage

BY_USER, BY_SOURCE = by_user_topic("sw-test"), by_source_topic("sw-test")
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/130.0.0.0 Safari/537.36")
HOME, HOSTING = "73.162.10.20", "167.99.10.10"


class DictState:
    """Quix's per-key state as the stages use it: bytes under a key, a TTL they may pass."""

    def __init__(self, store: dict[bytes, bytes], prefix: bytes) -> None:
        self.store, self.prefix = store, prefix

    def get_bytes(self, key: bytes) -> bytes | None:
        return self.store.get(self.prefix + b"/" + key)

    def set_bytes(self, key: bytes, value: bytes, ttl: Any = None) -> None:
        self.store[self.prefix + b"/" + key] = value


class Stages:
    def __init__(self, enricher: Any, metrics: WorkerMetrics | None) -> None:
        policy = Policy()
        self.stats = WorkerStats()
        extra = {"metrics": metrics} if metrics is not None else {}
        self.sessions: dict[bytes, bytes] = {}
        self.users: dict[bytes, bytes] = {}
        self.session = SessionStage(SessionPipeline(enricher, policy), enricher, self.stats,
                                    BY_USER, BY_SOURCE, **extra)
        self.user = UserStage(UserPipeline(enricher, policy), self.stats, BY_USER, 60.0,
                              lambda _p, key, _ts: DictState(self.users, key), **extra)
        self.source = SourceStage(
            lambda: OrderedSource(SourcePipeline(enricher, policy), 60.0), self.stats, BY_SOURCE,
            **extra)
        self.outputs: list[Output] = []
        self.offset = 0

    def send(self, value: bytes, key: bytes | None) -> None:
        self.offset += 1
        pending = self.session(value, key, 0, self.offset,
                               DictState(self.sessions, key or b""))
        while pending:
            out = pending.pop(0)
            self.outputs.append(out)
            if out.topic == BY_USER:
                assert out.key is not None
                pending += self.user(out.value, out.key, 0, self.offset,
                                     DictState(self.users, out.key))
            elif out.topic == BY_SOURCE:
                pending += self.source(out.value, out.key, 0, self.offset)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def total(registry: CollectorRegistry, name: str) -> float:
    return sum(s.value for m in registry.collect() for s in m.samples if s.name == name)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_metrics_count_what_worker_stats_count_over_a_simulated_day(enricher, registry):
    stages = Stages(enricher, WorkerMetrics(registry, process_collector=False))
    sim = simulate(users=60, seed=9)
    for event in sim.events:
        key = event.session.encode() if event.session else b"sessionless"
        stages.send(encode(event), key)
    stages.send(encode(sim.events[0]), sim.events[0].session.encode())  # a redelivery
    stages.send(b"{not json", b"junk")
    stages.send(b'{"schema": "sessionwatch.event/1"}', b"junk")

    s = stages.stats
    assert s.revocations > 5 and s.findings > s.revocations  # the simulation's attacks decided
    assert value(registry, "sessionwatch_events_received_total", stage="session") == s.received
    assert value(registry, "sessionwatch_events_received_total", stage="user") == s.user_events
    assert value(registry, "sessionwatch_events_received_total", stage="source") == s.source_events
    assert value(registry, "sessionwatch_events_processed_total") == s.processed
    assert value(registry, "sessionwatch_events_duplicate_total") == s.duplicates == 1
    assert total(registry, "sessionwatch_events_late_total") == s.late
    assert total(registry, "sessionwatch_events_dead_lettered_total") == s.deadlettered == 2
    assert value(registry, "sessionwatch_events_dead_lettered_total", stage="session",
                 reason="not_json") == 1
    assert value(registry, "sessionwatch_events_dead_lettered_total", stage="session",
                 reason="invalid") == 1
    assert total(registry, "sessionwatch_findings_total") == s.findings
    assert total(registry, "sessionwatch_revocations_total") == s.revocations
    assert value(registry, "sessionwatch_event_to_decision_seconds_count") == s.revocations

    # Labels: the detectors, severities, actions and tenants that were decided - nothing else.
    found = [m for m in registry.collect() if m.name == "sessionwatch_findings"][0]
    assert {tuple(sorted(x.labels)) for x in found.samples} == {("detector", "severity", "tenant")}
    detectors = {x.labels["detector"] for x in found.samples if x.name.endswith("_total")}
    assert all("." in d for d in detectors), detectors  # detector ids, e.g. session.ip_change
    revoked = [m for m in registry.collect() if m.name == "sessionwatch_revocations"][0]
    actions = {x.labels["action"] for x in revoked.samples if x.name.endswith("_total")}
    assert actions and actions <= {"revoke", "step_up", "block"}
    scopes = {x.labels["scope"] for x in revoked.samples if x.name.endswith("_total")}
    assert scopes and scopes <= {"session", "user", "source"}
    sessions = {e.session for e in sim.events if e.session}
    for metric in registry.collect():
        for sample in metric.samples:
            assert not set(sample.labels.values()) & sessions, sample  # never a session


def test_a_revocation_observes_event_to_decision_latency_once(enricher, registry):
    stages = Stages(enricher, WorkerMetrics(registry, process_collector=False))
    start = datetime.now(UTC) - timedelta(seconds=2)

    def ev(n: int, ip: str, type: EventType) -> bytes:
        return encode(Event(schema="sessionwatch.event/1", id=f"lat-{n}", type=type,
                            time=start + timedelta(milliseconds=n), tenant="bank-a",
                            session="s-lat", user="alice", ip=ip, user_agent=CHROME))

    before = time.time()
    stages.send(ev(1, HOME, EventType.AUTHENTICATED), b"s-lat")
    stages.send(ev(2, HOSTING, EventType.ACTIVITY), b"s-lat")  # the cookie, from a datacenter
    after = time.time()

    assert stages.stats.revocations == 1
    [revocation] = [decode_revocation(o.value) for o in stages.outputs
                    if o.topic == REVOCATIONS_TOPIC]
    # Labelled by the strongest reason (the policy lists reasons strongest first).
    assert value(registry, "sessionwatch_revocations_total", detector=revocation.reasons[0].detector,
                 action="revoke", scope="session", tenant="bank-a") == 1
    assert value(registry, "sessionwatch_event_to_decision_seconds_count") == 1
    observed = value(registry, "sessionwatch_event_to_decision_seconds_sum")
    event_time = (start + timedelta(milliseconds=2)).timestamp()
    assert before - event_time <= observed <= after - event_time
    # 2 s falls in the (1, 2.5] bucket
    assert value(registry, "sessionwatch_event_to_decision_seconds_bucket", le="1.0") == 0
    assert value(registry, "sessionwatch_event_to_decision_seconds_bucket", le="2.5") == 1


def test_stages_without_metrics_still_count_worker_stats(enricher):
    """engine.py builds the stages without a metrics object until it is wired: no-op default."""
    stages = Stages(enricher, None)
    stages.send(b"{not json", b"junk")
    assert stages.stats.received == 1 and stages.stats.deadlettered == 1
