"""`kill -USR1 <worker pid>`: the worker logs its diagnostics and keeps going."""

from __future__ import annotations

import os
import signal
import time

import pytest
from integration.conftest import worker_log

pytestmark = pytest.mark.integration


def test_sigusr1_logs_partitions_clocks_and_counters_without_stopping(worker):
    header = "sessionwatch.worker: diagnostics:"
    before = worker_log(worker).count(header)
    os.kill(worker.proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while worker_log(worker).count(header) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    log = worker_log(worker)
    report = log[log.rindex(header):]
    assert "--- thread MainThread" in report
    assert "sessionwatch.events[" in report and "fetched_high_watermark=" in report
    assert "committed=" in report and "counters: received=" in report
    assert worker.proc.poll() is None


def test_without_a_model_the_learned_score_is_off_and_says_so_once(worker):
    log = worker_log(worker)
    assert log.count("session.anomaly: off") == 1, log[-2000:]
