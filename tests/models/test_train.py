"""Training (models/train.py), labels (models/labels.py) and the `train` / `model-report` commands.

The CLI runs as a real subprocess (`python -m sessionwatch train ...`), started when this module
starts so that it trains while the in-process checks run; the in-process data is the same
simulation the subprocess trains on (deterministic for its seeds), so its splits and thresholds
can be recomputed here and compared with what the artefact records.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.artefact import META_FILE, load_artefact
from models.dataset import Recorded, user_group
from models.features import FEATURE_NAMES, N_FEATURES
from models.labels import COLUMNS, archive_labels, simulation_labels
from models.load import load_model
from models.train import (
    HIGH_FPR,
    HOLDOUT_GROUPS,
    MEDIUM_FPR,
    TRAIN_GROUPS,
    VALIDATION_GROUPS,
    TrainingError,
    _matrix,
    _split,
    label_rows,
    session_scores,
    threshold_at,
    train,
)
from sessionwatch.simulation import START, AttackTruth, BenignTruth, Truth, simulate
from sessionwatch.train import SimulationSource, from_simulation

REPO = Path(__file__).resolve().parents[2]
CLI_TRAIN = ["train", "--from-simulation", "--seed", "1", "2", "--users", "300", "--history-days", "1"]
# What those flags mean (edge fingerprints at the CLI's default, 0.5).
SOURCE = SimulationSource(seeds=(1, 2), users=300, history_days=1, edge_fingerprints=0.5)
DEADLINE_S = 300.0


@dataclass
class Run:
    proc: subprocess.Popen[str]
    out: Path
    _done: tuple[int, str, str] | None = field(default=None)

    def result(self) -> tuple[int, str, str]:
        """(exit code, stdout, stderr), waiting for the process up to the deadline."""
        if self._done is None:
            stdout, stderr = self.proc.communicate(timeout=DEADLINE_S)
            self._done = (self.proc.returncode, stdout, stderr)
        return self._done


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "sessionwatch", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stop(run: Run) -> None:
    if run.proc.poll() is None:   # a test failed before waiting on it: do not leave it running
        run.proc.kill()
        run.proc.communicate()


@pytest.fixture(scope="module", autouse=True)
def background(tmp_path_factory: pytest.TempPathFactory, trained_model: Path):  # type: ignore[no-untyped-def]
    """The slow subprocesses, started before this module's first test so they run beside the
    in-process checks: the training command, and `model-report` on a copy of the session's
    trained artefact with one bit of supervised.skops flipped."""
    out = tmp_path_factory.mktemp("cli") / "model"
    copy = tmp_path_factory.mktemp("tampered") / "model"
    shutil.copytree(trained_model, copy)
    target = copy / "supervised.skops"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    runs = {"train": Run(_cli(*CLI_TRAIN, "--out", str(out)), out),
            "tampered": Run(_cli("model-report", str(copy)), target)}
    yield runs
    for run in runs.values():
        _stop(run)


@pytest.fixture(scope="module")
def cli_train(background: dict[str, Run]) -> Run:
    return background["train"]


@pytest.fixture(scope="module")
def trained_cli(cli_train: Run) -> Run:
    code, _, stderr = cli_train.result()
    assert code == 0, stderr
    return cli_train


@dataclass
class Data:
    recorded: Recorded
    labels: pd.DataFrame
    rows: pd.DataFrame
    train: pd.DataFrame
    val: pd.DataFrame
    hold: pd.DataFrame
    t_test: float


@pytest.fixture(scope="module")
def data() -> Data:
    recorded, labels, source = from_simulation(SOURCE)
    rows = label_rows(recorded.frame, labels)
    # As `sessionwatch train` splits: training rows from the simulator's attack day on.
    train_rows, val, hold, _, t_test = _split(rows, source["train_from"])
    return Data(recorded, labels, rows, train_rows, val, hold, t_test)


# -- splits ---------------------------------------------------------------------------------------


def test_no_user_is_in_two_splits(data: Data) -> None:
    users = {name: set(part["user"]) for name, part in
             (("train", data.train), ("validation", data.val), ("holdout", data.hold))}
    assert all(users.values())
    assert not users["train"] & users["validation"]
    assert not users["train"] & users["holdout"]
    assert not users["validation"] & users["holdout"]
    groups = data.rows["user"].map(user_group)
    assert set(data.train["user"].map(user_group)) <= TRAIN_GROUPS
    # Validation: every row of its users (all their sessions stand behind the 0.1 % rate).
    assert len(data.val) == int(groups.isin(VALIDATION_GROUPS).sum())
    assert set(data.hold["user"].map(user_group)) <= HOLDOUT_GROUPS


def test_holdout_comes_after_training(data: Data) -> None:
    assert data.hold["at"].min() >= data.train["at"].max()
    assert data.hold["at"].min() >= data.t_test > data.train["at"].max()
    positives = data.rows.loc[data.rows["label"] == 1, "at"]
    assert data.t_test == float(np.quantile(positives, 0.5))
    # Both periods keep both classes (the split is not degenerate).
    assert data.train["label"].nunique() == data.hold["label"].nunique() == 2


def test_too_few_positives_is_a_clear_error(data: Data) -> None:
    benign = data.rows[data.rows["label"] == 0]
    attacked = data.rows[data.rows["label"] == 1]
    with pytest.raises(TrainingError, match=r"only 19 labelled attack events: need at least 20"):
        _split(pd.concat([benign, attacked.iloc[:19]]))
    # Through train(): the labels of all but two attacked sessions turned benign.
    keep = data.labels[data.labels["label"] == 1]["session"].iloc[:2]
    labels = data.labels.assign(label=np.where(data.labels["session"].isin(keep), data.labels["label"], 0))
    with pytest.raises(TrainingError, match=r"only \d+ labelled attack events: need at least 20"):
        train(data.recorded, labels)


def test_a_split_with_one_class_is_a_clear_error(data: Data) -> None:
    # Attacks only among validation users: enough positives, none to train on.
    groups = data.rows["user"].map(user_group)
    rows = data.rows.assign(label=np.where(groups.isin(VALIDATION_GROUPS), data.rows["label"], 0))
    assert (rows["label"] == 1).sum() >= 20
    with pytest.raises(TrainingError, match="the training split has only one class"):
        _split(rows)


def test_threshold_at_allows_at_most_the_rate() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 7, 99, 100, 101, 999, 1000, 5000):
        benign = rng.random(n)
        for fpr in (HIGH_FPR, MEDIUM_FPR, 0.1):
            t = threshold_at(benign, fpr)
            assert (benign >= t).sum() <= fpr * n, (n, fpr)
    ties = np.array([0.5] * 50 + [0.9] * 50)
    assert (ties >= threshold_at(ties, 0.01)).sum() == 0
    assert threshold_at(np.array([]), 0.01) == 1.0


def test_threshold_at_is_the_lowest_such_score() -> None:
    benign = np.arange(200) / 200.0
    assert (benign >= threshold_at(benign, 0.01)).sum() == 2


# -- the trained artefact -------------------------------------------------------------------------


def test_thresholds_hold_the_validation_false_positive_rates(data: Data, trained_cli: Run) -> None:
    loaded = load_artefact(trained_cli.out, FEATURE_NAMES)
    meta = loaded.meta
    # The subprocess trained on exactly the rows recomputed here.
    assert meta["splits"]["validation_rows"] == len(data.val)
    stream = load_model(trained_cli.out)
    x = _matrix(data.val)
    for name, scores in (("supervised", loaded.estimators["supervised"].predict_proba(x)[:, 1]),
                         ("stream", np.array([stream.scorer.score(list(r)) for r in x]))):
        sessions = session_scores(data.val, scores)
        benign = sessions.loc[sessions["label"] == 0, "score"].to_numpy()
        assert len(benign) >= 100, name
        th = meta["thresholds"]["supervised"]
        assert th["medium"] <= th["high"]
        assert (benign >= th["high"]).sum() <= HIGH_FPR * len(benign), name
        assert (benign >= th["medium"]).sum() <= MEDIUM_FPR * len(benign), name
        # ... and they are the ones threshold_at picks from these sessions (not any safe value).
        assert th["high"] == pytest.approx(threshold_at(benign, HIGH_FPR), abs=1e-12), name
        assert th["medium"] == pytest.approx(threshold_at(benign, MEDIUM_FPR), abs=1e-12), name
    # The model catches attacks at those thresholds (the thresholds are not vacuous).
    attacked = sessions[sessions["label"] == 1]
    assert (attacked["score"] >= meta["thresholds"]["supervised"]["high"]).mean() > 0.5


def test_meta_records_what_it_was_trained_on(data: Data, trained_cli: Run) -> None:
    meta = json.loads((trained_cli.out / META_FILE).read_text())
    assert meta["feature_names"] == list(FEATURE_NAMES)
    assert len(meta["fill"]) == N_FEATURES and all(math.isfinite(v) for v in meta["fill"])
    splits = meta["splits"]
    assert (splits["train_rows"], splits["validation_rows"], splits["holdout_rows"]) == (
        len(data.train), len(data.val), len(data.hold))
    assert splits["train_attack_rows"] == int(data.train["label"].sum())
    assert splits["holdout_from"] == data.t_test
    training = meta["training"]
    assert training["events"] == data.recorded.events
    assert training["scored_events"] == len(data.recorded.frame)
    assert training["labelled_rows"] == len(data.rows)
    assert training["sessions"] == data.rows["session"].nunique()
    assert training["users"] == data.rows["user"].nunique()
    assert (training["from"], training["until"]) == (data.rows["at"].min(), data.rows["at"].max())
    ev = meta["evaluation"]
    assert {"holdout_events", "holdout_attack_events", "supervised", "baseline", "rules",
            "permutation_importance"} <= set(ev)
    assert ev["holdout_events"] == len(data.hold)
    assert ev["holdout_attack_events"] == int(data.hold["label"].sum())
    for model in ("supervised", "baseline"):
        assert {"roc_auc", "pr_auc", "prevalence", "benign_sessions", "benign_sessions_high",
                "recall_at_high"} <= set(ev[model]), model
        assert 0.0 <= ev[model]["roc_auc"] <= 1.0
    assert set(ev["permutation_importance"]) == set(FEATURE_NAMES)
    assert {"supervised", "baseline"} <= set(meta["thresholds"])
    assert meta["source"] == {"kind": "simulation", "seeds": [1, 2], "users": 300, "history_days": 1,
                              "edge_fingerprints": 0.5, "train_from": START.timestamp()}
    assert splits["train_from"] == START.timestamp()
    assert data.train["at"].min() >= START.timestamp()


# -- labels ---------------------------------------------------------------------------------------


def _truth() -> Truth:
    from datetime import UTC, datetime

    return Truth(seed=0, users=3, start=datetime(2026, 3, 2, tzinfo=UTC), attacks=[
        AttackTruth(id="a1", cls="replay_same_isp_interleaved", tenant="t", first_event="e1",
                    start=1000.0, sessions=["victim-after-login", "attacker-own"]),
    ], benign=[
        BenignTruth(session="pre", user="u1", kind="ordinary", tenant="t",
                    hashes=["pre", "after-login", "after-rotation"]),
        BenignTruth(session="solo", user="u2", kind="commuter", tenant="t"),
        # The victim's session was benign until the attack: it is labelled attacked.
        BenignTruth(session="victim", user="u3", kind="ordinary", tenant="t",
                    hashes=["victim", "victim-after-login"]),
    ])


def test_simulation_labels() -> None:
    labels = simulation_labels(_truth()).set_index("session")
    assert list(labels.reset_index().columns) == list(COLUMNS)
    assert labels.loc["after-rotation"].tolist() == [0, "ordinary", 0.0]
    assert labels.loc["solo"].tolist() == [0, "commuter", 0.0]         # no hashes: its id
    assert labels.loc["victim"].tolist() == [0, "ordinary", 0.0]
    assert labels.loc["victim-after-login"].tolist() == [1, "replay_same_isp_interleaved", 1000.0]
    assert labels.loc["attacker-own"].tolist() == [1, "replay_same_isp_interleaved", 1000.0]
    assert labels.index.is_unique and len(labels) == 7
    # On a real simulation: every attacked session 1 from its attack's start, the rest 0.
    sim = simulate(users=60, seed=3, history_days=0)
    real = simulation_labels(sim.truth).set_index("session")
    for attack in sim.truth.attacks:
        for s in attack.sessions:
            assert real.loc[s, "label"] == 1 and real.loc[s, "start"] == attack.start
    attacked = {s for a in sim.truth.attacks for s in a.sessions}
    assert (real.loc[~real.index.isin(attacked), "label"] == 0).all()


def test_a_session_in_two_attacks_counts_from_the_first() -> None:
    truth = _truth()
    truth.attacks.append(AttackTruth(id="a2", cls="ato_sensitive_first", tenant="t",
                                     first_event="e9", start=5000.0, sessions=["victim-after-login"]))
    labels = simulation_labels(truth).set_index("session")
    assert labels.loc["victim-after-login", "start"] == 1000.0


def test_label_rows_drops_a_hijacked_sessions_rows_before_the_attack() -> None:
    frame = pd.DataFrame({
        "session": ["victim-after-login"] * 3 + ["after-login", "unknown"],
        "at": [900.0, 1000.0, 1100.0, 500.0, 700.0],
        "event_id": ["v1", "v2", "v3", "b1", "x1"],
    })
    rows = label_rows(frame, simulation_labels(_truth()))
    assert rows.set_index("event_id")["label"].to_dict() == {"v2": 1, "v3": 1, "b1": 0}


def test_archive_labels() -> None:
    verdicts = pd.DataFrame({"session": ["s-confirmed", "s-dismissed", "s-audited-and-confirmed", ""],
                             "label": ["confirmed", "dismissed", "confirmed", "confirmed"]})
    audit = pd.DataFrame({"session": ["s-audit", "s-audited-and-confirmed"]})
    labels = archive_labels(verdicts, audit).set_index("session")
    assert list(labels.reset_index().columns) == list(COLUMNS)
    assert labels["label"].to_dict() == {"s-audit": 0, "s-audited-and-confirmed": 1,
                                         "s-confirmed": 1, "s-dismissed": 0}
    assert labels.loc["s-audit", "cls"] == "audit_sample"
    assert labels.loc["s-dismissed", "cls"] == "dismissed"
    assert labels.loc["s-audited-and-confirmed", "cls"] == "confirmed"
    assert (labels["start"] == 0.0).all()
    # Audit listed after the verdicts changes nothing: confirmed still wins.
    again = archive_labels(verdicts.iloc[::-1], audit.iloc[::-1]).set_index("session")
    assert again.sort_index()["label"].equals(labels.sort_index()["label"])


# -- the commands ---------------------------------------------------------------------------------


def _table(stdout: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in stdout.splitlines() if line.strip()}


def test_train_command_prints_the_report_and_writes_a_loadable_artefact(trained_cli: Run) -> None:
    code, stdout, stderr = trained_cli.result()
    assert code == 0
    meta = json.loads((trained_cli.out / META_FILE).read_text())
    ev = meta["evaluation"]
    models = [m for m in ("supervised", "baseline", "isolation") if m in ev]
    table = _table(stdout)
    assert table["roc_auc"] == [f"{ev[m]['roc_auc']:.4f}" for m in models]
    assert ev["supervised"]["roc_auc"] > 0.8
    classes = set(ev["rules"]["recall"]) | {c for m in models for c in ev[m]["recall_at_high"]}
    assert "replay_same_isp_interleaved" in classes
    for cls in classes:
        assert cls in table, cls
        r = ev["supervised"]["recall_at_high"].get(cls)
        if r:
            assert table[cls][:2] == [f"{r['caught']}/{r['sessions']}", f"{r['recall']:.2f}"], cls
    assert f"artefact written to {trained_cli.out}" in stderr
    model = load_model(trained_cli.out)
    assert model.thresholds == meta["thresholds"]["supervised"]


def test_model_report_prints_the_same_table(trained_cli: Run) -> None:
    _, train_stdout, _ = trained_cli.result()
    report = Run(_cli("model-report", str(trained_cli.out)), trained_cli.out)
    try:
        code, stdout, stderr = report.result()
    finally:
        _stop(report)
    assert code == 0, stderr
    assert stdout == train_stdout


def test_model_report_refuses_a_tampered_artefact(background: dict[str, Run]) -> None:
    run = background["tampered"]
    code, stdout, stderr = run.result()
    # SessionwatchError (ModelError is a ConfigError) -> exit 2, one line on stderr, no traceback.
    assert code == 2
    assert stdout == ""
    assert stderr.startswith("sessionwatch model-report: ")
    assert str(run.out) in stderr and "SHA-256" in stderr
    assert "Traceback" not in stderr
