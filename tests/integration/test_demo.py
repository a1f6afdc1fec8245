"""The README's demo command, run as a user would (a smaller population to keep CI fast)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_and_scores_itself(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sessionwatch", "demo", "--users", "80", "--seed", "3"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,  # it archives to ./.sessionwatch
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    precision = re.search(r"precision\s*│\s*([0-9.]+)", out)
    assert precision and float(precision.group(1)) == 1.0, out
    assert re.search(r"benign sessions revoked\s*│\s*0\b", out), out
    recall = re.search(r"recall \(all replay kinds\)\s*│\s*([0-9.]+)", out)
    assert recall and float(recall.group(1)) == 1.0, out
    assert re.search(r"latency p50 / p99\s*│\s*[0-9.]+ ms / [0-9.]+ ms", out), out
    # and it archived everything into chDB, where the notebooks look by default
    archived = re.search(r"archive \(chDB\) (\S+): (\d+) events, (\d+) findings, (\d+) revocations",
                         out.replace("\n", " "))
    assert archived, out
    assert archived.group(1).endswith(".sessionwatch/archive")
    events, findings, revocations = (int(archived.group(i)) for i in (2, 3, 4))
    sent = int(re.search(r"events sent\s*│\s*(\d+)", out).group(1))
    assert events == sent and findings > 0 and revocations > 0
