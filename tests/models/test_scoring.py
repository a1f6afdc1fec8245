"""The exported scorers (models/scoring.py) against scikit-learn, and what the stream does with a score.

Every check compares with the real estimator (predict_proba, decision_function) or with an
independent property; timing is the benchmarks' business, not asserted here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from models.artefact import load_artefact
from models.dataset import Recorder
from models.features import FEATURE_NAMES, FEATURE_WORDS, N_FEATURES, Population
from models.load import load_model
from models.scoring import AnomalyModel, LinearScorer, TreeScorer
from sessionwatch.simulation import simulate
from streams.local import LocalRunner

HGB = HistGradientBoostingClassifier

# -- helpers --------------------------------------------------------------------------------------


def _nan_data(seed: int, n: int, width: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Rows with NaN in features 0-3, where a missing value means something: missing x0 pushes
    towards 1 (so its splits send NaN right), missing x1 towards 0 (NaN left)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width))
    x[rng.random((n, width)) < 0.2] = np.nan
    x[:, 4:][np.isnan(x[:, 4:])] = 0.0  # features 4.. never missing in training
    a = np.where(np.isnan(x[:, 0]), 2.5, x[:, 0])
    b = np.where(np.isnan(x[:, 1]), -2.5, x[:, 1])
    c = np.where(np.isnan(x[:, 2]), 0.0, x[:, 2])
    y = (a + b + 0.5 * c + 0.3 * x[:, 4] + 0.3 * rng.normal(size=n) > 0.2).astype(int)
    return x, y


@pytest.fixture(scope="module")
def nan_hgb() -> HGB:
    x, y = _nan_data(seed=11, n=3000)
    return HistGradientBoostingClassifier(max_iter=40, max_depth=5, early_stopping=False,
                                          random_state=0).fit(x, y)


def _probe_rows(seed: int, n: int = 500, width: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=1.5, size=(n, width))
    # NaN in several features, including ones that never were missing in training (5): those
    # go to the child training sent more samples to.
    x[rng.random((n, width)) < 0.25] = np.nan
    return x


def _nan_turns(scorer: TreeScorer, rows: np.ndarray) -> tuple[int, int]:
    """How often scoring `rows` met a NaN at a split and went left, and right."""
    left = right = 0
    for x in rows:
        for t in scorer.trees:
            i = 0
            while not t.leaf[i]:
                v = x[t.feature[i]]
                if math.isnan(v):
                    left += t.missing_left[i]
                    right += not t.missing_left[i]
                    i = t.left[i] if t.missing_left[i] else t.right[i]
                else:
                    i = t.left[i] if v <= t.threshold[i] else t.right[i]
    return left, right


def _linear(weights: list[float]) -> LinearScorer:
    """A linear scorer whose contributions are exactly weight x value (mean 0, scale 1, fill 0)."""
    return LinearScorer(weights, intercept=-1.0, mean=[0.0] * len(weights),
                        scale=[1.0] * len(weights), fill=[0.0] * len(weights))


def _model(scorer, thresholds=None) -> AnomalyModel:  # type: ignore[no-untyped-def]
    return AnomalyModel(scorer=scorer, thresholds=thresholds or {"medium": 0.5, "high": 0.9},
                        population=Population(), version="test")


# -- TreeScorer ------------------------------------------------------------------------------------


def test_tree_export_matches_predict_proba_with_nans_both_ways(nan_hgb: HGB) -> None:
    scorer = TreeScorer.from_sklearn(nan_hgb)
    rows = _probe_rows(seed=5)
    # The test only means something if NaN really went both ways, in training and in scoring.
    # Splits on x0 and x1 (missing in training) send NaN to both sides.
    sides = {ml for t in scorer.trees
             for ml, leaf, f in zip(t.missing_left, t.leaf, t.feature, strict=True)
             if not leaf and f in (0, 1)}
    assert sides == {True, False}
    left, right = _nan_turns(scorer, rows)
    assert left > 50 and right > 50, (left, right)

    expected = nan_hgb.predict_proba(rows)[:, 1]
    got = np.array([scorer.score(list(r)) for r in rows])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    raw = np.array([scorer.raw(list(r)) for r in rows])
    np.testing.assert_allclose(raw, nan_hgb.decision_function(rows), rtol=0, atol=1e-9)
    # Scores spread across (0, 1): an export that got NaN wrong could not hide in a flat region.
    assert expected.min() < 0.05 and expected.max() > 0.95


def test_tree_export_matches_sklearn_on_deep_trees() -> None:
    """Unbounded depth (best-first growth to 63 leaves): the compiled nesting and the list walk
    both agree with scikit-learn."""
    x, y = _nan_data(seed=12, n=4000)
    model = HistGradientBoostingClassifier(max_iter=15, max_depth=None, max_leaf_nodes=63,
                                           min_samples_leaf=5, early_stopping=False,
                                           random_state=0).fit(x, y)
    scorer = TreeScorer.from_sklearn(model)
    rows = _probe_rows(seed=13, n=300)
    expected = model.decision_function(rows)
    np.testing.assert_allclose([scorer.raw(list(r)) for r in rows], expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose([scorer.walk(list(r)) for r in rows], expected, rtol=0, atol=1e-9)


def test_tree_export_refuses_a_multiclass_model() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = np.digitize(x[:, 0], [-0.5, 0.5])
    model = HistGradientBoostingClassifier(max_iter=3, early_stopping=False).fit(x, y)
    with pytest.raises(ValueError, match="binary"):
        TreeScorer.from_sklearn(model)


def test_tree_contributions_add_up_to_the_raw_score(nan_hgb: HGB) -> None:
    """Saabas: baseline + sum of contributions == raw score. Each path's increments telescope to
    leaf - root, so this holds because scikit-learn stores every root's value as 0."""
    scorer = TreeScorer.from_sklearn(nan_hgb)
    assert all(t.value[0] == 0.0 for t in scorer.trees)
    for x in _probe_rows(seed=6, n=200):
        contributions = scorer.contributions(list(x))
        assert len(contributions) == len(x)
        assert scorer.baseline + sum(contributions) == pytest.approx(scorer.raw(list(x)), abs=1e-9)


