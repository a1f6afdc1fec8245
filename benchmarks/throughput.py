"""Throughput and latency of the sessionwatch path, layer by layer, in one run on one embedded broker.

    python -m benchmarks.throughput [--events N] [--sessions S] [--json FILE] [--update-readme]
                                    [--skip-latency] [--profile SECONDS] [--logs DIR] [--model DIR]

1. produce N events with confluent-kafka into sessionwatch.events (1 partition)
2. a raw confluent-kafka `consume(1000)` loop over them, no group (count only; + decode_event)
3. Quix Streams' own loop, in a child process: a no-op `sdf.update`, and one doing
   `state.get_bytes`/`set_bytes` per message; a fresh consumer group each
4. in process, no broker: streams.local.LocalRunner (every detector, all three stages), and the
   session stage alone (SessionPipeline.process over a dict of states)
5. `sessionwatch worker`: 1 process on 1 partition, 2 processes on 2 partitions, timed by the
   `decided_at` of hijack markers sent before and after the N events; the worker's revocation ids
   for the N events are compared with LocalRunner's
6. event -> revocation latency of the idle worker, then under 5,000 events/s of other traffic

--profile SECONDS attaches py-spy to the 1-process worker while it drains a 200k-event backlog.
--model DIR runs the learned score: the workers get SESSIONWATCH_MODEL=DIR, LocalRunner the model.
See benchmarks/README.md for what the figures mean. Every child process runs in its own process
group and is killed with it on exit, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from producers.contract import (
    ALL_TOPICS,
    EVENT_SCHEMA,
    EVENTS_TOPIC,
    REVOCATIONS_TOPIC,
    Event,
    EventType,
    Revocation,
    decode_event,
    decode_revocation,
    encode,
)
from producers.hashing import TokenHasher

ROOT = Path(__file__).resolve().parent.parent
README = Path(__file__).resolve().parent / "README.md"

BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
)
CURL = "curl/8.5.0"
PATHS = ("/", "/inbox", "/settings", "/api/items", "/api/items/42", "/reports", "/search")
HIJACK_SHARE = 0.01
SECONDS_BETWEEN_REQUESTS = 15.0
# Networks the bundled ASN data names as hosting (DigitalOcean, AWS, Hetzner, Scaleway).
DATACENTER_NETS = tuple(IPv4Network(n) for n in ("167.99.0.0/16", "104.131.0.0/16",
                                                 "159.65.0.0/16", "52.1.0.0/16", "5.9.0.0/16",
                                                 "51.15.0.0/16"))
TAKEOVER_AFTER_S = 1.0
LATENCY_PAIRS, LATENCY_GAP_S, BACKGROUND_RATE = 200, 0.02, 5_000.0
PROFILE_EVENTS = 200_000


# -- workload --------------------------------------------------------------------------------


def kv(event: Event) -> tuple[bytes, bytes]:
    return event.key.encode(), encode(event)


@dataclass
class Pair:
    """A browser login, then a curl take-over of the session from a datacenter: revoked."""

    events: list[Event]
    hijack_id: str  # the take-over's event id, which its revocation names

    @property
    def messages(self) -> list[tuple[bytes, bytes]]:
        return [kv(e) for e in self.events]


@dataclass
class Workload:
    body_events: list[Event]            # the N events
    body: list[tuple[bytes, bytes]]     # the same as (key, JSON value)
    first: Pair                         # a hijack pair 60 s before the body (start marker)
    last: Pair                          # and 60 s after it (end marker)
    hijacks: int                        # curl take-overs inside the body


class EventMaker:
    """Realistic contract events: HMAC-hashed sessions, stable public IP and browser per session."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.hasher = TokenHasher({"bench-k1": bytes(self.rng.getrandbits(8) for _ in range(32))})

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def public_ip(self) -> str:
        while True:
            addr = IPv4Address(self.rng.getrandbits(32))
            if addr.is_global and not addr.is_multicast:
                return str(addr)

    def datacenter_ip(self) -> str:
        net = self.rng.choice(DATACENTER_NETS)
        return str(net[self.rng.randrange(1, net.num_addresses - 1)])

    def session(self) -> str:
        return self.hasher.hash(self.rng.getrandbits(256).to_bytes(32, "big").hex())

    def event(self, type_: EventType, session: str, ip: str, ua: str, at: datetime,
              user: str | None) -> Event:
        attrs: dict[str, Any] = {"hash_key_id": self.hasher.current_key_id}
        if type_ is EventType.ACTIVITY:
            attrs["method"] = "GET"
            attrs["path"] = self.rng.choice(PATHS)
        return Event(schema=EVENT_SCHEMA, id=self.uuid(), type=type_, time=at, session=session,
                     user=user, ip=ip, user_agent=ua, attrs=attrs)

    def hijack_pair(self, at: datetime) -> Pair:
        """A browser login at `at`; TAKEOVER_AFTER_S later curl uses the session elsewhere."""
        session, user = self.session(), f"pair-{self.rng.getrandbits(32):08x}@example.com"
        good = self.event(EventType.AUTHENTICATED, session, self.public_ip(), BROWSERS[0], at, user)
        bad = self.event(EventType.ACTIVITY, session, self.datacenter_ip(), CURL,
                         at + timedelta(seconds=TAKEOVER_AFTER_S), user)
        return Pair([good, bad], bad.id)


@dataclass
class _Session:
    session: str
    ip: str
    ua: str
    user: str
    seen: int = 0


