"""`sessionwatch demo`: the whole spine on embedded defaults, scored against injected truth.

Starts the embedded broker, a worker and an archiver (chDB, `.sessionwatch/archive`), sends a
simulated population through the real SDK (raw tokens stay here; only HMACs travel), reads back
revocations, and prints precision, recall, event->revocation latency and where the archive is.
Ctrl-C at any point stops every process it started.
"""

from __future__ import annotations

import secrets
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from producers.client import SessionwatchClient
from producers.contract import (
    EVENTS_TOPIC,
    FINDINGS_TOPIC,
    REVOCATIONS_TOPIC,
    Revocation,
    decode_finding,
    decode_revocation,
)
from producers.hashing import TokenHasher
from sessionwatch.broker import EmbeddedBroker
from sessionwatch.processes import ArchiverProcess, WorkerProcess
from sessionwatch.simulation import ATTACK_KINDS, DETECTABLE_ATTACKS, Plan, plan_traffic

DEMO_APP_ID = "sessionwatch-demo"
DEMO_ARCHIVE_GROUP = "sessionwatch-demo-archive"
# Where the demo archives (chDB), and where the notebooks look by default.
DEMO_ARCHIVE = Path(".sessionwatch/archive")
# events/s: paced so that latency measures the pipeline, not a queue the demo built up itself
DEFAULT_RATE = 5000.0


@dataclass
class Received:
    revocations: list[tuple[float, Revocation]] = field(default_factory=list)
    findings: Counter[str] = field(default_factory=Counter)


def consume_outputs(bootstrap: str, received: Received, stop: threading.Event) -> None:
    """Read revocations and findings (no consumer group: Tansu + kafka-python groups stall)."""
    from kafka import KafkaConsumer, TopicPartition

    from storage.consuming import contiguous
    from storage.offset_holes import OffsetHoles

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=200,
                             fetch_max_wait_ms=10)
    parts = []
    for topic in (REVOCATIONS_TOPIC, FINDINGS_TOPIC):
        for p in sorted(consumer.partitions_for_topic(topic) or {0}):
            parts.append(TopicPartition(topic, p))
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    holes = OffsetHoles()  # the embedded broker's Fetch holes are read again, not skipped
    try:
        while not stop.is_set():
            for batch in contiguous(consumer, holes, consumer.poll(timeout_ms=100)).values():
                now = time.time()
                for record in batch:
                    if record.topic == REVOCATIONS_TOPIC:
                        received.revocations.append((now, decode_revocation(record.value)))
                    else:
                        received.findings[decode_finding(record.value).detector] += 1
    finally:
        consumer.close()


def wait_caught_up(bootstrap: str, app_id: str, timeout_s: float = 60.0) -> bool:
    """True once the worker's committed offsets reach the end of the events topic and of its
    own repartition topics (the user and source stages read after the session stage)."""
    from streams.routing import by_source_topic, by_user_topic

    return wait_group_caught_up(bootstrap, app_id,
                                [EVENTS_TOPIC, by_user_topic(app_id), by_source_topic(app_id)],
                                timeout_s)


def wait_group_caught_up(bootstrap: str, group: str, topics: list[str],
                         timeout_s: float = 60.0) -> bool:
    """True once `group`'s committed offsets reach the true end of every partition (fetched high
    watermarks: the embedded broker's ListOffsets under-reports the end, streams/log_end.py)."""
    from streams.log_end import wait_caught_up as wait

    return wait(bootstrap, group, topics, timeout_s)


