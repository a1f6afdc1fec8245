"""`kill -USR1 <worker pid>`: what an on-call engineer needs when a worker stops moving.

Logs, without stopping anything: every thread's stack; for each assigned input partition the
consumer's position, the group's committed offset and the high watermark of the last fetch (the
true log end on the embedded broker, unlike ListOffsets); each stage partition's event-time clock
and how much it holds for the allowed lateness; and the counters.
"""

from __future__ import annotations

import io
import logging
import signal
import sys
import threading
import traceback
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import TopicPartition

if TYPE_CHECKING:
    from streams.engine import Worker

log = logging.getLogger("sessionwatch.worker")


def install(worker: Worker) -> None:
    signal.signal(signal.SIGUSR1, lambda *_: log.warning("diagnostics:\n%s", report(worker)))


def report(worker: Worker) -> str:
    out = io.StringIO()
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        out.write(f"--- thread {names.get(ident, ident)}\n")
        out.write("".join(traceback.format_stack(frame, limit=12)))
    try:
        out.write(_partitions(worker))
    except Exception as exc:  # diagnostics must never hurt the worker
        out.write(f"(consumer state unavailable: {exc!r})\n")
    for name, stage in (("user", worker.user_stage), ("source", worker.source_stage)):
        for partition, part in sorted(stage.partitions.items()):
            clock = part.clock
            newest = _when(clock.newest)
            out.write(f"{name} stage [{partition}]: newest event {newest}, final before "
                      f"{_when(clock.final_before())}, holding {len(part)}\n")
    out.write(f"counters: {worker.stats.line()}\n")
    return out.getvalue()


def _partitions(worker: Worker) -> str:
    consumer: Any = worker.app.consumer
    tps = [TopicPartition(t, p) for t, p in sorted(worker.assignment)
           if not t.startswith("changelog__")]
    if not tps:
        return "no input partitions assigned\n"
    positions = {(tp.topic, tp.partition): tp.offset for tp in consumer.position(tps)}
    committed = {(tp.topic, tp.partition): tp.offset
                 for tp in consumer.committed(tps, timeout=2.0)}
    lines = []
    for tp in tps:
        key = (tp.topic, tp.partition)
        _, fetched_high = consumer.get_watermark_offsets(tp, cached=True)
        lines.append(f"  {tp.topic}[{tp.partition}] position={positions.get(key)} "
                     f"committed={committed.get(key)} fetched_high_watermark={fetched_high}\n")
    return "input partitions:\n" + "".join(lines)


def _when(epoch_s: float) -> str:
    if epoch_s in (float("inf"), float("-inf")):
        return "none yet"
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
