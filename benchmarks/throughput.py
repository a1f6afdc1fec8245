"""Throughput and latency of the sessionwatch path, end to end, in one run on one embedded broker.

    python -m benchmarks.throughput [--events N] [--sessions S] [--update-readme]

(a) produce N contract events with confluent-kafka (into a fresh 1-partition topic, and into
    sessionwatch.events for the worker)
(b) raw aiokafka `getmany` consumption of the fresh topic (no group)
(c) a bare faust agent (child process; own app, memory store, no web, no table, json.loads)
(d) the pure pipeline in-process, no broker: SessionPipeline.process + a dict-backed SessionStore,
    plus a cProfile top-10
(e) the real worker (`sessionwatch worker` child process, default settings, 1 partition):
    events/s from the first to the last processed event, and event -> revocation latency at a
    low rate (hijacks sent 20 ms apart)

See benchmarks/README.md for what the figures mean. Every child process runs in its own session
and is killed (process group) on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from producers.contract import (
    ALL_TOPICS,
    EVENT_SCHEMA,
    EVENTS_TOPIC,
    REVOCATIONS_TOPIC,
    Event,
    EventType,
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


# -- events ----------------------------------------------------------------------------------


@dataclass
class Workload:
    body: list[tuple[bytes, bytes]]           # (key, JSON value): the N events
    body_events: list[Event]
    first_pair: list[tuple[bytes, bytes]]     # a hijack pair before the body (start marker)
    last_pair: list[tuple[bytes, bytes]]      # a hijack pair after the body (end marker)
    first_hijack_id: str
    last_hijack_id: str
    hijacks: int                              # curl take-overs inside the body


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

    def hijack_pair(self, at: datetime) -> tuple[list[Event], str]:
        """A browser session taken over by curl from another address: must revoke."""
        session, user = self.session(), f"pair-{self.rng.getrandbits(32):08x}@example.com"
        good = self.event(EventType.AUTHENTICATED, session, self.public_ip(), BROWSERS[0], at, user)
        bad = self.event(EventType.ACTIVITY, session, self.public_ip(), CURL,
                         at + timedelta(seconds=30), user)
        return [good, bad], bad.id


def kv(event: Event) -> tuple[bytes, bytes]:
    return event.key.encode(), encode(event)


@dataclass
class _Session:
    session: str
    ip: str
    ua: str
    user: str
    seen: int = 0


def make_workload(n: int, sessions: int, seed: int = 7) -> Workload:
    maker = EventMaker(seed)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    pool = [
        _Session(maker.session(), maker.public_ip(), maker.rng.choice(BROWSERS),
                 f"user{i:06d}@example.com")
        for i in range(sessions)
    ]
    events: list[Event] = []
    hijacks = 0
    # Each session makes a request every ~SECONDS_BETWEEN_REQUESTS of event time on average.
    span = SECONDS_BETWEEN_REQUESTS * n / max(sessions, 1)
    step = span / max(n, 1)
    for j in range(n):
        s = maker.rng.choice(pool)
        at = base + timedelta(seconds=60 + j * step)
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
    first, first_id = maker.hijack_pair(base)
    last, last_id = maker.hijack_pair(base + timedelta(seconds=120 + span))
    return Workload(
        body=[kv(e) for e in events], body_events=events,
        first_pair=[kv(e) for e in first], last_pair=[kv(e) for e in last],
        first_hijack_id=first_id, last_hijack_id=last_id, hijacks=hijacks,
    )


# -- broker helpers --------------------------------------------------------------------------


def create_topics(bootstrap: str, topics: list[str]) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, 1, 1) for t in topics], operation_timeout=10)
    for topic, fut in futures.items():
        try:
            fut.result(15)
        except Exception as exc:  # already exists is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"creating {topic}: {exc}") from exc


def make_producer(bootstrap: str, linger_ms: float) -> Any:
    from confluent_kafka import Producer

    return Producer({
        "bootstrap.servers": bootstrap,
        "linger.ms": linger_ms,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "enable.idempotence": False,
    })


def produce_all(producer: Any, topic: str, messages: list[tuple[bytes, bytes]]) -> float:
    """Produce and flush; returns the seconds it took."""
    t0 = time.perf_counter()
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.01)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} messages not delivered to {topic}")
    return time.perf_counter() - t0


def end_offset(bootstrap: str, topic: str) -> tuple[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks",
                  "enable.auto.commit": False})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        c.close()


def committed_offset(bootstrap: str, group: str, topic: str) -> int | None:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, 0)], timeout=10)
        return tps[0].offset if tps and tps[0].offset >= 0 else None
    except Exception:
        return None
    finally:
        c.close()


# -- child processes -------------------------------------------------------------------------


@contextmanager
def child(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> Iterator[Any]:
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        kill_group(proc)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            # the leader is gone; make sure nothing it started lingers in its group
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
        except subprocess.TimeoutExpired:
            continue


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONWATCH_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# -- (b) raw aiokafka ------------------------------------------------------------------------


async def _aiokafka_read(bootstrap: str, topic: str, n: int, parse: bool) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", fetch_max_wait_ms=1500)
    await consumer.start()
    try:
        count = calls = 0
        t0 = time.perf_counter()  # connected; the first fetch is part of the measurement
        loads = json.loads
        while count < n:
            batch = await consumer.getmany(timeout_ms=2000)
            calls += 1
            got = 0
            for records in batch.values():
                got += len(records)
                if parse:
                    for r in records:
                        loads(r.value)
            count += got
        wall = time.perf_counter() - t0
    finally:
        await consumer.stop()
    return {"events": count, "wall_s": wall, "events_per_s": count / wall, "getmany_calls": calls}


async def _aiokafka_latency(bootstrap: str, topic: str, wait_ms: int, n: int,
                            gap_s: float) -> dict[str, float]:
    """Produce -> receive latency of a raw aiokafka consumer at a low rate (broker fetch wait)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="latest", fetch_max_wait_ms=wait_ms)
    await consumer.start()
    try:
        await consumer.seek_to_end()
        await asyncio.sleep(0.5)
        producer = make_producer(bootstrap, linger_ms=0)
        sent: dict[int, float] = {}
        latencies: list[float] = []

        async def send() -> None:
            for i in range(n):
                sent[i] = time.perf_counter()
                producer.produce(topic, value=str(i).encode())
                producer.poll(0)
                await asyncio.sleep(gap_s)
            producer.flush(10)

        task = asyncio.create_task(send())
        deadline = time.monotonic() + n * gap_s + 10
        while len(latencies) < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=2000)
            now = time.perf_counter()
            for records in batch.values():
                latencies.extend(now - sent[int(r.value)] for r in records)
        await task
    finally:
        await consumer.stop()
    return _percentiles(latencies)


