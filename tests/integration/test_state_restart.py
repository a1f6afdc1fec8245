"""State survives a restart with the RocksDB store: stopped cleanly, killed, or on a new disk.

Sessions log in, the worker goes away, the hijacks come after it is back: only the state from
before the restart can connect a hijack to its login. Three ways back:
- SIGTERM, the same data directory (RocksDB opens warm; Quix checks it against the changelog -
  whose end the embedded broker under-reports in ListOffsets, streams/log_end.py);
- SIGKILL, the same data directory (what was not committed is processed again, deduped by id);
- SIGTERM, an empty data directory (the state comes back from the changelog topic alone).
"""

from __future__ import annotations

import secrets
import uuid

import pytest
from conftest import caught_up, make_event, read_until, send
from factories import CURL, DIGITALOCEAN

from sessionwatch.processes import WorkerProcess

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("how", ["sigterm", "sigkill", "new-disk"])
def test_rocksdb_state_survives_a_restart(broker, producer, tmp_path, how):
    app_id = f"restart-{how}-{uuid.uuid4().hex[:6]}"

    def worker(disk: str, name: str) -> WorkerProcess:
        return WorkerProcess(broker.bootstrap, tmp_path / f"{name}.log", app_id=app_id,
                             partitions=2, store="rocksdb", data_dir=str(tmp_path / disk))

    sessions = [secrets.token_hex(32) for _ in range(30)]
    first = worker("disk-1", "first")
    try:
        first.wait_ready()
        send(producer, [make_event("session.authenticated", session=s, at=0) for s in sessions])
        caught_up(broker.bootstrap, app_id)
    finally:
        first.kill() if how == "sigkill" else first.stop()
    assert any((tmp_path / "disk-1").rglob("CURRENT")), "no RocksDB store on disk"

    second = worker("disk-2" if how == "new-disk" else "disk-1", "second")
    try:
        second.wait_ready()
        send(producer, [make_event(session=s, ip=DIGITALOCEAN, user_agent=CURL, at=30)
                        for s in sessions])
        records = read_until(broker.bootstrap, ["sessionwatch.revocations"],
                             lambda r: set(sessions) <= {v.get("session") for _, v in r},
                             timeout_s=60)
        revoked = {v.get("session") for _, v in records}
        assert set(sessions) <= revoked, (len(set(sessions) - revoked), second.tail(30))
        log = (tmp_path / "second.log").read_text(errors="replace")
        assert "InvalidStoreChangelogOffset" not in log and "Traceback" not in log, log[-3000:]
    finally:
        second.stop()
