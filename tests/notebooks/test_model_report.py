"""The model report: models/report.py's tables and figures on a trained artefact, and
notebooks/model_report.ipynb executed in a real Jupyter kernel (nbclient + ipykernel), every
plotting cell producing a PNG.

The artefact is the session fixture `trained_model` (tests/conftest.py, ~9 s).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from models import report
from models.artefact import META_FILE, ModelError
from models.features import FEATURE_NAMES
from sessionwatch.simulation import ATTACK_CLASSES

matplotlib.use("Agg")  # the plot_* tests below: never a window

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "model_report.ipynb"


@pytest.fixture(scope="module")
def loaded(trained_model: Path) -> report.Report:
    return report.load_report(trained_model)


def copy_of(trained_model: Path, tmp_path: Path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(trained_model, out)
    return out


# -- the notebook -------------------------------------------------------------------------------

def test_notebook_runs_in_a_kernel_and_every_plot_cell_draws(
        trained_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel inherits the environment: the variable the parameter cell reads, and an MPLBACKEND
    # a CI machine may export (Agg), which `%matplotlib inline` must override.
    monkeypatch.setenv("SESSIONWATCH_MODEL", str(trained_model))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    plot_cells = [i for i, c in enumerate(notebook.cells)
                  if c.cell_type == "code" and "plot" in c.metadata.get("tags", [])]
    assert len(plot_cells) >= 5, "roc, pr, recall, importances, scores: tag each with 'plot'"

    # Raises CellExecutionError (with the cell's traceback) if any cell fails.
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    for i, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        assert not [o for o in cell.outputs if o.output_type == "error"], f"cell {i} errored"
        images = [o for o in cell.outputs if o.output_type == "display_data" and "image/png" in o.data]
        if i in plot_cells:
            assert len(images) == 1, f"cell {i} ({cell.id}): {len(images)} figures, want exactly one"
            assert not [o for o in cell.outputs if o.output_type == "execute_result"], \
                f"cell {i} ({cell.id}): prints a value beside its figure (end it with ';')"
        else:
            assert not images, f"cell {i} ({cell.id}) draws a figure but is not tagged 'plot'"
    load_cell = next(c for c in notebook.cells if c.get("id") == "load")
    assert str(trained_model) in load_cell.outputs[0].data["text/plain"]


def test_notebook_metadata_routes_it_away_from_the_archive_test() -> None:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert notebook["metadata"]["sessionwatch"]["needs"] == "model"
    tags = [t for c in notebook["cells"] for t in c["metadata"].get("tags", [])]
    assert tags.count("parameters") == 1


# -- load_report --------------------------------------------------------------------------------

def test_load_report_reads_the_verified_meta_and_the_holdout(loaded: report.Report,
                                                            trained_model: Path) -> None:
    assert loaded.meta == json.loads((trained_model / META_FILE).read_text())
    assert {"evaluation", "thresholds", "training", "splits", "source"} <= loaded.meta.keys()
    assert len(loaded.holdout) == loaded.meta["evaluation"]["holdout_events"]
    assert loaded.holdout["session"].map(type).eq(str).all()
    assert loaded.models == ("supervised", "baseline", "isolation")


def test_a_tampered_artefact_is_refused(trained_model: Path, tmp_path: Path) -> None:
    out = copy_of(trained_model, tmp_path)
    data = bytearray((out / "supervised.skops").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "supervised.skops").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="supervised.skops"):
        report.load_report(out)


def test_edited_figures_are_refused(trained_model: Path, tmp_path: Path) -> None:
    out = copy_of(trained_model, tmp_path)
    meta = json.loads((out / META_FILE).read_text())
    meta["evaluation"]["supervised"]["roc_auc"] = 1.0
    (out / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelError):
        report.load_report(out)


def test_a_holdout_from_another_run_is_refused(trained_model: Path, tmp_path: Path) -> None:
    # holdout.csv.gz is not hashed in model.json; the report checks it against the figures.
    out = copy_of(trained_model, tmp_path)
    holdout = pd.read_csv(out / report.HOLDOUT_FILE)
    holdout["score_supervised"] = holdout["score_supervised"].to_numpy()[::-1]
    holdout.to_csv(out / report.HOLDOUT_FILE, index=False)
    with pytest.raises(ModelError, match="another training run"):
        report.load_report(out)
    holdout.iloc[1:].to_csv(out / report.HOLDOUT_FILE, index=False)
    with pytest.raises(ModelError, match="another training run"):
        report.load_report(out)
    (out / report.HOLDOUT_FILE).unlink()
    with pytest.raises(ModelError, match="missing"):
        report.load_report(out)


# -- the tables ---------------------------------------------------------------------------------

def test_roc_curves_are_monotone_from_corner_to_corner(loaded: report.Report) -> None:
    curves = report.roc_curves(loaded)
    assert list(curves.columns) == ["model", "fpr", "tpr"]
    assert list(curves["model"].unique()) == list(loaded.models)
    for model, part in curves.groupby("model"):
        assert (np.diff(part["fpr"]) >= 0).all() and (np.diff(part["tpr"]) >= 0).all(), model
        assert part[["fpr", "tpr"]].iloc[0].tolist() == [0.0, 0.0]
        assert part[["fpr", "tpr"]].iloc[-1].tolist() == [1.0, 1.0]
        # The area under the curve is the AUC model.json recorded for it.
        auc = np.trapezoid(part["tpr"], part["fpr"])
        assert auc == pytest.approx(loaded.meta["evaluation"][model]["roc_auc"], abs=1e-4)


def test_pr_curves_have_recall_descending_to_zero(loaded: report.Report) -> None:
    curves = report.pr_curves(loaded)
    assert list(curves.columns) == ["model", "recall", "precision"]
    for model, part in curves.groupby("model"):
        assert (np.diff(part["recall"]) <= 0).all(), model
        assert part["recall"].iloc[0] == 1.0 and part["recall"].iloc[-1] == 0.0
        assert part["precision"].between(0, 1).all()
        # At full recall, precision is the prevalence among the events this model scored
        # (every one flagged): a tenant without an isolation forest has no isolation score.
        scored = loaded.holdout[loaded.holdout[f"score_{model}"].notna()]
        assert part["precision"].iloc[0] == pytest.approx(scored["label"].mean())


def test_curves_skip_events_without_a_score(loaded: report.Report) -> None:
    holdout = loaded.holdout.copy()
    holdout.loc[holdout.index[::2], "score_isolation"] = np.nan
    partial = report.Report(directory=loaded.directory, meta=loaded.meta, holdout=holdout)
    curves = report.roc_curves(partial)
    assert not curves[["fpr", "tpr"]].isna().any().any()
    holdout["score_isolation"] = np.nan
    none = report.Report(directory=loaded.directory, meta=loaded.meta, holdout=holdout)
    assert "isolation" not in set(report.roc_curves(none)["model"])
    assert "isolation" not in set(report.pr_curves(none)["model"])


def test_recall_table_has_a_row_per_attack_class(loaded: report.Report) -> None:
    table = report.recall_table(loaded)
    attacked = loaded.holdout.loc[loaded.holdout["label"] == 1, "cls"]
    assert list(table.index) == sorted(attacked.unique())
    assert set(table.index) <= set(ATTACK_CLASSES)
    assert "replay_same_isp_interleaved" in table.index
    assert list(dict.fromkeys(table.columns.get_level_values(0))) == [
        "supervised", "baseline", "isolation", "rules"]
    for source in ("supervised", "baseline", "isolation", "rules"):
        # A class a model scored no session of (a tenant without an isolation forest) is NA.
        part = table[source].dropna()
        assert not part.empty, source
        assert ((part["caught"] <= part["sessions"]) & (part["recall"].between(0, 1))).all()
        assert (part["caught"] / part["sessions"]).round(4).tolist() == part["recall"].tolist()
    # Sessions per class: every attacked holdout session once.
    per_class = loaded.holdout[loaded.holdout["label"] == 1].groupby("cls")["session"].nunique()
    assert table[("supervised", "sessions")].tolist() == per_class.reindex(table.index).tolist()


def test_importances_name_every_feature_in_words(loaded: report.Report) -> None:
    frame = report.importances(loaded)
    assert list(frame.columns) == ["feature", "importance", "words"]
    assert sorted(frame["feature"]) == sorted(FEATURE_NAMES)
    assert (np.diff(frame["importance"]) <= 0).all()
    assert frame["words"].str.len().gt(0).all()
    assert (frame["words"] != frame["feature"]).all(), "a feature without FEATURE_WORDS"


def test_score_distribution_is_one_row_per_session(loaded: report.Report) -> None:
    sessions = report.score_distribution(loaded)
    assert sessions["session"].is_unique
    assert len(sessions) == loaded.holdout["session"].nunique()
    assert set(sessions["group"]) == {"benign", "attacked"}
    top = loaded.holdout.groupby("session")["score_supervised"].max()
    assert sessions.set_index("session")["score"].equals(top.rename("score"))
    th = report.thresholds(loaded)
    assert th["medium"] < th["high"]
    # The held-out benign sessions at or above high are the ones model.json counted.
    benign = sessions[sessions["group"] == "benign"]
    assert int((benign["score"] >= th["high"]).sum()) == \
        loaded.meta["evaluation"]["supervised"]["benign_sessions_high"]


def test_summary_lists_each_model_with_its_thresholds(loaded: report.Report) -> None:
    table = report.summary(loaded)
    assert list(table.index) == ["supervised", "baseline", "isolation"]
    assert (table["medium"] < table["high"]).all()
    assert table.loc["supervised", "roc_auc"] == loaded.meta["evaluation"]["supervised"]["roc_auc"]


@pytest.mark.parametrize("name", ["roc", "pr", "recall", "importances", "scores"])
def test_each_plot_draws_into_the_axes_it_is_given(loaded: report.Report, name: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    try:
        assert getattr(report, f"plot_{name}")(loaded, ax=ax) is ax
        assert ax.get_title() and (ax.get_xlabel() or name == "recall")
        assert len(plt.get_fignums()) == 1, "a plot opened a figure of its own"
    finally:
        plt.close("all")