def bench_aiokafka_latency(bootstrap: str, wait_ms: int, n: int, gap_s: float) -> dict[str, float]:
    topic = f"bench.latency.{wait_ms}.{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [topic])
    return asyncio.run(_aiokafka_latency(bootstrap, topic, wait_ms, n, gap_s))


def bench_aiokafka(bootstrap: str, topic: str, n: int, parse: bool,
                   repeat: int = 3) -> dict[str, Any]:
    """The median of `repeat` reads (one read of 100k events takes well under a second)."""
    runs = sorted((asyncio.run(_aiokafka_read(bootstrap, topic, n, parse)) for _ in range(repeat)),
                  key=lambda r: r["events_per_s"])
    result = dict(runs[len(runs) // 2])
    result["all_events_per_s"] = [r["events_per_s"] for r in runs]
    return result


# -- (c) bare faust --------------------------------------------------------------------------


def bench_bare_faust(bootstrap: str, topic: str, n: int, tmp: Path, timeout_s: float,
                     profile: bool = False) -> dict[str, Any]:
    tag = "bare_faust_profiled" if profile else "bare_faust"
    result_path = tmp / f"{tag}.json"
    profile_path = tmp / f"{tag}.pstats"
    cmd = [sys.executable, "-m", "benchmarks._bare_faust", bootstrap, topic, str(n),
           str(result_path), f"bench-bare-{uuid.uuid4().hex[:8]}"]
    if profile:
        cmd.append(str(profile_path))
    t_start = time.perf_counter()
    with child(cmd, tmp / f"{tag}.log", child_env()) as proc:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
    if not result_path.exists():
        tail = (tmp / f"{tag}.log").read_text(errors="replace")[-2000:]
        return {"error": f"no result within {timeout_s:.0f}s; log tail:\n{tail}"}
    result: dict[str, Any] = json.loads(result_path.read_text())
    result["process_s"] = time.perf_counter() - t_start
    if profile and profile_path.exists():
        result["profile"] = faust_profile(pstats.Stats(str(profile_path)))
    return result


# Where a faust agent's per-message time goes: (label, file suffix, function name), cumulative.
FAUST_PARTS = (
    ("Consumer._drain_messages (fetch loop, per message)", "faust/transport/consumer.py",
     "_drain_messages"),
    ("Service.wait_first (2 tasks per message)", "mode/services.py", "wait_first"),
    ("asyncio.wait (inside wait_first)", "asyncio/tasks.py", "wait"),
    ("Conductor on_message (per-message Lock)", "faust/transport/conductor.py", "on_message"),
    ("asyncio.Lock.acquire", "asyncio/locks.py", "acquire"),
    ("Stream._c_aiter (the agent's async-for)", "faust/streams.py", "_c_aiter"),
    ("asyncio create_task", "asyncio/base_events.py", "create_task"),
    ("json.loads (the agent's work)", "json/__init__.py", "loads"),
)


def faust_profile(stats: pstats.Stats) -> dict[str, Any]:
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    rows = sorted(((v[2], v[3], v[1], _func_name(k)) for k, v in raw.items()),
                  reverse=True)
    top = [{"tottime_s": tt, "share": tt / total, "cumtime_s": ct, "calls": nc,
            "function": _short(name)} for tt, ct, nc, name in rows[:12]]
    groups: dict[str, float] = {}
    for (file_, _line, fn), v in raw.items():
        group = "idle (waiting in epoll)" if "select.epoll" in fn else next(
            (g for g, marker in _GROUPS if marker in file_), "other (builtins, C)")
        groups[group] = groups.get(group, 0.0) + v[2]
    parts = {}
    for label, file_, fn in FAUST_PARTS:
        hits = [v for k, v in raw.items() if k[0].endswith(file_) and k[2] == fn]
        parts[label] = {"cumtime_s": sum(v[3] for v in hits), "calls": sum(v[1] for v in hits)}
    return {"own_total_s": total, "top": top, "parts": parts,
            "own_by_package": {g: t / total for g, t in sorted(groups.items(), key=lambda x: -x[1])}}


_GROUPS = (
    ("asyncio (event loop, tasks, futures, locks)", "/asyncio/"),
    ("faust", "/faust/"),
    ("mode (faust's service library: wait_first, ...)", "/mode/"),
    ("aiokafka", "/aiokafka/"),
    ("json", "/json/"),
    ("benchmark agent", "benchmarks/"),
)


# -- (d) pure pipeline -----------------------------------------------------------------------


def bench_pipeline(raw_values: list[bytes]) -> dict[str, Any]:
    from streams.enrich import Enricher
    from streams.pipeline import SessionPipeline
    from streams.session_store import SessionStore

    t0 = time.perf_counter()
    events = [decode_event(v) for v in raw_values]
    decode_s = time.perf_counter() - t0

    def run(enricher: Enricher) -> tuple[float, dict[str, int]]:
        pipeline = SessionPipeline(enricher)
        store = SessionStore({})
        counts = {"findings": 0, "revocations": 0, "duplicates": 0}
        revocation_ids = []
        now = datetime.now
        t = time.perf_counter()
        for event in events:
            key = event.session.encode()  # type: ignore[union-attr]
            outcome = pipeline.process(event, store.get(key), now(UTC))
            if outcome.duplicate:
                counts["duplicates"] += 1
                continue
            store.put(key, outcome, 0)
            counts["findings"] += len(outcome.findings)
            if outcome.revocation is not None:
                counts["revocations"] += 1
                revocation_ids.append(outcome.revocation.id)
        elapsed = time.perf_counter() - t
        counts["state_writes"] = store.writes
        counts["sessions"] = len(store)
        run.revocation_ids = revocation_ids  # type: ignore[attr-defined]
        return elapsed, counts

    # One-time, process-wide initialisation (ua-parser's resolver, GeoIP files) happens at a
    # worker's first event too, but it is start-up cost, not per-event cost: pay it here.
    warm = Enricher()
    warm.client(BROWSERS[0])
    warm.network("8.8.8.8")
    warm.close()
    # A fresh Enricher per run: its lru caches start cold, as in a freshly started worker.
    elapsed, counts = run(Enricher())
    revocation_ids = set(run.revocation_ids)  # type: ignore[attr-defined]

    profiler = cProfile.Profile()
    enricher = Enricher()
    profiler.enable()
    profiled_s, _ = run(enricher)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = []
    for func, (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, ct, nc, _func_name(func)))
    rows.sort(reverse=True)
    top = [{"tottime_s": tt, "share": tt / total, "cumtime_s": ct, "calls": nc,
            "function": _short(name)} for tt, ct, nc, name in rows[:10]]
    # Cumulative time of the pipeline's parts (cProfile-inflated; shares are what matter).
    wanted = {
        "enrich.network_prefix": ("enrich.py", "network_prefix"),
        "Enricher._network (GeoIP on cache miss)": ("enrich.py", "_network"),
        "Enricher._client (ua-parser on cache miss)": ("enrich.py", "_client"),
        "IpChange.evaluate": ("ip_change.py", "evaluate"),
        "UaChange.evaluate": ("ua_change.py", "evaluate"),
        "Policy.enabled": ("policy.py", "enabled"),
        "policy.finding_id (uuid5)": ("policy.py", "finding_id"),
        "Policy.decide": ("policy.py", "decide"),
        "pipeline._advance (copy state)": ("pipeline.py", "_advance"),
        "SessionState.material": ("state.py", "material"),
        "SessionStore.get": ("session_store.py", "get"),
        "SessionStore.put (incl. dump_state)": ("session_store.py", "put"),
    }
    breakdown = {}
    for label, (file_, fn) in wanted.items():
        ct = sum(v[3] for k, v in stats.stats.items()  # type: ignore[attr-defined]
                 if k[0].endswith(file_) and k[2] == fn)
        breakdown[label] = ct / profiled_s if profiled_s else 0.0
    enricher.close()
    return {
        "events": len(events),
        "events_per_s": len(events) / elapsed,
        "wall_s": elapsed,
        "decode_per_s": len(events) / decode_s,
        "decode_plus_pipeline_per_s": len(events) / (elapsed + decode_s),
        "counts": counts,
        "revocation_ids": revocation_ids,
        "profiled_s": profiled_s,
        "top10": top,
        "breakdown": breakdown,
    }


def _func_name(key: tuple[str, int, str]) -> str:
    file_, line, fn = key
    return fn if file_ == "~" else f"{file_}:{line}({fn})"


def _short(name: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in name:
            return name.split(marker, 1)[1]
    return name


# -- (e) the real worker ---------------------------------------------------------------------


@dataclass
class RevocationWatch:
    """Reads sessionwatch.revocations from the beginning in a thread; notes arrival times."""

    bootstrap: str
    seen: dict[str, tuple[float, float, Any]] = field(default_factory=dict)  # hijack event id ->
    # (arrival perf_counter, arrival wall clock, Revocation)
    stop: threading.Event = field(default_factory=threading.Event)
    error: list[BaseException] = field(default_factory=list)

    def start(self) -> RevocationWatch:
        self._thread = threading.Thread(target=self._run, name="revocation-watch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        try:
            c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "bench-watch",
                          "enable.auto.commit": False, "fetch.wait.max.ms": 5,
                          "fetch.min.bytes": 1})
            c.assign([TopicPartition(REVOCATIONS_TOPIC, 0, OFFSET_BEGINNING)])
            while not self.stop.is_set():
                msg = c.poll(0.05)
                if msg is None or msg.error():
                    continue
                arrived, wall = time.perf_counter(), time.time()
                rev = decode_revocation(msg.value() or b"")
                for event_id in rev.events:
                    self.seen[event_id] = (arrived, wall, rev)
            c.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error.append(exc)

    def wait_for(self, event_ids: set[str], timeout_s: float, alive: Any = None) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if event_ids <= self.seen.keys():
                return True
            if alive is not None and not alive():
                return False
            time.sleep(0.02)
        return event_ids <= self.seen.keys()

    def close(self) -> None:
        self.stop.set()
        self._thread.join(5)


def bench_worker(bootstrap: str, work: Workload, expected_revocations: set[str] | None,
                 tmp: Path, timeout_s: float, latency_pairs: int,
                 latency_gap_s: float) -> dict[str, Any]:
    app_id = f"bench-worker-{uuid.uuid4().hex[:8]}"
    log_path = tmp / "worker.log"
    producer = make_producer(bootstrap, linger_ms=5)
    messages = work.first_pair + work.body + work.last_pair
    produce_s = produce_all(producer, EVENTS_TOPIC, messages)
    out: dict[str, Any] = {"app_id": app_id, "produce_events_topic_s": produce_s,
                           "log": str(log_path)}
    watch = RevocationWatch(bootstrap).start()
    cmd = [sys.executable, "-m", "sessionwatch", "worker", "--app-id", app_id,
           "--partitions", "1"]
    try:
        launched = time.time()
        with child(cmd, log_path, child_env(SESSIONWATCH_BOOTSTRAP=bootstrap)) as proc:
            alive = lambda: proc.poll() is None  # noqa: E731
            if not watch.wait_for({work.first_hijack_id}, 90, alive):
                out["error"] = ("the worker never revoked the first hijack (no revocation for the "
                                "first event pair within 90 s)")
                return _worker_diagnose(out, bootstrap, app_id, log_path, proc, watch)
            first = watch.seen[work.first_hijack_id][2]
            out["startup_s"] = first.decided_at.timestamp() - launched
            if not watch.wait_for({work.last_hijack_id}, timeout_s, alive):
                out["error"] = (f"the worker did not reach the last event within {timeout_s:.0f}s"
                                " of the first")
                return _worker_diagnose(out, bootstrap, app_id, log_path, proc, watch)
            last = watch.seen[work.last_hijack_id][2]
            span = (last.decided_at - first.decided_at).total_seconds()
            # from the first pair's hijack (processed at `first`) to the last pair's hijack
            events_between = len(work.body) + 2
            out["throughput"] = {"events": events_between, "wall_s": span,
                                 "events_per_s": events_between / span}
            body_ids = {e.id for e in work.body_events}
            got = {rev.id for eid, (_a, _w, rev) in list(watch.seen.items()) if eid in body_ids}
            out["body_revocations"] = len(got)
            if expected_revocations is not None:
                out["matches_pipeline"] = got == expected_revocations
            out["latency"] = _latency(bootstrap, watch, latency_pairs, latency_gap_s, alive)
            _, high = end_offset(bootstrap, EVENTS_TOPIC)
            committed = None
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:  # faust commits every ~2.8 s
                committed = committed_offset(bootstrap, app_id, EVENTS_TOPIC)
                if committed == high:
                    break
                time.sleep(0.5)
            out["committed"], out["end_offset"] = committed, high
            out["stats_lines"] = _stats_lines(log_path)
            out["dead_lettered"] = _count(log_path, "dead-lettered")
            out["processing_failed"] = _count(log_path, "processing failed")
            return out
    finally:
        watch.close()


# The worker's parts, cumulative per processed event: (label, file suffix, function name).
WORKER_PARTS = (
    ("session_agent body (all per-event work in the agent)", "streams/app.py", "session_agent"),
    ("decode_event (msgspec + checks)", "producers/contract.py", "decode_event"),
    ("SessionPipeline.process", "streams/pipeline.py", "process"),
    ("SessionStore.put (table write on material change)", "streams/session_store.py", "put"),
    ("faust Table.on_key_set (table write + changelog send)", "faust/tables/table.py",
     "on_key_set"),
    ("faust Topic.send (findings, revocations, changelog)", "faust/topics.py", "send"),
    ("logging (revocation info lines)", "logging/__init__.py", "info"),
    ("Consumer._drain_messages (fetch loop)", "faust/transport/consumer.py", "_drain_messages"),
    ("Service.wait_first", "mode/services.py", "wait_first"),
    ("Conductor on_message", "faust/transport/conductor.py", "on_message"),
    ("Stream._c_aiter", "faust/streams.py", "_c_aiter"),
    ("asyncio create_task", "asyncio/base_events.py", "create_task"),
)


def profile_worker(bootstrap: str, tmp: Path, seconds: float) -> dict[str, Any]:
    """A second worker (fresh group: reads sessionwatch.events from the start) under cProfile."""
    app_id = f"bench-prof-{uuid.uuid4().hex[:8]}"
    out = tmp / "worker.pstats"
    cmd = [sys.executable, "-m", "benchmarks._profiled_worker", str(out), "worker",
           "--app-id", app_id, "--partitions", "1"]
    with child(cmd, tmp / "worker_profiled.log",
               child_env(SESSIONWATCH_BOOTSTRAP=bootstrap)) as proc:
        time.sleep(seconds)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
    if not out.exists():
        return {"error": "the profiled worker wrote no stats"}
    raw = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    events = sum(v[1] for k, v in raw.items()
                 if k[0].endswith("streams/pipeline.py") and k[2] == "process")
    total = sum(v[2] for v in raw.values())
    groups: dict[str, float] = {}
    for (file_, _line, fn), v in raw.items():
        group = "idle (waiting in epoll)" if "select.epoll" in fn else next(
            (g for g, marker in _WORKER_GROUPS if marker in file_), "other (builtins, C)")
        groups[group] = groups.get(group, 0.0) + v[2]
    parts = {}
    for label, file_, fn in WORKER_PARTS:
        hits = [v for k, v in raw.items() if k[0].endswith(file_) and k[2] == fn]
        parts[label] = {"cumtime_s": sum(v[3] for v in hits), "calls": sum(v[1] for v in hits)}
    return {"seconds": seconds, "events": events, "own_total_s": total, "parts": parts,
            "own_by_package": {g: t / total for g, t in sorted(groups.items(), key=lambda x: -x[1])}}


_WORKER_GROUPS = (
    ("asyncio", "/asyncio/"),
    ("faust", "/faust/"),
    ("mode", "/mode/"),
    ("aiokafka", "/aiokafka/"),
    ("sessionwatch (producers/, streams/)", "/main/producers/"),
    ("sessionwatch (producers/, streams/)", "/main/streams/"),
    ("ipaddress", "/ipaddress.py"),
    ("logging", "/logging/"),
    ("ua-parser / GeoIP", "/ua_parser"),
    ("ua-parser / GeoIP", "/geoip2fast"),
    ("ua-parser / GeoIP", "/maxminddb"),
    ("import machinery (start-up)", "<frozen importlib"),
)


def _latency(bootstrap: str, watch: RevocationWatch, pairs: int, gap_s: float,
             alive: Any) -> dict[str, Any]:
    maker = EventMaker(seed=int(time.time()))
    producer = make_producer(bootstrap, linger_ms=0)
    hijacks: list[tuple[tuple[bytes, bytes], str]] = []
    now = datetime.now(UTC)
    for _ in range(pairs):
        (good, bad), bad_id = maker.hijack_pair(now)
        producer.produce(EVENTS_TOPIC, key=good.key.encode(), value=encode(good))
        hijacks.append((kv(bad), bad_id))
    producer.flush(30)
    time.sleep(2.0)  # let the worker take the sessions' first events; then hijack one at a time
    sent: dict[str, tuple[float, float]] = {}
    t_next = time.perf_counter()
    for (key, value), bad_id in hijacks:
        while (delay := t_next - time.perf_counter()) > 0:
            time.sleep(min(delay, 0.005))
        sent[bad_id] = (time.perf_counter(), time.time())
        producer.produce(EVENTS_TOPIC, key=key, value=value)
        producer.poll(0)
        t_next += gap_s
    producer.flush(30)
    complete = watch.wait_for(set(sent), 30, alive)
    total, to_decision = [], []
    for bad_id, (sent_pc, sent_wall) in sent.items():
        if bad_id in watch.seen:
            arrived, _wall, rev = watch.seen[bad_id]
            total.append(arrived - sent_pc)
            to_decision.append(rev.decided_at.timestamp() - sent_wall)
    return {"pairs": pairs, "gap_ms": gap_s * 1000, "received": len(total), "complete": complete,
            "total_ms": _percentiles(total), "to_decision_ms": _percentiles(to_decision)}


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    return {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": ordered[-1] * 1000,
            "min": ordered[0] * 1000}


def _stats_lines(log_path: Path) -> list[str]:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln.split("stats: ", 1)[1] for ln in lines if "stats: " in ln]


