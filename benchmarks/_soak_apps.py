"""The soak's simulated web apps: each a process sending its slice of users at a fixed rate with
the SDK, recording the wall send time of every event id (and each injected hijack) to a file."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Users per simulated round: a round is one `plan_traffic` population (~27 events per user);
# every round has fresh user names and tokens, so state from old rounds only ages out.
USERS_PER_ROUND = 60


@dataclass(frozen=True)
class AppJob:
    index: int
    apps: int
    bootstrap: str
    rate: float          # this app's events/s
    duration_s: float
    hash_key: bytes
    out: Path
    seed: int


def run_app(job: AppJob) -> None:
    """One app process: rounds of simulated users at `job.rate` until `job.duration_s` passes.

    Event time is the wall clock at send, as the SDK stamps it in production; the plan's own
    spacing only fixes the order of a session's events (a hijack comes after its victim's login).
    """
    from producers.client import SessionwatchClient
    from producers.hashing import TokenHasher
    from sessionwatch.simulation import plan_traffic

    hasher = TokenHasher({"soak": job.hash_key})
    client = SessionwatchClient(job.bootstrap, hasher, buffer_size=100_000)
    began = time.monotonic()
    end = began + job.duration_s
    sent = 0
    with open(job.out, "w", buffering=1 << 20) as out:
        rnd = 0
        while time.monotonic() < end:
            plan = plan_traffic(users=USERS_PER_ROUND, seed=job.seed + 100_003 * job.index + rnd)
            prefix = f"a{job.index}r{rnd}-"
            hijacked: set[str] = set()
            for item in plan.events:
                at = began + sent / job.rate
                now = time.monotonic()
                if now >= end:
                    break
                if at > now:
                    time.sleep(at - now)
                kwargs = dict(item.kwargs)
                if "user" in kwargs:
                    kwargs["user"] = prefix + kwargs["user"]
                event = getattr(client, item.method)(**kwargs)
                wall = time.time()
                sent += 1
                out.write(f"E {event.id} {wall:.6f}\n")
                if item.attack and item.session_label not in hijacked:
                    hijacked.add(item.session_label)
                    kind = plan.sessions[item.session_label].attack_kind
                    out.write(f"H {event.session} {event.id} {wall:.6f} {kind} {event.user}\n")
            rnd += 1
        client.flush(60)
        s = client.stats
        out.write(f"S {s.queued} {s.sent} {s.dropped} {s.failed} {time.monotonic() - began:.3f}\n")
    client.close(10)


def start_apps(jobs: list[AppJob]) -> list[multiprocessing.process.BaseProcess]:
    # spawn, not fork: the parent already runs threads (samplers, consumers)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=run_app, args=(job,), name=f"app-{job.index}", daemon=True)
             for job in jobs]
    for p in procs:
        p.start()
    return procs


@dataclass
class Hijack:
    session: str
    event_id: str
    sent_at: float
    kind: str
    user: str


@dataclass
class AppRecords:
    """What the apps wrote: totals, the injected hijacks and the SDK's counters."""

    events: int = 0
    hijacks: list[Hijack] = field(default_factory=list)
    queued: int = 0
    delivered: int = 0
    dropped: int = 0
    failed: int = 0
    seconds: float = 0.0
    finished: int = 0


def _lines(paths: list[Path]) -> Iterator[list[str]]:
    for path in paths:
        with open(path) as f:
            for line in f:
                yield line.split()


def read_records(paths: list[Path]) -> AppRecords:
    rec = AppRecords()
    for parts in _lines(paths):
        if parts[0] == "E":
            rec.events += 1
        elif parts[0] == "H":
            rec.hijacks.append(Hijack(parts[1], parts[2], float(parts[3]), parts[4], parts[5]))
        elif parts[0] == "S":
            rec.finished += 1
            rec.queued += int(parts[1])
            rec.delivered += int(parts[2])
            rec.dropped += int(parts[3])
            rec.failed += int(parts[4])
            rec.seconds = max(rec.seconds, float(parts[5]))
    return rec


def send_times(paths: list[Path], wanted: set[str]) -> dict[str, float]:
    """Wall send time of the event ids in `wanted` (the whole id list is not held in memory)."""
    out: dict[str, float] = {}
    for parts in _lines(paths):
        if parts[0] == "E" and parts[1] in wanted:
            out[parts[1]] = float(parts[2])
    return out


def sent_ids(paths: list[Path]) -> set[str]:
    """Every event id sent (only to name what the archive misses, when it misses any)."""
    return {parts[1] for parts in _lines(paths) if parts[0] == "E"}
