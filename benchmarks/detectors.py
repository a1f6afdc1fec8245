"""Throughput of the whole detection pipeline with every detector on, in process (no broker).

    python -m benchmarks.detectors [--users 1300] [--seed 7] [--profile]

Runs the simulator's labelled traffic (sessionwatch/simulation) through streams.local.LocalRunner:
the session, user and source stages routed exactly as the worker routes them, with all fourteen
detectors and the default policy. Prints events/s, the time per stage (µs per event that reaches
it) and, with --profile, cProfile's top functions. The worker's own figure (the same stages behind
Kafka and faust) comes from `sessionwatch evaluate` (it prints events/s) and benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections import defaultdict
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    from sessionwatch.simulation import simulate
    from streams.enrich import Enricher
    from streams.local import LocalRunner

    sim = simulate(users=args.users, seed=args.seed)
    warm = Enricher()  # GeoIP files and ua-parser's resolver: start-up cost, not per event
    warm.client("Mozilla/5.0")
    warm.network("8.8.8.8")

    runner = LocalRunner(enricher=Enricher())
    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for stage, obj, name in (("session", runner.sessions, "process"),
                             ("user", runner.users, "process"),
                             ("source", runner.sources, "process")):
        inner = getattr(obj, name)

        def timed(*a: Any, _inner: Any = inner, _stage: str = stage, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return _inner(*a, **kw)
            finally:
                spent[_stage] += time.perf_counter() - t
                calls[_stage] += 1

        setattr(obj, name, timed)

    profiler = cProfile.Profile() if args.profile else None
    began = time.perf_counter()
    if profiler:
        profiler.enable()
    revocations = 0
    for event in sim.events:
        revocations += len(runner.process(event)[1])
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - began
    n = len(sim.events)
    print(f"{n} events ({args.users} users, seed {args.seed}), {revocations} revocations, "
          f"{elapsed:.2f} s: {n / elapsed:,.0f} events/s, {elapsed / n * 1e6:.1f} µs/event"
          + (" (under cProfile)" if profiler else ""))
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