def _count(log_path: Path, needle: str) -> int:
    try:
        return log_path.read_text(errors="replace").count(needle)
    except OSError:
        return 0


def _worker_diagnose(out: dict[str, Any], bootstrap: str, app_id: str, log_path: Path,
                     proc: subprocess.Popen[bytes], watch: RevocationWatch) -> dict[str, Any]:
    out["worker_exit_code"] = proc.poll()
    out["revocations_seen"] = len(watch.seen)
    out["committed"] = committed_offset(bootstrap, app_id, EVENTS_TOPIC)
    out["end_offset"] = end_offset(bootstrap, EVENTS_TOPIC)[1]
    out["stats_lines"] = _stats_lines(log_path)
    try:
        out["log_tail"] = log_path.read_text(errors="replace")[-3000:]
    except OSError:
        out["log_tail"] = ""
    return out


# -- report ----------------------------------------------------------------------------------


def source_state() -> str:
    """The commit under test and whether the working tree differs from it (`git status` only)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain=v2", "--branch"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    oid = next((ln.split()[-1] for ln in out.splitlines() if ln.startswith("# branch.oid")), "?")
    changed = [ln for ln in out.splitlines() if not ln.startswith("#")]
    return f"commit {oid[:10]}" + (f" + {len(changed)} uncommitted paths" if changed else "")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import platform

    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def versions() -> str:
    from importlib.metadata import version

    names = ("faust-streaming", "aiokafka", "confluent-kafka", "msgspec")
    return ", ".join(f"{n} {version(n)}" for n in names)


def worker_settings() -> str:
    """The worker's default tuning, as the code under test has it (it changes under us)."""
    from dataclasses import asdict

    from streams.settings import Settings

    wanted = ("max_poll_records", "stream_buffer_maxsize", "fetch_max_wait_ms", "state_flush_s",
              "session_timeout_s", "store")
    values = asdict(Settings())
    return ", ".join(f"{k}={values[k]}" for k in wanted if k in values)


