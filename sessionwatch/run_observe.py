"""What every long-running command does first: its logging (text or JSON, redacted) and its
metrics and health endpoint (sessionwatch/observability.py) when `metrics_port` is set."""

from __future__ import annotations

import logging
from typing import Any

from producers.errors import ConfigError
from sessionwatch.logs import configure_logging
from sessionwatch.observability import Health, ObservabilityServer, start

log = logging.getLogger("sessionwatch")


def setup_logging(settings: Any) -> None:
    configure_logging(settings.log_level, settings.log_format)


def serve_metrics(settings: Any, registry: Any, health: Health) -> ObservabilityServer | None:
    """The endpoint on metrics_host:metrics_port, or None when the port is 0 (off). A taken
    port stops the process with a ConfigError naming SESSIONWATCH_METRICS_PORT."""
    if not settings.metrics_port:
        return None
    try:
        return start(settings.metrics_port, settings.metrics_host, registry=registry, health=health)
    except OSError as exc:
        raise ConfigError(str(exc.strerror or exc)) from None