def score(plan: Plan, hasher: TokenHasher, sent: dict[str, float], received: Received,
          attack_event_ids: set[str]) -> dict[str, object]:
    by_hash = {hasher.hash(token): label for label, token in plan.tokens.items()}
    revoked: dict[str, Revocation] = {}
    latencies = []
    tp = fp = 0
    detectors: Counter[str] = Counter()
    seen_ids: set[str] = set()
    for at, rev in received.revocations:
        if rev.id in seen_ids:
            continue  # redelivered duplicate
        seen_ids.add(rev.id)
        label = by_hash.get(rev.session or "")
        if label is None:
            continue
        revoked[label] = rev
        for reason in rev.reasons:
            detectors[reason.detector] += 1
        if rev.events and rev.events[0] in sent:
            latencies.append((at - sent[rev.events[0]]) * 1000)
        truth = plan.sessions[label]
        if truth.attack_kind and rev.events and rev.events[0] in attack_event_ids:
            tp += 1
        else:
            fp += 1
    per_class = {}
    for kind in ATTACK_KINDS:
        labels = [s.label for s in plan.sessions.values() if s.attack_kind == kind]
        caught = sum(1 for lbl in labels if lbl in revoked
                     and revoked[lbl].events[0] in attack_event_ids)
        per_class[kind] = (caught, len(labels))
    benign = [s for s in plan.sessions.values() if not s.attack_kind]
    benign_revoked = [s for s in benign if s.label in revoked]
    detectable = [s for s in plan.sessions.values() if s.attack_kind in DETECTABLE_ATTACKS]
    caught_detectable = sum(1 for s in detectable if s.label in revoked)
    return {
        "tp": tp, "fp": fp, "per_class": per_class, "detectors": detectors,
        "benign": len(benign), "benign_revoked": benign_revoked,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall_detectable": caught_detectable / len(detectable) if detectable else 1.0,
        "latencies": sorted(latencies),
    }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] \
        if len(values) > 1 else values[0]


def run_demo(users: int = 300, seed: int = 7, bootstrap: str | None = None,
             rate: float = DEFAULT_RATE, archive_dir: Path = DEMO_ARCHIVE) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    console = Console()
    workdir = Path(tempfile.mkdtemp(prefix="sessionwatch-demo-"))
    broker = None
    worker = None
    archiver = None
    stop = threading.Event()
    reader = None
    started = time.monotonic()
    try:
        with console.status("starting the embedded broker and a worker…"):
            if bootstrap is None:
                broker = EmbeddedBroker(log_path=workdir / "broker.log").start()
                bootstrap = broker.bootstrap
            worker = WorkerProcess(bootstrap, workdir / "worker.log",
                                   data_dir=str(workdir / "state"))
            archive_dir = archive_dir.resolve()
            archiver = ArchiverProcess(bootstrap, workdir / "archive.log",
                                       archive_group=DEMO_ARCHIVE_GROUP, chdb_dir=str(archive_dir))
            worker.wait_ready()
            archiver.wait_ready()
        console.print(f"broker [bold]{bootstrap}[/], worker and archiver ready "
                      f"({time.monotonic() - started:.1f}s); logs in {workdir}")

        plan = plan_traffic(users=users, seed=seed)
        attack_ids: set[str] = set()
        received = Received()
        reader = threading.Thread(target=consume_outputs, args=(bootstrap, received, stop),
                                  daemon=True)
        reader.start()
        hasher = TokenHasher({"demo": secrets.token_bytes(32)})
        with SessionwatchClient(bootstrap, hasher) as client, Progress(
            TextColumn("{task.description}"), BarColumn(),
            TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=console,
        ) as progress:
            task = progress.add_task(f"{users} users, {len(plan.sessions)} sessions",
                                     total=len(plan.events))
            sent = _send_with_truth(client, plan, progress, task, attack_ids, rate)
        with console.status("waiting for the worker to finish…"):
            caught_up = wait_caught_up(bootstrap, DEMO_APP_ID)
            time.sleep(1.0)
        stop.set()
        reader.join(5)
        result = score(plan, hasher, sent, received, attack_ids)
        _print_report(console, Table, plan, sent, received, result, caught_up)
        with console.status("waiting for the archiver…"):
            archived = wait_group_caught_up(bootstrap, DEMO_ARCHIVE_GROUP,
                                            [EVENTS_TOPIC, FINDINGS_TOPIC, REVOCATIONS_TOPIC])
            archiver.stop()  # chDB's directory is one process's at a time: let go of it
        console.print(_archive_summary(archive_dir, archived))
        console.print(_console_hint(archive_dir))
        console.print(f"done in {time.monotonic() - started:.1f}s. Topics: {EVENTS_TOPIC}, "
                      f"{FINDINGS_TOPIC}, {REVOCATIONS_TOPIC}; worker log: {workdir / 'worker.log'}")
        return 0
    except KeyboardInterrupt:
        console.print("interrupted; stopping the worker and the broker")
        return 130
    finally:
        stop.set()
        if archiver is not None:
            archiver.stop()
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.stop()


