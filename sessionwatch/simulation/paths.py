"""Request paths and HTTP statuses of the simulated apps, including the account's sensitive paths.

SENSITIVE_PATHS is the one list the simulator uses; the detector side keeps its own configurable
list with the same defaults, matched by prefix (so /settings/api-keys covers /settings/api-keys/new).
"""

from __future__ import annotations

import random
from typing import Any

PATHS = ("/", "/inbox", "/account", "/search", "/orders", "/settings", "/api/items", "/help")
# What a session thief or account taker goes for first: data export, the recovery channels
# (e-mail, phone, MFA), a payee to move money to, and long-lived API credentials.
SENSITIVE_PATHS = ("/account/export", "/settings/email", "/settings/phone", "/settings/mfa",
                   "/payments/payees/new", "/settings/api-keys")
# A benign user visits a sensitive page now and then (changing their own e-mail, exporting data).
BENIGN_SENSITIVE_P = 0.02
# (status, weight): benign requests almost always succeed; a stale link or a lapsed permission
# now and then.
BENIGN_STATUSES = ((200, 980), (404, 10), (403, 6), (401, 4))
# An attacker probing pages that need a recent re-authentication or a permission it lacks.
PROBE_STATUSES = ((200, 85), (403, 10), (401, 5))


def _status(rng: random.Random, table: tuple[tuple[int, int], ...]) -> int:
    return rng.choices([s for s, _ in table], [w for _, w in table])[0]


def benign_request(rng: random.Random) -> dict[str, Any]:
    """The attrs of one benign request: a path (rarely a sensitive one) and its status."""
    pool = SENSITIVE_PATHS if rng.random() < BENIGN_SENSITIVE_P else PATHS
    return {"path": rng.choice(pool), "status": _status(rng, BENIGN_STATUSES)}


def attacker_request(rng: random.Random, sensitive: float) -> dict[str, Any]:
    """The attrs of one attacker request: a sensitive path with probability `sensitive`."""
    pool = SENSITIVE_PATHS if rng.random() < sensitive else PATHS
    return {"path": rng.choice(pool), "status": _status(rng, PROBE_STATUSES)}


def attacker_sensitive(rng: random.Random, path: str) -> dict[str, Any]:
    return {"path": path, "status": _status(rng, PROBE_STATUSES)}
