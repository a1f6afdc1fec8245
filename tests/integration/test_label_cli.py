"""`sessionwatch label` end to end against chDB: in-process through `main([...])` and as a
process, on an archive written before the `feedback` table existed (the command adds it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_feedback_schema import migrate_to_version_1

from producers.contract import Action, Finding, Revocation, Scope, Severity, decode_event
from sessionwatch.cli import main
from storage import feedback
from storage.clickhouse import ChdbBackend
from storage.clickhouse.rows import event_row, finding_row, revocation_row

pytestmark = pytest.mark.integration

T = datetime(2031, 4, 1, 9, 0, tzinfo=UTC)
TENANT = "label-cli"
REVOCATION = "r-label-cli-1"
FINDING = "f-label-cli-1"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A chDB archive at schema version 1 holding one hijacked session."""
    path = str(tmp_path_factory.mktemp("label") / "archive")
    event = decode_event(json.dumps({
        "schema": "sessionwatch.event/1", "id": "label-cli-e1", "type": "session.activity",
        "time": T.isoformat(), "tenant": TENANT, "session": "s-label", "user": "alice",
        "ip": "167.99.10.10"}))
    found = Finding(id=FINDING, tenant=TENANT, session="s-label", user="alice", ip=event.ip,
                    detector="session.ip_change", severity=Severity.HIGH, summary="new address",
                    evidence={}, event_time=T, events=[event.id])
    revoked = Revocation(id=REVOCATION, tenant=TENANT, scope=Scope.SESSION, session="s-label",
                         user="alice", source=None, action=Action.REVOKE, not_before=None,
                         expires=None, reasons=[found.reason()], event_time=T,
                         decided_at=T + timedelta(seconds=1), events=[event.id])
    backend = ChdbBackend(path)
    try:
        migrate_to_version_1(backend)
        backend.insert("events", [event_row(event)])
        backend.insert("findings", [finding_row(found)])
        backend.insert("revocations", [revocation_row(revoked)])
    finally:
        backend.close()
    return path


def recorded(path: str, target: str):
    backend = ChdbBackend(path)
    try:
        return feedback.verdicts(backend, target=target)
    finally:
        backend.close()


def test_label_records_a_revocation_verdict_and_adds_the_table(archive, capsys, monkeypatch) -> None:
    monkeypatch.setenv("USER", "tester")
    code = main(["label", "--revocation", REVOCATION, "--verdict", "confirmed",
                 "--note", "cookie replayed from a hosting provider", "--chdb", archive])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"sessionwatch label: confirmed revocation {REVOCATION} "
                               f"(tenant {TENANT}, session s-label, user alice) by tester at ")
    assert "note of 39 characters" in lines[0]
    assert "hosting provider" not in out + err  # the note is stored, not echoed
    rows = recorded(archive, REVOCATION)
    assert list(zip(rows["verdict"], rows["analyst"], rows["note"], strict=True)) == [
        ("confirmed", "tester", "cookie replayed from a hosting provider")]
    assert lines[0].endswith(f"verdict {rows['id'][0][:16]}")


def test_label_a_finding_with_an_analyst(archive, capsys) -> None:
    assert main(["label", "--finding", FINDING, "--verdict", "dismissed", "--analyst", "ann",
                 "--chdb", archive]) == 0
    assert capsys.readouterr().out.startswith(f"sessionwatch label: dismissed finding {FINDING} ")
    rows = recorded(archive, FINDING)
    assert set(zip(rows["verdict"], rows["analyst"], rows["note"], strict=True)) >= {
        ("dismissed", "ann", "")}


@pytest.mark.parametrize(("argv", "message"), [
    (["--revocation", "r-nope"], "revocation 'r-nope' was not found in the archive"),
    (["--revocation", FINDING], f"revocation '{FINDING}' was not found in the archive"),
    (["--finding", REVOCATION], f"finding '{REVOCATION}' was not found in the archive"),
])
def test_an_unknown_target_exits_2_and_says_so(archive, capsys, argv, message) -> None:
    assert main(["label", *argv, "--verdict", "confirmed", "--analyst", "ann",
                 "--chdb", archive]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sessionwatch label: {message}")
    assert "storage.queries.revocations" in err


def test_bad_flags_exit_2_with_a_clear_message(archive, capsys, monkeypatch) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["label", "--revocation", REVOCATION, "--verdict", "maybe", "--chdb", archive])
    assert exited.value.code == 2
    assert "invalid choice: 'maybe'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["label", "--revocation", REVOCATION, "--finding", FINDING, "--verdict",
              "confirmed", "--chdb", archive])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    monkeypatch.delenv("USER", raising=False)
    assert main(["label", "--revocation", REVOCATION, "--verdict", "confirmed",
                 "--chdb", archive]) == 2
    assert "--analyst" in capsys.readouterr().err
    assert main(["label", "--revocation", REVOCATION, "--verdict", "confirmed", "--analyst",
                 "ann", "--note", "x" * 2_001, "--chdb", archive]) == 2
    assert "note: 2001 characters; at most 2000" in capsys.readouterr().err
    assert main(["label", "--revocation", REVOCATION, "--verdict", "confirmed", "--analyst",
                 "ann"]) == 2
    assert "no archive configured" in capsys.readouterr().err


def test_label_as_a_process(archive) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONWATCH_")}
    env["USER"] = "proc-user"
    done = subprocess.run(
        [sys.executable, "-m", "sessionwatch", "label", "--finding", FINDING, "--verdict",
         "confirmed", "--chdb", archive], capture_output=True, text=True, env=env, cwd=ROOT,
        timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"sessionwatch label: confirmed finding {FINDING} (tenant "
                                  f"{TENANT}, session s-label, user alice) by proc-user at ")
    unknown = subprocess.run(
        [sys.executable, "-m", "sessionwatch", "label", "--revocation", "r-nope", "--verdict",
         "dismissed", "--chdb", archive], capture_output=True, text=True, env=env, cwd=ROOT,
        timeout=120)
    assert unknown.returncode == 2
    assert "was not found in the archive" in unknown.stderr
    rows = recorded(archive, FINDING)
    assert ("confirmed", "proc-user") in set(zip(rows["verdict"], rows["analyst"], strict=True))
