"""What the learned score (session.anomaly) costs per event: piece by piece, end to end, profiled.

    python -m benchmarks.anomaly [--model DIR] [--users N] [--seed S] [--events N] [--sessions S]
                                 [--repeat 3] [--piece-repeat 5] [--top 10]

Without --model a small artefact is trained first (two simulated seeds, 400 users, two days of
history: the tests' fixture) into a temporary directory; the output says so. Two traffics:

- `sim`: simulate(users=N, seed=S, history_days=2, edge_fingerprints=0.5): users with history,
  many attacks, short sessions (~5 events per session);
- `long`: benchmarks/throughput.py's workload (N events over S sessions: one login, then ~N/S
  requests each from a stable address and browser, ~1 % curl take-overs), closer to a real app's
  tens of requests per login; its users have no history.

Per traffic: the share of events scored; every piece of the model path timed alone over the
inputs a LocalRunner run gave it (the least of --piece-repeat loops), as µs per call, per event
over all events and per scored event; sklearn's predict_proba on the same vectors; prototypes of
cheaper variants (here only, never in models/ or streams/); the state encodings only the worker
pays; LocalRunner with the model against without (median of --repeat after a warm-up); cProfile
of both and the functions whose own time the model adds. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import math
import os
import platform
import pstats
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
BUDGET_US = 5.0          # the budget: the model path, amortised over all events
BUDGET_SLOWDOWN = 0.10   # the worker's throughput with the model within 10 % of without
SINGLE_ROWS = 200        # predict_proba single-row calls timed (each ~0.5-1 ms)
EDGE_KEYS = frozenset({"ja4", "h2", "tls_rtt_ms", "tcp_rtt_ms"})  # what features._edge reads


def get_model(path: str | None) -> tuple[Any, Any, str]:
    """(AnomalyModel, the sklearn estimator it was exported from, how it was obtained)."""
    from models.artefact import load_artefact
    from models.features import FEATURE_NAMES
    from models.load import load_model

    if path:
        directory, how = Path(path), f"--model {path}"
    else:
        from sessionwatch.train import SimulationSource, build, from_simulation

        directory = Path(tempfile.mkdtemp(prefix="sw-anomaly-model-"))
        print("no --model: training one (seeds 1, 2; 400 users; 2 history days; edge "
              "fingerprints 0.5) ...", flush=True)
        t0 = time.perf_counter()
        build(*from_simulation(SimulationSource(seeds=(1, 2), users=400, history_days=2,
                                                edge_fingerprints=0.5)), directory)
        how = f"no --model given: trained by this run in {time.perf_counter() - t0:.0f} s " \
              f"into {directory}"
    estimator = load_artefact(directory, FEATURE_NAMES).estimators["supervised"]
    return load_model(directory), estimator, how


# -- what each piece gets in a real run ----------------------------------------------------------


@dataclass
class Captured:
    """The model path's inputs (and the vectors) in one LocalRunner run with the model."""

    name: str
    events: list[Any]
    forwarded: list[tuple[Any, bytes, Any]] = field(default_factory=list)  # event, raw, behaviour
    user_messages: dict[str, int] = field(default_factory=dict)  # events forwarded, on and off
    observations: list[dict[str, Any]] = field(default_factory=list)   # observation() kwargs
    learns: list[tuple[int, Any, float, Any]] = field(default_factory=list)  # user, obs, at, b
    histories: list[tuple[Any, float]] = field(default_factory=list)   # history_for() args
    vectors: list[dict[str, Any]] = field(default_factory=list)        # vector() kwargs
    xs: list[list[float]] = field(default_factory=list)
    states: dict[str, list[Any]] = field(default_factory=dict)  # final session/user states
    findings: int = 0                                            # session.anomaly's, published

    @property
    def n(self) -> int:
        return len(self.events)

    @property
    def scored(self) -> int:
        return len(self.xs)


def _copy_profile(profile: Any) -> Any:
    from models.features import UserProfile

    return None if profile is None else msgspec.msgpack.decode(msgspec.msgpack.encode(profile),
                                                              type=UserProfile)


