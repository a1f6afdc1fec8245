"""What a trained artefact measured, as tables and figures: the helpers behind the model report
notebook (notebooks/model_report.ipynb) and `sessionwatch model-report`.

An artefact directory `sessionwatch train` wrote holds model.json (figures, thresholds, splits)
and holdout.csv.gz (each held-out event's label and every model's score). `load_report` verifies
the artefact the way the worker does before reading either. Tables are plain pandas; matplotlib is
imported only inside the `plot_*` functions, so a command that prints tables never needs it. The
figures share storage/plots.py's palette and figure helpers (no pyplot: `plots.show` or `plots.png`).
"""

from __future__ import annotations

import hashlib
import json
import math
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from models.artefact import META_FILE, ModelError
from models.features import FEATURE_WORDS
from models.load import load_model
from models.train import HIGH_FPR, MEDIUM_FPR, session_scores
from storage.plots import KIND_COLORS, PALETTE, SEVERITY_COLORS
from storage.plots import axes as _shared_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes

HOLDOUT_FILE = "holdout.csv.gz"
MODELS = ("supervised", "baseline", "isolation")
MODEL_NAMES = {
    "supervised": "supervised (gradient-boosted trees)",
    "baseline": "Freeman baseline (logistic regression)",
    "isolation": "isolation forest (unsupervised, per tenant)",
    "rules": "rules alone",
}
# One colour per model in every figure, so the legends can be read across them.
COLORS = {"supervised": PALETTE[0], "baseline": PALETTE[1], "isolation": PALETTE[2],
          "rules": PALETTE[7]}
_TEXT_COLUMNS = ("event_id", "tenant", "session", "user", "cls")
_SCORE_COLUMNS = tuple(f"score_{m}" for m in MODELS)
HOLDOUT_COLUMNS = ("event_id", "tenant", "session", "user", "at", "label", "cls", *_SCORE_COLUMNS)
RETRAIN = "retrain with `sessionwatch train ... --out DIR`"


@dataclass(frozen=True)
class Report:
    """A verified artefact's model.json (`meta`) and its holdout events' scores (`holdout`)."""

    directory: Path
    meta: dict[str, Any]
    holdout: pd.DataFrame

    @property
    def models(self) -> tuple[str, ...]:
        """The models with scores on the holdout, in the order of `MODELS`."""
        return tuple(m for m, _, _ in _scored(self))


def load_report(directory: Path | str) -> Report:
    """Verify the artefact in `directory` (models/load.py: a tampered one raises ModelError), then
    read its figures and holdout scores; ModelError naming the file if they do not fit together."""
    directory = Path(directory)
    model = load_model(directory)
    meta_path = directory / META_FILE
    raw = meta_path.read_bytes()
    # Read model.json again, so compare it with what was verified: a swap in between is refused.
    if hashlib.sha256(raw).hexdigest() != model.digest:
        raise ModelError(f"{meta_path}: changed while it was being read; load the report again (to "
                         "replace a model, save to a new directory and repoint, never write in place)")
    meta = json.loads(raw)
    holdout = _read_holdout(directory / HOLDOUT_FILE, meta)
    return Report(directory=directory, meta=meta, holdout=holdout)


