"""Stream engines compared on one stateful keyed job: why sessionwatch runs on Quix Streams.

    python -m benchmarks.engine_comparison [--messages 200000] [--partitions 4] [--keys 10000]
        [--runs 1] [--engines confluent,quix,quix-groupby,faust] [--failover] [--json FILE]

sessionwatch's stages are keyed, stateful consumers: per event they read and write the state of
its key (a session, a user, a network) and now and then emit a result. The engine under them
decides how many events per second one process sustains and what happens to that state when
processes join and leave the group. This harness runs the same small job on each candidate and
prints the figures the project's issue quoted when the engine moved from faust-streaming to
Quix Streams:

- `confluent`: a plain confluent-kafka `consume(1000)` loop with a dict of per-key state and
  manual at-least-once commits every ~1 s (flush the outputs, then commit the positions) - the
  ceiling: what librdkafka and Python give without an engine (no changelog, no recovery);
- `quix`: Quix Streams, `sdf.apply(step, stateful=True)` on the memory store (the worker's
  default store; changelog topic on), then `filter` + `to_topic` for the outputs;
- `quix-groupby`: the same after `sdf.group_by("key")`, i.e. through a repartition topic, as
  the worker's user and source stages are (here it re-keys by the same key: the cost measured
  is the extra produce + consume hop);
- `faust`: a faust-streaming 0.15.3 agent updating a `Table` (memory store, changelog), the
  engine sessionwatch ran on before. faust is optional: it is no longer a dependency.

The job, the same for every engine: a topic with --partitions partitions filled with --messages
JSON messages `{"id", "key", "v"}` keyed over --keys keys; one child process per engine
consumes it in a fresh consumer group from the beginning; per message it sets the key's state
`[count, sum]` to `[count + 1, sum + v]` and every 100th message it produces
`{"key", "id", "count", "sum"}` to an output topic. Timed inside the child: from the first
message's state update to the last one's, with the child's CPU time over that window.

`--failover` (quix and faust): one process consumes a continuous stream (--rate msgs/s); a
second process joins the group, processes for a while, and leaves with SIGTERM; then 1,000 more
messages are sent. Reported: the time from the SIGTERM until the group has processed all 1,000
(converged); duplicates (messages processed more than once, from the ids every process reports
at exit); lost messages (sent, never processed); lost or extra state updates (each key's final
count, read through the engine's own state by one probe message per key, against what was sent).

Settings, the same where the engines allow: session timeout 6 s (Tansu holds every JoinGroup for
~half of it), commit every 1 s, from the earliest offset; librdkafka `fetch.wait.max.ms` 20 for
the confluent and Quix consumers (Tansu holds a fetch that finds no data for the whole wait).
faust hard-codes aiokafka's `fetch_max_wait_ms=1500` in its driver: it is left so, and its
effect shows in the failover figures (latency while caught up, convergence). Topics are created
by this harness with `retention.ms`/`retention.bytes` (Quix reads them; Tansu returns only the
configs given at creation). Quix uses the project's true-log-end consumer for its changelog
recovery (streams/log_end.py, as streams/engine.py does): Tansu's ListOffsets under-reports
log ends. faust's recovery reads them through aiokafka as it is.

Heartbeat intervals are the clients' defaults (3 s in librdkafka and in faust): a member
learns of a rebalance at its next heartbeat, so up to 3 s of every failover is that.

What it showed (2026-12-01, the 2-core VM, one default run and `--failover --runs 3`): plain
loop ~149k msgs/s at 35 % CPU (waiting on the broker's fetches), Quix 79k, Quix with `group_by`
40k, faust 4.3k, each of the last three one core busy. Failover: Quix converged 7.2 s after the
SIGTERM with no duplicates; faust 7.1-8.4 s with 2.3-4.1k duplicates, each applied to its table
twice (its changelog is written per message, its offsets committed later), ~1.2 s steady
latency (the 1500 ms fetch wait), and offsets that reached the log end 11-88 s after the
SIGTERM. Neither lost a message or a state update. So: Quix keeps state exact through a
rebalance and is ~18x faust per core; a repartition halves it, which the stage layout pays once
per group_by (streams/engine.py).

Runs on the embedded Tansu broker (sessionwatch.broker.EmbeddedBroker), every child in its own
process group, killed on exit, Ctrl-C or SIGTERM. The child side is benchmarks/_engine_job.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.throughput import BenchError, create_topics

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("confluent", "quix", "quix-groupby", "faust")
FAILOVER_ENGINES = ("quix", "faust")
FINAL_BATCH = 1_000
FAUST_MISSING = ("faust-streaming is not installed (it is no longer a dependency): "
                 "pip install faust-streaming==0.15.3 to include it")
LABELS = {
    "confluent": "plain confluent-kafka `consume(1000)` loop, dict state",
    "quix": "Quix Streams, stateful `apply` (memory store + changelog)",
    "quix-groupby": "Quix Streams, `group_by` (repartition) then stateful `apply`",
    "faust": "faust-streaming agent with a Table (memory store + changelog)",
}
ISSUE = {"confluent": "~117k", "quix": "47–52k", "quix-groupby": "22–24k", "faust": "2.2–2.5k"}


# -- processes ---------------------------------------------------------------------------------


class Children:
    """Every child in its own session (process group); all groups killed when the block ends."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, cfg: dict[str, Any], log_path: Path) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONWATCH_")}
        cfg = {**cfg, "launched": time.time()}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks._engine_job", json.dumps(cfg)], cwd=ROOT,
                env={**env, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.procs.append(proc)
        return proc

    @staticmethod
    def signal(proc: subprocess.Popen[bytes], sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self, proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            self.signal(proc, sig)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                continue
        # the group may outlive its leader
        self.signal(proc, signal.SIGKILL)

    def close(self) -> None:
        for proc in self.procs:
            self.kill(proc)


def tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# -- topics and producing ----------------------------------------------------------------------


def make_producer(bootstrap: str) -> Any:
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 10_000,
                     "queue.buffering.max.messages": 1_000_000, "log_level": 4})


