"""`sessionwatch evaluate`: run simulated traffic through the real worker and score it.

By default: an embedded broker and a worker child process; the events go out with kafka-python in
event-time order, revocations and findings are read back, and the run waits until the worker's
consumer group has committed every topic it reads up to the end. `--offline` runs the same events
in-process through `streams.local.LocalRunner` instead.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producers.contract import (
    EVENTS_TOPIC,
    FINDINGS_TOPIC,
    REVOCATIONS_TOPIC,
    Event,
    decode_finding,
    decode_revocation,
    encode,
)
from producers.errors import SessionwatchError
from sessionwatch.evaluate import Observed, score
from sessionwatch.simulation import Simulation, simulate

DEFAULT_RATE = 5000.0


@dataclass
class EvalOptions:
    users: int = 1300
    seed: int = 11
    attacks_per_class: int | None = None
    bootstrap: str | None = None
    policy: Path | None = None
    rate: float = DEFAULT_RATE
    # Seconds to wait after the worker caught up for decisions held for lateness (the worker's
    # default allowed lateness, 60 s, plus a margin).
    hold_s: float = 62.0
    offline: bool = False
    twice: bool = False
    partitions: int = 2
    json_path: Path | None = None
    catch_up_timeout_s: float = 300.0
    # The learned score: with an artefact, each pass runs twice - rules alone, then rules and
    # the model - and the report gains the model's columns.
    model: Path | None = None
    history_days: int = 0
    edge_fingerprints: float = 0.0


def consume(bootstrap: str, observed: Observed, stop: threading.Event, start_offsets: dict[Any, int]
            | None = None) -> None:
    """Read revocations and findings by partition assignment (no group: Tansu holds group fetches)."""
    from kafka import KafkaConsumer, TopicPartition

    from storage.consuming import contiguous
    from storage.offset_holes import OffsetHoles

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, fetch_max_wait_ms=10)
    parts = [TopicPartition(topic, p) for topic in (REVOCATIONS_TOPIC, FINDINGS_TOPIC)
             for p in sorted(consumer.partitions_for_topic(topic) or {0})]
    consumer.assign(parts)
    for tp in parts:
        if start_offsets and tp in start_offsets:
            consumer.seek(tp, start_offsets[tp])
        else:
            consumer.seek_to_beginning(tp)
    holes = OffsetHoles()  # the embedded broker's Fetch holes are read again, not skipped
    try:
        while not stop.is_set():
            for batch in contiguous(consumer, holes, consumer.poll(timeout_ms=100)).values():
                now = time.time()
                for record in batch:
                    if record.topic == REVOCATIONS_TOPIC:
                        observed.revocations.append((now, decode_revocation(record.value)))
                    else:
                        observed.findings.append((now, decode_finding(record.value)))
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topics: tuple[str, ...]) -> dict[Any, int]:
    """Where each partition of `topics` ends now (true ends: streams/log_end.py)."""
    from kafka import TopicPartition

    from streams.log_end import group_positions

    positions = group_positions(bootstrap, "sessionwatch-evaluate-probe", topics)
    return {TopicPartition(t, p): end for (t, p), (_, end) in positions.items()}


def wait_group_caught_up(bootstrap: str, app_id: str, timeout_s: float, settle_s: float = 1.5) -> bool:
    """True once the worker's committed offsets reach the end of the events topic and of its
    repartition topics, and stay there for `settle_s` (decisions the user and source stages hold
    for the allowed lateness come out within about a second of a quiet input after a replay of
    past events: streams/event_clock.py)."""
    from streams.log_end import wait_caught_up
    from streams.routing import by_source_topic, by_user_topic

    return wait_caught_up(bootstrap, app_id,
                          [EVENTS_TOPIC, by_user_topic(app_id), by_source_topic(app_id)],
                          timeout_s, settle_s)


def send_events(bootstrap: str, events: list[Event], rate: float) -> dict[str, float]:
    """Send in event-time order at `rate` events/s; returns event id -> wall time sent."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=2,
                             client_id="sessionwatch-evaluate")
    sent: dict[str, float] = {}
    start = time.monotonic()
    try:
        for i, event in enumerate(events):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            producer.send(EVENTS_TOPIC, key=event.key.encode(), value=encode(event))
            sent[event.id] = time.time()
        producer.flush(60)
    finally:
        producer.close(10)
    return sent