def _run_spied(events: list[Any], model: Any, spies: dict[tuple[Any, str], Callable]) -> Any:
    """A LocalRunner run with module functions replaced by `spies` (each gets the real one)."""
    from streams.enrich import Enricher
    from streams.local import LocalRunner

    real = {key: getattr(*key) for key in spies}
    for (mod, name), spy in spies.items():
        setattr(mod, name, spy(real[(mod, name)]))
    try:
        runner = LocalRunner(model=model, enricher=Enricher())
        runner.anomaly_findings = 0  # type: ignore[attr-defined]
        for event in [*events, None]:
            found, _ = runner.process(event) if event is not None else runner.finish()
            runner.anomaly_findings += sum(f.detector == "session.anomaly" for f in found)  # type: ignore[attr-defined]
    finally:
        for (mod, name), fn in real.items():
            setattr(mod, name, fn)
    return runner


def capture(name: str, events: list[Any], model: Any) -> Captured:
    import streams.local as local
    import streams.user_pipeline as up
    from models.features import BEHAVIOUR
    from streams.routing import decode_forwarded

    cap, users = Captured(name, events), {}
    cap.user_messages = {"on": 0, "off": 0}

    def for_user(real: Callable, key: str = "on") -> Callable:
        def spy(event: Any, raw: bytes, state: Any) -> Any:
            out = real(event, raw, state)
            if out is not None:
                cap.user_messages[key] += 1
                if key == "on" and out[1] and BEHAVIOUR in (decode_forwarded(out[1]).attrs or {}):
                    cap.forwarded.append((event, out[1], state.behaviour))
            return out
        return spy

    def recording(into: list[Any], make: Callable[..., Any]) -> Callable:
        def wrap(real: Callable) -> Callable:
            def spy(*args: Any, **kw: Any) -> Any:
                out = real(*args, **kw)
                into.append(make(out, *args, **kw))
                return out
            return spy
        return wrap

    def vector(x: list[float], **kw: Any) -> dict[str, Any]:
        cap.xs.append(x)
        return {**kw, "history": _copy_profile(kw["history"])}  # learn() mutates it later

    runner = _run_spied(events, model, {
        (local, "for_user"): for_user,
        (up, "observation"): recording(cap.observations, lambda _out, **kw: kw),
        (up, "history_for"): recording(cap.histories, lambda _out, p, at: (_copy_profile(p), at)),
        (up, "vector"): recording(cap.vectors, vector),
        (up, "learn"): recording(cap.learns, lambda out, _p, obs, at, b: (
            users.setdefault(id(out), len(users)), obs, at, b)),
    })
    plain = _run_spied(events, None, {(local, "for_user"): lambda real: for_user(real, "off")})
    cap.findings = runner.anomaly_findings
    cap.states = {"session": list(runner.session_states.values()),
                  "user_on": list(runner.user_states.values()),
                  "user_off": list(plain.user_states.values())}
    return cap


# -- timing the pieces ---------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    seconds: float
    calls: int
    note: str = ""