def make_workload(n: int, sessions: int, seed: int = 7, start: datetime | None = None,
                  span_s: float | None = None, users: str = "user") -> Workload:
    """N events over S sessions from `start` (default: two hours ago), spread over `span_s` of
    event time (default: each session requests every ~15 s), plus the two marker pairs. Users
    are `<users>000000@example.com`...: give other traffic its own, or the same users log in
    from new addresses and the login-travel detector revokes.

    A session's first event is `session.created`, the second `session.authenticated`, the rest
    `session.activity`; ~1 % of activity is a curl take-over from another public address."""
    maker = EventMaker(seed)
    # Computed exactly as before `start` existed, so the default body is unchanged to the µs
    # (benchmarks/pipeline_profile.py digests it).
    origin = start - timedelta(seconds=60) if start else (
        datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2))
    pool = [_Session(maker.session(), maker.public_ip(), maker.rng.choice(BROWSERS),
                     f"{users}{i:06d}@example.com") for i in range(sessions)]
    span = SECONDS_BETWEEN_REQUESTS * n / max(sessions, 1) if span_s is None else span_s
    step = span / max(n, 1)
    events: list[Event] = []
    hijacks = 0
    for j in range(n):
        s = maker.rng.choice(pool)
        at = origin + timedelta(seconds=60 + j * step)
        if s.seen == 0:
            ev = maker.event(EventType.CREATED, s.session, s.ip, s.ua, at, None)
        elif s.seen == 1:
            ev = maker.event(EventType.AUTHENTICATED, s.session, s.ip, s.ua, at, s.user)
        elif maker.rng.random() < HIJACK_SHARE:
            hijacks += 1
            ev = maker.event(EventType.ACTIVITY, s.session, maker.public_ip(), CURL, at, s.user)
        else:
            ev = maker.event(EventType.ACTIVITY, s.session, s.ip, s.ua, at, s.user)
        s.seen += 1
        events.append(ev)
    first = maker.hijack_pair(origin)
    last = maker.hijack_pair(origin + timedelta(seconds=120 + span))
    return Workload(events, [kv(e) for e in events], first, last, hijacks)


# -- broker and process helpers --------------------------------------------------------------


class BenchError(Exception):
    """A measurement could not be taken; the message says why (the other rows still run)."""


def create_topics(bootstrap: str, topics: list[str] | tuple[str, ...], partitions: int = 1) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    from streams.topics import RETENTION_CONFIG  # Quix reads retention.*; Tansu returns only these

    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(t, partitions, 1, config=dict(RETENTION_CONFIG)) for t in topics]
    for topic, fut in admin.create_topics(new, operation_timeout=10).items():
        try:
            fut.result(15)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BenchError(f"creating {topic}: {exc}") from exc


def recreate_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Delete `topic`, create it empty with `partitions` (the worker's input name is fixed)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.delete_topics([topic], operation_timeout=10).values():
        fut.result(15)
    deadline = time.monotonic() + 15
    while topic in admin.list_topics(timeout=5).topics:
        if time.monotonic() > deadline:
            raise BenchError(f"{topic} still listed 15 s after deleting it")
        time.sleep(0.1)
    create_topics(bootstrap, [topic], partitions)
    while len(admin.list_topics(timeout=5).topics[topic].partitions) != partitions:
        if time.monotonic() > deadline:
            raise BenchError(f"{topic} was not recreated with {partitions} partitions")
        time.sleep(0.1)


def make_producer(bootstrap: str, linger_ms: float) -> Any:
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms,
                     "batch.num.messages": 10_000, "queue.buffering.max.messages": 1_000_000,
                     "queue.buffering.max.kbytes": 1_048_576, "enable.idempotence": False,
                     "log_level": 4})


def produce_all(producer: Any, messages: list[tuple[bytes, bytes]],
                partition: int | None = None) -> float:
    """Produce to sessionwatch.events and flush; the seconds from the first call to `flush`."""
    where = {} if partition is None else {"partition": partition}
    t0 = time.perf_counter()
    for key, value in messages:
        while True:
            try:
                producer.produce(EVENTS_TOPIC, value=value, key=key, **where)
                break
            except BufferError:
                producer.poll(0.01)
    if remaining := producer.flush(60):
        raise BenchError(f"{remaining} messages not delivered to {EVENTS_TOPIC}")
    return time.perf_counter() - t0


@contextmanager
def child(cmd: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own session (process group); the group is killed when the block ends."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONWATCH_")}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(5)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


def rate(events: int, seconds: float, **more: Any) -> dict[str, Any]:
    return {"events": events, "wall_s": seconds, "events_per_s": events / seconds, **more}


def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    if not ordered:
        return {}
    at = {p: ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] for p in (50, 95, 99)}
    return {"p50": at[50] * 1e3, "p95": at[95] * 1e3, "p99": at[99] * 1e3, "max": ordered[-1] * 1e3}


# -- 2. the raw reader; 3. Quix Streams' own loop --------------------------------------------


