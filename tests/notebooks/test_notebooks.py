"""Every notebook under notebooks/: committed without outputs, its code runs top to bottom
against the chDB archive of conftest.py (the incident of tests/integration/test_queries.py, after
simulated traffic with verdicts), and every archive notebook runs in a real Jupyter kernel
(nbclient) with an image from each cell tagged "plot".

No server: chDB is in-process. The first run uses `exec` (no Jupyter), to look at its variables.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted(p for p in (Path(__file__).resolve().parents[2] / "notebooks").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "no notebooks found under notebooks/"


def load(path: Path) -> dict:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert notebook.get("nbformat") == 4, f"{path.name}: not nbformat 4"
    assert isinstance(notebook.get("nbformat_minor"), int)
    assert isinstance(notebook.get("metadata"), dict)
    assert isinstance(notebook.get("cells"), list) and notebook["cells"]
    return notebook


def source(cell: dict) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_and_has_no_outputs(path: Path) -> None:
    notebook = load(path)
    ids = []
    for i, cell in enumerate(notebook["cells"]):
        where = f"{path.name}, cell {i}"
        assert cell.get("cell_type") in ("markdown", "code", "raw"), where
        assert isinstance(cell.get("metadata"), dict), where
        text = cell.get("source")
        assert isinstance(text, str) or (
            isinstance(text, list) and all(isinstance(line, str) for line in text)), where
        if "id" in cell:
            ids.append(cell["id"])
        if cell["cell_type"] == "code":
            # Outputs hold data from someone's archive and churn the diffs: clear them before
            # committing (Jupyter: Edit > Clear Outputs of All Cells).
            assert cell.get("outputs") == [], f"{where}: outputs committed"
            assert cell.get("execution_count") is None, f"{where}: execution count committed"
        else:
            assert "outputs" not in cell and "execution_count" not in cell, where
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate cell ids"
    if notebook["nbformat_minor"] >= 5:
        assert len(ids) == len(notebook["cells"]), f"{path.name}: nbformat 4.5 needs cell ids"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path: Path, seeded_archive: str) -> None:
    if load(path)["metadata"].get("sessionwatch", {}).get("needs", "archive") != "archive":
        pytest.skip("reads a trained artefact, not an archive: run by its own test")
    namespace: dict = {"__name__": "__main__"}
    try:
        for i, cell in enumerate(load(path)["cells"]):
            if cell["cell_type"] == "code":
                exec(compile(source(cell), f"{path.name}, cell {i}", "exec"), namespace)
    finally:
        archive = namespace.get("archive")
        if archive is not None:
            archive.close()  # also when a cell failed: free chDB for the next test
    if path.name == "investigate_session.ipynb":
        # It found the incident, not an empty archive somewhere else.
        assert repr(namespace["archive"]) == f"ChdbBackend({seeded_archive!r})"
        assert namespace["chosen"]["id"] == "r-revoke-acme-e05"
        assert list(namespace["timeline"]["kind"]).count("revocation") == 1
        # The map located the laptop and the hosting provider (the bundled GeoLite2 file).
        located = namespace["session_places"].dropna(subset=["lat"])
        assert set(located["ip"]) == {"73.162.10.20", "167.99.10.10"}
        assert located["km_from_first"].max() > 1_000
    if path.name == "tune_policy.ipynb":
        sweep = namespace["sweep"]
        assert list(sweep["value"]) == namespace["VALUES"]
        # A lower limit adds decisions the archive does not hold; the verdicts were matched.
        assert sweep["decisions"].iloc[0] > sweep["decisions"].iloc[-1]
        assert sweep["confirmed"].min() > 0 and sweep["benign"].min() > 0
        assert {"added", "removed", "same"} <= set(namespace["whatif"]["change"])


ARCHIVE_NOTEBOOKS = [p for p in NOTEBOOKS
                     if load(p)["metadata"].get("sessionwatch", {}).get("needs", "archive") == "archive"]


def test_the_archive_notebooks_are_there() -> None:
    assert {p.name for p in ARCHIVE_NOTEBOOKS} >= {
        "investigate_session.ipynb", "fleet_overview.ipynb", "tune_policy.ipynb"}


@pytest.mark.parametrize("path", ARCHIVE_NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_a_kernel_and_every_plot_cell_draws(path: Path, seeded_archive: str) -> None:
    notebook = nbformat.read(path, as_version=4)
    plot_cells = [i for i, c in enumerate(notebook.cells)
                  if c.cell_type == "code" and "plot" in c.metadata.get("tags", [])]
    promised = notebook.metadata["sessionwatch"]["plots"]
    assert len(plot_cells) >= promised, f"{path.name}: {len(plot_cells)} plot cells, promises {promised}"
    assert promised >= {"investigate_session.ipynb": 3, "fleet_overview.ipynb": 12,
                        "tune_policy.ipynb": 2}.get(path.name, 1)

    # Raises CellExecutionError (with the cell's traceback) if any cell fails.
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()

    for i, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        where = f"{path.name}, cell {i} ({cell.id})"
        assert not [o for o in cell.outputs if o.output_type == "error"], f"{where} errored"
        images = [o for o in cell.outputs if o.output_type in ("display_data", "execute_result")
                  and "image/png" in o.get("data", {})]
        if i in plot_cells:
            assert len(images) == 1, f"{where}: {len(images)} figures, want exactly one"
            assert images[0].data["image/png"], f"{where}: an empty image"
        else:
            assert not images, f"{where} draws a figure but is not tagged 'plot'"
    open_cell = next(c for c in notebook.cells if c.get("id") == "open")
    assert f"ChdbBackend({seeded_archive!r})" in open_cell.outputs[0].data["text/plain"]
