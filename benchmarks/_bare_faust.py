"""A bare faust agent for the throughput benchmark: run as a child process by benchmarks.throughput.

`python -m benchmarks._bare_faust BOOTSTRAP TOPIC N RESULT_JSON APP_ID [PROFILE_OUT]`

Own faust.App (memory store, web off, no table), raw value serializer, `json.loads` per message,
faust's own consumer defaults otherwise. Times the agent from its first to its N-th message and
writes the figures to RESULT_JSON, then exits hard (the parent kills the process group anyway).
With PROFILE_OUT, cProfile runs on the event-loop thread from the first to the N-th message and
its stats are dumped there (a separate run: cProfile slows faust down ~2x).

It also wraps faust's cross-thread `AIOKafkaConsumerThread.getmany` (event-loop side) and
`_fetch_records` (inside the consumer thread, around aiokafka's `Fetcher.fetched_records`) with
timers: two wrapper calls per ~500 records, so the overhead is negligible.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def main(argv: list[str]) -> None:
    bootstrap, topic, n_str, result_path, app_id = argv[:5]
    profile_out = argv[5] if len(argv) > 5 else None
    n = int(n_str)
    import cProfile

    profiler = cProfile.Profile() if profile_out else None

    import faust
    from faust.transport.drivers import aiokafka as faust_aiokafka

    timers: dict[str, list[float]] = {"getmany": [0, 0.0, 0], "fetched_records": [0, 0.0, 0]}

    def timed(name: str, fn: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            result = await fn(*args, **kwargs)
            acc = timers[name]
            acc[0] += 1
            acc[1] += time.perf_counter() - t0
            acc[2] += sum(len(v) for v in result.values()) if result else 0
            return result

        return wrapper

    thread_cls = faust_aiokafka.AIOKafkaConsumerThread
    thread_cls.getmany = timed("getmany", thread_cls.getmany)  # type: ignore[method-assign]
    thread_cls._fetch_records = timed(  # type: ignore[method-assign]
        "fetched_records", thread_cls._fetch_records
    )

    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_partitions=1,
        consumer_auto_offset_reset="earliest",
        # Only so that Tansu lets the group form in seconds; no effect on steady-state fetching.
        broker_session_timeout=6.0,
        broker_rebalance_timeout=6.0,
        broker_heartbeat_interval=1.2,
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")
    state: dict[str, Any] = {"count": 0}

    @app.agent(source)
    async def bare(stream: Any) -> None:
        async for value in stream:
            json.loads(value)
            state["count"] += 1
            count = state["count"]
            if count == 1:
                state["t0"] = time.perf_counter()
                state["cpu0"] = time.process_time()
                state["timers0"] = {k: list(v) for k, v in timers.items()}
                if profiler is not None:
                    profiler.enable()
            elif count == n:
                if profiler is not None and profile_out:
                    profiler.disable()
                    profiler.dump_stats(profile_out)
                wall = time.perf_counter() - state["t0"]
                cpu = time.process_time() - state["cpu0"]
                window = {
                    k: [v[i] - state["timers0"][k][i] for i in range(3)]
                    for k, v in timers.items()
                }
                result = {
                    "events": n,
                    "wall_s": wall,
                    "events_per_s": (n - 1) / wall,
                    "cpu_s": cpu,
                    "timers": {
                        k: {"calls": c, "seconds": s, "records": r} for k, (c, s, r) in window.items()
                    },
                }
                with open(result_path, "w") as fh:
                    json.dump(result, fh)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)

    from faust.worker import Worker

    Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
