"""SIGTERM and SIGINT for the long-running commands: the first asks for a graceful stop (finish the
message in hand, confirm its outputs, commit, leave the group), the second exits at once."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

log = logging.getLogger("sessionwatch")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install_stop_handlers(stop: Callable[[], None], who: str, *,
                          loop: asyncio.AbstractEventLoop | None = None,
                          signals: Iterable[signal.Signals] = STOP_SIGNALS) -> Callable[[], None]:
    """On the first of `signals`, log and call `stop()` (in `loop`, when given: the handler runs
    between two bytecodes of the main thread, possibly inside the loop's own code). On the second,
    log and `os._exit(128 + signum)` without waiting for the graceful path, which may be retrying
    a destination that is down. Returns a function that puts the previous handlers back.

    signal.signal rather than loop.add_signal_handler: the second signal must work even when
    the loop is blocked (a thread pool joined at shutdown) or no longer running."""
    stopping: list[int] = []

    def handle(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stopping:
            log.warning("%s: %s again; exiting at once", who, name)
            exit_now(128 + signum)
        stopping.append(signum)
        log.info("%s: stopping (%s); send it again to exit at once", who, name)
        if loop is None:
            stop()
            return
        try:
            loop.call_soon_threadsafe(stop)
        except RuntimeError:  # the loop is closed: it has stopped already
            pass

    previous: dict[signal.Signals, Any] = {sig: signal.signal(sig, handle) for sig in signals}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def exit_now(status: int) -> None:
    """Flush what was logged and printed, then end the process without cleanup (no atexit,
    no finally blocks, no joining of threads)."""
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001 - exiting regardless
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(status)
