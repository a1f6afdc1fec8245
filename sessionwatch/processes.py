"""`sessionwatch worker` and `sessionwatch apply` as child processes (demo, evaluation, tests)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from producers.errors import SessionwatchError


class ChildProcess:
    """A `sessionwatch …` command in its own process group, logging to a file."""

    name = "process"
    ready_pattern = rb""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sessionwatch", *args], env=dict(os.environ, **env),
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SessionwatchError(f"the {self.name} exited early:\n{self.tail()}")
            if re.search(self.ready_pattern, self.log_path.read_bytes()):
                return
            time.sleep(0.1)
        raise SessionwatchError(
            f"the {self.name} was not ready within {timeout_s:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_bytes().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, no goodbye: what a crash or an OOM kill looks like to the group."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log.close()


class WorkerProcess(ChildProcess):
    """`sessionwatch worker`."""

    name = "worker"
    ready_pattern = rb"worker: ready"

    def __init__(self, bootstrap: str, log_path: Path, app_id: str = "sessionwatch-demo",
                 partitions: int = 2, policy: Path | None = None,
                 extra_args: Sequence[str] = (), **settings: str) -> None:
        """`settings`: more SESSIONWATCH_* variables without the prefix (store="rocksdb", ...);
        `extra_args`: more flags (--metrics-port 9464, --log-format json, ...)."""
        env = {"SESSIONWATCH_BOOTSTRAP": bootstrap, "SESSIONWATCH_APP_ID": app_id,
               "SESSIONWATCH_PARTITIONS": str(partitions), "SESSIONWATCH_LOG_LEVEL": "info"}
        env.update({f"SESSIONWATCH_{k.upper()}": str(v) for k, v in settings.items()})
        args = ["worker"]
        if policy is not None:  # the worker reads --policy FILE (also SESSIONWATCH_POLICY)
            args += ["--policy", str(policy)]
        super().__init__([*args, *extra_args], env, log_path)


class _ServiceProcess(ChildProcess):
    """A `sessionwatch <command>` configured by SESSIONWATCH_* variables: `settings` are the
    variables without the prefix (redis=..., chdb_dir=...)."""

    command = ""

    def __init__(self, bootstrap: str, log_path: Path, partitions: int = 2,
                 extra_args: Sequence[str] = (), **settings: str) -> None:
        env = {"SESSIONWATCH_BOOTSTRAP": bootstrap, "SESSIONWATCH_PARTITIONS": str(partitions),
               "SESSIONWATCH_LOG_LEVEL": "info"}
        env.update({f"SESSIONWATCH_{k.upper()}": v for k, v in settings.items()})
        super().__init__([self.command, *extra_args], env, log_path)


class ApplierProcess(_ServiceProcess):
    """`sessionwatch apply`."""

    name = "applier"
    command = "apply"
    ready_pattern = rb"apply: ready"


class ArchiverProcess(_ServiceProcess):
    """`sessionwatch archive`."""

    name = "archiver"
    command = "archive"
    ready_pattern = rb"archive: ready"


class ConsoleProcess(ChildProcess):
    """`sessionwatch console` on a loopback port (tests, the demo's hint)."""

    name = "console"
    ready_pattern = rb"Uvicorn running on"

    def __init__(self, log_path: Path, *, listen: str, accounts: str = "", chdb_dir: str = "",
                 clickhouse: str = "", bootstrap: str | None = None,
                 env: Mapping[str, str] | None = None, extra_args: Sequence[str] = ()) -> None:
        args = ["console", "--listen", listen, "--log-level", "info"]
        args += ["--accounts", accounts] if accounts else []
        args += ["--chdb-dir", chdb_dir] if chdb_dir else ["--clickhouse", clickhouse]
        if bootstrap:
            args += ["--bootstrap", bootstrap]
        super().__init__([*args, *extra_args], dict(env or {}), log_path)
