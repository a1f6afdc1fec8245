"""Throughput of the whole detection pipeline with every detector on, in process (no broker).

    python -m benchmarks.detectors [--users 1300] [--seed 7] [--profile] [--freeze-startup]

Runs the simulator's labelled traffic (sessionwatch/simulation) through streams.local.LocalRunner:
the session, user and source stages routed exactly as the worker routes them, with all fourteen
detectors and the default policy. Prints events/s, the time per stage (µs per event that reaches
it) and, with --profile, cProfile's top functions. The worker's own figure (the same stages behind
Kafka) comes from `sessionwatch evaluate` (it prints events/s) and benchmarks/README.md.

`--freeze-startup` hands what exists before the run (the simulated traffic; the GeoIP data, ~4.4M
list slots in geoip2fast that every full garbage collection walks, ~30 ms each) to `gc.freeze()`,
so full collections walk only what the pipeline builds - as a worker can once it has started.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import time
from collections import defaultdict
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--freeze-startup", action="store_true",
                        help="gc.freeze() the traffic and GeoIP data before the run")
    args = parser.parse_args()

    from sessionwatch.simulation import simulate
    from streams.enrich import Enricher
    from streams.local import LocalRunner

    sim = simulate(users=args.users, seed=args.seed)
    warm = Enricher()  # GeoIP files and ua-parser's resolver: start-up cost, not per event
    warm.client("Mozilla/5.0")
    warm.network("8.8.8.8")
    warm.close()
    del warm

    runner = LocalRunner(enricher=Enricher())
    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    # The pipelines' entry points, timed per stage; `calls` counts those that take an event. The
    # user pipeline takes an event on arrival and decides held ones once final; the source
    # pipeline may sit behind an event-time ordering buffer (`.pipeline`).
    users = runner.users
    sources = getattr(runner.sources, "pipeline", runner.sources)
    hooks = [("session", runner.sessions, "process", True), ("source", sources, "process", True)]
    hooks += [("user", users, name, name in ("process", "arrive"))
              for name in ("process", "arrive", "finalize", "session_revoked")
              if hasattr(users, name)]
    for stage, obj, name, counted in hooks:
        inner = getattr(obj, name)

        def timed(*a: Any, _inner: Any = inner, _stage: str = stage, _counted: bool = counted,
                  **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return _inner(*a, **kw)
            finally:
                spent[_stage] += time.perf_counter() - t
                calls[_stage] += _counted

        setattr(obj, name, timed)

    if args.freeze_startup:
        gc.collect()
        gc.freeze()
    profiler = cProfile.Profile() if args.profile else None
    began = time.perf_counter()
    if profiler:
        profiler.enable()
    revocations = 0
    for event in sim.events:
        revocations += len(runner.process(event)[1])
    finish = getattr(runner, "finish", None)  # decisions held for lateness, if it holds any
    if finish is not None:
        revocations += len(finish()[1])
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - began
    n = len(sim.events)
    print(f"{n} events ({args.users} users, seed {args.seed}), {revocations} revocations, "
          f"{elapsed:.2f} s: {n / elapsed:,.0f} events/s, {elapsed / n * 1e6:.1f} µs/event"
          + (" (under cProfile)" if profiler else "")
          + (" (start-up objects frozen)" if args.freeze_startup else ""))
    for stage in ("session", "user", "source"):
        if calls[stage]:
            print(f"  {stage:7} stage: {calls[stage]:6} events, "
                  f"{spent[stage] / calls[stage] * 1e6:6.1f} µs each, "
                  f"{spent[stage] / elapsed:5.1%} of the time")
    other = elapsed - sum(spent.values())
    print(f"  routing and bookkeeping: {other / elapsed:5.1%}")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