def _read_holdout(path: Path, meta: dict[str, Any]) -> pd.DataFrame:
    if not path.is_file():
        raise ModelError(f"{path}: missing; the report's curves need the holdout scores the trainer "
                         f"writes beside model.json: {RETRAIN}")
    try:
        # Identifiers stay text ("007" is a user, not 7); only an empty score is missing (NaN).
        frame = pd.read_csv(path, dtype={c: str for c in _TEXT_COLUMNS}, keep_default_na=False,
                            na_values={c: [""] for c in _SCORE_COLUMNS})
    except (OSError, ValueError, EOFError) as exc:
        raise ModelError(f"{path}: not a readable gzip CSV ({exc}); {RETRAIN}") from exc
    missing = [c for c in HOLDOUT_COLUMNS if c not in frame.columns]
    if missing:
        raise ModelError(f"{path}: lacks the columns {', '.join(missing)}; {RETRAIN}")
    # holdout.csv.gz is not among the files model.json hashes, so check it is this model's:
    # same events, same attacks, and the same ROC-AUC per model as model.json recorded.
    ev = meta.get("evaluation", {})
    labels = frame["label"]
    if not labels.isin((0, 1)).all():
        raise ModelError(f"{path}: labels other than 0 and 1; {RETRAIN}")
    counts = (len(frame), int(labels.sum()))
    recorded = (ev.get("holdout_events"), ev.get("holdout_attack_events"))
    if counts != recorded:
        raise ModelError(f"{path}: {counts[0]} events ({counts[1]} attack), but model.json's evaluation "
                         f"counts {recorded[0]} ({recorded[1]}): the file belongs to another training "
                         f"run; copy the whole artefact directory, or {RETRAIN}")
    for model in MODELS:
        if "roc_auc" not in ev.get(model, {}):
            continue
        scores = frame[f"score_{model}"]
        ok = scores.notna().to_numpy()
        try:
            auc = float(roc_auc_score(labels[ok], scores[ok]))
        except (TypeError, ValueError) as exc:  # text in a score column, one class left
            raise ModelError(f"{path}: the {model} scores cannot be read ({exc}); {RETRAIN}") from exc
        if abs(auc - float(ev[model]["roc_auc"])) > 1e-4:  # model.json rounds to 4 places
            raise ModelError(f"{path}: the {model} scores give ROC-AUC {auc:.4f}, model.json recorded "
                             f"{ev[model]['roc_auc']}: the file belongs to another training run or was "
                             f"edited; copy the whole artefact directory, or {RETRAIN}")
    return frame


def _scored(report: Report) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(model, labels, scores) per model with scores on both classes; NaN scores (events of a
    tenant without an isolation forest) left out."""
    for model in MODELS:
        column = f"score_{model}"
        if column not in report.holdout:
            continue
        ok = report.holdout[column].notna().to_numpy()
        y = report.holdout["label"].to_numpy()[ok]
        if len(np.unique(y)) == 2:
            yield model, y, report.holdout[column].to_numpy(dtype=np.float64)[ok]


# -- tables ---------------------------------------------------------------------------------------

def summary(report: Report) -> pd.DataFrame:
    """Per model: the holdout figures model.json recorded and the thresholds chosen on validation."""
    ev, rows = report.meta["evaluation"], []
    for model in MODELS:
        if model not in ev:
            continue
        figures, th = ev[model], report.meta["thresholds"].get(model, {})
        rows.append({"model": model, "roc_auc": figures["roc_auc"], "pr_auc": figures["pr_auc"],
                     "prevalence": figures["prevalence"],
                     "benign_sessions": figures["benign_sessions"],
                     "benign_sessions_high": figures["benign_sessions_high"],
                     "medium": th.get("medium", math.nan), "high": th.get("high", math.nan)})
    return pd.DataFrame(rows).set_index("model")


def roc_curves(report: Report) -> pd.DataFrame:
    """The holdout ROC curve of each model, per scored event: model, fpr, tpr (both ascending)."""
    frames = []
    for model, y, s in _scored(report):
        fpr, tpr, _ = roc_curve(y, s)
        frames.append(pd.DataFrame({"model": model, "fpr": fpr, "tpr": tpr}))
    return pd.concat(frames, ignore_index=True)


def pr_curves(report: Report) -> pd.DataFrame:
    """The holdout precision-recall curve of each model, per scored event: model, recall
    (descending, as scikit-learn returns it), precision."""
    frames = []
    for model, y, s in _scored(report):
        precision, recall, _ = precision_recall_curve(y, s)
        frames.append(pd.DataFrame({"model": model, "recall": recall, "precision": precision}))
    return pd.concat(frames, ignore_index=True)


def prevalence(report: Report) -> float:
    """The share of holdout events that are attacks: a score that knows nothing has this precision."""
    return float(report.holdout["label"].mean())


def recall_table(report: Report) -> pd.DataFrame:
    """Per attack class (rows), attacked holdout sessions caught at the high threshold by each model
    and by the rules alone: columns (source, caught | sessions | recall)."""
    ev = report.meta["evaluation"]
    sources = {m: ev[m]["recall_at_high"] for m in MODELS if "recall_at_high" in ev.get(m, {})}
    sources["rules"] = ev["rules"]["recall"]
    classes = sorted(set().union(*sources.values()))
    columns: dict[tuple[str, str], pd.Series] = {}
    for source, by_class in sources.items():
        for key, dtype in (("caught", "Int64"), ("sessions", "Int64"), ("recall", "float64")):
            values = [by_class[c][key] if c in by_class else None for c in classes]
            columns[(source, key)] = pd.Series(values, index=classes, dtype=dtype)
    table = pd.DataFrame(columns)
    table.index.name = "attack class"
    return table


def importances(report: Report) -> pd.DataFrame:
    """The supervised model's permutation importances on the holdout (drop in ROC-AUC when one
    feature is shuffled), largest first: feature, importance, words (what it means to an admin)."""
    ranked = report.meta["evaluation"].get("permutation_importance", {})
    frame = pd.DataFrame({"feature": list(ranked), "importance": [float(v) for v in ranked.values()]})
    frame["words"] = [FEATURE_WORDS.get(f, f) for f in frame["feature"]]
    return frame.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)


def score_distribution(report: Report, model: str = "supervised") -> pd.DataFrame:
    """A model's holdout score per session (its highest scored event, as thresholds are chosen):
    session, score, label, cls and group ("benign" | "attacked")."""
    column = f"score_{model}"
    ok = report.holdout[column].notna()
    sessions = session_scores(report.holdout[ok], report.holdout.loc[ok, column].to_numpy())
    sessions["group"] = np.where(sessions["label"] == 1, "attacked", "benign")
    return sessions


def thresholds(report: Report, model: str = "supervised") -> dict[str, float]:
    """The model's thresholds: medium at 1 %, high at 0.1 % of validation benign sessions."""
    return {k: float(v) for k, v in report.meta["thresholds"][model].items()}


