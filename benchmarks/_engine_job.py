"""Child-process side of `benchmarks.engine_comparison`: one engine running the keyed job.

    python -m benchmarks._engine_job CONFIG_JSON

CONFIG_JSON (written by the parent) names the engine (`confluent`, `quix`, `quix-groupby`,
`faust`), the mode (`throughput` | `failover`), the broker, topics, consumer group, the number of
messages to process (throughput) and where to write the status (failover) and the result.

The job, the same for every engine: per message (a JSON object `{"id", "key", "v"}`, keyed by
`key`) read the key's state `[count, sum]`, write `[count + 1, sum + v]` back into the engine's
state, and every 100th message this process handles produce `{"key", "id", "count", "sum"}` to
the output topic. In failover mode a value with `"p": 1` is a probe: it reads the key's state
without changing it (the parent reads the final per-key counts that way) and is not counted;
`"f": 1` marks one of the 1,000 messages sent after the second process's SIGTERM.

Throughput mode times, inside this process, from the first message's state update to the
COUNT-th's (`time.perf_counter`), and the CPU time of the whole process (all threads, librdkafka's
included: `time.process_time`) over the same window, then stops and writes the result.
Failover mode runs until SIGTERM, writes a status file every 0.1 s for the parent, and at exit
the ids it processed, the wall time it processed each final-batch message, the probe answers
and its counters.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import threading
import time
from array import array
from pathlib import Path
from typing import Any

OUTPUT_EVERY = 100
SESSION_TIMEOUT_MS = 6000  # Tansu holds each JoinGroup for ~half the session timeout
FETCH_WAIT_MS = 20  # Tansu holds a fetch that finds no data for the whole wait
COMMIT_INTERVAL_S = 1.0


class Tracker:
    """Counters shared by every engine; failover bookkeeping only in failover mode."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.total = int(cfg.get("count") or 0)
        self.failover = cfg["mode"] == "failover"
        self.n = 0
        self.outputs = 0
        self.first: tuple[float, float, float] | None = None  # perf, cpu, wall
        self.last: tuple[float, float, float] | None = None
        self.ids = array("q")
        self.final_times: dict[int, float] = {}
        self.probes: dict[str, list[int]] = {}
        self.latency: list[tuple[float, float]] = []  # (processed wall, send -> processed s)
        self.launched = float(cfg.get("launched") or time.time())
        self._stop_status = threading.Event()

    @staticmethod
    def mark() -> tuple[float, float, float]:
        return time.perf_counter(), time.process_time(), time.time()

    # failover: what the parent polls while the processes run
    def start_status(self) -> None:
        def loop() -> None:
            path = Path(self.cfg["status"])
            tmp = path.with_suffix(".tmp")
            while not self._stop_status.wait(0.1):
                tmp.write_text(json.dumps({"n": self.n, "final": len(self.final_times),
                                           "probes": len(self.probes), "t": time.time()}))
                os.replace(tmp, path)

        threading.Thread(target=loop, name="status", daemon=True).start()

    def seen(self, value: dict[str, Any]) -> None:
        """Failover bookkeeping for one processed (non-probe) message."""
        now = time.time()
        self.ids.append(value["id"])
        if value.get("f"):
            self.final_times[value["id"]] = now
        if value["id"] % 10 == 0 and "t" in value:
            self.latency.append((now, now - value["t"]))

    def write_result(self, engine: str, **extra: Any) -> None:
        self._stop_status.set()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result: dict[str, Any] = {
            "engine": engine, "role": self.cfg.get("role"), "processed": self.n,
            "outputs": self.outputs, "cpu_total_s": usage.ru_utime + usage.ru_stime,
            "max_rss_mb": usage.ru_maxrss / 1024, "exited_at": time.time(), **extra,
        }
        if self.first and self.last:
            (p0, c0, w0), (p1, c1, _) = self.first, self.last
            wall = p1 - p0
            result.update(messages=self.n, wall_s=wall, cpu_s=c1 - c0,
                          msgs_per_s=(self.n - 1) / wall if wall > 0 else None,
                          startup_s=w0 - self.launched)
        if self.failover:
            result.update(ids=self.ids.tolist(), final_times=self.final_times,
                          probes=self.probes, latency=self.latency)
        path = Path(self.cfg["result"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, path)


# -- plain confluent-kafka ---------------------------------------------------------------------


def run_confluent(cfg: dict[str, Any]) -> None:
    from confluent_kafka import Consumer, Producer

    tr = Tracker(cfg)
    consumer = Consumer({
        "bootstrap.servers": cfg["bootstrap"], "group.id": cfg["group"],
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "session.timeout.ms": SESSION_TIMEOUT_MS, "fetch.wait.max.ms": FETCH_WAIT_MS,
        "log_level": 4,
    })
    producer = Producer({"bootstrap.servers": cfg["bootstrap"], "log_level": 4})
    out_topic = cfg["output"]
    consumer.subscribe([cfg["input"]])
    state: dict[bytes, list[int]] = {}
    loads, dumps = json.loads, json.dumps
    last_commit = time.monotonic()
    committed_n = 0
    total = tr.total
    try:
        while tr.n < total:
            for msg in consumer.consume(1000, timeout=0.1):
                if msg.error() is not None:
                    continue
                value = loads(msg.value())
                key = msg.key()
                cs = state.get(key)
                cs = [1, value["v"]] if cs is None else [cs[0] + 1, cs[1] + value["v"]]
                state[key] = cs
                tr.n += 1
                if tr.n == 1:
                    tr.first = tr.mark()
                if tr.n % OUTPUT_EVERY == 0:
                    producer.produce(out_topic, key=key, value=dumps(
                        {"key": value["key"], "id": value["id"], "count": cs[0],
                         "sum": cs[1]}).encode())
                    tr.outputs += 1
                if tr.n == total:
                    tr.last = tr.mark()
                    break
            producer.poll(0)
            now = time.monotonic()
            if now - last_commit >= COMMIT_INTERVAL_S:
                # at-least-once, as Quix does: outputs confirmed, then the positions committed
                if tr.n > committed_n:
                    producer.flush(30)
                    consumer.commit(asynchronous=False)
                    committed_n = tr.n
                last_commit = now
        producer.flush(30)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    tr.write_result("confluent", keys_in_state=len(state))


# -- Quix Streams ------------------------------------------------------------------------------


def run_quix(cfg: dict[str, Any], groupby: bool) -> None:
    from quixstreams.models import TopicConfig
    from quixstreams.state.memory import MemoryStore
    from quixstreams.state.rocksdb import RocksDBStore

    tr = Tracker(cfg)
    from streams.engine import TrueEndApplication

    app = TrueEndApplication(
        broker_address=cfg["bootstrap"], consumer_group=cfg["group"],
        auto_offset_reset="earliest", commit_interval=COMMIT_INTERVAL_S,
        state_dir=cfg["state_dir"], loglevel="WARNING",
        consumer_extra_config={"session.timeout.ms": SESSION_TIMEOUT_MS,
                               "fetch.wait.max.ms": FETCH_WAIT_MS},
    )
    topic_config = TopicConfig(num_partitions=cfg["partitions"], replication_factor=1,
                               extra_config=dict(cfg["retention"]))
    source = app.topic(cfg["input"], value_deserializer="json", key_deserializer="bytes",
                       config=topic_config)
    sink = app.topic(cfg["output"], value_serializer="json", key_serializer="bytes",
                     config=topic_config)
    store = MemoryStore if cfg.get("store", "memory") == "memory" else RocksDBStore
    total, failover = tr.total, tr.failover

    def mark_first() -> None:
        tr.first = tr.mark()

    def step(value: dict[str, Any], state: Any) -> dict[str, Any] | None:
        if failover and value.get("p"):
            tr.probes[value["key"]] = state.get("cs") or [0, 0]
            return None
        cs = state.get("cs")
        cs = [1, value["v"]] if cs is None else [cs[0] + 1, cs[1] + value["v"]]
        state.set("cs", cs)
        tr.n += 1
        if tr.first is None:
            mark_first()
        if failover:
            tr.seen(value)
        out = None
        if tr.n % OUTPUT_EVERY == 0:
            out = {"key": value["key"], "id": value["id"], "count": cs[0], "sum": cs[1]}
            tr.outputs += 1
        if tr.n == total and not failover:
            tr.last = tr.mark()
            app.stop()
        return out

    sdf = app.dataframe(source)
    if groupby:
        # Time from the first input message (the group_by key function sees it first).
        def by_key(value: dict[str, Any]) -> str:
            if tr.first is None:
                mark_first()
            key: str = value["key"]
            return key

        sdf = sdf.group_by(by_key, name="by_key")
    sdf.register_store(store_type=store)
    sdf = sdf.apply(step, stateful=True)
    sdf = sdf.filter(lambda out: out is not None)
    sdf = sdf.to_topic(sink)
    if failover:
        tr.start_status()
    app.run()
    tr.write_result(cfg["engine"], store=store.__name__)


# -- faust-streaming ---------------------------------------------------------------------------


def run_faust(cfg: dict[str, Any]) -> None:
    import faust

    tr = Tracker(cfg)
    total, failover = tr.total, tr.failover
    app = faust.App(
        cfg["group"], broker=f"kafka://{cfg['bootstrap']}", store="memory://",
        datadir=cfg["state_dir"], web_enabled=False,
        topic_partitions=cfg["partitions"], consumer_auto_offset_reset="earliest",
        broker_commit_interval=COMMIT_INTERVAL_S,
        # Tansu holds each JoinGroup for ~half the session timeout: keep both short.
        broker_session_timeout=SESSION_TIMEOUT_MS / 1000,
        broker_rebalance_timeout=SESSION_TIMEOUT_MS / 1000,
        # (aiokafka's fetch_max_wait_ms is hard-coded to 1500 in faust's driver: not patched)
    )
    source = app.topic(cfg["input"], key_serializer="raw", value_serializer="json",
                       partitions=cfg["partitions"])
    sink = app.topic(cfg["output"], key_serializer="raw", value_serializer="json",
                     partitions=cfg["partitions"])
    table = app.Table("counts", default=None, partitions=cfg["partitions"],
                      key_type=bytes)

    @app.agent(source)
    async def process(stream: Any) -> None:
        async for key, value in stream.items():
            if failover and value.get("p"):
                tr.probes[value["key"]] = table.get(key) or [0, 0]
                continue
            cs = table.get(key)
            cs = [1, value["v"]] if cs is None else [cs[0] + 1, cs[1] + value["v"]]
            table[key] = cs
            tr.n += 1
            if tr.first is None:
                tr.first = tr.mark()
            if failover:
                tr.seen(value)
            if tr.n % OUTPUT_EVERY == 0:
                await sink.send(key=key, value={"key": value["key"], "id": value["id"],
                                                "count": cs[0], "sum": cs[1]})
                tr.outputs += 1
            if tr.n == total and not failover:
                tr.last = tr.mark()
                # result now (the window is closed); then the worker's own graceful stop
                tr.write_result("faust")
                os.kill(os.getpid(), signal.SIGTERM)

    if failover:
        tr.start_status()
    worker = faust.Worker(app, loglevel="warning", quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass
    finally:
        if failover or not Path(cfg["result"]).exists():
            tr.write_result("faust")


def main() -> None:
    cfg = json.loads(sys.argv[1])
    engine = cfg["engine"]
    if engine == "confluent":
        run_confluent(cfg)
    elif engine in ("quix", "quix-groupby"):
        run_quix(cfg, groupby=engine == "quix-groupby")
    elif engine == "faust":
        run_faust(cfg)
    else:
        raise SystemExit(f"unknown engine {engine!r}")


if __name__ == "__main__":
    main()