def table(r: dict[str, Any]) -> str:
    def rate(x: Any) -> str:
        return f"{x:>12,.0f}" if isinstance(x, (int, float)) else f"{'n/a':>12}"

    w = r.get("worker", {})
    lat = w.get("latency", {})
    rows = [
        ("(a) produce, confluent-kafka -> Tansu", rate(r["produce"]["events_per_s"]), "events/s"),
        ("(b) raw aiokafka getmany, no group", rate(r["aiokafka"]["events_per_s"]), "events/s"),
        ("    same + json.loads per message", rate(r["aiokafka_json"]["events_per_s"]), "events/s"),
        ("    produce -> getmany latency p50, fetch_max_wait 1500 ms",
         rate(r["aiokafka_latency"]["1500"].get("p50")), "ms"),
        ("    produce -> getmany latency p50, fetch_max_wait 10 ms",
         rate(r["aiokafka_latency"]["10"].get("p50")), "ms"),
        ("(c) bare faust agent (json.loads)", rate(r["bare_faust"].get("events_per_s")),
         "events/s"),
        ("(d) pure pipeline, dict store, no broker", rate(r["pipeline"]["events_per_s"]),
         "events/s"),
        ("    decode_event + pipeline", rate(r["pipeline"]["decode_plus_pipeline_per_s"]),
         "events/s"),
        ("(e) sessionwatch worker, 1 partition",
         rate(w.get("throughput", {}).get("events_per_s")), "events/s"),
        ("(e) event -> revocation received, p50", rate(lat.get("total_ms", {}).get("p50")), "ms"),
        ("(e) event -> revocation received, p99", rate(lat.get("total_ms", {}).get("p99")), "ms"),
    ]
    width = max(len(a) for a, _, _ in rows)
    head = [f"| {'measurement':<{width}} | {'value':>12} | {'unit':<8} |",
            f"|{'-' * (width + 2)}|{'-' * 13}:|{'-' * 10}|"]
    return "\n".join(head + [f"| {a:<{width}} | {b} | {c:<8} |" for a, b, c in rows])


