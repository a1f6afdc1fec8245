"""The Redis keys revocations are written to: a public contract (apps in any language read them).

Denylist (written by the applier, `storage/redis_applier.py`; checked by the middleware,
`producers/enforcement.py`, on every request):

    sessionwatch:revoked:session:<tenant>:<session>   value: the revocation JSON
    sessionwatch:revoked:user:<tenant>:<user>         value: the revocation JSON (has not_before)
    sessionwatch:blocked:source:<tenant>:<ip-or-cidr> value: the revocation JSON (has expires)
    sessionwatch:blocked:lengths:<tenant>             set of "4/24", "6/64", ... in use by blocks

`<session>` is the session hash the SDK sends (never the raw token). A block names an address
("203.0.113.9") or a CIDR ("203.0.113.0/24", a provider's "167.99.0.0/16"); the lengths set
tells a checker which prefixes of a client address to look up (the address itself, /24 and /64
are always worth a look).

Session-store index (written by the middleware at login and rotation, read by the applier to
delete the app's own session records, so a revoked session is gone from the store too):

    sessionwatch:index:session:<tenant>:<session>     the store's key of that session's record
    sessionwatch:index:user:<tenant>:<user>           sorted set: session hash -> authenticated at
"""

from __future__ import annotations

PREFIX = "sessionwatch"


def session_key(tenant: str, session: str) -> str:
    return f"{PREFIX}:revoked:session:{tenant}:{session}"


def user_key(tenant: str, user: str) -> str:
    return f"{PREFIX}:revoked:user:{tenant}:{user}"


def source_key(tenant: str, source: str) -> str:
    return f"{PREFIX}:blocked:source:{tenant}:{source}"


def block_lengths_key(tenant: str) -> str:
    return f"{PREFIX}:blocked:lengths:{tenant}"


def session_index_key(tenant: str, session: str) -> str:
    return f"{PREFIX}:index:session:{tenant}:{session}"


def user_index_key(tenant: str, user: str) -> str:
    return f"{PREFIX}:index:user:{tenant}:{user}"
