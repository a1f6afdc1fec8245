"""The simulated app: mints tokens, hashes them like the SDK, and records events and truth.

Randomness comes only from the seeded `random.Random`, so the same seed gives the same events
(ids, tokens and hashes included). Raw tokens stay inside this module, as they stay inside an app.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from producers.contract import DEFAULT_TENANT, EVENT_SCHEMA, Event, EventType
from producers.hashing import TokenHasher
from sessionwatch.simulation.edge import EdgeModel
from sessionwatch.simulation.truth import BenignTruth, Truth

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
# A fixed demo key, so that the same seed gives the same session hashes on every machine.
SIM_HASH_KEY = b"sessionwatch-simulation-key-0001"
SIM_HASH_KEY_ID = "sim"
# What the simulated apps enforce (the session.timeouts detector's defaults): benign sessions are
# never used past these; the app expires them and the user logs in again.
IDLE_TIMEOUT_S = 1800.0
ABSOLUTE_TIMEOUT_S = 12 * 3600.0
LEGACY_TENANT = "legacy"  # an app that does not rotate the session id on login


@dataclass
class Session:
    """A session as the app sees it: its current raw token and hash, and who holds it."""

    tenant: str
    token: str
    hash: str
    user: str | None = None
    truth: BenignTruth | None = None
    # -inf until its first event: history days before START have negative times.
    last_t: float = float("-inf")
    authenticated_at: float | None = None
    hashes: list[str] = field(default_factory=list)
    edge: bool = False  # the edge proxy measures this session's requests (edge.py)


class World:
    """Times are simulated seconds from START; negative ones (history before START) are fine."""

    def __init__(self, seed: int, edge_fingerprints: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.edge = EdgeModel(seed, edge_fingerprints) if edge_fingerprints > 0 else None
        self.hasher = TokenHasher({SIM_HASH_KEY_ID: SIM_HASH_KEY})
        self._items: list[tuple[float, int, Event]] = []
        self.truth = Truth(seed=seed, users=0, start=START)
        # Which attack (if any) each event belongs to: event id -> attack id.
        self.malicious: dict[str, str] = {}

    # -- ids and tokens ----------------------------------------------------------------------

    def token(self) -> str:
        return f"{self.rng.getrandbits(256):064x}"

    def event_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def new_session(self, tenant: str = DEFAULT_TENANT) -> Session:
        token = self.token()
        digest = self.hasher.hash(token)
        edge = self.edge is not None and self.edge.sample()
        return Session(tenant=tenant, token=token, hash=digest, hashes=[digest], edge=edge)

    def rotate(self, session: Session) -> str:
        """Give `session` a new token (login or refresh); returns the previous raw token."""
        previous = session.token
        session.token = self.token()
        session.hash = self.hasher.hash(session.token)
        session.hashes.append(session.hash)
        if session.truth is not None:
            session.truth.hashes.append(session.hash)
        return previous

    # -- events ------------------------------------------------------------------------------

    def emit(
        self,
        t: float,
        type: EventType,
        ip: str,
        *,
        session: Session | None = None,
        user: str | None = None,
        ua: str | None = None,
        attrs: dict[str, Any] | None = None,
        previous_token: str | None = None,
        tenant: str = DEFAULT_TENANT,
        session_hash: str | None = None,
        attack: str | None = None,
    ) -> Event:
        """Record one event at `t` simulated seconds, built as the SDK builds it."""
        extras = dict(attrs or {})
        digest = session_hash
        if session is not None:
            digest = session.hash
            tenant = session.tenant
            session.last_t = max(session.last_t, t)
            if session.truth is not None and attack is None and type is not EventType.EXPIRED:
                session.truth.used(ip, self.epoch(t))
        if previous_token is not None:
            extras["previous_session"] = self.hasher.hash(previous_token)
        if digest is not None:
            extras.setdefault("hash_key_id", SIM_HASH_KEY_ID)
        if (session is not None and session.edge and self.edge is not None
                and type is not EventType.EXPIRED):  # expiry is the app's, not a request
            extras.update(self.edge.measure(ip, ua, attack))
        event = Event(
            schema=EVENT_SCHEMA,
            id=self.event_id(),
            type=type,
            # Whole milliseconds: the JSON round trip then gives back exactly this time.
            time=START + timedelta(milliseconds=round(t * 1000)),
            tenant=tenant,
            session=digest,
            user=user,
            ip=ip,
            user_agent=ua,
            attrs=extras,
        )
        self._items.append((t, len(self._items), event))
        if attack is not None:
            self.malicious[event.id] = attack
        return event

    def events(self) -> list[Event]:
        """All events in event-time order (ties in the order they were made)."""
        return [e for _, _, e in sorted(self._items, key=lambda item: (item[0], item[1]))]

    @staticmethod
    def epoch(t: float) -> float:
        return (START + timedelta(milliseconds=round(t * 1000))).timestamp()