def produce(producer: Any, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=value)
            return
        except BufferError:
            producer.poll(0.01)


def fill(bootstrap: str, topic: str, n: int, keys: int, seed: int = 7) -> float:
    rng = random.Random(seed)
    producer = make_producer(bootstrap)
    t0 = time.perf_counter()
    for i in range(n):
        k = f"k{rng.randrange(keys)}"
        produce(producer, topic, k.encode(),
                json.dumps({"id": i, "key": k, "v": rng.randint(1, 9)}).encode())
        if i % 10_000 == 0:
            producer.poll(0)
    if left := producer.flush(60):
        raise BenchError(f"{left} messages not delivered to {topic}")
    return time.perf_counter() - t0


def topic_size(bootstrap: str, topic: str, partitions: int) -> int:
    """Records in `topic` by its true log ends (not ListOffsets: streams/log_end.py)."""
    from streams.log_end import LogEnds

    with LogEnds({"bootstrap.servers": bootstrap}) as ends:
        marks = ends.many([(topic, p) for p in range(partitions)])
    return sum(high - low for low, high in marks.values())


# -- throughput --------------------------------------------------------------------------------


def run_throughput(bs: str, engine: str, run: int, args: argparse.Namespace, source: str,
                   tmp: Path, children: Children) -> dict[str, Any]:
    from streams.log_end import wait_caught_up
    from streams.topics import RETENTION_CONFIG

    name = f"{engine}-{run}"
    output = f"bench.out.{name}"
    create_topics(bs, [output], args.partitions)
    group = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    result_path, log = tmp / f"tp-{name}.json", tmp / f"tp-{name}.log"
    cfg = {"engine": engine, "mode": "throughput", "bootstrap": bs, "input": source,
           "output": output, "group": group, "partitions": args.partitions,
           "count": args.messages, "result": str(result_path),
           "state_dir": str(tmp / f"state-{name}"), "retention": dict(RETENTION_CONFIG),
           "role": "single"}
    timeout = 120 + args.messages / 500
    proc = children.spawn(cfg, log)
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        time.sleep(0.2)
    if proc.poll() is None:  # wrote its result but hangs in shutdown, or did not finish
        children.kill(proc)
    if not result_path.exists():
        raise BenchError(f"{engine} wrote no result within {timeout:.0f} s (exit {proc.returncode});"
                         f" log tail:\n{tail(log)}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    if result.get("messages") != args.messages:
        raise BenchError(f"{engine} processed {result.get('processed')} of {args.messages}; "
                         f"log tail:\n{tail(log)}")
    result["exit_code"] = proc.returncode
    result["outputs_in_topic"] = topic_size(bs, output, args.partitions)
    result["committed_to_end"] = wait_caught_up(bs, group, [source], timeout_s=30)
    return result


# -- failover ----------------------------------------------------------------------------------


class Sender:
    """The continuous stream, then the final batch and the probes; remembers what it sent."""

    def __init__(self, bs: str, topic: str, keys: int, rate: float, seed: int) -> None:
        self.producer = make_producer(bs)
        self.topic, self.keys, self.rate = topic, keys, rate
        self.rng = random.Random(seed)
        self.next_id = 0
        self.expected: dict[str, list[int]] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._stream, name="sender", daemon=True)

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors += 1

    def send(self, final: bool = False) -> None:
        k = f"k{self.rng.randrange(self.keys)}"
        v = self.rng.randint(1, 9)
        value = {"id": self.next_id, "key": k, "v": v, "t": time.time()}
        if final:
            value["f"] = 1
        self.next_id += 1
        cs = self.expected.setdefault(k, [0, 0])
        cs[0] += 1
        cs[1] += v
        while True:
            try:
                self.producer.produce(self.topic, key=k.encode(), value=json.dumps(value).encode(),
                                      on_delivery=self._on_delivery)
                return
            except BufferError:
                self.producer.poll(0.01)

    def _stream(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            while self.next_id < due:
                self.send()
            self.producer.poll(0)
            time.sleep(0.005)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def final_batch(self, n: int) -> tuple[int, int]:
        first = self.next_id
        for _ in range(n):
            self.send(final=True)
        self.flush()
        return first, self.next_id

    def probes(self) -> None:
        for i in range(self.keys):
            k = f"k{i}"
            produce(self.producer, self.topic, k.encode(),
                    json.dumps({"p": 1, "key": k, "id": -1}).encode())
        self.flush()

    def flush(self) -> None:
        if left := self.producer.flush(60):
            raise BenchError(f"{left} messages not delivered")


def status(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def wait_until(what: str, cond: Any, timeout_s: float, procs: list[Any] = (),  # type: ignore[assignment]
               logs: list[Path] = ()) -> float:  # type: ignore[assignment]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return time.time()
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                raise BenchError(f"{what}: a child exited ({proc.returncode}); log tail:\n{tail(log)}")
        time.sleep(0.05)
    raise BenchError(f"{what}: not within {timeout_s:.0f} s")


def run_failover(bs: str, engine: str, run: int, args: argparse.Namespace, tmp: Path,
                 children: Children) -> dict[str, Any]:
    from streams.log_end import group_positions
    from streams.topics import RETENTION_CONFIG

    name = f"fo-{engine}-{run}"
    source, output = f"bench.{name}.in", f"bench.{name}.out"
    create_topics(bs, [source, output], args.partitions)
    group = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    base = {"engine": engine, "mode": "failover", "bootstrap": bs, "input": source,
            "output": output, "group": group, "partitions": args.partitions,
            "retention": dict(RETENTION_CONFIG)}

    def cfg(role: str) -> dict[str, Any]:
        return {**base, "role": role, "result": str(tmp / f"{name}-{role}.json"),
                "status": str(tmp / f"{name}-{role}.status"),
                "state_dir": str(tmp / f"state-{name}-{role}")}

    roles = {r: cfg(r) for r in ("A", "B")}
    logs = {r: tmp / f"{name}-{r}.log" for r in roles}
    st = {r: Path(c["status"]) for r, c in roles.items()}
    sender = Sender(bs, source, args.keys, args.rate, seed=1000 + run)
    sender.start()
    a = children.spawn(roles["A"], logs["A"])
    b: subprocess.Popen[bytes] | None = None
    times: dict[str, float] = {}

    def watch_exit(proc: subprocess.Popen[bytes], key: str) -> None:
        proc.wait()
        times[key] = time.time()

    lag_trace: list[tuple[float, int]] = []

    def caught_up() -> None:
        """wait_caught_up (streams/log_end.py), keeping the group's lag (true log ends minus
        commits, all partitions) as it goes."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            positions = group_positions(bs, group, [source])
            lag = sum(max(0, end - max(committed, 0)) for committed, end in positions.values())
            lag_trace.append((round(time.time() - times["term"], 2), lag))
            if lag == 0:
                times["committed_ok"] = 1.0
                times["committed"] = time.time()
                return
            time.sleep(0.2)

    try:
        wait_until("A processing", lambda: status(st["A"]).get("n", 0) > 0, 120, [a], [logs["A"]])
        # A alone until it has caught up with the stream (within 0.5 s of it), then 3 s more
        wait_until("A caught up", lambda: status(st["A"]).get("n", 0)
                   >= sender.next_id - args.rate * 0.5, 120, [a], [logs["A"]])
        times["steady_from"] = time.time()
        time.sleep(3.0)
        times["b_launched"] = time.time()
        b = children.spawn(roles["B"], logs["B"])
        times["b_first"] = wait_until("B processing", lambda: status(st["B"]).get("n", 0) > 0,
                                      120, [a, b], [logs["A"], logs["B"]])
        time.sleep(args.hold)  # both processing
        sender.stop()
        times["term"] = time.time()
        children.signal(b, signal.SIGTERM)
        threading.Thread(target=watch_exit, args=(b, "b_exit"), daemon=True).start()
        final_lo, final_hi = sender.final_batch(FINAL_BATCH)
        times["sent"] = time.time()
        committer = threading.Thread(target=caught_up, daemon=True)
        committer.start()

        def final_done() -> bool:
            return sum(status(p).get("final", 0) for p in st.values()) >= FINAL_BATCH

        wait_until("the final batch processed", final_done, 300, [a], [logs["A"]])
        times["seen"] = time.time()
        committer.join(125)
        try:
            b.wait(max(1.0, 60 - (time.time() - times["term"])))
        except subprocess.TimeoutExpired:
            children.kill(b)
        sender.probes()
        wait_until("probes answered",
                   lambda: sum(status(p).get("probes", 0) for p in st.values()) >= args.keys,
                   300, [a], [logs["A"]])
        children.signal(a, signal.SIGTERM)
        try:
            a.wait(60)
        except subprocess.TimeoutExpired:
            children.kill(a)
    finally:
        if sender._thread.is_alive():
            sender.stop()
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                children.kill(proc)
    reports = {}
    for role, c in roles.items():
        path = Path(c["result"])
        reports[role] = json.loads(path.read_text()) if path.exists() else None
    assert b is not None
    result = analyse(engine, run, sender, reports, final_lo, final_hi, times, keys=args.keys,
                     codes={"A": a.returncode, "B": b.returncode})
    result["commit_lag_trace"] = lag_trace
    return result


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def analyse(engine: str, run: int, sender: Sender, reports: dict[str, Any], final_lo: int,
            final_hi: int, t: dict[str, float], keys: int, codes: dict[str, Any]) -> dict[str, Any]:
    present = {r: rep for r, rep in reports.items() if rep}
    missing_reports = sorted(set(reports) - set(present))
    counts: Counter[int] = Counter()
    for rep in present.values():
        counts.update(rep["ids"])
    sent = sender.next_id
    processed_ids = set(counts)
    duplicates = sum(counts.values()) - len(counts)
    lost = sum(1 for i in range(sent) if i not in processed_ids)
    first_seen: dict[int, float] = {}
    for rep in present.values():
        for k, at in rep["final_times"].items():
            i = int(k)
            first_seen[i] = min(at, first_seen.get(i, at))
    final_ids = range(final_lo, final_hi)
    complete = all(i in first_seen for i in final_ids)
    converged = max(first_seen[i] for i in final_ids) - t["term"] if complete else None
    first_final = min(first_seen.values()) - t["term"] if first_seen else None
    probes: dict[str, list[int]] = {}
    for role in ("B", "A"):  # A answers the probes; it is the one alive at the end
        probes.update((present.get(role) or {}).get("probes", {}))
    lost_updates = extra_updates = wrong_keys = wrong_sums = 0
    for i in range(keys):
        k = f"k{i}"
        exp = sender.expected.get(k, [0, 0])
        got = probes.get(k)
        if got is None:
            continue
        lost_updates += max(0, exp[0] - got[0])
        extra_updates += max(0, got[0] - exp[0])
        wrong_keys += got[0] != exp[0]
        wrong_sums += got[1] != exp[1]
    steady = [lat for at, lat in (present.get("A") or {}).get("latency", [])
              if t["steady_from"] <= at < t["b_launched"]]
    return {
        "engine": engine, "run": run, "sent": sent, "final_batch": final_hi - final_lo,
        "converged_s": converged, "duplicates": duplicates,
        "duplicate_ids": sum(1 for c in counts.values() if c > 1),
        "lost_messages": lost, "lost_state_updates": lost_updates,
        "extra_state_updates": extra_updates, "keys_wrong": wrong_keys, "sums_wrong": wrong_sums,
        "keys_probed": len(probes), "delivery_errors": sender.errors,
        "committed_to_end": bool(t.get("committed_ok")),
        "committed_s": t["committed"] - t["term"] if "committed" in t else None,
        "first_final_s": first_final, "final_seen_polled_s": t["seen"] - t["term"],
        "b_join_s": t["b_first"] - t["b_launched"],
        "b_exit_s": t["b_exit"] - t["term"] if "b_exit" in t else None,
        "exit_codes": codes,
        "processed": {r: rep["processed"] for r, rep in present.items()},
        "outputs": {r: rep["outputs"] for r, rep in present.items()},
        "cpu_total_s": {r: round(rep["cpu_total_s"], 1) for r, rep in present.items()},
        "steady_latency_ms": {"p50": (_pct(steady, 50) or 0) * 1e3,
                              "p99": (_pct(steady, 99) or 0) * 1e3, "samples": len(steady)},
        "missing_reports": missing_reports,
    }


# -- report ------------------------------------------------------------------------------------


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def environment(faust_version: str | None) -> dict[str, str]:
    from importlib.metadata import version

    import confluent_kafka

    from sessionwatch.broker import find_tansu

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or "unknown CPU")
    try:
        tansu = subprocess.run([find_tansu(), "--version"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except Exception:
        tansu = ""
    return {
        "machine": f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
                   f"load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "versions": f"quixstreams {version('quixstreams')}, confluent-kafka "
                    f"{version('confluent-kafka')} (librdkafka {confluent_kafka.libversion()[0]}), "
                    f"aiokafka {version('aiokafka')}, faust-streaming "
                    f"{faust_version or _version('faust-streaming')}, "
                    f"Python {platform.python_version()}, "
                    f"{tansu or 'tansu ?'} (memory storage, on loopback)",
    }


def _span(values: list[float], fmt: str = "{:,.0f}") -> str:
    if not values:
        return "n/a"
    lo, hi = min(values), max(values)
    return fmt.format(lo) if len(values) == 1 or fmt.format(lo) == fmt.format(hi) else \
        f"{fmt.format(lo)}–{fmt.format(hi)}"


def throughput_table(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    rows = [("runtime", "msgs/s", "CPU of the child", "launch → 1st msg", "issue"),
            ("---", "---:", "---:", "---:", "---:")]
    for engine, runs in results.items():
        ok = [r for r in runs if "msgs_per_s" in r]
        errors = [r for r in runs if "error" in r]
        rate = _span([r["msgs_per_s"] for r in ok]) if ok else "error"
        cpu = _span([100 * r["cpu_s"] / r["wall_s"] for r in ok], "{:.0f} %") if ok else ""
        start = _span([r["startup_s"] for r in ok], "{:.1f} s") if ok else ""
        if errors:
            rate += f" ({len(errors)} failed)"
        rows.append((LABELS[engine], rate, cpu, start, ISSUE[engine]))
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def throughput_details(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for engine, runs in results.items():
        for r in runs:
            if "error" in r:
                lines.append(f"{engine} run {r['run']}: ERROR {r['error']}")
                continue
            lines.append(
                f"{engine} run {r['run']}: {r['messages']:,} messages in {r['wall_s']:.2f} s "
                f"(first -> last state update) = {r['msgs_per_s']:,.0f}/s; CPU {r['cpu_s']:.2f} s "
                f"({100 * r['cpu_s'] / r['wall_s']:.0f} % of one core) in that window, "
                f"{r['cpu_total_s']:.1f} s over the child's life; launch -> first message "
                f"{r['startup_s']:.1f} s; outputs in topic {r['outputs_in_topic']:,} "
                f"(process says {r['outputs']:,}); group committed to the log end: "
                f"{r['committed_to_end']}; max RSS {r['max_rss_mb']:.0f} MB"
                + (f"; store {r['store']}" if "store" in r else ""))
    return "\n".join(lines)


def _secs(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def failover_table(results: dict[str, list[dict[str, Any]]]) -> str:
    rows = [("engine", "run", "converged (s after SIGTERM)", "duplicates", "lost msgs",
             "lost / extra state updates", "keys wrong", "committed (s)", "2nd exits (s)",
             "steady p50 / p99 latency (ms)"),
            ("---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:")]
    for engine, runs in results.items():
        for r in runs:
            if "error" in r:
                rows.append((engine, str(r["run"]), "error", "", "", "", "", "", "", ""))
                continue
            conv = f"{r['converged_s']:.1f}" if r["converged_s"] is not None else "never"
            lat = r["steady_latency_ms"]
            rows.append((engine, str(r["run"]), conv, f"{r['duplicates']:,}",
                         f"{r['lost_messages']:,}",
                         f"{r['lost_state_updates']:,} / {r['extra_state_updates']:,}",
                         f"{r['keys_wrong']:,} of {r['keys_probed']:,}",
                         _secs(r["committed_s"]) + ("" if r["committed_to_end"] else " (no)"),
                         _secs(r["b_exit_s"]), f"{lat['p50']:.0f} / {lat['p99']:.0f}"))
        ok = [r for r in runs if "error" not in r and r["converged_s"] is not None]
        if len(runs) > 1 and ok:
            rows.append((f"**{engine}**", f"{len(ok)} ok", _span([r["converged_s"] for r in ok],
                                                                   "{:.1f}"),
                         _span([r["duplicates"] for r in ok]), _span([r["lost_messages"] for r in ok]),
                         _span([r["lost_state_updates"] for r in ok]) + " / "
                         + _span([r["extra_state_updates"] for r in ok]),
                         "", "", "", ""))
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def failover_details(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for engine, runs in results.items():
        for r in runs:
            if "error" in r:
                lines.append(f"{engine} failover run {r['run']}: ERROR {r['error']}")
                continue
            lines.append(
                f"{engine} failover run {r['run']}: sent {r['sent']:,} (last {r['final_batch']:,} "
                f"after the SIGTERM); processed {r['processed']}, outputs {r['outputs']}, "
                f"CPU {r['cpu_total_s']} s; duplicate ids {r['duplicate_ids']:,}; sums wrong "
                f"{r['sums_wrong']:,}; 2nd process joined (launch -> first message) in "
                f"{r['b_join_s']:.1f} s; first of the final batch processed "
                f"{_secs(r['first_final_s'])} s after the SIGTERM, all seen by polling "
                f"{r['final_seen_polled_s']:.1f} s; steady latency samples "
                f"{r['steady_latency_ms']['samples']}; exit codes {r['exit_codes']}; "
                f"delivery errors {r['delivery_errors']}"
                + (f"; MISSING REPORTS {r['missing_reports']}" if r["missing_reports"] else ""))
    return "\n".join(lines)


def how_measured(args: argparse.Namespace, failover: bool) -> str:
    text = "" if args.skip_throughput else (
        f"How measured: one Tansu broker (memory storage) on loopback; the input topic ({args.partitions} "
        f"partitions) is filled once with {args.messages:,} JSON messages (~45 bytes) keyed over "
        f"{args.keys:,} keys, and every engine reads all of it in its own child process and fresh "
        "consumer group from the earliest offset, with its own output topic. Per message: the "
        "key's state [count, sum] is read and written back updated (a dict in the plain loop; "
        "Quix `state` on the memory store, whose changelog is produced at each 1 s checkpoint; "
        "a faust Table on the memory:// store, whose changelog record is sent on every write); "
        "every 100th message an output is produced. Timing is inside the child, from the end of "
        "the first message's state update to the end of the last's (time.perf_counter), so "
        "process start, group join (Tansu holds a JoinGroup ~3 s) and shutdown are excluded "
        "(launch -> first message is shown apart); msgs/s = (messages - 1) / that time. CPU is "
        "time.process_time of the child over the same window (all its threads, librdkafka's "
        "included; 100 % = one core). Commits every ~1 s in all four (the plain loop flushes its "
        "producer, then commits its positions synchronously); checked after each run: the "
        "output topic holds messages/100 records and the group committed up to the true log "
        "end (streams.log_end.wait_caught_up). The children share the 2 cores with the broker "
        "and with other engineers' work on this VM.")
    if failover:
        text += ("\n\n" if text else "") + (
            f"Failover: the parent produces a continuous stream at {args.rate:,.0f} msgs/s over "
            f"{args.keys:,} keys into a fresh {args.partitions}-partition topic; process A joins "
            "and processes alone until it is within 0.5 s of the stream, then 3 s more; "
            f"process B is started, and {args.hold:.0f} s after its "
            "first processed message gets SIGTERM; the stream stops at that moment and 1,000 "
            "more messages are sent at once. Converged = the latest of the times (wall clock, "
            "recorded in the processes) at which each of those 1,000 was first processed, minus "
            "the SIGTERM. Duplicates = processings beyond the first of a message id, over the "
            "ids A and B report at exit; lost = ids sent but never processed. Then one probe "
            "message per key reads the key's state through the engine (no update): lost / extra "
            "state updates = the keys' counts short of / beyond the messages sent for them. "
            "Committed = SIGTERM until the group's commits reach the true log end (polled, "
            "~0.3 s resolution). Steady latency = send -> processed of every 10th stream "
            "message in those 3 s while A ran alone, caught up (faust: aiokafka "
            "fetch_max_wait_ms hard-coded to 1500, "
            "which Tansu holds in full when a fetch finds no data).")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine_comparison",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000, help="messages (default 200000)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions (default 4)")
    parser.add_argument("--keys", type=int, default=10_000, help="distinct keys (default 10000)")
    parser.add_argument("--runs", type=int, default=1, help="repeat every measurement N times")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"comma-separated, of {','.join(ENGINES)} (default all)")
    parser.add_argument("--failover", action="store_true",
                        help="also the failover measurement (quix and faust)")
    parser.add_argument("--skip-throughput", action="store_true",
                        help="only the failover measurement")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="failover: continuous stream, msgs/s (default 1000)")
    parser.add_argument("--hold", type=float, default=5.0,
                        help="failover: seconds both processes run before the SIGTERM (default 5)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--logs", metavar="DIR", help="keep the broker's and children's logs here")
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if unknown := [e for e in engines if e not in ENGINES]:
        parser.error(f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINES)}")

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    faust_version = None
    if "faust" in engines:
        try:
            import faust

            faust_version = str(faust.__version__)
        except Exception:
            print(FAUST_MISSING, flush=True)
            engines.remove("faust")
    from sessionwatch.broker import EmbeddedBroker

    started = time.perf_counter()
    report: dict[str, Any] = {**environment(faust_version), "messages": args.messages,
                              "partitions": args.partitions, "keys": args.keys, "runs": args.runs,
                              "engines": engines}
    throughput: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    failover: dict[str, list[dict[str, Any]]] = {e: [] for e in engines if e in FAILOVER_ENGINES}
    with tempfile.TemporaryDirectory(prefix="sw-engines-") as tmp_name, ExitStack() as stack:
        tmp = Path(args.logs or tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        children = Children()
        stack.callback(children.close)
        bs = stack.enter_context(EmbeddedBroker(log_path=tmp / "tansu.log")).bootstrap
        print(f"broker {bs}; {report['machine']}", flush=True)
        if not args.skip_throughput and engines:
            source = "bench.in"
            create_topics(bs, [source], args.partitions)
            secs = fill(bs, source, args.messages, args.keys)
            print(f"filled {source}: {args.messages:,} messages in {secs:.1f} s", flush=True)
            report["fill_s"] = secs
            for run in range(1, args.runs + 1):
                for engine in engines:
                    print(f"throughput: {engine} run {run} ...", flush=True)
                    try:
                        r = run_throughput(bs, engine, run, args, source, tmp, children)
                        print(f"  {r['msgs_per_s']:,.0f} msgs/s, CPU "
                              f"{100 * r['cpu_s'] / r['wall_s']:.0f} %", flush=True)
                    except BenchError as exc:
                        r = {"error": str(exc)}
                        print(f"  ERROR {exc}", flush=True)
                    throughput[engine].append({"run": run, **r})
        if args.failover:
            if not failover:
                print("failover: needs quix and/or faust in --engines", flush=True)
            for run in range(1, args.runs + 1):
                for engine in failover:
                    print(f"failover: {engine} run {run} ...", flush=True)
                    try:
                        r = run_failover(bs, engine, run, args, tmp, children)
                        print(f"  converged {r['converged_s']} s, duplicates {r['duplicates']:,},"
                              f" lost {r['lost_messages']:,}, lost/extra state updates "
                              f"{r['lost_state_updates']:,}/{r['extra_state_updates']:,}",
                              flush=True)
                    except BenchError as exc:
                        r = {"error": str(exc)}
                        print(f"  ERROR {exc}", flush=True)
                    failover[engine].append({"run": run, **r})
    report["runtime_s"] = time.perf_counter() - started
    report["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    print(f"\n{report['machine']}; load average at end {report['load_average_end']}")
    print(f"{report['versions']}")
    print(f"{args.messages:,} messages, {args.partitions} partitions, {args.keys:,} keys, "
          f"{args.runs} run(s); total runtime {report['runtime_s']:.0f} s\n")
    if any(throughput.values()):
        print(throughput_table(throughput, args))
        print(f"\n{throughput_details(throughput)}\n")
    if args.failover and any(failover.values()):
        print(failover_table(failover))
        print(f"\n{failover_details(failover)}\n")
    print(how_measured(args, args.failover))
    if args.json:
        report["throughput"] = throughput
        report["failover"] = failover
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    failed = any("error" in r for runs in (*throughput.values(), *failover.values()) for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the children and the broker are gone by now
        print("interrupted", file=sys.stderr)
        sys.exit(130)