def details(r: dict[str, Any]) -> str:
    out = []
    for key in ("aiokafka", "aiokafka_json"):
        runs = ", ".join(f"{x:,.0f}" for x in r[key].get("all_events_per_s", []))
        out.append(f"{key}: median of 3 reads of {r[key]['events']:,} events "
                   f"({r[key]['getmany_calls']} getmany calls each); all: {runs} events/s")
    for wait, pc in r["aiokafka_latency"].items():
        if pc:
            out.append(f"raw aiokafka at a low rate (100 messages {r['gap_ms']:.0f} ms apart), "
                       f"fetch_max_wait_ms={wait}: produce -> getmany p50 {pc['p50']:.0f} "
                       f"p90 {pc['p90']:.0f} p99 {pc['p99']:.0f} max {pc['max']:.0f} ms")
    bf = r["bare_faust"]
    if "timers" in bf:
        g, f = bf["timers"]["getmany"], bf["timers"]["fetched_records"]
        out.append(
            f"bare faust: {bf['events']:,} events in {bf['wall_s']:.1f} s wall, "
            f"{bf['cpu_s']:.1f} s CPU (all threads) = {bf['cpu_s'] / bf['wall_s']:.0%} of one core; "
            f"getmany (event loop -> consumer thread): {g['calls']} calls, "
            f"{g['seconds']:.1f} s total, {1000 * g['seconds'] / max(g['calls'], 1):.0f} ms and "
            f"{g['records'] / max(g['calls'], 1):.0f} records per call; Fetcher.fetched_records "
            f"in the consumer thread: {1000 * f['seconds'] / max(f['calls'], 1):.0f} ms per call")
    elif "error" in bf:
        out.append(f"bare faust: {bf['error']}")
    prof = r.get("bare_faust_profile", {})
    if "profile" in prof:
        fp = prof["profile"]
        out.append(f"bare faust under cProfile (event-loop thread, {prof['events']:,} messages, "
                   f"{prof['events_per_s']:,.0f}/s while profiled); top 12 by own time:")
        for row in fp["top"]:
            out.append(f"  {row['share']:6.1%}  {row['tottime_s']:6.3f}s own  "
                       f"{row['cumtime_s']:6.3f}s cum  {row['calls']:>8} calls  {row['function']}")
        out.append("bare faust, own time by package (profiled): " + ", ".join(
            f"{g} {share:.0%}" for g, share in fp["own_by_package"].items()))
        out.append("bare faust, cumulative time per message of faust's parts (profiled):")
        for label, part in fp["parts"].items():
            per = 1e6 * part["cumtime_s"] / max(prof["events"], 1)
            out.append(f"  {per:7.1f} us/msg  {part['calls']:>8} calls  {label}")
    elif "error" in prof:
        out.append(f"bare faust profile: {prof['error']}")
    p = r["pipeline"]
    c = p["counts"]
    out.append(
        f"pipeline: {p['events']:,} events, {c['findings']} findings, {c['revocations']} "
        f"revocations, {c['state_writes']} state writes, {c['sessions']} sessions; decode_event "
        f"alone {p['decode_per_s']:,.0f}/s; cProfile run {p['profiled_s']:.2f} s "
        f"vs {p['wall_s']:.2f} s unprofiled")
    out.append("pipeline cProfile top 10 by own time:")
    for row in p["top10"]:
        out.append(f"  {row['share']:6.1%}  {row['tottime_s']:6.3f}s own  {row['cumtime_s']:6.3f}s cum"
                   f"  {row['calls']:>8} calls  {row['function']}")
    out.append("pipeline parts, cumulative share of the profiled run:")
    for label, share in sorted(p["breakdown"].items(), key=lambda kv: -kv[1]):
        out.append(f"  {share:6.1%}  {label}")
    w = r.get("worker", {})
    if "error" in w:
        out.append(f"worker: ERROR {w['error']}")
        for k in ("worker_exit_code", "revocations_seen", "committed", "end_offset"):
            out.append(f"  {k}: {w.get(k)}")
        out.append("  stats lines: " + "; ".join(w.get("stats_lines", [])))
        out.append("  log tail:\n" + w.get("log_tail", ""))
    elif w:
        t = w["throughput"]
        out.append(f"worker default settings: {r['worker_settings']}")
        out.append(
            f"worker: startup (launch -> first revocation decided) {w['startup_s']:.1f} s; "
            f"{t['events']:,} events in {t['wall_s']:.1f} s; {w['body_revocations']} revocations "
            f"from the body (same ids as the in-process pipeline: {w.get('matches_pipeline')}); "
            f"committed offset {w['committed']} of end offset {w['end_offset']}; "
            f"dead-lettered {w['dead_lettered']}, processing failures {w['processing_failed']}")
        lat = w["latency"]
        tot, dec = lat["total_ms"], lat["to_decision_ms"]
        if tot:
            out.append(
                f"latency: {lat['received']}/{lat['pairs']} hijacks revoked, sent "
                f"{lat['gap_ms']:.0f} ms apart; send -> revocation received p50 {tot['p50']:.0f} "
                f"p90 {tot['p90']:.0f} p99 {tot['p99']:.0f} max {tot['max']:.0f} ms; send -> "
                f"decided_at in the worker p50 {dec['p50']:.0f} p99 {dec['p99']:.0f} ms")
        for line in w.get("stats_lines", []):
            out.append(f"worker stats log: {line}")
    wp = r.get("worker_profile", {})
    if "parts" in wp:
        n = max(wp["events"], 1)
        out.append(f"worker under cProfile ({wp['seconds']:.0f} s incl. start-up, "
                   f"{wp['events']:,} events processed); own time by package: " + ", ".join(
                       f"{g} {share:.0%}" for g, share in wp["own_by_package"].items()))
        out.append("worker, cumulative time per processed event (profiled, so inflated):")
        for label, part in wp["parts"].items():
            out.append(f"  {1e6 * part['cumtime_s'] / n:7.1f} us/event  {part['calls']:>8} calls"
                       f"  {label}")
    elif "error" in wp:
        out.append(f"worker profile: {wp['error']}")
    return "\n".join(out)