def _archive_summary(archive_dir: Path, caught_up: bool) -> str:
    from storage.clickhouse import ChdbBackend

    backend = ChdbBackend(str(archive_dir))
    try:
        counts = {t: int(backend.query(f"SELECT uniqExact(id) AS n FROM sessionwatch.{t}")["n"][0])
                  for t in ("events", "findings", "revocations")}
    finally:
        backend.close()
    lag = "" if caught_up else " [yellow](the archiver had not caught up)[/]"
    return (f"archive (chDB) [bold]{archive_dir}[/]{lag}: {counts['events']} events, "
            f"{counts['findings']} findings, {counts['revocations']} revocations in all runs. "
            f"Explore: notebooks/investigate_session.ipynb (SESSIONWATCH_CHDB_DIR={archive_dir}), "
            f"or `sessionwatch replay --chdb {archive_dir} --backtest --policy FILE --from … --to …`")


def _console_hint(archive_dir: Path) -> str:
    """A responder account for the demo's console (a fresh password each run, stored only as its
    argon2 hash), and the command that serves the console on the demo's archive."""
    try:
        from sessionwatch.console.accounts import hash_password
    except ImportError:  # installed without the console extra
        return ("Console: pip install -e '.[console]', then `sessionwatch console --chdb-dir "
                f"{archive_dir} --accounts FILE` (README 'The console')")
    accounts = archive_dir.parent / "console-accounts.toml"
    password = secrets.token_urlsafe(12)
    accounts.write_text(f'# Written by `sessionwatch demo`: a local demo account, replaced on '
                        f'every run.\n[[account]]\nname = "demo"\nrole = "responder"\n'
                        f'password_hash = "{hash_password(password)}"\n', encoding="utf-8")
    accounts.chmod(0o600)
    return (f"Console: [bold]sessionwatch console --chdb-dir {archive_dir} --accounts {accounts}"
            f"[/], then open http://127.0.0.1:8080 and sign in as [bold]demo[/] / "
            f"[bold]{password}[/] (this run's password; make real accounts with "
            "`sessionwatch console-hash`, README 'The console')")


def _send_with_truth(client: SessionwatchClient, plan: Plan, progress: object, task: object,
                     attack_ids: set[str], rate: float) -> dict[str, float]:
    """Send the plan in simulated-time order at `rate` events/s; returns event id -> wall send time.

    Also records which event ids were the attacker's, to score against.
    """
    base = datetime.now(UTC) - timedelta(hours=2)
    sent: dict[str, float] = {}
    start = time.monotonic()
    for i, item in enumerate(plan.events):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        event = getattr(client, item.method)(time=base + timedelta(seconds=item.at), **item.kwargs)
        sent[event.id] = time.time()
        if item.attack:
            attack_ids.add(event.id)
        if i % 200 == 0:
            progress.update(task, completed=i)  # type: ignore[attr-defined]
    client.flush(30)
    progress.update(task, completed=len(plan.events))  # type: ignore[attr-defined]
    return sent


def _print_report(console: object, table_cls: type, plan: Plan, sent: dict[str, float],
                  received: Received, r: dict[str, object], caught_up: bool) -> None:
    lat = r["latencies"]
    assert isinstance(lat, list)
    t = table_cls(title="sessionwatch demo", show_header=True)
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("events sent", str(len(sent)))
    t.add_row("sessions (benign / hijacked)",
              f"{r['benign']} / {len(plan.sessions) - int(r['benign'])}")  # type: ignore[arg-type]
    t.add_row("findings", ", ".join(f"{k} {v}" for k, v in sorted(received.findings.items())))
    t.add_row("revocations by detector",
              ", ".join(f"{k} {v}" for k, v in sorted(r["detectors"].items())))  # type: ignore[union-attr]
    for kind, (caught, total) in r["per_class"].items():  # type: ignore[union-attr]
        note = "" if kind in DETECTABLE_ATTACKS else " (not expected to be caught)"
        t.add_row(f"recall {kind}", f"{caught}/{total}{note}")
    t.add_row("precision", f"{r['precision']:.3f}  ({r['tp']} true, {r['fp']} false)")
    t.add_row("recall (all replay kinds)", f"{r['recall_detectable']:.3f}")
    benign_revoked = r["benign_revoked"]
    assert isinstance(benign_revoked, list)
    kinds = sorted({s.benign_kind for s in benign_revoked})
    t.add_row("benign sessions revoked",
              f"{len(benign_revoked)}" + (f" ({', '.join(kinds)})" if kinds else ""))
    t.add_row("event->revocation latency p50 / p99",
              f"{_pct(lat, 50):.1f} ms / {_pct(lat, 99):.1f} ms")
    if not caught_up:
        t.add_row("warning", "the worker had not caught up when the demo stopped waiting")
    console.print(t)  # type: ignore[attr-defined]
