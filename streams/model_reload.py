"""Reloading the learned score's model without a restart: on SIGHUP or a changed model.json.

A reload verifies the new artefact exactly as a start does (models/load.py); one that fails is
refused, logged with the reason, and the model in use is kept. Checked from the worker's
periodic task (the engine's thread), so the swap never races an event being scored.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path

from models.artefact import META_FILE, ModelError
from models.load import load_model
from models.scoring import AnomalyModel

log = logging.getLogger("sessionwatch.worker")
CHECK_EVERY_S = 5.0


class ModelReloader:
    def __init__(self, directory: str | Path, model: AnomalyModel,
                 apply: Callable[[AnomalyModel], None]) -> None:
        self.directory = Path(directory)
        self.model = model
        self.apply = apply
        self.requested = False
        self._stamp = self._meta_stamp()
        self._checked = 0.0

    def install(self) -> None:
        """SIGHUP asks for a reload (only the flag is set in the handler)."""
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "requested", True))

    def _meta_stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.directory / META_FILE).stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def poll(self, now: float) -> bool:
        """Reload if asked to or if model.json changed; True if a new model is in use."""
        if not self.requested:
            if now - self._checked < CHECK_EVERY_S:
                return False
            self._checked = now
            stamp = self._meta_stamp()
            if stamp is None or stamp == self._stamp:
                return False
        self.requested = False
        self._stamp = self._meta_stamp()
        try:
            model = load_model(self.directory)
        except ModelError as exc:
            log.error("model reload refused, keeping model %s: %s", self.model.version, exc)
            return False
        if model.digest == self.model.digest:
            log.info("model reload: %s unchanged (version %s)", self.directory, model.version)
            return False
        self.apply(model)
        log.info("model reloaded: version %s (was %s) from %s", model.version, self.model.version,
                 self.directory)
        self.model = model
        return True