def header(r: dict[str, Any]) -> str:
    return (f"{r['events']:,} events, {r['sessions']:,} sessions, {r['hijacks_in_body']} curl "
            f"take-overs in the body; {r['machine']}; {r['versions']}; {r['source']}; "
            f"total runtime {r['runtime_s']:.0f} s")


def update_readme(text: str) -> None:
    start, end = "<!-- figures:start -->", "<!-- figures:end -->"
    body = README.read_text() if README.exists() else f"{start}\n{end}\n"
    if start not in body or end not in body:
        body += f"\n{start}\n{end}\n"
    head, rest = body.split(start, 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{start}\n{text}\n{end}{tail}")


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events N (default 100000)")
    parser.add_argument("--sessions", type=int, default=5_000, help="sessions S (default 5000)")
    parser.add_argument("--latency-pairs", type=int, default=200)
    parser.add_argument("--latency-gap-ms", type=float, default=20.0)
    parser.add_argument("--faust-profile-events", type=int, default=30_000,
                        help="events for the separate cProfile run of the bare faust agent "
                             "(0 = skip; default 30000)")
    parser.add_argument("--worker-profile-s", type=float, default=25.0,
                        help="seconds to run a second worker under cProfile (0 = skip; "
                             "default 25, of which ~6 are start-up)")
    parser.add_argument("--json", help="also write all figures to this JSON file")
    parser.add_argument("--update-readme", action="store_true",
                        help="replace the figures block in benchmarks/README.md")
    args = parser.parse_args(argv)

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    from sessionwatch.broker import EmbeddedBroker

    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(), "versions": versions(),
                               "events": args.events, "sessions": args.sessions,
                               "gap_ms": args.latency_gap_ms,
                               "worker_settings": worker_settings(),
                               "source": source_state()}
    with tempfile.TemporaryDirectory(prefix="sw-bench-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"building {args.events:,} events over {args.sessions:,} sessions ...", flush=True)
        work = make_workload(args.events, args.sessions)
        results["hijacks_in_body"] = work.hijacks
        with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
            bs = broker.bootstrap
            raw_topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
            create_topics(bs, [raw_topic, *ALL_TOPICS])

            print("(a) producing ...", flush=True)
            secs = produce_all(make_producer(bs, linger_ms=5), raw_topic, work.body)
            results["produce"] = {"events": len(work.body), "wall_s": secs,
                                  "events_per_s": len(work.body) / secs}

            print("(b) raw aiokafka ...", flush=True)
            results["aiokafka"] = bench_aiokafka(bs, raw_topic, len(work.body), parse=False)
            results["aiokafka_json"] = bench_aiokafka(bs, raw_topic, len(work.body), parse=True)
            results["aiokafka_latency"] = {
                str(wait): bench_aiokafka_latency(bs, wait, 100, args.latency_gap_ms / 1000)
                for wait in (1500, 10)
            }

            print("(c) bare faust agent ...", flush=True)
            results["bare_faust"] = bench_bare_faust(bs, raw_topic, len(work.body), tmp, 150)
            n_prof = min(len(work.body), args.faust_profile_events)
            if n_prof:
                print("(c) bare faust agent under cProfile ...", flush=True)
                results["bare_faust_profile"] = bench_bare_faust(bs, raw_topic, n_prof, tmp, 150,
                                                                 profile=True)

            print("(d) pure pipeline ...", flush=True)
            results["pipeline"] = bench_pipeline([v for _k, v in work.body])

            print("(e) sessionwatch worker ...", flush=True)
            results["worker"] = bench_worker(
                bs, work, results["pipeline"]["revocation_ids"], tmp, timeout_s=150,
                latency_pairs=args.latency_pairs, latency_gap_s=args.latency_gap_ms / 1000)
            if args.worker_profile_s > 0:
                print("(e) sessionwatch worker under cProfile ...", flush=True)
                results["worker_profile"] = profile_worker(bs, tmp, args.worker_profile_s)
    results["runtime_s"] = time.perf_counter() - started

    print()
    print(f"{header(results)}\n\n{table(results)}\n\n{details(results)}")
    if args.json:
        results["pipeline"]["revocation_ids"] = sorted(results["pipeline"]["revocation_ids"])
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    if args.update_readme:
        update_readme(f"{header(results)}\n\n{table(results)}\n\n```\n{details(results)}\n```")
    return 0 if "error" not in results.get("worker", {}) else 1


if __name__ == "__main__":
    sys.exit(main())
