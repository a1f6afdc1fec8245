"""The Redis keys revocations are written to: a public contract (apps in any language read them).

    sessionwatch:revoked:session:<tenant>:<session>   value: the revocation JSON
    sessionwatch:revoked:user:<tenant>:<user>         value: the revocation JSON (has not_before)
    sessionwatch:blocked:source:<tenant>:<ip-or-cidr> value: the revocation JSON (has expires)

`<session>` is the session hash the SDK sends (never the raw token). Written by the applier
(`storage/redis_applier.py`); checked by the middleware on every request.
"""

from __future__ import annotations

PREFIX = "sessionwatch"


def session_key(tenant: str, session: str) -> str:
    return f"{PREFIX}:revoked:session:{tenant}:{session}"


def user_key(tenant: str, user: str) -> str:
    return f"{PREFIX}:revoked:user:{tenant}:{user}"


def source_key(tenant: str, source: str) -> str:
    return f"{PREFIX}:blocked:source:{tenant}:{source}"