def raw_read(bootstrap: str, total: int, decode: bool) -> dict[str, Any]:
    """A plain consume(1000) loop, assigned (no group membership, no commits). Timed from the
    return of the first batch (which paid for connecting and the first fetch) to the last
    message; the first batch's messages are not counted."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-raw-{uuid.uuid4()}",
                         "enable.auto.commit": False, "log_level": 3})
    try:
        consumer.assign([TopicPartition(EVENTS_TOPIC, 0, OFFSET_BEGINNING)])
        count = first = 0
        t0, deadline = 0.0, time.monotonic() + 60
        while count < total and time.monotonic() < deadline:
            # consume(n) returns at n messages or at the timeout: never ask for more than are left
            batch = [m for m in consumer.consume(min(1000, total - count), timeout=1.0)
                     if m.error() is None]
            if decode:
                for m in batch:
                    decode_event(m.value())
            count += len(batch)
            if batch and not first:
                first, t0 = len(batch), time.perf_counter()
        wall = time.perf_counter() - t0
    finally:
        consumer.close()
    if count < total:
        raise BenchError(f"the raw reader got {count} of {total} messages within 60 s")
    return rate(count - first, wall)


def median_of_3(read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    runs = sorted((read() for _ in range(3)), key=lambda r: r["events_per_s"])
    return {**runs[1], "all_events_per_s": [r["events_per_s"] for r in runs]}


def bare_app_main() -> None:
    """Child-process entry (bench_bare_app): a Quix Application doing nothing per message (or
    one state read and write), stopped at the COUNT-th; times from Quix's on_message_processed
    callback for the first message to the one for the COUNT-th, and writes them to OUT.

    argv: BOOTSTRAP COUNT stateless|stateful OUT STATE_DIR"""
    bootstrap, count_s, mode, out, state_dir = sys.argv[1:6]
    from quixstreams import Application
    from quixstreams.models import TopicConfig
    from quixstreams.state.memory import MemoryStore

    from streams.settings import Settings
    from streams.topics import RETENTION_CONFIG

    count, s, seen, marks = int(count_s), Settings(), [0], []

    def processed(_topic: str, _partition: int, _offset: int) -> None:
        seen[0] += 1
        if seen[0] in (1, count):
            marks.append((time.perf_counter(), time.process_time(), time.time()))
            if seen[0] == count:
                app.stop()

    app = Application(  # the worker's consumer settings (streams/engine.py): the rest is our code
        broker_address=bootstrap, consumer_group=f"bench-quix-{mode}-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest", commit_interval=s.commit_interval_s, state_dir=state_dir,
        consumer_poll_timeout=0.05, loglevel="WARNING", on_message_processed=processed,
        consumer_extra_config={"fetch.wait.max.ms": s.fetch_max_wait_ms,
                               "session.timeout.ms": int(s.session_timeout_s * 1000),
                               "heartbeat.interval.ms": int(s.session_timeout_s * 200)})
    config = TopicConfig(num_partitions=1, replication_factor=1, extra_config=dict(RETENTION_CONFIG))
    sdf = app.dataframe(app.topic(EVENTS_TOPIC, value_deserializer="bytes",
                                  key_deserializer="bytes", config=config))
    if mode == "stateful":
        sdf.register_store(store_type=MemoryStore)  # the worker's default store

        def step(value: bytes, state: Any) -> None:
            state.get_bytes(b"s")
            state.set_bytes(b"s", value)

        sdf.update(step, stateful=True)
    else:
        sdf.update(lambda value: None)
    app.run()
    (p0, c0, w0), (p1, c1, _) = marks[0], marks[-1]
    Path(out).write_text(json.dumps(rate(count - 1, p1 - p0, cpu_s=c1 - c0, first_at=w0)))


def bench_bare_app(bootstrap: str, total: int, stateful: bool, tmp: Path) -> dict[str, Any]:
    mode = "stateful" if stateful else "stateless"
    out, log = tmp / f"quix-{mode}.json", tmp / f"quix-{mode}.log"
    cmd = [sys.executable, "-c", "from benchmarks.throughput import bare_app_main; bare_app_main()",
           bootstrap, str(total), mode, str(out), str(tmp / f"quix-{mode}-state")]
    launched = time.time()
    with child(cmd, log) as proc:
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            pass
    if not out.exists():
        tail = log.read_text(errors="replace")[-2000:]
        raise BenchError(f"the Quix app ({mode}) wrote no result within 120 s; log tail:\n{tail}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["startup_s"] = result.pop("first_at") - launched
    return result


# -- 4. in process ---------------------------------------------------------------------------


def bench_in_process(work: Workload, model: Any = None) -> dict[str, Any]:
    """LocalRunner (every stage) and the session stage alone over the decoded body; a fresh
    Enricher each (cold caches), the process-wide GeoIP/ua-parser set-up paid before. With a
    model (--model) both run the learned score as the worker does."""
    from streams.enrich import Enricher
    from streams.local import LocalRunner
    from streams.pipeline import SessionPipeline

    warm = Enricher()
    warm.client(BROWSERS[0])
    warm.network("8.8.8.8")
    events = work.body_events
    t0 = time.perf_counter()
    for _key, value in work.body:
        decode_event(value)
    decode_s = time.perf_counter() - t0

    runner = LocalRunner(enricher=Enricher(), model=model)
    revocations: list[Revocation] = []
    t0 = time.perf_counter()
    for event in events:
        revocations += runner.process(event)[1]
    revocations += runner.finish()[1]
    local = rate(len(events), time.perf_counter() - t0, stats=str(runner.stats))

    pipeline = SessionPipeline(Enricher(), track_behaviour=model is not None)
    states: dict[str | None, Any] = {}
    t0 = time.perf_counter()
    for event in events:
        outcome = pipeline.process(event, states.get(event.session), datetime.now(UTC))
        if not outcome.duplicate:
            states[event.session] = outcome.state
    session = rate(len(events), time.perf_counter() - t0, sessions=len(states))
    return {"local": local, "session_stage": session, "decode_per_s": len(events) / decode_s,
            "revocations": {r.id: r for r in revocations}}


# -- 5. the worker ---------------------------------------------------------------------------


@dataclass
class Seen:
    arrived: float   # perf_counter when the watching consumer returned it
    revocation: Revocation


@dataclass
class RevocationWatch:
    """Reads sessionwatch.revocations from the beginning in a thread (assigned confluent
    consumer, no group, fetch.wait.max.ms 5) and notes when each revocation arrived."""

    bootstrap: str
    received: list[Seen] = field(default_factory=list)
    error: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> RevocationWatch:
        self._thread = threading.Thread(target=self._run, name="revocation-watch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        try:
            c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "bench-watch",
                          "enable.auto.commit": False, "fetch.wait.max.ms": 5, "log_level": 3})
            c.assign([TopicPartition(REVOCATIONS_TOPIC, 0, OFFSET_BEGINNING)])
            while not self._stop.is_set():
                msg = c.poll(0.05)
                if msg is not None and msg.error() is None:
                    self.received.append(Seen(time.perf_counter(), decode_revocation(msg.value())))
            c.close()
        except BaseException as exc:  # reported by wait_for
            self.error.append(exc)

    def mark(self) -> int:
        return len(self.received)

    def since(self, mark: int) -> dict[str, Seen]:
        """Event id -> the first revocation naming it, among those received after `mark`."""
        out: dict[str, Seen] = {}
        for seen in self.received[mark:]:
            for event_id in seen.revocation.events:
                out.setdefault(event_id, seen)
        return out

    def wait_for(self, event_ids: set[str], mark: int, timeout_s: float,
                 alive: Callable[[], bool] = lambda: True) -> bool:
        deadline = time.monotonic() + timeout_s
        while not event_ids <= self.since(mark).keys():
            if self.error:
                raise BenchError(f"the revocation watcher failed: {self.error[0]!r}")
            if time.monotonic() > deadline or not alive():
                return False
            time.sleep(0.02)
        return True

    def settle(self, quiet_s: float = 2.0, timeout_s: float = 20.0) -> None:
        """Until nothing arrived for `quiet_s` (held user/source decisions come out late)."""
        deadline, count, since = time.monotonic() + timeout_s, self.mark(), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
            time.sleep(0.1)
            if self.mark() != count:
                count, since = self.mark(), time.monotonic()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def events_partitions(worker: Any) -> tuple[int, ...] | None:
    """The sessionwatch.events partitions named in the worker's last `worker: ready` line."""
    lines = re.findall(r"worker: ready, .*", worker.log_path.read_text(errors="replace"))
    return tuple(int(p) for p in re.findall(r"sessionwatch\.events\[(\d+)\]", lines[-1])) \
        if lines else None