def run_broker_pass(sim: Simulation, opts: EvalOptions, workdir: Path, app_id: str,
                    model: Path | None = None) -> dict[str, Any]:
    from sessionwatch.broker import EmbeddedBroker
    from sessionwatch.processes import WorkerProcess

    broker = None
    worker = None
    stop = threading.Event()
    observed = Observed()
    try:
        bootstrap = opts.bootstrap
        if bootstrap is None:
            broker = EmbeddedBroker(log_path=workdir / f"broker-{app_id}.log").start()
            bootstrap = broker.bootstrap
        extra = {"model": str(model)} if model is not None else {}
        worker = WorkerProcess(bootstrap, workdir / f"worker-{app_id}.log", app_id=app_id,
                               partitions=opts.partitions, policy=opts.policy,
                               data_dir=str(workdir / f"state-{app_id}"), **extra)
        worker.wait_ready()
        # On a shared broker, read only what this pass produces.
        starts = end_offsets(bootstrap, (REVOCATIONS_TOPIC, FINDINGS_TOPIC)) if opts.bootstrap else None
        reader = threading.Thread(target=consume, args=(bootstrap, observed, stop, starts), daemon=True)
        reader.start()
        began = time.monotonic()
        sent = send_events(bootstrap, sim.events, opts.rate)
        send_s = time.monotonic() - began
        caught_up = wait_group_caught_up(bootstrap, app_id, opts.catch_up_timeout_s)
        processed_s = time.monotonic() - began
        # The simulated day is in the past: the user and source stages take their last held
        # decisions once their input has been quiet for the allowed lateness
        # (streams/event_clock.py).
        time.sleep(opts.hold_s)
        stop.set()
        reader.join(10)
        report = score(sim.truth, sim.events, observed, sent)
        report["run"] = {"mode": "broker", "bootstrap": bootstrap, "app_id": app_id,
                         "caught_up": caught_up, "send_s": round(send_s, 2),
                         "processed_s": round(processed_s, 2),
                         "events_per_s": round(len(sim.events) / processed_s, 1),
                         "worker_log": str(workdir / f"worker-{app_id}.log")}
        return report
    finally:
        stop.set()
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.stop()


def run_offline_pass(sim: Simulation, opts: EvalOptions, model: Path | None = None) -> dict[str, Any]:
    """The same events in-process through streams.local.LocalRunner (no broker, no worker)."""
    try:
        from streams.local import LocalRunner
    except ImportError as exc:
        raise SessionwatchError(f"--offline needs streams.local.LocalRunner ({exc})") from None
    from streams.enrich import Enricher
    from streams.policy import Policy
    from streams.policy_file import load_policy

    policy = load_policy(opts.policy) if opts.policy is not None else Policy()
    scorer = None
    if model is not None:
        from models.load import load_model

        scorer = load_model(model)
    runner = LocalRunner(policy=policy, enricher=Enricher(), model=scorer)
    observed = Observed()
    sent: dict[str, float] = {}
    began = time.monotonic()
    for event in sim.events:
        sent[event.id] = time.time()
        findings, revocations = runner.process(event)
        now = time.time()
        observed.findings.extend((now, f) for f in findings)
        observed.revocations.extend((now, r) for r in revocations)
    findings, revocations = runner.finish()  # what was still held for the allowed lateness
    now = time.time()
    observed.findings.extend((now, f) for f in findings)
    observed.revocations.extend((now, r) for r in revocations)
    elapsed = time.monotonic() - began
    report = score(sim.truth, sim.events, observed, sent)
    report["run"] = {"mode": "offline", "processed_s": round(elapsed, 2),
                     "events_per_s": round(len(sim.events) / max(elapsed, 1e-9), 1)}
    return report


def evaluate(opts: EvalOptions) -> dict[str, Any]:
    """Simulate, run one pass (two with `twice`), and return the report of the first."""
    if opts.twice and opts.bootstrap and not opts.offline:
        raise SessionwatchError("--twice runs each pass on a fresh embedded broker; drop --bootstrap")
    sim = simulate(users=opts.users, seed=opts.seed, attacks_per_class=opts.attacks_per_class,
                   history_days=opts.history_days, edge_fingerprints=opts.edge_fingerprints)
    workdir = Path(tempfile.mkdtemp(prefix="sessionwatch-evaluate-"))
    passes = 2 if opts.twice else 1
    reports = []

    def one_pass(model: Path | None) -> dict[str, Any]:
        if opts.offline:
            return run_offline_pass(sim, opts, model)
        return run_broker_pass(sim, opts, workdir, f"sessionwatch-eval-{uuid.uuid4().hex[:8]}",
                               model)

    for n in range(passes):
        reports.append(one_pass(None))
        del n
    report = reports[0]
    if opts.model is not None:
        with_model = one_pass(opts.model)
        report["with_model"] = {k: with_model[k] for k in ("classes", "benign", "detectors",
                                                          "revocations", "findings", "run")}
        report["with_model"]["model"] = str(opts.model)
    report["simulation"] = {"users": opts.users, "seed": opts.seed, "events": len(sim.events),
                            "history_days": opts.history_days,
                            "edge_fingerprints": opts.edge_fingerprints,
                            "benign_sessions": len(sim.truth.benign), "attacks": len(sim.truth.attacks)}
    if opts.twice:
        first, second = set(reports[0]["revocation_ids"]), set(reports[1]["revocation_ids"])
        report["determinism"] = {"identical": first == second, "first": len(first),
                                 "second": len(second), "only_first": len(first - second),
                                 "only_second": len(second - first)}
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps(report, indent=1, default=str))
    return report
