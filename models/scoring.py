"""One score at a time, cheaply: the trained model's trees and weights, exported to plain Python.

scikit-learn is built for batches: one `predict_proba` row of a 100-tree HistGradientBoosting
costs ~0.9 ms, and the stream hands the pipeline one event at a time. So the verified estimator
(models/artefact.py) is exported once, at load, into flat lists that a loop walks in tens of
microseconds, and only events that changed something the model can see are scored
(`SessionBehaviour.changed`, models/features.py). A test checks the export against `predict_proba`.

Score direction is fixed: higher is more anomalous, in [0, 1]. `explain` names the features that
pushed the score up (path attribution for trees, weight x deviation for the linear baseline), in
an admin's words (`FEATURE_WORDS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from models.features import FEATURE_NAMES, FEATURE_WORDS, Population

SEVERITIES = ("medium", "high")


@dataclass(frozen=True)
class Tree:
    feature: list[int]
    threshold: list[float]
    missing_left: list[bool]
    left: list[int]
    right: list[int]
    leaf: list[bool]
    value: list[float]


class TreeScorer:
    """A binary HistGradientBoostingClassifier as lists: sigmoid(baseline + sum of leaf values)."""

    kind = "hist_gradient_boosting"

    def __init__(self, trees: Sequence[Tree], baseline: float) -> None:
        self.trees = list(trees)
        self.baseline = baseline
        self.raw = _compile(self.trees, baseline)  # type: ignore[method-assign]

    @classmethod
    def from_sklearn(cls, model: Any) -> TreeScorer:
        if len(getattr(model, "classes_", ())) != 2:
            raise ValueError("only a binary HistGradientBoostingClassifier can be exported")
        if any(getattr(p, "is_categorical", None) is not None and bool(p.nodes["is_categorical"].any())
               for (p,) in model._predictors):
            raise ValueError("categorical splits are not supported by the export")
        trees = []
        # sklearn shrinks leaf values by the learning rate but keeps internal nodes' values
        # unshrunk: scaled alike, the path attribution (`contributions`) credits each split fairly.
        rate = float(model.learning_rate)
        for (predictor,) in model._predictors:  # one predictor per iteration (binary: one class)
            n = predictor.nodes
            trees.append(Tree(
                feature=[int(v) for v in n["feature_idx"]],
                threshold=[float(v) for v in n["num_threshold"]],
                missing_left=[bool(v) for v in n["missing_go_to_left"]],
                left=[int(v) for v in n["left"]], right=[int(v) for v in n["right"]],
                leaf=[bool(v) for v in n["is_leaf"]],
                value=[float(v) if leaf else float(v) * rate
                       for v, leaf in zip(n["value"], n["is_leaf"], strict=True)]))
        return cls(trees, float(model._baseline_prediction.ravel()[0]))

    def walk(self, x: Sequence[float]) -> float:
        """The raw score by walking the lists (the reference `raw`, compiled, is checked against)."""
        total = self.baseline
        for t in self.trees:
            i = 0
            leaf, feature, threshold, left, right = t.leaf, t.feature, t.threshold, t.left, t.right
            while not leaf[i]:
                v = x[feature[i]]
                if v != v:  # NaN: the side training sent missing values to
                    i = left[i] if t.missing_left[i] else right[i]
                elif v <= threshold[i]:
                    i = left[i]
                else:
                    i = right[i]
            total += t.value[i]
        return total

    def score(self, x: Sequence[float]) -> float:
        return _sigmoid(self.raw(x))

    def contributions(self, x: Sequence[float]) -> list[float]:
        """Per feature, how much the path through each tree moved the raw score (Saabas)."""
        out = [0.0] * len(x)
        for t in self.trees:
            i = 0
            while not t.leaf[i]:
                v = x[t.feature[i]]
                nxt = (t.left[i] if t.missing_left[i] else t.right[i]) if v != v else (
                    t.left[i] if v <= t.threshold[i] else t.right[i])
                out[t.feature[i]] += t.value[nxt] - t.value[i]
                i = nxt
        return out


def _compile(trees: Sequence[Tree], baseline: float) -> Any:
    """The trees as one Python function of nested comparisons: ~10x faster than walking lists.

    Generated from numbers only (feature indices through int(), thresholds and leaf values through
    float() and repr), never from text in the artefact, so the source cannot carry code."""
    lines = ["def raw(x):", f"    s = {_literal(baseline)}"]

    def node(t: Tree, i: int, depth: int) -> None:
        pad = "    " * depth
        if t.leaf[i]:
            lines.append(f"{pad}s += {_literal(t.value[i])}")
            return
        f, th = int(t.feature[i]), _literal(t.threshold[i])
        # NaN compares False both ways: `not x > t` sends it left, `x <= t` right, as training did.
        test = f"not x[{f}] > {th}" if t.missing_left[i] else f"x[{f}] <= {th}"
        lines.append(f"{pad}if {test}:")
        node(t, int(t.left[i]), depth + 1)
        lines.append(f"{pad}else:")
        node(t, int(t.right[i]), depth + 1)

    for t in trees:
        node(t, 0, 1)
    lines.append("    return s")
    namespace: dict[str, Any] = {"INF": math.inf}
    exec(compile("\n".join(lines), "<sessionwatch trees>", "exec"), namespace)  # noqa: S102
    return namespace["raw"]


def _literal(value: float) -> str:
    v = float(value)
    if math.isnan(v):
        raise ValueError("a NaN threshold or leaf value in the model")
    if math.isinf(v):
        return "INF" if v > 0 else "-INF"
    return repr(v)


class LinearScorer:
    """Logistic regression on standardised features; NaN replaced by the training mean."""

    kind = "logistic_regression"

    def __init__(self, weights: Sequence[float], intercept: float, mean: Sequence[float],
                 scale: Sequence[float], fill: Sequence[float] | None = None) -> None:
        self.weights = list(weights)
        self.intercept = intercept
        self.mean = list(mean)
        self.scale = [s if s else 1.0 for s in scale]
        self.fill = list(fill) if fill is not None else list(mean)

    @classmethod
    def from_sklearn(cls, pipeline: Any, fill: Sequence[float]) -> LinearScorer:
        scaler, logistic = pipeline.steps[0][1], pipeline.steps[-1][1]
        return cls([float(w) for w in logistic.coef_.ravel()], float(logistic.intercept_[0]),
                   [float(m) for m in scaler.mean_], [float(s) for s in scaler.scale_], fill)

    def _terms(self, x: Sequence[float]) -> list[float]:
        return [w * (((v if v == v else f) - m) / s)
                for w, v, f, m, s in zip(self.weights, x, self.fill, self.mean, self.scale,
                                         strict=True)]

    def score(self, x: Sequence[float]) -> float:
        return _sigmoid(self.intercept + sum(self._terms(x)))

    def contributions(self, x: Sequence[float]) -> list[float]:
        return self._terms(x)


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


Scorer = TreeScorer | LinearScorer


@dataclass(frozen=True)
class AnomalyModel:
    """What the stream needs of a trained artefact: a scorer, thresholds, the population."""

    scorer: Scorer
    thresholds: Mapping[str, float]      # "medium", "high" -> minimum score
    population: Population
    version: str
    digest: str = ""                     # of model.json (what a reload compares)
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def severity(self, score: float) -> str | None:
        if score >= self.thresholds.get("high", math.inf):
            return "high"
        if score >= self.thresholds.get("medium", math.inf):
            return "medium"
        return None

    def explain(self, x: Sequence[float], top: int = 3) -> list[str]:
        """The features that pushed this score up most, in words, most important first."""
        pushes = sorted(((c, name) for c, name in zip(self.scorer.contributions(x),
                                                      self.feature_names, strict=True) if c > 0),
                        reverse=True)
        words: list[str] = []
        if top <= 0:
            return words
        for _, name in pushes:
            text = FEATURE_WORDS.get(name, name)
            if text not in words:
                words.append(text)
            if len(words) == top:
                break
        return words