def counters(worker: Any) -> str:
    """The worker's counters, from the diagnostics it logs on SIGUSR1 (streams/diagnostics.py)."""
    before = worker.log_path.read_bytes().count(b"counters: ")
    os.kill(worker.proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = worker.log_path.read_text(errors="replace")
        if text.count("counters: ") > before:
            return str(text.rsplit("counters: ", 1)[1].splitlines()[0])
        time.sleep(0.1)
    return "n/a (no diagnostics within 5 s)"


def marker_span(watch: RevocationWatch, mark: int, starts: list[Pair], ends: list[Pair],
                workers: list[Any], timeout_s: float) -> tuple[float, float]:
    """decided_at of the earliest start marker's revocation and of the latest end marker's."""
    def alive() -> bool:
        return all(w.proc.poll() is None for w in workers)

    for label, pairs, wait in (("start", starts, 120.0), ("end", ends, timeout_s)):
        if not watch.wait_for({p.hijack_id for p in pairs}, mark, wait, alive):
            why = "a worker exited" if not alive() else f"no revocation within {wait:.0f} s"
            raise BenchError(f"the {label} marker was never revoked ({why})")
    seen = watch.since(mark)
    decided = {p.hijack_id: seen[p.hijack_id].revocation.decided_at.timestamp()
               for p in starts + ends}
    return min(decided[p.hijack_id] for p in starts), max(decided[p.hijack_id] for p in ends)


def caught_up(bootstrap: str, app_id: str, watch: RevocationWatch,
              workers: list[Any]) -> dict[str, Any]:
    """Wait until the group committed to the true log ends and no revocation is coming."""
    from streams.log_end import wait_caught_up
    from streams.routing import by_source_topic, by_user_topic

    topics = [EVENTS_TOPIC, by_user_topic(app_id), by_source_topic(app_id)]
    done = wait_caught_up(bootstrap, app_id, topics, timeout_s=60, settle_s=1.0)
    watch.settle()
    return {"caught_up": done, "counters": [counters(w) for w in workers]}


def compare(watch: RevocationWatch, mark: int, body_ids: set[str],
            expected: dict[str, Revocation]) -> dict[str, Any]:
    """The worker's revocations caused by body events vs LocalRunner's, by id."""
    records = [s.revocation for s in watch.received[mark:] if body_ids.intersection(s.revocation.events)]
    got = {r.id: r for r in records}

    def show(r: Revocation) -> str:
        why = "+".join(reason.detector for reason in r.reasons)
        return f"{r.id} {r.scope.value} {r.action.value} ({why}) events {r.events[:3]}"

    return {"equal": got.keys() == expected.keys(), "worker": len(got), "local": len(expected),
            "duplicate_records": len(records) - len(got),
            "scopes": dict(Counter(r.scope.value for r in got.values())),
            "only_worker": [show(got[i]) for i in sorted(got.keys() - expected.keys())[:5]],
            "only_local": [show(expected[i]) for i in sorted(expected.keys() - got.keys())[:5]]}


def bench_workers(bootstrap: str, work: Workload, expected: dict[str, Revocation],
                  watch: RevocationWatch, tmp: Path, stack: ExitStack,
                  count: int, model: str | None = None) -> tuple[dict[str, Any], list[Any]]:
    """`count` workers in a fresh group on sessionwatch.events recreated with `count`
    partitions. The data is produced once each worker holds one partition (so no rebalance falls
    in the timed span): a start marker per partition, the body, an end marker per partition.
    Returns the figures and the workers, still running."""
    from sessionwatch.processes import WorkerProcess

    recreate_topic(bootstrap, EVENTS_TOPIC, count)
    app_id = f"bench-x{count}-{uuid.uuid4().hex[:6]}"
    launched = time.time()
    workers = []
    for i in range(count):
        w = WorkerProcess(bootstrap, tmp / f"worker-x{count}-{i}.log", app_id=app_id,
                          partitions=count, data_dir=str(tmp / f"worker-x{count}-{i}"),
                          **({"model": model} if model else {}))
        stack.callback(w.stop)
        workers.append(w)
    out: dict[str, Any] = {"app_id": app_id}
    try:
        deadline = time.monotonic() + 120
        while sorted(events_partitions(w) or () for w in workers) != [(p,) for p in range(count)]:
            if any(w.proc.poll() is not None for w in workers) or time.monotonic() > deadline:
                raise BenchError("the workers did not settle on one partition each in 120 s")
            time.sleep(0.2)
        out["startup_s"] = time.time() - launched
        readies = [w.log_path.read_bytes().count(b"worker: ready") for w in workers]
        maker = EventMaker(seed=30 + count)
        first_at, last_at = work.first.events[0].time, work.last.events[0].time
        starts = [work.first] + [maker.hijack_pair(first_at) for _ in range(count - 1)]
        ends = [work.last] + [maker.hijack_pair(last_at) for _ in range(count - 1)]
        mark = watch.mark()
        producer = make_producer(bootstrap, linger_ms=5)
        for p, pair in enumerate(starts):
            produce_all(producer, pair.messages, partition=p)
        produce_all(producer, work.body)
        for p, pair in enumerate(ends):
            produce_all(producer, pair.messages, partition=p)
        t0, t1 = marker_span(watch, mark, starts, ends, workers, 60 + len(work.body) / 300)
        # after the first start take-over: the other start pairs, the body, the end pairs
        out["throughput"] = rate(len(work.body) + 4 * count - 2, t1 - t0)
        out.update(caught_up(bootstrap, app_id, watch, workers))
        out["rebalanced"] = readies != [w.log_path.read_bytes().count(b"worker: ready")
                                        for w in workers]
        out["body"] = compare(watch, mark, {e.id for e in work.body_events}, expected)
    except BenchError as exc:
        out["error"] = str(exc)
        out["log_tail"] = "\n".join(f"--- {w.log_path.name}\n{w.tail(25)}" for w in workers)
    return out, workers


# -- 6. latency ------------------------------------------------------------------------------


class Background(threading.Thread):
    """Workload traffic at `rate` events/s: confluent produce calls, paced every 5 ms."""

    def __init__(self, bootstrap: str, messages: list[tuple[bytes, bytes]], rate: float) -> None:
        super().__init__(name="background", daemon=True)
        self.bootstrap, self.messages, self.rate = bootstrap, messages, rate
        self.sent, self.seconds, self.stop = 0, 0.0, threading.Event()

    def run(self) -> None:
        producer = make_producer(self.bootstrap, linger_ms=5)
        t0 = time.perf_counter()
        while not self.stop.is_set() and self.sent < len(self.messages):
            due = min(len(self.messages), int((time.perf_counter() - t0) * self.rate) + 1)
            for key, value in self.messages[self.sent:due]:
                producer.produce(EVENTS_TOPIC, key=key, value=value)
            self.sent = due
            producer.poll(0)
            time.sleep(0.005)
        self.seconds = time.perf_counter() - t0
        producer.flush(30)


def measure_latency(bootstrap: str, watch: RevocationWatch, seed: int, background_rate: float = 0.0,
                    sessions: int = 2_500) -> dict[str, Any]:
    """LATENCY_PAIRS hijacks: a browser login, TAKEOVER_AFTER_S later the curl take-over, the
    take-overs LATENCY_GAP_S apart; latency = take-over sent -> its revocation at the watcher."""
    background, lead = None, 0.2
    if background_rate:
        lead = 1.0  # the traffic runs alone for a second first, and on until the revocations are in
        window = lead + LATENCY_PAIRS * LATENCY_GAP_S + TAKEOVER_AFTER_S + 10
        traffic = make_workload(int(background_rate * window), sessions, seed=seed + 100,
                                start=datetime.now(UTC), span_s=window, users=f"bg{seed}-")
        background = Background(bootstrap, traffic.body, background_rate)
    producer, maker = make_producer(bootstrap, linger_ms=0), EventMaker(seed)
    start, to_wall = time.perf_counter() + lead, time.time() - time.perf_counter()
    plan: list[tuple[float, tuple[bytes, bytes], str | None]] = []
    for i in range(LATENCY_PAIRS):
        due = start + i * LATENCY_GAP_S
        pair = maker.hijack_pair(datetime.fromtimestamp(due + to_wall, UTC))
        plan += [(due, kv(pair.events[0]), None),
                 (due + TAKEOVER_AFTER_S, kv(pair.events[1]), pair.hijack_id)]
    mark = watch.mark()
    if background is not None:
        background.start()
    sent: dict[str, tuple[float, float]] = {}
    for due, (key, value), hijack in sorted(plan, key=lambda p: p[0]):
        while (delay := due - time.perf_counter()) > 0:
            time.sleep(min(delay, 0.002))
        if hijack is not None:
            sent[hijack] = (time.perf_counter(), time.time())
        producer.produce(EVENTS_TOPIC, key=key, value=value)
        producer.poll(0)
    producer.flush(10)
    watch.wait_for(set(sent), mark, 60)
    if background is not None:
        background.stop.set()
        background.join(30)
    seen = watch.since(mark)
    out: dict[str, Any] = {
        "received": sum(h in seen for h in sent),
        "total_ms": percentiles([seen[h].arrived - t for h, (t, _) in sent.items() if h in seen]),
        "to_decision_ms": percentiles([seen[h].revocation.decided_at.timestamp() - w
                                       for h, (_, w) in sent.items() if h in seen])}
    if background is not None:
        out["background"] = {"target": background_rate, "sent": background.sent,
                             "seconds": background.seconds,
                             "achieved": background.sent / background.seconds}
    return out


# -- --profile: where the worker's time goes -------------------------------------------------


def profile_worker(bootstrap: str, worker: Any, watch: RevocationWatch, seconds: float,
                   tmp: Path, sessions: int) -> dict[str, Any]:
    """py-spy on the running worker while it drains a fresh backlog (the body's shape, event
    times from now on) between its own start and end markers."""
    backlog = make_workload(PROFILE_EVENTS, sessions, seed=41, start=datetime.now(UTC),
                            users="backlog-")
    mark = watch.mark()
    produce_all(make_producer(bootstrap, linger_ms=5),
                [*backlog.first.messages, *backlog.body, *backlog.last.messages])
    raw = tmp / "worker.pyspy.txt"
    cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(worker.proc.pid),
           "-d", f"{seconds:g}", "-f", "raw", "-o", str(raw), "--nonblocking", "--full-filenames"]
    started = time.time()
    with child(cmd, tmp / "py-spy.log") as proc:
        try:
            proc.wait(seconds + 60)
        except subprocess.TimeoutExpired:
            pass
    ended = time.time()
    if not raw.exists():
        raise BenchError("py-spy wrote no profile: "
                         + (tmp / "py-spy.log").read_text(errors="replace")[-1500:])
    out: dict[str, Any] = {"seconds": seconds, **read_collapsed(raw)}
    t0, t1 = marker_span(watch, mark, [backlog.first], [backlog.last], [worker],
                         60 + PROFILE_EVENTS / 1000)
    out["backlog"] = rate(PROFILE_EVENTS + 2, t1 - t0, ran_out_s=t1 - started if t1 < ended else None)
    return out


