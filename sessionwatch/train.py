"""`sessionwatch train` and `sessionwatch model-report`: build the learned score's artefact, and
print what it measured.

From the simulator (labels are its truth) or from the archive (labels are analysts' verdicts plus
an audit sample of sessions nobody flagged, read through storage/). Either way the events go
through the worker's own pipelines to get their feature vectors (models/dataset.py), the models
are fitted and measured on a temporal holdout of held-out users (models/train.py), and the
artefact is written and then loaded back the way the worker loads it (models/load.py), so a
directory this command wrote is one the worker accepts.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sklearn
import skops

from models.artefact import META_FILE, save_artefact
from models.dataset import Recorded, count_population, record, training_user
from models.labels import archive_labels, simulation_labels
from models.load import load_model
from models.report import HOLDOUT_FILE
from models.train import TrainingError, train
from producers.errors import SessionwatchError

DEFAULT_SEEDS = (101, 102, 103)
AUDIT_FRACTION = 0.05


@dataclass(frozen=True)
class SimulationSource:
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    users: int = 1500
    history_days: int = 3
    edge_fingerprints: float = 0.5


def from_simulation(src: SimulationSource) -> tuple[Recorded, pd.DataFrame, dict[str, Any]]:
    from sessionwatch.simulation import START, simulate
    from streams.enrich import Enricher

    enricher = Enricher()
    sims = [simulate(users=src.users, seed=s, history_days=src.history_days,
                     edge_fingerprints=src.edge_fingerprints) for s in src.seeds]
    population = count_population((e for s in sims for e in s.events), enricher, training_user)
    frames, labels, rules, events = [], [], {}, 0
    for sim in sims:
        rec = record(sim.events, enricher=enricher, population=population)
        frames.append(rec.frame)
        rules.update(rec.rule_actions)
        events += rec.events
        labels.append(simulation_labels(sim.truth))
    recorded = Recorded(frame=pd.concat(frames, ignore_index=True), population=population,
                        rule_actions=rules, events=events)
    # The simulator attacks only on its last day; the days before build the users' history.
    # Their rows would teach the model "less history, no attack" - how the simulator works, not
    # how attacks look - so only the attack day trains; the thresholds still see every day's
    # benign sessions (a new user's first day must not be stepped up more often).
    source = {"kind": "simulation", "seeds": list(src.seeds), "users": src.users,
              "history_days": src.history_days, "edge_fingerprints": src.edge_fingerprints,
              "train_from": START.timestamp()}
    return recorded, pd.concat(labels, ignore_index=True), source


def from_archive(backend: Any, since: datetime, until: datetime, tenant: str | None,
                 seed: int, audit_fraction: float = AUDIT_FRACTION,
                 ) -> tuple[Recorded, pd.DataFrame, dict[str, Any]]:
    from storage.feedback import audit_sample, session_labels
    from storage.replay import read_events

    try:
        events = list(read_events(backend, since, until, tenant))
    except SessionwatchError:
        raise
    except Exception as exc:  # the archive's own error (chDB, the driver): say what to check
        raise TrainingError(f"{getattr(backend, 'name', 'the archive')}: cannot read archived "
                            f"events ({type(exc).__name__}: {str(exc)[:200]}); is it a "
                            "directory or server `sessionwatch archive` wrote?") from exc
    if not events:
        raise TrainingError(f"no archived events between {since.isoformat()} and "
                            f"{until.isoformat()}" + (f" for tenant {tenant!r}" if tenant else ""))
    verdicts = session_labels(backend, since, until, tenant)
    audit = audit_sample(backend, since, until, audit_fraction, seed, tenant)
    recorded = record(events)
    source = {"kind": "archive", "since": since.isoformat(), "until": until.isoformat(),
              "tenant": tenant, "verdicts": int(len(verdicts)),
              "confirmed": int((verdicts["label"] == "confirmed").sum()) if len(verdicts) else 0,
              "audit_sample": int(len(audit)), "audit_fraction": audit_fraction}
    return recorded, archive_labels(verdicts, audit), source


def build(recorded: Recorded, labels: pd.DataFrame, source: dict[str, Any], out: Path,
          seed: int = 0) -> dict[str, Any]:
    trained = train(recorded, labels, seed=seed, train_from=source.get("train_from"))
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    meta = {**trained.meta, "version": version, "source": source,
            "library_versions": {"scikit-learn": sklearn.__version__, "skops": skops.__version__}}
    out.mkdir(parents=True, exist_ok=True)
    trained.holdout.to_csv(out / HOLDOUT_FILE, index=False)
    save_artefact(out, trained.estimators, meta)
    load_model(out)  # what the worker will do: refuse here, not at the worker's start
    return meta


# -- the report -----------------------------------------------------------------------------------

def report_lines(meta: dict[str, Any]) -> list[str]:
    ev = meta["evaluation"]
    models = [m for m in ("supervised", "baseline", "isolation") if m in ev]
    lines = [f"model {meta.get('version')} ({meta.get('source', {}).get('kind', '?')}), "
             f"{meta['training']['scored_events']} scored events, holdout "
             f"{ev['holdout_events']} events ({ev['holdout_attack_events']} attack) of held-out "
             "users after the training period", ""]
    lines.append(f"{'':28}" + "".join(f"{m:>14}" for m in models))
    for key in ("roc_auc", "pr_auc", "prevalence"):
        lines.append(f"{key:28}" + "".join(f"{ev[m][key]:>14.4f}" for m in models))
    lines.append(f"{'benign sessions at high':28}" + "".join(
        f"{ev[m]['benign_sessions_high']:>9}/{ev[m]['benign_sessions']:<4}" for m in models))
    rules = ev["rules"]
    lines += ["", "recall per attack class at the high threshold (0.1 % of validation benign "
              "sessions), attacked sessions caught:",
              f"{'class':34}" + "".join(f"{m:>14}" for m in models) + f"{'rules':>14}"]
    classes = sorted(set(rules["recall"]) | {c for m in models for c in ev[m]["recall_at_high"]})
    for cls in classes:
        cells = []
        for m in models:
            r = ev[m]["recall_at_high"].get(cls)
            cells.append(f"{r['caught']:>6}/{r['sessions']:<3} {r['recall']:.2f}" if r else " " * 14)
        r = rules["recall"].get(cls)
        cells.append(f"{r['caught']:>6}/{r['sessions']:<3} {r['recall']:.2f}" if r else " " * 14)
        lines.append(f"{cls:34}" + "".join(cells))
    lines.append(f"rules alone: {rules['benign_sessions_revoked']} of {rules['benign_sessions']} "
                 "benign holdout sessions revoked")
    # model.json is written with sorted keys: rank again by importance.
    top = sorted(ev.get("permutation_importance", {}).items(), key=lambda kv: (-kv[1], kv[0]))[:8]
    lines += ["", "permutation importance (ROC-AUC drop, holdout): "
              + ", ".join(f"{n} {v:.3f}" for n, v in top)]
    th = meta["thresholds"]["supervised"]
    lines.append(f"thresholds (supervised): medium {th['medium']:.4f}, high {th['high']:.4f}")
    return lines


def train_command(args: Any, backend_for: Any = None) -> int:
    out = Path(args.out)
    seed = args.train_seed
    try:
        if args.from_archive:
            since = _time(args.since, "--since") if args.since else datetime(1970, 1, 1, tzinfo=UTC)
            until = _time(args.until, "--until") if args.until else datetime.now(UTC)
            if not 0 < args.audit_fraction <= 1:
                raise SessionwatchError("--audit-fraction: a share of sessions, 0 < f <= 1")
            backend = backend_for(args)
            try:
                recorded, labels, source = from_archive(backend, since, until, args.tenant, seed,
                                                        args.audit_fraction)
            finally:
                backend.close()
        else:
            src = SimulationSource(seeds=tuple(args.seed or DEFAULT_SEEDS), users=args.users,
                                   history_days=args.history_days,
                                   edge_fingerprints=args.edge_fingerprints)
            recorded, labels, source = from_simulation(src)
        meta = build(recorded, labels, source, out, seed=seed)
    except TrainingError as exc:
        raise SessionwatchError(str(exc)) from exc
    print("\n".join(report_lines(meta)))
    print(f"\nsessionwatch train: artefact written to {out} ({META_FILE} + skops files); "
          f"start a worker with `sessionwatch worker --model {out}`", file=sys.stderr)
    return 0


def report_command(directory: Path, as_json: bool = False) -> int:
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise SessionwatchError(f"{meta_path}: no such file; give an artefact directory "
                                "`sessionwatch train --out DIR` wrote")
    load_model(directory)  # the figures are worth reading only of an artefact that verifies
    meta = json.loads(meta_path.read_text())
    if as_json:
        print(json.dumps({k: meta[k] for k in ("version", "evaluation", "thresholds", "training",
                                                "splits", "source") if k in meta}, indent=1))
    else:
        print("\n".join(report_lines(meta)))
    return 0


def _time(text: str, flag: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SessionwatchError(f"{flag}: {text!r} is not an RFC 3339 time") from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)