def test_tree_contributions_name_the_feature_the_label_depends_on() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 4))
    y = (x[:, 0] + 0.3 * rng.normal(size=len(x)) > 0.8).astype(int)   # x1..x3: noise
    model = HistGradientBoostingClassifier(max_iter=50, max_depth=4, early_stopping=False,
                                           random_state=0).fit(x, y)
    scorer = TreeScorer.from_sklearn(model)
    c = np.abs(np.array([scorer.contributions(list(r)) for r in rng.normal(size=(300, 4))]))
    share = c.mean(axis=0)
    # Correctly scaled attributions give each noise feature ~3 % of x0's; measured: up to ~55 %.
    assert (share[1:] < 0.2 * share[0]).all(), share


# -- LinearScorer ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def logistic() -> tuple[Pipeline, np.ndarray]:
    rng = np.random.default_rng(21)
    x = rng.normal(loc=[0, 3, -2, 10, 0], scale=[1, 2, 0.5, 4, 1], size=(600, 5))
    x[:, 4] = 1.0   # a constant column: StandardScaler's scale_ is 1 there
    y = (x[:, 0] - 0.5 * x[:, 1] + 2 * x[:, 2] + rng.normal(size=600) > -5).astype(int)
    pipeline = Pipeline([("scale", StandardScaler()), ("logistic", LogisticRegression(max_iter=1000))])
    return pipeline.fit(x, y), x


def test_linear_export_matches_predict_proba(logistic: tuple[Pipeline, np.ndarray]) -> None:
    pipeline, x = logistic
    fill = [1.5, -2.0, 0.25, 40.0, 7.0]
    scorer = LinearScorer.from_sklearn(pipeline, fill)
    rows = np.random.default_rng(2).normal(loc=[0, 3, -2, 10, 1], scale=[2, 3, 1, 6, 1], size=(300, 5))
    got = np.array([scorer.score(list(r)) for r in rows])
    np.testing.assert_allclose(got, pipeline.predict_proba(rows)[:, 1], rtol=0, atol=1e-9)
    assert got.min() < 0.1 and got.max() > 0.9
    for r in rows[:50]:  # contributions are the logit's terms
        logit = math.log(scorer.score(list(r)) / (1 - scorer.score(list(r))))
        assert scorer.intercept + sum(scorer.contributions(list(r))) == pytest.approx(logit, abs=1e-7)