# -- figures (matplotlib imported here only) ------------------------------------------------------

def _axes(ax: Axes | None, size: tuple[float, float]) -> Axes:
    return _shared_axes(ax, size)


def _ev(report: Report, model: str) -> dict[str, Any]:
    return dict(report.meta["evaluation"].get(model, {}))


def plot_roc(report: Report, ax: Axes | None = None, zoom_fpr: float = 0.05) -> Axes:
    """ROC per model, with each model's high threshold marked, and an inset of the low
    false-positive rates where a revoking threshold lives. Per event: the threshold is set on
    sessions, so a marker is where that session threshold falls among events."""
    ax = _axes(ax, (6.4, 6.4))
    inset = ax.inset_axes((0.47, 0.08, 0.5, 0.42))
    curves, h = roc_curves(report), report.holdout
    for model, part in curves.groupby("model", sort=False):
        name, color = str(model), COLORS[str(model)]
        auc = _ev(report, name).get("roc_auc", math.nan)
        for a in (ax, inset):
            a.plot(part["fpr"], part["tpr"], color=color, drawstyle="steps-post",
                   label=f"{MODEL_NAMES[name]}, AUC {auc:.3f}")
        high = report.meta["thresholds"].get(name, {}).get("high")
        if high is not None:
            scored = h[h[f"score_{name}"].notna()]
            hit, y = scored[f"score_{name}"] >= high, scored["label"]
            for a in (ax, inset):
                a.plot([hit[y == 0].mean()], [hit[y == 1].mean()], "o", color=color, markersize=7,
                       markeredgecolor="black")
    ax.plot([0, 1], [0, 1], ":", color="gray", label="chance")
    ax.plot([], [], "o", color="white", markeredgecolor="black", label="at the high threshold")
    inset.set(xlim=(0, zoom_fpr), ylim=(0, 1.02), title=f"false-positive rate up to {zoom_fpr:.0%}")
    inset.title.set_fontsize("small")
    inset.tick_params(labelsize="x-small")
    inset.grid(alpha=0.3)
    ax.indicate_inset_zoom(inset, edgecolor="gray")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false-positive rate (benign events flagged)",
           ylabel="true-positive rate (attack events flagged)",
           title=f"ROC on the holdout ({len(h)} events of held-out users)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def plot_pr(report: Report, ax: Axes | None = None) -> Axes:
    """Precision-recall per model, with the prevalence (what a score that knows nothing reaches)."""
    ax = _axes(ax, (6.4, 5.4))
    for model, part in pr_curves(report).groupby("model", sort=False):
        ap = _ev(report, str(model)).get("pr_auc", math.nan)
        ax.plot(part["recall"], part["precision"], color=COLORS[str(model)], drawstyle="steps-post",
                label=f"{MODEL_NAMES[str(model)]}, AP {ap:.3f}")
    p = prevalence(report)
    ax.axhline(p, linestyle="--", color="gray", label=f"prevalence {p:.3f} (a random score)")
    ax.set(xlim=(-0.01, 1.01), ylim=(0, 1.02), xlabel="recall (share of attack events flagged)",
           ylabel="precision (share of flagged events that are attacks)",
           title=f"Precision-recall on the holdout ({int(report.holdout['label'].sum())} attack "
                 f"of {len(report.holdout)} events)")
    ax.legend(loc="lower left", fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def plot_recall(report: Report, ax: Axes | None = None) -> Axes:
    """Per attack class (rows) and model or the rules (columns), the share of attacked holdout
    sessions caught at the high threshold, as a grid of caught/sessions cells."""
    table = recall_table(report)
    sources = list(dict.fromkeys(s for s, _ in table.columns))
    ax = _axes(ax, (1.6 * len(sources) + 3.5, 0.38 * len(table) + 1.6))
    recall = table.xs("recall", axis=1, level=1).to_numpy(dtype=np.float64)
    image = ax.imshow(recall, cmap="Greens", vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), value in np.ndenumerate(recall):
        source, cls = sources[j], table.index[i]
        text = "-" if math.isnan(value) else \
            f"{table.loc[cls, (source, 'caught')]}/{table.loc[cls, (source, 'sessions')]}"
        ax.text(j, i, text, ha="center", va="center", fontsize="small",
                color="white" if value > 0.6 else "black")
    ax.set_xticks(range(len(sources)), [MODEL_NAMES[s].replace(" (", "\n(") for s in sources],
                  fontsize="small")
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(table)), list(table.index), fontsize="small")
    ax.set_title(f"Attacked holdout sessions caught at the high threshold\n(models: {HIGH_FPR:.1%} "
                 "of validation benign sessions; rules: revoked or stepped up)", fontsize="medium")
    ax.figure.colorbar(image, ax=ax, label="recall", shrink=0.8)
    return ax


