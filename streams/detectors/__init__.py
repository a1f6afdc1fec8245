"""The detector registry: one file per detector in this folder; `SESSION_DETECTORS` lists them.

Adding a detector: write `streams/detectors/<name>.py` with a `SessionDetector` subclass and its
examples, add it below, and give it a policy default in `streams/policy.py`.
"""

from streams.detectors.base import Context, Example, SessionDetector, Signal, Step
from streams.detectors.ip_change import IpChange
from streams.detectors.ua_change import UaChange

SESSION_DETECTORS: tuple[type[SessionDetector], ...] = (IpChange, UaChange)

__all__ = ["SESSION_DETECTORS", "Context", "Example", "SessionDetector", "Signal", "Step"]
