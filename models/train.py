"""Training: a supervised model, an unsupervised one per tenant, and the Freeman baseline.

Input: the recorded vectors (models/dataset.py) and labels per session (simulator truth, or
analysts' verdicts plus an audit sample of unflagged sessions, models/labels.py). Output: the
estimators, the thresholds and the evaluation figures for `model.json`.

Splits that do not leak (TESSERACT, USENIX Security 2019): whole users are held out (a stable
bucket per user, models/dataset.py `user_group`) and time is split - training rows come before
holdout rows. Thresholds are chosen on a third set of users (all their sessions, so that enough
benign ones stand behind a 0.1 % rate). The per-user history features read only earlier days by
construction. Thresholds are chosen on validation *sessions* (a session's score is its
highest scored event) at fixed false-positive rates: high at 0.1 % of benign sessions, medium
at 1 %. Figures are reported on the holdout: ROC-AUC and PR-AUC (with the prevalence) per
scored event, and per attack class the share of attacked sessions caught at the high threshold,
beside the Freeman baseline and the rules alone.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from models.dataset import (
    HOLDOUT_GROUPS,
    TRAIN_GROUPS,
    VALIDATION_GROUPS,
    Recorded,
    user_group,
)
from models.features import FEATURE_NAMES, HISTORY_FIELDS

# Freeman's features: the per-user likelihood ratios and how much history there is.
BASELINE_FEATURES = (*(f"lr_{f}" for f in HISTORY_FIELDS), "history_events", "history_days")
HIGH_FPR = 0.001
MEDIUM_FPR = 0.01


class TrainingError(ValueError):
    """Not enough (or not the right) data to train on; the message says what is missing."""


@dataclass
class Trained:
    estimators: dict[str, Any]
    meta: dict[str, Any]
    holdout: pd.DataFrame               # per holdout event: labels and each model's score
    fill: list[float] = field(default_factory=list)


def label_rows(frame: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Join session labels onto rows: `label` 1 for rows of an attacked session from the attack's
    start on, 0 for benign sessions' rows; rows of unlabelled sessions (or of a hijacked session
    before its attack) are dropped. `labels`: session, label, cls, start."""
    merged = frame.merge(labels, on="session", how="inner")
    before = (merged["label"] == 1) & (merged["at"] < merged["start"])
    return merged[~before].reset_index(drop=True)


def _split(rows: pd.DataFrame, train_from: float | None = None,
           ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, float, float]:
    groups = rows["user"].map(user_group)
    positives = rows.loc[rows["label"] == 1, "at"]
    if len(positives) < 20:
        raise TrainingError(f"only {len(positives)} labelled attack events: need at least 20 "
                            "(more simulation seeds, or more confirmed verdicts)")
    t_test = float(np.quantile(positives, 0.5))
    train = rows[groups.isin(TRAIN_GROUPS) & (rows["at"] < t_test)]
    if train_from is not None:
        train = train[train["at"] >= train_from]
    # Thresholds need many benign sessions to stand for a 0.1 % rate: all of the validation
    # users' sessions, whole users the model never saw (the holdout's users are others still).
    val = rows[groups.isin(VALIDATION_GROUPS)]
    hold = rows[groups.isin(HOLDOUT_GROUPS) & (rows["at"] >= t_test)]
    t_val = t_test
    for name, part in (("training", train), ("validation", val), ("holdout", hold)):
        if part["label"].nunique() < 2:
            raise TrainingError(f"the {name} split has only one class: more data is needed")
    return train, val, hold, t_val, t_test


def _matrix(part: pd.DataFrame, names: tuple[str, ...] = FEATURE_NAMES) -> np.ndarray:
    return np.array(part.loc[:, list(names)].to_numpy(dtype=np.float64), copy=True)


def _baseline_matrix(part: pd.DataFrame) -> np.ndarray:
    """The full vector with every non-Freeman feature zeroed and unknowns at 0 (no evidence),
    so the exported linear scorer reads the same vector the stream builds."""
    x = _matrix(part)
    keep = np.array([n in BASELINE_FEATURES for n in FEATURE_NAMES])
    x[:, ~keep] = 0.0
    return np.nan_to_num(x, nan=0.0)


