"""`sessionwatch train --from-archive`: labels from analysts' verdicts and an audit sample.

A chDB archive holds simulated traffic with what the rules decided about it (as the archiver
would have written it); an analyst confirms the revocations of attacked sessions and dismisses
the others with `record_verdict` (what `sessionwatch label` calls). The command must build an
artefact the worker accepts, with the labels' counts in its model.json.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from models.load import load_model
from sessionwatch.cli import main
from sessionwatch.simulation import START, simulate
from storage.clickhouse import ChdbBackend
from storage.clickhouse.rows import event_row, finding_row, revocation_row
from storage.feedback import record_verdict
from streams.local import LocalRunner


def test_train_from_an_archive_with_verdicts(tmp_path: Path, capsys) -> None:
    sim = simulate(users=300, seed=21, history_days=1, edge_fingerprints=0.5)
    runner = LocalRunner()
    findings, revocations = [], []
    for event in [*sim.events, None]:
        f, r = runner.process(event) if event is not None else runner.finish()
        findings += f
        revocations += r
    attacked = {s for a in sim.truth.attacks for s in a.sessions}
    archive = str(tmp_path / "archive")
    backend = ChdbBackend(archive)
    try:
        backend.migrate()
        backend.insert("events", [event_row(e) for e in sim.events])
        backend.insert("findings", [finding_row(f) for f in findings])
        backend.insert("revocations", [revocation_row(r) for r in revocations])
        confirmed = dismissed = 0
        for r in revocations:
            if r.session is None:
                continue
            verdict = "confirmed" if r.session in attacked else "dismissed"
            record_verdict(backend, r.id, verdict, "analyst@example", note="test")
            confirmed += verdict == "confirmed"
            dismissed += verdict == "dismissed"
    finally:
        backend.close()
    assert confirmed >= 20
    out = tmp_path / "model"
    since = (START - timedelta(days=2)).isoformat()
    until = (START + timedelta(days=1)).isoformat()
    code = main(["train", "--from-archive", "--chdb", archive, "--since", since,
                 "--until", until, "--audit-fraction", "0.5", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "roc_auc" in printed.out
    model = load_model(out)  # verified exactly as the worker verifies it
    assert model.thresholds["high"] >= model.thresholds["medium"]
    meta = json.loads((out / "model.json").read_text())
    assert meta["source"]["kind"] == "archive"
    assert meta["source"]["confirmed"] > 0 and meta["source"]["audit_sample"] > 0
    assert meta["training"]["labelled_rows"] > 0


def test_train_from_an_empty_archive_says_so(tmp_path: Path, capsys) -> None:
    code = main(["train", "--from-archive", "--chdb", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "model")])
    err = capsys.readouterr().err
    assert code == 2
    assert "sessionwatch train:" in err and "Traceback" not in err
