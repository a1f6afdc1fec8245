"""What the soak watches while it runs: RSS and /metrics of every process, revocations as they
arrive on the topic, and revocation keys as they appear in Redis; and the tables made of them."""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

LAG_METRIC = "sessionwatch_consumer_lag_messages"
PROCESSED_METRIC = "sessionwatch_events_processed_total"


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:  # the process is gone (the killed worker)
        return None
    return None


def scrape(port: int, names: tuple[str, ...]) -> dict[str, float] | None:
    """Sum of each metric in `names` over its labels, from the process's /metrics; None if down."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    sums = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums


@dataclass
class Watched:
    """A process to sample: `pid()` (it changes when the worker is restarted), and a metrics port."""

    name: str
    pid: Callable[[], int | None]
    metrics_port: int = 0


@dataclass
class Sample:
    t: float                                   # seconds since the soak started
    rss: dict[str, float | None]
    lag: dict[str, float | None]               # per process with /metrics
    processed: dict[str, float | None]


class Sampler(threading.Thread):
    """Every `every_s`: VmRSS of each process, and lag / processed events from /metrics."""

    def __init__(self, watched: list[Watched], started: float, every_s: float = 5.0) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.watched, self.started, self.every_s = watched, started, every_s
        self.samples: list[Sample] = []
        self.stop_event = threading.Event()

    def sample(self) -> Sample:
        rss: dict[str, float | None] = {}
        lag: dict[str, float | None] = {}
        processed: dict[str, float | None] = {}
        for w in self.watched:
            pid = w.pid()
            rss[w.name] = rss_mib(pid) if pid else None
            if w.metrics_port:
                got = scrape(w.metrics_port, (LAG_METRIC, PROCESSED_METRIC))
                lag[w.name] = got[LAG_METRIC] if got else None
                processed[w.name] = got[PROCESSED_METRIC] if got else None
        return Sample(time.monotonic() - self.started, rss, lag, processed)

    def run(self) -> None:
        while not self.stop_event.wait(self.every_s):
            self.samples.append(self.sample())


@dataclass
class Seen:
    revocations: list[tuple[float, dict]] = field(default_factory=list)   # (received at, JSON)
    keys: dict[str, float] = field(default_factory=dict)                  # key -> first seen


class RevocationReader(threading.Thread):
    """Revocations as they arrive: a group-less librdkafka consumer from the topic's end now."""

    def __init__(self, bootstrap: str, seen: Seen) -> None:
        super().__init__(name="soak-revocations", daemon=True)
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        from producers.contract import REVOCATIONS_TOPIC

        self.seen = seen
        self.stop_event = threading.Event()
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "soak-probe",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 5})
        meta = self.consumer.list_topics(REVOCATIONS_TOPIC, timeout=10)
        self.consumer.assign([TopicPartition(REVOCATIONS_TOPIC, p, OFFSET_END)
                              for p in meta.topics[REVOCATIONS_TOPIC].partitions])

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                for m in self.consumer.consume(1000, timeout=0.1):
                    if m.error() is None:
                        self.seen.revocations.append((time.time(), json.loads(m.value())))
        finally:
            self.consumer.close()


class KeyWatcher(threading.Thread):
    """First appearance of each revocation key, from Redis keyspace notifications (pushed, so no
    polling interval in the figure)."""

    PATTERN = "__keyspace@0__:sessionwatch:revoked:*"

    def __init__(self, client: object, seen: Seen) -> None:
        super().__init__(name="soak-redis-keys", daemon=True)
        self.seen = seen
        self.stop_event = threading.Event()
        client.config_set("notify-keyspace-events", "K$")  # type: ignore[attr-defined]
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[attr-defined]
        self.pubsub.psubscribe(self.PATTERN)
        self.skip = len("__keyspace@0__:")

    def run(self) -> None:
        while not self.stop_event.is_set():
            msg = self.pubsub.get_message(timeout=0.2)
            if msg is not None:
                key = msg["channel"].decode()[self.skip:]
                self.seen.keys.setdefault(key, time.time())
        self.pubsub.close()


# -- tables ----------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def per_minute(samples: list[Sample], names: list[str], lag_names: list[str],
               sent_per_min: dict[int, int]) -> str:
    """One row per minute: the last sample's RSS (MiB) per process, the largest lag seen."""
    head = ["min", "sent/s", *names, *(f"lag:{n}" for n in lag_names)]
    rows = [head]
    for minute in sorted({int(s.t // 60) for s in samples}):
        inside = [s for s in samples if int(s.t // 60) == minute]
        last = inside[-1]
        cells = [str(minute + 1), f"{sent_per_min.get(minute, 0) / 60:,.0f}"]
        cells += ["-" if last.rss.get(n) is None else f"{last.rss[n]:.0f}" for n in names]
        for n in lag_names:
            lags = [s.lag[n] for s in inside if s.lag.get(n) is not None]
            cells.append(f"{max(lags):,.0f}" if lags else "-")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def slopes(samples: list[Sample], names: list[str], start_s: float, end_s: float) -> dict[str, float]:
    """RSS slope (MiB per minute, least squares) of each process over [start_s, end_s]."""
    out: dict[str, float] = {}
    for n in names:
        pts = [(s.t / 60, s.rss[n]) for s in samples
               if start_s <= s.t <= end_s and s.rss.get(n) is not None]
        if len(pts) >= 3:
            xs, ys = zip(*pts, strict=True)
            out[n] = statistics.linear_regression(xs, ys).slope  # type: ignore[arg-type]
    return out


def processed_rate(samples: list[Sample], names: list[str]) -> float:
    """Events/s the workers processed over the run, adding up counters across a restart (a
    restarted worker's counter starts again at 0)."""
    total = 0.0
    for n in names:
        prev: float | None = None
        for s in samples:
            v = s.processed.get(n)
            if v is None:
                continue
            total += v - prev if prev is not None and v >= prev else (v if prev is not None else 0)
            prev = v
    span = samples[-1].t - samples[0].t if len(samples) > 1 else 0
    return total / span if span else float("nan")