def read_collapsed(path: Path, top: int = 25) -> dict[str, Any]:
    """Aggregate py-spy's raw stacks (`frame;frame;... count`) by function: own = samples with it
    on top, cumulative = samples with it anywhere in the stack (once per stack)."""
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1][0]] += int(count)
        modules[frames[-1][1].split("/")[0]] += int(count)
        for name in {name for name, _ in frames}:
            cumulative[name] += int(count)
    return {"samples": sum(own.values()), "own": own.most_common(top),
            "cumulative": cumulative.most_common(top + 20), "own_by_module": modules.most_common(8)}


def _frame(frame: str) -> tuple[str, str]:
    """'func (path/file.py:123)' -> ('func (short path)', short path), the line dropped."""
    name, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    for marker in ("site-packages/", f"{ROOT}/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = re.sub(r"^.*/lib/python3\.\d+/", "", path)
    return f"{name or frame} ({path})", path


# -- report ----------------------------------------------------------------------------------


def environment() -> dict[str, str]:
    """Machine, versions and the commit under test (`git status` only), for the header."""
    from importlib.metadata import version

    import confluent_kafka

    from sessionwatch.broker import find_tansu

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown CPU")
    tansu = subprocess.run([find_tansu(), "--version"], capture_output=True, text=True,
                           timeout=10).stdout.strip()
    git = subprocess.run(["git", "status", "--porcelain=v2", "--branch"], cwd=ROOT,
                         capture_output=True, text=True, timeout=10).stdout.splitlines()
    oid = next((ln.split()[-1] for ln in git if ln.startswith("# branch.oid")), "?")
    changed = sum(not ln.startswith("#") for ln in git)
    return {
        "machine": f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
                   f"load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "versions": f"quixstreams {version('quixstreams')}, confluent-kafka "
                    f"{version('confluent-kafka')} (librdkafka {confluent_kafka.libversion()[0]}), "
                    f"msgspec {version('msgspec')}, Python {platform.python_version()}, "
                    f"{tansu or 'tansu ?'} (memory storage)",
        "source": f"commit {oid[:10]}" + (f" + {changed} uncommitted paths" if changed else ""),
    }


def _value(d: Any) -> str:
    if not isinstance(d, dict):
        return "n/a"
    if "total_ms" in d:
        t = d["total_ms"]
        return " / ".join(f"{t[k]:.0f}" for k in ("p50", "p95", "p99", "max")) if t else "none"
    return f"{d['events_per_s']:,.0f}" if "events_per_s" in d else "error"


def table(r: dict[str, Any]) -> str:
    w1, w2, inp = r.get("worker_1", {}), r.get("worker_2", {}), r.get("in_process", {})
    loaded = w1.get("latency_load", {})
    ev, ms = "events/s", "ms"
    cells = [(label, _value(d), unit) for label, d, unit in (
        ("1. produce, confluent-kafka -> sessionwatch.events (1 partition)", r.get("produce"), ev),
        ("2. raw consume(1000) loop, no group, count only", r.get("raw"), ev),
        ("   same + decode_event per message", r.get("raw_decode"), ev),
        ("3. Quix Application, no-op sdf.update (child process)", r.get("quix"), ev),
        ("   same + state.get_bytes/set_bytes per message", r.get("quix_stateful"), ev),
        ("4. LocalRunner, every detector, 3 stages (in process)", inp.get("local"), ev),
        ("   session stage alone (SessionPipeline.process, dict)", inp.get("session_stage"), ev),
        ("5. sessionwatch worker, 1 process, 1 partition", w1.get("throughput"), ev),
        ("   sessionwatch worker, 2 processes, 2 partitions", w2.get("throughput"), ev),
        ("6. event -> revocation, idle worker, p50/p95/p99/max", w1.get("latency_idle"), ms),
        (f"   same, {loaded.get('background', {}).get('achieved', 0):,.0f} events/s other traffic",
         loaded, ms))]
    w, v = max(len(c[0]) for c in cells), max(len(c[1]) for c in cells)
    lines = [f"| {'measurement':<{w}} | {'value':>{v}} | unit     |",
             f"|{'-' * (w + 2)}|{'-' * (v + 1)}:|----------|"]
    return "\n".join(lines + [f"| {a:<{w}} | {b:>{v}} | {c:<8} |" for a, b, c in cells])


def details(r: dict[str, Any]) -> str:
    out = []
    for key in ("raw", "raw_decode"):
        if "all_events_per_s" in (d := r.get(key, {})):
            runs = ", ".join(f"{x:,.0f}" for x in d["all_events_per_s"])
            out.append(f"{key}: median of 3 reads, {d['events']:,} messages after the first batch "
                       f"each; all: {runs} events/s")
    for key in ("quix", "quix_stateful"):
        if "cpu_s" in (d := r.get(key, {})):
            out.append(f"{key}: {d['events']:,} messages after the first in {d['wall_s']:.2f} s, "
                       f"CPU {d['cpu_s']:.2f} s ({d['cpu_s'] / d['wall_s']:.0%} of one core); "
                       f"launch -> first message {d['startup_s']:.1f} s")
    if "local" in (inp := r.get("in_process", {})):
        out.append(f"in process: LocalRunner {inp['local']['stats']}; session stage "
                   f"{inp['session_stage']['sessions']:,} sessions; decode_event alone "
                   f"{inp['decode_per_s']:,.0f}/s")
    out.append(f"worker default settings: {r['worker_settings']}")
    for name, w in (("worker x1", r.get("worker_1", {})), ("worker x2", r.get("worker_2", {}))):
        if "throughput" in w:
            t = w["throughput"]
            out.append(f"{name}: launch -> one partition each {w['startup_s']:.1f} s; "
                       f"{t['events']:,} events in {t['wall_s']:.2f} s between the markers' "
                       f"decided_at; rebalanced while timed: {w['rebalanced']}; group caught up "
                       f"(true log ends): {w['caught_up']}")
        if b := w.get("body"):
            out.append(f"{name}: revocation ids for the body equal LocalRunner's: {b['equal']} "
                       f"(worker {b['worker']}, LocalRunner {b['local']}, by scope {b['scopes']}, "
                       f"duplicate records {b['duplicate_records']})")
            out += [f"    only in the worker:  {x}" for x in b["only_worker"]]
            out += [f"    only in LocalRunner: {x}" for x in b["only_local"]]
        out += [f"{name}: counters {c}" for c in w.get("counters", [])]
        for key in ("latency_idle", "latency_load"):
            if lat := w.get(key):
                tot, dec = lat["total_ms"], lat["to_decision_ms"]
                line = f"{key}: {lat['received']}/{LATENCY_PAIRS} hijacks revoked"
                if tot:
                    line += (f"; sent -> received p50 {tot['p50']:.0f} p95 {tot['p95']:.0f} p99 "
                             f"{tot['p99']:.0f} max {tot['max']:.0f} ms; sent -> decided_at p50 "
                             f"{dec['p50']:.0f} p99 {dec['p99']:.0f} max {dec['max']:.0f} ms")
                if bg := lat.get("background"):
                    low = "" if bg["achieved"] >= 0.95 * bg["target"] else " - BELOW TARGET"
                    line += (f"; background {bg['sent']:,} events in {bg['seconds']:.1f} s = "
                             f"{bg['achieved']:,.0f}/s (target {bg['target']:,.0f}/s{low})")
                out.append(line)
        if after := w.get("after_latency"):
            out.append(f"{name}: caught up after the latency runs: {after['caught_up']}; "
                       f"counters {after['counters'][0]}")
        if "error" in w:
            out.append(f"{name}: ERROR {w['error']}\n{w.get('log_tail', '')}")
    if p := r.get("worker_1", {}).get("profile"):
        out += profile_lines(p)
    return "\n".join(out)


def profile_lines(p: dict[str, Any]) -> list[str]:
    if "error" in p:
        return [f"profile: ERROR {p['error']}"]
    total, b = max(p["samples"], 1), p["backlog"]
    ran_out = (f"the backlog ran out {b['ran_out_s']:.1f} s into the profile"
               if b["ran_out_s"] is not None else "busy for the whole profile")
    out = [f"where the time goes: py-spy on the 1-process worker for {p['seconds']:g} s while it "
           f"drains {b['events'] - 2:,} more events ({p['samples']:,} busy samples at 100/s; "
           f"Python frames only, time in C extensions counts to the caller); it drained them at "
           f"{b['events_per_s']:,.0f} events/s with py-spy attached, {ran_out}",
           "own time by top-level module: "
           + ", ".join(f"{m} {n / total:.0%}" for m, n in p["own_by_module"]),
           "top 25 by own time:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in p["own"]]
    # The entry frames (runpy ... Application.run) are in every full stack: one line for them.
    entry = [name for name, n in p["cumulative"] if n == p["cumulative"][0][1]]
    out.append(f"top 25 by cumulative time, below the entry frames in {p['cumulative'][0][1] / total:.1%}"
               f" of the samples (the rest are torn non-blocking samples): {', '.join(entry)}")
    return out + [f"  {n / total:6.1%}  {name}" for name, n in p["cumulative"][len(entry):][:25]]


def header(r: dict[str, Any]) -> str:
    return (f"{r['events']:,} events, {r['sessions']:,} sessions, {r['hijacks_in_body']} curl "
            f"take-overs in the body; learned score {r.get('model') or 'off'}; {r['machine']}; "
            f"{r['versions']}; {r['source']}; "
            f"total runtime {r['runtime_s']:.0f} s")


def update_readme(text: str) -> None:
    start, end = "<!-- figures:start -->", "<!-- figures:end -->"
    body = README.read_text() if README.exists() else ""
    if start not in body or end not in body:
        body += f"\n{start}\n{end}\n"
    head, rest = body.split(start, 1)
    README.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")


# -- main ------------------------------------------------------------------------------------


def step(label: str, results: dict[str, Any], key: str, fn: Callable[[], Any]) -> None:
    if label:
        print(label, flush=True)
    try:
        results[key] = fn()
    except BenchError as exc:
        results[key] = {"error": str(exc)}
        print(f"   ERROR {exc}", flush=True)


def worker_rows(bs: str, work: Workload, expected: dict[str, Revocation], watch: RevocationWatch,
                tmp: Path, stack: ExitStack, args: argparse.Namespace,
                results: dict[str, Any]) -> None:
    from streams.settings import Settings

    s = Settings()
    results["worker_settings"] = (f"store={s.store}, commit_interval_s={s.commit_interval_s}, "
                                  f"fetch_max_wait_ms={s.fetch_max_wait_ms}, session_timeout_s="
                                  f"{s.session_timeout_s}, allowed_lateness_s={s.allowed_lateness_s}"
                                  f", model={args.model or 'none'}")
    print("5. sessionwatch worker, 1 process ...", flush=True)
    one, workers = bench_workers(bs, work, expected, watch, tmp, stack, 1, args.model)
    results["worker_1"] = one
    try:
        if "error" not in one and not args.skip_latency:
            print("6. latency, idle and under background traffic ...", flush=True)
            one["latency_idle"] = measure_latency(bs, watch, seed=21)
            one["latency_load"] = measure_latency(bs, watch, seed=22, sessions=args.sessions,
                                                  background_rate=BACKGROUND_RATE)
            one["after_latency"] = caught_up(bs, one["app_id"], watch, workers)
        if "error" not in one and args.profile:
            print(f"   profile: {args.profile:g} s of py-spy on a {PROFILE_EVENTS:,}-event "
                  "backlog ...", flush=True)
            sessions = max(1, PROFILE_EVENTS * args.sessions // max(args.events, 1))
            step("", one, "profile", lambda: profile_worker(bs, workers[0], watch, args.profile,
                                                            tmp, sessions))
    except BenchError as exc:
        one["error"], one["log_tail"] = str(exc), workers[0].tail(25)
    for w in workers:
        w.stop()
    print("5. sessionwatch worker, 2 processes ...", flush=True)
    results["worker_2"], workers = bench_workers(bs, work, expected, watch, tmp, stack, 2,
                                                 args.model)
    for w in workers:
        w.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000, help="events N (default 50000)")
    parser.add_argument("--sessions", type=int, default=2_500, help="sessions S (default 2500)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--update-readme", action="store_true",
                        help="replace the figures block in benchmarks/README.md")
    parser.add_argument("--skip-latency", action="store_true", help="leave out row 6")
    parser.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                        help=f"py-spy the 1-process worker for SECONDS while it drains "
                             f"{PROFILE_EVENTS:,} more events")
    parser.add_argument("--logs", metavar="DIR", help="keep the broker's and children's logs here")
    parser.add_argument("--model", metavar="DIR", help="run the learned score: the workers get "
                        "SESSIONWATCH_MODEL=DIR, LocalRunner the model (default: off)")
    args = parser.parse_args(argv)
    args.model = str(Path(args.model).resolve()) if args.model else None

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where started with it ignored
    for var in [v for v in os.environ if v.startswith("SESSIONWATCH_")]:
        print(f"(ignoring {var}: the workers run with default settings)", flush=True)
        del os.environ[var]
    from sessionwatch.broker import EmbeddedBroker

    started = time.perf_counter()
    results: dict[str, Any] = {**environment(), "events": args.events, "sessions": args.sessions,
                               "model": args.model}
    with tempfile.TemporaryDirectory(prefix="sw-bench-") as tmp_name, ExitStack() as stack:
        tmp = Path(args.logs or tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        print(f"building {args.events:,} events over {args.sessions:,} sessions ...", flush=True)
        work = make_workload(args.events, args.sessions)
        results["hijacks_in_body"] = work.hijacks
        bs = stack.enter_context(EmbeddedBroker(log_path=tmp / "tansu.log")).bootstrap
        create_topics(bs, ALL_TOPICS)
        total = len(work.body) + 4  # sessionwatch.events holds the markers and the body

        def produce() -> dict[str, Any]:
            producer = make_producer(bs, linger_ms=5)
            produce_all(producer, work.first.messages)
            secs = produce_all(producer, work.body)
            produce_all(producer, work.last.messages)
            return rate(len(work.body), secs)

        step("1. producing ...", results, "produce", produce)
        step("2. raw reader ...", results, "raw", lambda: median_of_3(
            lambda: raw_read(bs, total, decode=False)))
        step("   ... + decode_event", results, "raw_decode", lambda: median_of_3(
            lambda: raw_read(bs, total, decode=True)))
        step("3. Quix Streams app (child process) ...", results, "quix",
             lambda: bench_bare_app(bs, total, False, tmp))
        step("   ... stateful", results, "quix_stateful", lambda: bench_bare_app(bs, total, True, tmp))
        print("4. in process (LocalRunner, session stage) ...", flush=True)
        from models.load import load_model

        results["in_process"] = bench_in_process(work, load_model(args.model) if args.model
                                                 else None)
        expected = results["in_process"].pop("revocations")
        watch = RevocationWatch(bs).start()
        stack.callback(watch.close)
        worker_rows(bs, work, expected, watch, tmp, stack, args, results)
    results["runtime_s"] = time.perf_counter() - started

    print(f"\n{header(results)}\n\n{table(results)}\n\n{details(results)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    if args.update_readme:
        update_readme(f"{header(results)}\n\n{table(results)}\n\n```\n{details(results)}\n```")
    return 1 if any("error" in results.get(k, {}) for k in ("worker_1", "worker_2")) else 0


if __name__ == "__main__":
    sys.exit(main())