def plot_importances(report: Report, ax: Axes | None = None, top: int = 15) -> Axes:
    """The `top` permutation importances, largest at the top, each feature with its words."""
    frame = importances(report).head(top).iloc[::-1]
    ax = _axes(ax, (9.0, 0.42 * len(frame) + 1.5))
    labels = [f"{f}: " + "\n".join(textwrap.wrap(w, 44)) if w != f else f
              for f, w in zip(frame["feature"], frame["words"], strict=True)]
    ax.barh(range(len(frame)), frame["importance"], color=COLORS["supervised"])
    ax.set_yticks(range(len(frame)), labels, fontsize="small")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(xlabel="drop in holdout ROC-AUC when the feature is shuffled",
           title=f"Permutation importance on the holdout (supervised, top {len(frame)})")
    ax.grid(axis="x", alpha=0.3)
    return ax


def plot_scores(report: Report, ax: Axes | None = None, model: str = "supervised",
                bins: int = 40) -> Axes:
    """Histogram of holdout session scores, benign vs attacked (log count), with the thresholds."""
    ax = _axes(ax, (7.5, 4.8))
    sessions, th = score_distribution(report, model), thresholds(report, model)
    # Every model's score is in [0, 1] (the isolation forest's is -score_samples): one scale.
    low, high = min(0.0, float(sessions["score"].min())), max(1.0, float(sessions["score"].max()))
    edges = [float(e) for e in np.linspace(low, high, bins + 1)]
    for group, color in (("benign", KIND_COLORS["event"]), ("attacked", SEVERITY_COLORS["high"])):
        scores = sessions.loc[sessions["group"] == group, "score"]
        above = int((scores >= th["high"]).sum())
        ax.hist(scores, bins=edges, alpha=0.6, color=color, log=True,
                label=f"{group} sessions: {len(scores)}, {above} at or above high")
    for name, style, fpr in (("medium", "--", MEDIUM_FPR), ("high", "-", HIGH_FPR)):
        if name in th:
            ax.axvline(th[name], color="black", linestyle=style,
                       label=f"{name} {th[name]:.3f} ({fpr:.1%} of validation benign sessions)")
    ax.set(xlabel="session score (the highest score among its events)",
           ylabel="sessions (log scale)", title=f"Holdout session scores: {MODEL_NAMES[model]}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize="small")
    return ax
