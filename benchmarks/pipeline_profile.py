"""Time, profile and fingerprint the pure in-process pipeline (no broker), to optimise it safely.

    python -m benchmarks.pipeline_profile bench [--workload NAME]... [--repeat 3]
    python -m benchmarks.pipeline_profile profile [--workload NAME]... [--top 25]
    python -m benchmarks.pipeline_profile digest [--users 1300 --seed 505] > digest.txt

Workloads: `sim` is the simulator's labelled traffic through streams.local.LocalRunner (all three
stages, every detector, as `benchmarks.detectors`); `throughput` is benchmarks/throughput.py's
workload (a random public address per session, so GeoIP misses often) through LocalRunner too;
`session-stage` is that workload through SessionPipeline with a dict of states only.

`bench` prints events/s (best of --repeat runs, fresh caches each); `profile` the cProfile top
functions by own and cumulative time; `digest` one hash per output (findings, revocations, final
session and user states): an optimisation must leave every line unchanged.
Decisions use event time only (`decided_at` is the event's time here), so digests reproduce.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec


def _sim_events(users: int, seed: int) -> list[Any]:
    from sessionwatch.simulation import simulate

    return simulate(users=users, seed=seed).events


def _throughput_events(n: int, sessions: int) -> list[Any]:
    from benchmarks.throughput import make_workload

    events = make_workload(n, sessions).body_events
    # The workload starts two hours before now; pin it to a fixed time so digests compare.
    shift = events[0].time - datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    return [msgspec.structs.replace(e, time=e.time - shift) for e in events]


def _local_runner(events: list[Any]) -> tuple[Callable[[Any], Any], int]:
    """All three stages (streams.local.LocalRunner), every detector, the default policy."""
    from streams.enrich import Enricher
    from streams.local import LocalRunner

    _warm()

    def run(enricher: Enricher, keep: bool = False) -> Any:
        runner = LocalRunner(enricher=enricher)
        out = []
        for event in events:
            result = runner.process(event)
            if keep:
                out.append(result)
        finish = getattr(runner, "finish", None)  # decisions held for lateness, if it holds any
        if finish is not None:
            result = finish()
            if keep:
                out.append(result)
        return runner, out

    return run, len(events)


def _session_runner(events: list[Any]) -> tuple[Callable[[Any], Any], int]:
    """The session stage only, with a dict of states."""
    from streams.enrich import Enricher
    from streams.pipeline import SessionPipeline

    _warm()

    def run(enricher: Enricher, keep: bool = False) -> Any:
        pipeline = SessionPipeline(enricher)
        store: dict[str, Any] = {}
        outcomes = []
        for event in events:
            outcome = pipeline.process(event, store.get(event.session), event.time)
            if not outcome.duplicate:
                store[event.session] = outcome.state
            if keep:
                outcomes.append(outcome)
        return store, outcomes

    return run, len(events)


def _warm() -> None:
    """GeoIP files and ua-parser's resolver: start-up cost, not per event."""
    from streams.enrich import Enricher

    warm = Enricher()
    warm.client("Mozilla/5.0")
    warm.network("8.8.8.8")
    warm.close()


def _workload(name: str, args: argparse.Namespace) -> tuple[Callable[..., Any], int]:
    if name == "sim":
        return _local_runner(_sim_events(args.users, args.seed))
    events = _throughput_events(args.events, args.sessions)
    return _local_runner(events) if name == "throughput" else _session_runner(events)


def bench(args: argparse.Namespace) -> None:
    from streams.enrich import Enricher

    for name in args.workload or WORKLOADS:
        run, n = _workload(name, args)
        best = float("inf")
        for _ in range(args.repeat):
            # A fresh Enricher per run (cold caches, as a new worker), built outside the clock:
            # loading the GeoIP files is start-up cost.
            enricher = Enricher()
            began = time.perf_counter()
            run(enricher)
            best = min(best, time.perf_counter() - began)
            enricher.close()
        print(f"{name:16} {n:7} events: {n / best:8,.0f} events/s, {best / n * 1e6:5.1f} µs/event "
              f"(best of {args.repeat})")


def profile(args: argparse.Namespace) -> None:
    from streams.enrich import Enricher

    for name in args.workload or ("sim",):
        run, n = _workload(name, args)
        enricher = Enricher()
        profiler = cProfile.Profile()
        profiler.enable()
        run(enricher)
        profiler.disable()
        print(f"== {name}: {n} events under cProfile")
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)


def _hash(items: Iterable[bytes]) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    for item in items:
        h.update(item)
        h.update(b"\n")
        n += 1
    return n, h.hexdigest()[:16]


def digest(args: argparse.Namespace) -> None:
    from streams.enrich import Enricher

    enc = msgspec.json.Encoder(order="sorted")
    for name in ("sim", "throughput"):
        run, _ = _workload(name, args)
        runner, out = run(Enricher(), keep=True)
        # Only the fields the state had when this digest was written: added fields may differ.
        sessions = [
            enc.encode({k: v for k, v in msgspec.to_builtins(s).items() if k in _STATE_FIELDS})
            for _, s in sorted(runner.session_states.items())]
        for label, items in (
            ("findings", [enc.encode(f) for fs, _ in out for f in fs]),
            ("revocations", [enc.encode(r) for _, rs in out for r in rs]),
            ("sessions", sessions),
            ("users", [enc.encode(s) for _, s in sorted(runner.user_states.items())]),
        ):
            count, digest_ = _hash(items)
            print(f"{name:10} {label:12} {count:6d} {digest_}")


WORKLOADS = ("sim", "throughput", "session-stage")
_STATE_FIELDS = frozenset((
    "tenant", "session", "user", "created_at", "authenticated_at", "first_seen", "last_seen",
    "events", "ip", "prefix", "asn", "country", "user_agent", "client_family", "client_os",
    "client_major", "client_is_tool", "datacenter", "networks", "prefixes", "lat", "lon",
    "accuracy_km", "located_at", "ended_at", "end_reason", "ended_ip", "ended_user_agent",
    "revocation", "revoked_at", "flagged", "recent_ids", "user_synced_at", "source_synced_at",
    "source_synced_prefix",
))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("bench", "profile", "digest"))
    parser.add_argument("--workload", choices=WORKLOADS, action="append")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--users", type=int, default=1300)
    parser.add_argument("--seed", type=int, default=505)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=5_000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    {"bench": bench, "profile": profile, "digest": digest}[args.command](args)


if __name__ == "__main__":
    main()