def test_linear_export_replaces_nan_by_fill(logistic: tuple[Pipeline, np.ndarray]) -> None:
    pipeline, _ = logistic
    fill = np.array([1.5, -2.0, 0.25, 40.0, 7.0])
    scorer = LinearScorer.from_sklearn(pipeline, list(fill))
    rng = np.random.default_rng(4)
    rows = rng.normal(loc=[0, 3, -2, 10, 1], size=(200, 5))
    rows[rng.random(rows.shape) < 0.3] = np.nan
    assert np.isnan(rows).any(axis=1).sum() > 100
    filled = np.where(np.isnan(rows), fill, rows)
    got = np.array([scorer.score(list(r)) for r in rows])
    np.testing.assert_allclose(got, pipeline.predict_proba(filled)[:, 1], rtol=0, atol=1e-9)
    # The fill, not the training mean: a mean-filled row scores differently.
    by_mean = LinearScorer.from_sklearn(pipeline, list(pipeline.steps[0][1].mean_))
    row = [math.nan, 3.0, -2.0, 10.0, 1.0]
    assert by_mean.score(row) != pytest.approx(scorer.score(row), abs=1e-6)


# -- AnomalyModel ----------------------------------------------------------------------------------


def test_severity_thresholds_are_inclusive_and_ordered() -> None:
    model = _model(_linear([0.0] * N_FEATURES), {"medium": 0.5, "high": 0.9})
    assert model.severity(0.0) is None
    assert model.severity(math.nextafter(0.5, 0)) is None
    assert model.severity(0.5) == "medium"
    assert model.severity(math.nextafter(0.9, 0)) == "medium"
    assert model.severity(0.9) == "high"
    assert model.severity(1.0) == "high"
    only_medium = _model(_linear([0.0] * N_FEATURES), {"medium": 0.5})
    assert only_medium.severity(1.0) == "medium"   # no "high" threshold: never high
    assert _model(_linear([0.0] * N_FEATURES), {"high": 0.9}).severity(0.6) is None


def test_explain_names_the_biggest_pushes_in_words() -> None:
    weights = [0.0] * N_FEATURES
    x = [0.0] * N_FEATURES
    for name, push in (("alternations", 3.0), ("sensitive_after_change", 2.0), ("lr_ip", 1.0),
                       ("pairs", 0.5), ("gap_cv", -4.0)):
        weights[FEATURE_NAMES.index(name)] = 1.0
        x[FEATURE_NAMES.index(name)] = push
    model = _model(_linear(weights))
    assert model.explain(x, top=3) == [FEATURE_WORDS["alternations"],
                                       FEATURE_WORDS["sensitive_after_change"], FEATURE_WORDS["lr_ip"]]
    assert model.explain(x, top=10) == [FEATURE_WORDS[n] for n in
                                        ("alternations", "sensitive_after_change", "lr_ip", "pairs")]
    assert FEATURE_WORDS["gap_cv"] not in model.explain(x, top=10)   # pushed the score down


def test_explain_says_a_shared_word_once_and_still_fills_top() -> None:
    # history_events and history_days share their words: once, and the next feature takes the slot.
    weights = [1.0] * N_FEATURES
    x = [0.0] * N_FEATURES
    x[FEATURE_NAMES.index("history_events")] = 5.0
    x[FEATURE_NAMES.index("history_days")] = 4.0
    x[FEATURE_NAMES.index("ja4_changed")] = 3.0
    words = _model(_linear(weights)).explain(x, top=2)
    assert words == [FEATURE_WORDS["history_events"], FEATURE_WORDS["ja4_changed"]]


@settings(max_examples=150, deadline=None)
@given(pushes=st.lists(st.floats(-5, 5, allow_nan=False), min_size=N_FEATURES, max_size=N_FEATURES),
       top=st.integers(1, 8))