def clock(run: Callable[[], Any], repeat: int) -> float:
    """The least wall time of `repeat` calls of `run` (each a whole loop over its inputs): on a
    shared machine the least disturbed loop is the piece's own cost."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def each(fn: Callable[..., Any], items: Sequence[Any], kw: bool = False) -> Callable[[], None]:
    """A loop calling fn(*item) (fn(**item) with kw) for every item."""
    if kw:
        def run_kw() -> None:
            for item in items:
                fn(**item)
        return run_kw

    def run() -> None:
        for item in items:
            fn(*item)
    return run


def _mean_len(blobs: Iterable[bytes]) -> str:
    sizes = [len(b) for b in blobs]
    return f"{statistics.mean(sizes):.0f} B" if sizes else ""


def piece_rows(cap: Captured, model: Any, estimator: Any, repeat: int) -> list[Row]:
    from models import features as F
    from producers.contract import encode
    from streams.enrich import network_prefix
    from streams.routing import decode_forwarded

    rows: list[Row] = []

    def add(label: str, run: Callable[[], Any], calls: int, note: str = "") -> None:
        rows.append(Row(label, clock(run, repeat), calls, note))

    # session stage: every event of every session
    evs = [e for e in cap.events if e.session is not None]
    prefixes = [network_prefix(e.ip) for e in evs]
    observed: list[Any] = []

    def run_observe() -> None:
        observe, last = F.observe, {}
        observed.clear()
        for e, prefix in zip(evs, prefixes, strict=True):
            # .timestamp() and .type.value: the session pipeline computes them for itself too
            b = last[e.session] = observe(last.get(e.session), now=e.time.timestamp(), ip=e.ip,
                                          user_agent=e.user_agent, event_type=e.type.value,
                                          attrs=e.attrs, prefix=prefix)
            observed.append(b)

    add("(a) observe, every session event", run_observe, len(evs))
    add("    of which msgspec.structs.replace (the copy)",
        each(msgspec.structs.replace, [(b,) for b in observed]), len(observed))
    edge = [(b, e.attrs) for b, e in zip(observed, evs, strict=True)
            if e.attrs and (len(e.attrs) > 1 or e.attrs.get("path") is None)]
    add("    of which _edge (called when len(attrs) > 1 or no path)", each(F._edge, edge),
        len(edge), f"{sum(bool(EDGE_KEYS & a.keys()) for _, a in edge):,} of them carry an "
                   "edge fingerprint key")

    # forwarding the behaviour to the user stage
    fwd = cap.forwarded
    json_encode = msgspec.json.Encoder().encode
    key = F.BEHAVIOUR

    def reencode(e: Any, b: Any) -> bytes:  # what for_user does
        return encode(msgspec.structs.replace(e, attrs={**e.attrs, key: F.behaviour_to_attr(b)}))

    add("(s) behaviour_to_attr (msgspec.to_builtins)",
        each(F.behaviour_to_attr, [(b,) for _, _, b in fwd]), len(fwd))
    add("(s) re-encode the event with the behaviour (for_user)",
        each(reencode, [(e, b) for e, _, b in fwd]), len(fwd),
        "without a model the worker forwards the bytes as they came")
    add("    for comparison: encode(event) without it", each(encode, [(e,) for e, _, _ in fwd]),
        len(fwd))
    add("    alternative: encode only the behaviour Struct (a header, or a frame before the "
        "raw event)", each(json_encode, [(b,) for _, _, b in fwd]), len(fwd),
        _mean_len(json_encode(b) for _, _, b in fwd))
    slim = [slim_behaviour(b) for _, _, b in fwd]
    add("    the same with its pairs as 12-hex digests (prototype)",
        each(json_encode, [(b,) for b in slim]), len(slim), _mean_len(map(json_encode, slim)))

    # user stage: every forwarded event that carries a behaviour
    raws = [raw for _, raw, _ in fwd]
    plain = [encode(e) for e, _, _ in fwd]
    add("(u) decode_forwarded with the behaviour (arrive; finalize decodes it again)",
        each(decode_forwarded, [(r,) for r in raws]), len(raws), _mean_len(raws))
    add("    for comparison: the same events without it",
        each(decode_forwarded, [(r,) for r in plain]), len(plain), _mean_len(plain))
    add("(u) behaviour_from_attr (msgspec.convert)",
        each(F.behaviour_from_attr, [(decode_forwarded(r).attrs[key],) for r in raws]), len(raws))
    add("    alternative: decode the encoded Struct alone (typed, no builtins in between)",
        each(msgspec.json.Decoder(F.SessionBehaviour).decode,
             [(json_encode(b),) for _, _, b in fwd]), len(fwd))
    add("(u) observation", each(F.observation, cap.observations, kw=True), len(cap.observations))

    def run_learn() -> None:
        learn, profiles = F.learn, {}
        for user, obs, at, b in cap.learns:
            profiles[user] = learn(profiles.get(user), obs, at, b)

    add("(u) learn", run_learn, len(cap.learns))
    copies = sum(1 for p, at in cap.histories
                 if p is not None and p.today and int(at // F.DAY_S) > p.day)
    add("(b0) history_for (scored events)", each(F.history_for, cap.histories),
        len(cap.histories), f"{copies:,} of them copy the profile to close a day")
    rows.append(Row("    alternative: _close_day in place (learn closes the day next anyway)",
                    _close_in_place(cap.histories, repeat), len(cap.histories)))

    # scoring
    add("(b) vector", each(F.vector, cap.vectors, kw=True), len(cap.vectors))

    def run_sums() -> None:  # what _p_user recounts per call: each history table's total
        for kw in cap.vectors:
            if kw["history"] is not None:
                for table in kw["history"].history.values():
                    sum(c for c, _ in table.values())

    add("    of which _p_user's sums over the history tables", run_sums, len(cap.vectors))
    scorer, xs = model.scorer, [(x,) for x in cap.xs]
    nodes = sum(len(t.leaf) for t in scorer.trees)
    add("(c) TreeScorer.score", each(scorer.score, xs), len(xs),
        f"{len(scorer.trees)} trees, {nodes:,} nodes; raw = {_qualname(scorer.raw)}")
    if hasattr(scorer, "walk"):
        add("    for comparison: TreeScorer.walk (the list walk)", each(scorer.walk, xs), len(xs))
    compiled, lines = compile_trees(scorer)
    worst = max((abs(compiled(x) - scorer.raw(x)) for (x,) in xs), default=0.0)
    add("    prototype: nested ifs, `not v > t` for NaN-left (this file)", each(compiled, xs),
        len(xs), f"{lines:,} lines; max |difference| from TreeScorer.raw {worst:.1e}")
    flagged = [(x, 3) for (x,) in xs if model.severity(scorer.score(x)) is not None]
    add("(c2) explain (contributions), scores >= medium only", each(model.explain, flagged),
        len(flagged), f"{cap.findings:,} session.anomaly findings published")
    rows += sklearn_rows(estimator, cap.xs, repeat)
    rows += state_rows(cap, repeat)
    return rows


def _qualname(fn: Any) -> str:
    code = getattr(fn, "__code__", None)
    return f"{fn.__qualname__} from {code.co_filename}" if code else repr(fn)


def sklearn_rows(estimator: Any, xs: list[list[float]], repeat: int) -> list[Row]:
    """predict_proba on the same vectors, on one OpenMP thread like the Python scorer (with two
    on this shared 2-core VM a single row often waits milliseconds for the other thread)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    if not xs:
        return []
    array = np.array(xs, dtype=float)
    sample = [row.reshape(1, -1) for row in array[:SINGLE_ROWS]]
    with threadpool_limits(1):
        estimator.predict_proba(sample[0])  # the first call pays for set-up
        single = clock(each(estimator.predict_proba, [(r,) for r in sample]), repeat)
        batched = clock(lambda: estimator.predict_proba(array), repeat)
    return [Row("(d) sklearn predict_proba, one row per call", single * len(xs) / len(sample),
                len(xs), f"1 thread; timed on {len(sample)} rows, scaled"),
            Row("(e) sklearn predict_proba, all rows in one call", batched, len(xs), "1 thread")]


