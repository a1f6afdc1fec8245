"""The detector registry: one file per detector in this folder, listed here by kind.

Adding a detector: write `streams/detectors/<name>.py` with a `SessionDetector`,
`UserDetector` or `SourceDetector` subclass, its `Params` and its examples, and add it below.
The id (`session.ip_change`) names the file (`ip_change.py`) and the kind.
"""

from streams.detectors.anomaly import Anomaly
from streams.detectors.base import (
    ACTIONS,
    ALERT,
    BLOCK,
    REVOKE,
    REVOKE_USER,
    STEP_UP,
    Context,
    Detector,
    Example,
    NoParams,
    SessionDetector,
    Signal,
    SourceContext,
    SourceDetector,
    Step,
    UserContext,
    UserDetector,
)
from streams.detectors.brute_force import BruteForce
from streams.detectors.concurrent_sessions import ConcurrentSessions
from streams.detectors.creation_flood import CreationFlood
from streams.detectors.credential_change import CredentialChange
from streams.detectors.credential_stuffing import CredentialStuffing
from streams.detectors.fixation import Fixation
from streams.detectors.impossible_travel import ImpossibleTravel
from streams.detectors.ip_change import IpChange
from streams.detectors.login_travel import LoginTravel
from streams.detectors.replay_after_end import ReplayAfterEnd
from streams.detectors.session_from_blocked import SessionFromBlocked
from streams.detectors.timeouts import Timeouts
from streams.detectors.token_guess import TokenGuess
from streams.detectors.ua_change import UaChange

SESSION_DETECTORS: tuple[type[SessionDetector], ...] = (
    IpChange, UaChange, ImpossibleTravel, ReplayAfterEnd, Timeouts, Fixation,
)
USER_DETECTORS: tuple[type[UserDetector], ...] = (
    CredentialChange, ConcurrentSessions, LoginTravel, BruteForce, Anomaly)
SOURCE_DETECTORS: tuple[type[SourceDetector], ...] = (
    TokenGuess, CreationFlood, CredentialStuffing, SessionFromBlocked)
ALL_DETECTORS: tuple[type[Detector], ...] = SESSION_DETECTORS + USER_DETECTORS + SOURCE_DETECTORS
BY_ID: dict[str, type[Detector]] = {d.id: d for d in ALL_DETECTORS}

__all__ = [
    "ACTIONS", "ALERT", "ALL_DETECTORS", "BLOCK", "BY_ID", "REVOKE", "REVOKE_USER",
    "SESSION_DETECTORS", "SOURCE_DETECTORS", "STEP_UP", "USER_DETECTORS", "Context", "Detector",
    "Example", "NoParams", "SessionDetector", "Signal", "SourceContext", "SourceDetector", "Step",
    "UserContext", "UserDetector",
]
