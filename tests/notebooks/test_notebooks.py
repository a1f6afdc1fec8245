"""Every notebook under notebooks/: committed without outputs, and its code runs top to bottom
against a chDB archive seeded with the incident of tests/integration/test_queries.py.

No server: chDB is in-process. The code cells run with `exec`, so no Jupyter is needed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from integration.test_queries import archive_incident

from storage.clickhouse import ChdbBackend

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


@pytest.fixture
def seeded_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A chDB directory holding the incident, a few hours ago (the notebooks look back from
    now), named by SESSIONWATCH_CHDB_DIR as an analyst would."""
    path = str(tmp_path / "archive")
    backend = ChdbBackend(path)
    try:
        base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
        archive_incident(backend, base)
    finally:
        backend.close()  # chDB: one open directory per process; the notebook opens it next
    monkeypatch.delenv("SESSIONWATCH_CLICKHOUSE", raising=False)
    monkeypatch.setenv("SESSIONWATCH_CHDB_DIR", path)
    monkeypatch.setenv("MPLBACKEND", "Agg")  # should a notebook plot: never a window
    return path


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