def slim_behaviour(b: Any) -> Any:
    """A prototype: the behaviour with its (address|User-Agent) pairs as short digests. The model
    only counts and compares them, and the full strings are most of the struct's bytes."""
    from models.features import _digest

    def d(p: str | None) -> str | None:
        return None if p is None else _digest(p)

    return msgspec.structs.replace(b, pairs=tuple(map(_digest, b.pairs)), pair=d(b.pair),
                                   previous_pair=d(b.previous_pair))


def _close_in_place(histories: list[tuple[Any, float]], repeat: int) -> float:
    from models.features import DAY_S, _close_day

    times = []
    for _ in range(repeat):
        copies = [(_copy_profile(p), at) for p, at in histories]  # outside the clock
        t0 = time.perf_counter()
        for p, at in copies:
            if p is not None and int(at // DAY_S) > p.day:
                _close_day(p, int(at // DAY_S))
        times.append(time.perf_counter() - t0)
    return min(times)


def compile_trees(scorer: Any) -> tuple[Callable[[Sequence[float]], float], int]:
    """The trees as one generated function of nested ifs (a prototype). NaN goes where training
    sent it without a test of its own: `not v > t` is true for NaN, `v <= t` false."""
    lines = ["def raw(x):", f"    total = {_num(scorer.baseline)}"]

    def emit(t: Any, i: int, depth: int) -> None:
        pad = "    " * depth
        if t.leaf[i]:
            lines.append(f"{pad}total += {_num(t.value[i])}")
            return
        v, th = f"x[{int(t.feature[i])}]", _num(t.threshold[i])
        lines.append(f"{pad}if not {v} > {th}:" if t.missing_left[i] else f"{pad}if {v} <= {th}:")
        emit(t, int(t.left[i]), depth + 1)
        lines.append(f"{pad}else:")
        emit(t, int(t.right[i]), depth + 1)

    for tree in scorer.trees:
        emit(tree, 0, 1)
    lines.append("    return total")
    namespace: dict[str, Any] = {"inf": math.inf}
    exec(compile("\n".join(lines), "<benchmarks.anomaly trees>", "exec"), namespace)  # noqa: S102
    return namespace["raw"], len(lines)


def _num(v: float) -> str:
    return repr(float(v)) if math.isfinite(v) else ("inf" if v > 0 else "-inf")


def state_rows(cap: Captured, repeat: int) -> list[Row]:
    """What only the worker pays: per message the stage's state is msgpack-decoded and encoded -
    the session state with its behaviour, the user state with its profile (final states here)."""
    from streams.state import dump_state, load_state
    from streams.user_state import dump_user, load_user

    sessions = cap.states["session"]
    kinds = (
        ("(w) session state load+dump, with the behaviour", sessions, dump_state, load_state),
        ("    the same states without it",
         [msgspec.structs.replace(s, behaviour=None) for s in sessions], dump_state, load_state),
        ("    prototype: with it, its pairs as 12-hex digests",
         [msgspec.structs.replace(s, behaviour=slim_behaviour(s.behaviour))
          if s.behaviour is not None else s for s in sessions], dump_state, load_state),
        ("(w) user state load+dump, model on", cap.states["user_on"], dump_user, load_user),
        ("    the same users, model off", cap.states["user_off"], dump_user, load_user))
    rows = []
    for label, states, dump, load in kinds:
        def run(states: list[Any] = states, dump: Callable = dump, load: Callable = load) -> None:
            for s in states:
                load(dump(s))

        rows.append(Row(label, clock(run, repeat), len(states), _mean_len(map(dump, states))))
    return rows


# -- end to end and the profile ------------------------------------------------------------------


class GcPauses:
    """The time the cyclic GC spends collecting, from gc.callbacks, while the block runs."""

    def __init__(self) -> None:
        self.seconds, self.full, self._t0 = 0.0, 0, 0.0

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._t0
            self.full += info["generation"] == 2

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *_: Any) -> None:
        gc.callbacks.remove(self._cb)


def run_local(events: list[Any], model: Any, track: bool = False) -> tuple[float, float, float, int]:
    """(wall, CPU, GC pause seconds, full collections) of one LocalRunner run. `track` without a
    model: the session stage tracks and forwards the behaviour, the user stage ignores it."""
    from streams.enrich import Enricher
    from streams.local import LocalRunner

    runner = LocalRunner(model=model, enricher=Enricher())  # fresh caches, outside the clock
    runner.sessions.track_behaviour = track or model is not None
    gc.collect()
    with GcPauses() as pauses:
        t0, c0 = time.perf_counter(), time.process_time()
        for event in events:
            runner.process(event)
        runner.finish()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, pauses.seconds, pauses.full


def run_session_stage(events: list[Any], track: bool) -> float:
    """The session stage alone (SessionPipeline.process over a dict of states), with or without
    the behaviour it tracks for the model: observe's whole cost in place, and nothing else."""
    from streams.enrich import Enricher
    from streams.pipeline import SessionPipeline

    pipeline, states = SessionPipeline(Enricher(), track_behaviour=track), {}
    gc.collect()
    t0 = time.perf_counter()
    for event in events:
        if event.session is not None:
            outcome = pipeline.process(event, states.get(event.session), event.time)
            if not outcome.duplicate:
                states[event.session] = outcome.state
    return time.perf_counter() - t0


def end_to_end(events: list[Any], model: Any, repeat: int) -> dict[str, Any]:
    """Without and with the model, alternating, after a warm-up run of each (medians, and the
    time the cyclic GC took in them); then the session stage alone each way."""
    run_local(events, None)
    run_local(events, model)  # warm-up: imports, the interpreter's caches, the GeoIP pages
    runs: dict[str, list[tuple[float, float, float, int]]] = {"without": [], "with": [],
                                                              "track": []}
    for _ in range(repeat):
        runs["without"].append(run_local(events, None))
        runs["track"].append(run_local(events, None, track=True))
        runs["with"].append(run_local(events, model))
    out: dict[str, Any] = {}
    for k, v in runs.items():
        out[k] = statistics.median(r[0] for r in v)
        out[f"min_{k}"] = min(r[0] for r in v)
        out[f"cpu_{k}"] = statistics.median(r[1] for r in v)
        out[f"gc_{k}"] = statistics.median(r[2] for r in v)
        out[f"full_{k}"] = statistics.median(r[3] for r in v)
        out[f"all_{k}"] = [r[0] for r in v]
    run_session_stage(events, True)
    stage: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeat):
        for track in (False, True):
            stage[track].append(run_session_stage(events, track))
    out["stage_without"], out["stage_with"] = (statistics.median(stage[t]) for t in (False, True))
    return out


Stats = dict[tuple[str, int, str], tuple[int, float, float]]   # calls, own s, cumulative s


def profiled(events: list[Any], model: Any) -> Stats:
    from streams.enrich import Enricher
    from streams.local import LocalRunner

    runner, profiler = LocalRunner(model=model, enricher=Enricher()), cProfile.Profile()
    gc.collect()
    gc.disable()  # a collection's pause would land on whichever function allocated last
    profiler.enable()
    for event in events:
        runner.process(event)
    runner.finish()
    profiler.disable()
    gc.enable()
    return {k: (v[1], v[2], v[3]) for k, v in pstats.Stats(profiler).stats.items()}  # type: ignore[attr-defined]


def _name(key: tuple[str, int, str]) -> str:
    path, line, func = key
    for marker in ("site-packages/", f"{ROOT}/"):
        path = path.split(marker, 1)[-1]
    return func if path == "~" else f"{func} ({path}:{line})"


ENTRY_POINTS = frozenset({"observe", "for_user", "decode_forwarded", "_behaviour_arrived",
                          "observation", "learn", "history_for", "vector", "score", "explain",
                          "contributions", "raw"})


def by_file(with_: Stats, without: Stats, top: int = 8) -> list[tuple[str, float]]:
    added: dict[str, float] = {}
    for stats, sign in ((with_, 1.0), (without, -1.0)):
        for k, v in stats.items():
            f = _name(k).rsplit(" (", 1)[-1].rsplit(":", 1)[0] if k[0] != "~" else "builtins"
            added[f] = added.get(f, 0.0) + sign * v[1]
    return sorted(added.items(), key=lambda kv: -abs(kv[1]))[:top]


def profile_lines(n: int, with_: Stats, without: Stats, top: int) -> list[str]:
    us, none = 1e6 / n, (0, 0.0, 0.0)
    added = sorted(with_, key=lambda k: without.get(k, none)[1] - with_[k][1])[:top]
    out = [f"top {top} by own time the model adds (with - without), µs per event over all {n:,} "
           "events, under cProfile (GC off):",
           f"{'added':>7} {'with':>7} {'without':>7} {'calls with':>11} {'without':>9}  function"]
    for k in added:
        (c, t, _), (c0, t0, _) = with_[k], without.get(k, none)
        out.append(f"{(t - t0) * us:7.2f} {t * us:7.2f} {t0 * us:7.2f} {c:11,} {c0:9,}  {_name(k)}")
    tw, t0 = (sum(v[1] for v in s.values()) * us for s in (with_, without))
    out.append(f"all own time: with {tw:.1f}, without {t0:.1f} µs/event (+{tw - t0:.1f}); "
               "added by file: " + ", ".join(f"{f} {t * us:+.1f}" for f, t in by_file(with_, without)))
    out.append("the model path's entry points, cumulative µs per event (with the model):")
    out += [f"{v[2] * us:7.2f}  {v[0]:9,} calls  {_name(k)}"
            for k, v in sorted(with_.items(), key=lambda kv: -kv[1][2])
            if k[2] in ENTRY_POINTS and ("models/" in k[0] or "streams/r" in k[0]
                                         or "streams/user_p" in k[0] or "trees" in k[0])]
    return out


# -- report --------------------------------------------------------------------------------------


def table(cap: Captured, rows: list[Row]) -> str:
    w = max(len(r.label) for r in rows)
    out = [f"| {'piece':<{w}} |   calls |  µs/call | µs/event (all) | µs/scored event | note",
           f"|{'-' * (w + 2)}|--------:|---------:|---------------:|----------------:|-----"]
    for r in rows:
        out.append(f"| {r.label:<{w}} | {r.calls:7,} | {r.seconds / max(r.calls, 1) * 1e6:8,.2f} "
                   f"| {r.seconds / cap.n * 1e6:14.2f} | "
                   f"{r.seconds / max(cap.scored, 1) * 1e6:15,.2f} | {r.note}")
    return "\n".join(out)


def environment() -> str:
    git = subprocess.run(["git", "status", "--porcelain=v2", "--branch"], cwd=ROOT,
                         capture_output=True, text=True, timeout=10).stdout.splitlines()
    oid = next((ln.split()[-1] for ln in git if ln.startswith("# branch.oid")), "?")
    changed = sum(not ln.startswith("#") for ln in git)
    return (f"{os.cpu_count()} cores, Python {platform.python_version()}, msgspec "
            f"{msgspec.__version__}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
            f"{ROOT} commit {oid[:10]}" + (f" + {changed} uncommitted paths" if changed else ""))


def summary(cap: Captured, rows: list[Row], e2e: dict[str, Any]) -> list[str]:
    per = {r.label.split(")")[0] + ")": r.seconds / cap.n * 1e6 for r in rows if r.label[0] == "("}
    lab = {r.label: r.seconds / cap.n * 1e6 for r in rows}
    scoring = sum(per.get(k, 0.0) for k in ("(b0)", "(b)", "(c)", "(c2)"))
    decode_extra = lab.get("(u) decode_forwarded with the behaviour (arrive; finalize decodes it "
                           "again)", 0.0) - lab.get("    for comparison: the same events without "
                                                    "it", 0.0)
    path = scoring + per["(a)"] + 2 * decode_extra + sum(
        lab[k] for k in lab if k.startswith(("(s) re-encode", "(u) behaviour_from", "(u) obs",
                                              "(u) learn")))
    sess = [r for r in rows if r.label.startswith(("(w) session", "    the same states"))]
    users = [r for r in rows if r.label.startswith(("(w) user", "    the same users"))]
    session_extra = (sess[0].seconds / sess[0].calls - sess[1].seconds / sess[1].calls) * 1e6 \
        * sum(e.session is not None for e in cap.events) / cap.n if sess[0].calls else 0.0
    user_extra = ((users[0].seconds / max(users[0].calls, 1)) * cap.user_messages["on"]
                  - (users[1].seconds / max(users[1].calls, 1)) * cap.user_messages["off"]) \
        / cap.n * 1e6
    wo, wi = e2e["without"], e2e["with"]
    gwo, gwi = e2e["gc_without"], e2e["gc_with"]
    diff = (wi - wo) / cap.n * 1e6
    worker = path + session_extra + user_extra

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    return [
        f"LocalRunner, median of {len(e2e['all_with'])} after a warm-up: without the model "
        f"{cap.n / wo:,.0f} events/s ({wo / cap.n * 1e6:.1f} µs/event), with it {cap.n / wi:,.0f} "
        f"events/s ({wi / cap.n * 1e6:.1f} µs/event): +{diff:.1f} µs/event, "
        f"{wo / wi - 1:+.0%} throughput; CPU time without {e2e['cpu_without'] / cap.n * 1e6:.1f}, "
        f"with {e2e['cpu_with'] / cap.n * 1e6:.1f} µs/event",
        "  runs (s): without " + ", ".join(f"{t:.2f}" for t in e2e["all_without"]) + "; with "
        + ", ".join(f"{t:.2f}" for t in e2e["all_with"]),
        f"  the session side alone (it tracks and forwards the behaviour, no model in the user "
        f"stage): {e2e['track'] / cap.n * 1e6:.1f} µs/event, +{(e2e['track'] - wo) / cap.n * 1e6:.1f}"
        f"; so the user side +{(wi - e2e['track']) / cap.n * 1e6:.1f}",
        f"  least of the runs: without {e2e['min_without'] / cap.n * 1e6:.1f}, with "
        f"{e2e['min_with'] / cap.n * 1e6:.1f} µs/event: "
        f"+{(e2e['min_with'] - e2e['min_without']) / cap.n * 1e6:.1f}",
        f"  of which the cyclic GC's collections (median): without {gwo / cap.n * 1e6:.1f} "
        f"({e2e['full_without']:.0f} full), with {gwi / cap.n * 1e6:.1f} µs/event "
        f"({e2e['full_with']:.0f} full); without the GC's time the model adds "
        f"+{((wi - gwi) - (wo - gwo)) / cap.n * 1e6:.1f} µs/event, "
        f"{(wo - gwo) / (wi - gwi) - 1:+.0%} throughput",

        f"  the session stage alone (SessionPipeline.process, dict of states), median of "
        f"{len(e2e['all_with'])}: without the behaviour {e2e['stage_without'] / cap.n * 1e6:.2f}, "
        f"tracking it {e2e['stage_with'] / cap.n * 1e6:.2f} µs/event: "
        f"+{(e2e['stage_with'] - e2e['stage_without']) / cap.n * 1e6:.2f}",
        f"amortised over all events: scoring (history_for + vector + score + explain) "
        f"{scoring:.2f} µs/event; the in-process model path, summed from the pieces ((a) observe, "
        f"(s) re-encode, 2 x the extra decode, (u), scoring) {path:.2f}; the worker also pays the "
        f"session state's behaviour {session_extra:.2f} and the user state's growth "
        f"{user_extra:.2f} (from final states; approximate): {worker:.2f} µs/event",
        f"budget {BUDGET_US:g} µs/event amortised: scoring alone {verdict(scoring <= BUDGET_US)}; "
        f"the whole model path (pieces, worker view) {verdict(worker <= BUDGET_US)}; LocalRunner "
        f"end to end (+{diff:.1f}) {verdict(diff <= BUDGET_US)}",
        f"budget {BUDGET_SLOWDOWN:.0%} throughput, in process: {wo / wi - 1:+.0%} "
        f"{verdict(wi / wo - 1 <= BUDGET_SLOWDOWN)} (the worker: benchmarks/throughput.py --model)"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.anomaly", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", metavar="DIR", help="the artefact (default: train one)")
    parser.add_argument("--users", type=int, default=1300, help="sim: users (default 1300)")
    parser.add_argument("--seed", type=int, default=505, help="sim: seed (default 505)")
    parser.add_argument("--events", type=int, default=50_000, help="long: events (default 50000)")
    parser.add_argument("--sessions", type=int, default=2_500, help="long: sessions (default 2500)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="LocalRunner runs each way, the median (default 3)")
    parser.add_argument("--piece-repeat", type=int, default=5,
                        help="loops over each piece's inputs, the least (default 5)")
    parser.add_argument("--top", type=int, default=10, help="profile lines (default 10)")
    args = parser.parse_args(argv)

    from benchmarks.pipeline_profile import _warm
    from benchmarks.throughput import make_workload
    from sessionwatch.simulation import simulate

    started = time.perf_counter()
    print(environment(), flush=True)
    model, estimator, how = get_model(args.model)
    print(f"model {model.version} ({how}); {len(model.scorer.trees)} trees; thresholds medium "
          f"{model.thresholds['medium']:.3f}, high {model.thresholds['high']:.3f}", flush=True)
    _warm()
    traffics = {
        f"sim: simulate(users={args.users}, seed={args.seed}, history_days=2, "
        "edge_fingerprints=0.5)": lambda: simulate(users=args.users, seed=args.seed,
                                                   history_days=2, edge_fingerprints=0.5).events,
        f"long: benchmarks.throughput make_workload({args.events}, {args.sessions})":
            lambda: make_workload(args.events, args.sessions).body_events}
    for name, make in traffics.items():
        print(f"\n{name}: end to end, profiling, capturing, timing the pieces ...", flush=True)
        events = make()
        # The input is not the runner's to collect (a worker does not hold it): frozen, full
        # collections skip it. End to end and the profiles run first, before the capture
        # (millions of objects, frozen too for the pieces' loops).
        gc.collect()
        gc.freeze()
        e2e = end_to_end(events, model, args.repeat)
        prof = profile_lines(len(events), profiled(events, model), profiled(events, None),
                             args.top)
        cap = capture(name, events, model)
        gc.collect()
        gc.freeze()
        try:
            rows = piece_rows(cap, model, estimator, args.piece_repeat)
        finally:
            gc.unfreeze()
        sessions = len({e.session for e in events if e.session})
        print(f"\n== {name}: {cap.n:,} events, {sessions:,} sessions "
              f"({cap.n / max(sessions, 1):.1f} events each)\nscored (vector + score): "
              f"{cap.scored:,} = {cap.scored / cap.n:.2%} of all events; forwarded to the user "
              f"stage {cap.user_messages['on']:,} with the model ({len(cap.forwarded):,} of them "
              f"with the behaviour), {cap.user_messages['off']:,} without\n")
        print(table(cap, rows), "", *summary(cap, rows, e2e), "", *prof, sep="\n")
        del cap, events
        gc.collect()
    print(f"\ntotal runtime {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