def session_scores(part: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """A session's score is its highest scored event's; its label is 1 if any row is."""
    df = part[["session", "label", "cls"]].assign(score=scores)
    return df.groupby("session", sort=True).agg(score=("score", "max"), label=("label", "max"),
                                                cls=("cls", "first")).reset_index()


def threshold_at(benign: np.ndarray, fpr: float) -> float:
    """The lowest score that at most `fpr` of benign sessions reach (just above the quantile)."""
    if len(benign) == 0:
        return 1.0
    allowed = int(math.floor(fpr * len(benign) + 1e-9))   # benign sessions that may reach it
    ranked = np.sort(np.asarray(benign, dtype=np.float64))[::-1]
    if allowed >= len(ranked):
        return float(ranked[-1])
    # Just above the (allowed + 1)-th highest: at most `allowed` reach it (fewer with ties).
    return float(np.nextafter(ranked[allowed], math.inf))


def _metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {"roc_auc": round(float(roc_auc_score(y, scores)), 4),
            "pr_auc": round(float(average_precision_score(y, scores)), 4),
            "prevalence": round(float(y.mean()), 4)}


def _recall_by_class(sessions: pd.DataFrame, threshold: float) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    attacked = sessions[sessions["label"] == 1]
    for cls, part in attacked.groupby("cls", sort=True):
        caught = int((part["score"] >= threshold).sum())
        out[str(cls)] = {"sessions": int(len(part)), "caught": caught,
                         "recall": round(caught / len(part), 4)}
    return out


def train(recorded: Recorded, labels: pd.DataFrame, *, seed: int = 0,
          tenants_unsupervised: bool = True, train_from: float | None = None) -> Trained:
    """Fit the three models and measure them. `labels`: session, label (1/0), cls, start.
    `train_from`: training rows start there (validation and holdout rows do not)."""
    rows = label_rows(recorded.frame, labels)
    train_rows, val, hold, t_val, t_test = _split(rows, train_from)
    x_train, y_train = _matrix(train_rows), train_rows["label"].to_numpy()
    # A feature never known in training (no edge fingerprints, say) is constant to the trees:
    # sklearn cannot bin an all-NaN column, and no split will read it when scoring.
    x_train[:, np.isnan(x_train).all(axis=0)] = 0.0
    # Early stopping off and a fixed seed: the same data gives the same trees (and skops
    # cannot save the scorer-holding estimator early stopping by ROC-AUC leaves behind).
    supervised = HistGradientBoostingClassifier(
        max_iter=60, max_depth=5, learning_rate=0.15, l2_regularization=1.0,
        early_stopping=False, random_state=seed).fit(x_train, y_train)
    baseline = Pipeline([("scale", StandardScaler()), ("logistic", LogisticRegression(
        max_iter=1000, random_state=seed))]).fit(_baseline_matrix(train_rows), y_train)
    with warnings.catch_warnings():  # a feature never known in training: its fill is 0
        warnings.simplefilter("ignore", RuntimeWarning)
        medians = np.nanmedian(x_train, axis=0)
    fill = [0.0 if math.isnan(v) else float(v) for v in medians]
    estimators: dict[str, Any] = {"supervised": supervised, "baseline": baseline}
    if tenants_unsupervised:
        for tenant, part in train_rows[train_rows["label"] == 0].groupby("tenant", sort=True):
            if len(part) >= 50:
                estimators[f"isolation-{tenant}"] = IsolationForest(
                    n_estimators=100, random_state=seed).fit(_filled(_matrix(part), fill))

    def scores_of(part: pd.DataFrame) -> dict[str, np.ndarray]:
        out = {"supervised": supervised.predict_proba(_matrix(part))[:, 1],
               "baseline": baseline.predict_proba(_baseline_matrix(part))[:, 1]}
        iso = np.full(len(part), np.nan)
        for name, model in estimators.items():
            if name.startswith("isolation-"):
                mask = (part["tenant"] == name.removeprefix("isolation-")).to_numpy()
                if mask.any():
                    iso[mask] = -model.score_samples(_filled(_matrix(part[mask]), fill))
        out["isolation"] = iso
        return out

    val_scores = scores_of(val)
    thresholds: dict[str, dict[str, float]] = {}
    for name, s in val_scores.items():
        if np.isnan(s).all():
            continue
        sess = session_scores(val, np.nan_to_num(s, nan=-math.inf))
        benign = sess.loc[sess["label"] == 0, "score"].to_numpy()
        thresholds[name] = {"high": threshold_at(benign, HIGH_FPR),
                            "medium": threshold_at(benign, MEDIUM_FPR)}

    hold_scores = scores_of(hold)
    y_hold = hold["label"].to_numpy()
    evaluation: dict[str, Any] = {"holdout_events": int(len(hold)),
                                  "holdout_attack_events": int(y_hold.sum())}
    holdout = hold[["event_id", "tenant", "session", "user", "at", "label", "cls"]].copy()
    for name, s in hold_scores.items():
        holdout[f"score_{name}"] = s
        if np.isnan(s).all() or name not in thresholds:
            continue
        ok = ~np.isnan(s)
        figures: dict[str, Any] = _metrics(y_hold[ok], s[ok])
        sess = session_scores(hold[ok], s[ok])
        benign = sess[sess["label"] == 0]
        high = thresholds[name]["high"]
        figures["benign_sessions"] = int(len(benign))
        figures["benign_sessions_high"] = int((benign["score"] >= high).sum())
        figures["recall_at_high"] = _recall_by_class(sess, high)
        evaluation[name] = figures
    evaluation["rules"] = _rules_figures(hold, recorded.rule_actions)
    importance = permutation_importance(supervised, _matrix(hold), y_hold, scoring="roc_auc",
                                        n_repeats=3, random_state=seed)
    ranked = sorted(zip(FEATURE_NAMES, importance.importances_mean, strict=True),
                    key=lambda kv: (-kv[1], kv[0]))
    evaluation["permutation_importance"] = {n: round(float(v), 4) for n, v in ranked}
    meta = {
        "feature_names": list(FEATURE_NAMES),
        "thresholds": thresholds,
        "fill": fill,
        "evaluation": evaluation,
        "splits": {"validation_from": t_val, "holdout_from": t_test, "train_from": train_from,
                   "train_rows": int(len(train_rows)), "validation_rows": int(len(val)),
                   "holdout_rows": int(len(hold)),
                   "train_attack_rows": int(y_train.sum()),
                   "user_groups": {"train": sorted(TRAIN_GROUPS),
                                   "validation": sorted(VALIDATION_GROUPS),
                                   "holdout": sorted(HOLDOUT_GROUPS)}},
        "training": {"events": recorded.events, "scored_events": int(len(recorded.frame)),
                     "labelled_rows": int(len(rows)), "sessions": int(rows["session"].nunique()),
                     "users": int(rows["user"].nunique()),
                     "from": float(rows["at"].min()), "until": float(rows["at"].max()),
                     "seed": seed},
        "population": recorded.population.to_json(),
    }
    return Trained(estimators=estimators, meta=meta, holdout=holdout, fill=fill)


def _filled(x: np.ndarray, fill: list[float]) -> np.ndarray:
    out = x.copy()
    idx = np.where(np.isnan(out))
    out[idx] = np.take(np.asarray(fill), idx[1])
    return out


def _rules_figures(hold: pd.DataFrame, rule_actions: dict[str, str]) -> dict[str, Any]:
    """What the rules alone did to the holdout's sessions: caught = revoked or stepped up."""
    sess = hold.groupby("session", sort=True).agg(label=("label", "max"), cls=("cls", "first"))
    acted = sess.index.map(lambda s: rule_actions.get(s, "requested") != "requested").to_numpy()
    revoked = sess.index.map(lambda s: rule_actions.get(s) == "revoke").to_numpy()
    benign = (sess["label"] == 0).to_numpy()
    out: dict[str, Any] = {"benign_sessions": int(benign.sum()),
                           "benign_sessions_acted": int((acted & benign).sum()),
                           "benign_sessions_revoked": int((revoked & benign).sum())}
    recall = {}
    for cls, part in sess[~benign].groupby("cls", sort=True):
        caught = int(part.index.map(lambda s: s in rule_actions).to_numpy().sum())
        recall[str(cls)] = {"sessions": int(len(part)), "caught": caught,
                            "recall": round(caught / len(part), 4)}
    out["recall"] = recall
    return out