def test_explain_properties(pushes: list[float], top: int) -> None:
    model = _model(_linear([1.0] * N_FEATURES))
    words = model.explain(pushes, top=top)
    positive = {FEATURE_WORDS[n] for n, c in zip(FEATURE_NAMES, pushes, strict=True) if c > 0}
    assert len(words) == len(set(words)) <= top
    assert set(words) <= positive
    assert len(words) == min(top, len(positive))   # never fewer than it could say
    # Most important first: each word's strongest push is at least the next word's.
    strongest = {w: max(c for n, c in zip(FEATURE_NAMES, pushes, strict=True) if FEATURE_WORDS[n] == w)
                 for w in words}
    assert [strongest[w] for w in words] == sorted(strongest.values(), reverse=True)


def test_explain_with_top_zero_names_nothing() -> None:
    x = [0.0] * N_FEATURES
    x[FEATURE_NAMES.index("alternations")] = 3.0
    x[FEATURE_NAMES.index("pairs")] = 1.0
    assert _model(_linear([1.0] * N_FEATURES)).explain(x, top=0) == []


# -- the trained artefact --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stream_run(trained_model: Path) -> tuple[AnomalyModel, list, list]:  # type: ignore[type-arg]
    """The model in the stream (LocalRunner: the worker's pipelines) over a small simulation it
    did not train on, with a recorder: the findings, and every scored event's vector."""
    model = load_model(trained_model)
    recorder = Recorder(model.population)
    runner = LocalRunner(model=model, recorder=recorder)
    findings = []
    for event in simulate(users=60, seed=3, history_days=1, edge_fingerprints=0.5).events:
        findings += runner.process(event)[0]
    findings += runner.finish()[0]
    return model, findings, recorder.rows


def test_loaded_model_scores_like_the_skops_estimator(trained_model: Path, stream_run) -> None:  # type: ignore[no-untyped-def]
    model, _, rows = stream_run
    real_vectors = np.array([x for *_, x in rows], dtype=np.float64)
    loaded = load_artefact(trained_model, FEATURE_NAMES)
    supervised = loaded.estimators["supervised"]
    assert isinstance(model.scorer, TreeScorer)
    assert model.thresholds == loaded.meta["thresholds"]["supervised"]
    assert model.digest == loaded.digest

    rng = np.random.default_rng(8)
    # 200 random vectors drawn like real ones: each column from the real column's values (NaN
    # included), so combinations the simulation never produced get scored too.
    drawn = np.column_stack([rng.choice(real_vectors[:, j], size=200) for j in range(N_FEATURES)])
    assert np.isnan(drawn).any(axis=0).sum() >= 10      # NaN in many features
    for part in (drawn, real_vectors):
        expected = supervised.predict_proba(part)[:, 1]
        got = np.array([model.scorer.score(list(r)) for r in part])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
        # Severity agrees wherever a score is not within rounding of a threshold.
        clear = np.all([np.abs(expected - t) > 1e-9 for t in model.thresholds.values()], axis=0)
        by_sklearn = [None if p < model.thresholds["medium"] else
                      "medium" if p < model.thresholds["high"] else "high" for p in expected[clear]]
        assert [model.severity(s) for s in got[clear]] == by_sklearn
    # The rows reach every severity: the comparison covered the thresholds' region.
    assert {model.severity(model.scorer.score(list(r))) for r in np.vstack([drawn, real_vectors])} \
        == {None, "medium", "high"}


def test_stream_scores_what_the_recorder_records(stream_run) -> None:  # type: ignore[no-untyped-def]
    """The user pipeline with the model (`_behaviour_arrived` -> `_score`): every anomaly
    finding's score is the loaded scorer's score of the recorded vector of its event, and every
    session with a recorded vector at or above the medium threshold got a finding."""
    model, findings, rows = stream_run
    vectors = {event_id: x for event_id, *_, x in rows}
    anomaly = [f for f in findings if f.detector == "session.anomaly"]
    assert anomaly, "the simulation's attacks should reach the model's thresholds"
    for f in anomaly:
        (event_id,) = f.events
        x = vectors[event_id]
        score = model.scorer.score(x)
        assert f.evidence["score"] == round(score, 4)
        assert f.severity.value == model.severity(score)
        assert f.evidence["because"] == model.explain(x, 3)
    sessions_of = {event_id: session for event_id, _, session, *_ in rows}
    above = {sessions_of[e] for e, x in vectors.items() if model.severity(model.scorer.score(x))}
    assert above == {f.session for f in anomaly}
