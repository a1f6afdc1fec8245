"""What a viewer may not see in full: session hashes. Responders see everything; viewers see the
first 8 characters, in pages and in the API alike (one function for both)."""

from __future__ import annotations

from typing import Any

SHOWN = 8


def mask(value: str) -> str:
    return value if len(value) <= SHOWN else value[:SHOWN] + "…"


def masked(data: Any, principal: Any) -> Any:
    """`data` with every session hash shortened, unless the principal is a responder.

    A session hash is any string under a key that names a session (`session`, `sessions`,
    `previous_session`, `other_session`…), also inside lists and evidence."""
    if getattr(principal, "role", None) == "responder":
        return data
    return _walk(data, False)


def _walk(data: Any, is_session: bool) -> Any:
    if isinstance(data, dict):
        return {k: _walk(v, is_session or ("session" in str(k) and not str(k).endswith("_ref")))
                for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_walk(v, is_session) for v in data]
    if is_session and isinstance(data, str):
        return mask(data)
    return data


# Audit actions whose target is a session hash.
SESSION_TARGETS = frozenset({"revoke_session"})


def masked_audit(rows: list[dict[str, Any]], principal: Any) -> list[dict[str, Any]]:
    """Audit rows with session-hash targets shortened for viewers (the audit page does the same)."""
    if getattr(principal, "role", None) == "responder":
        return rows
    return [dict(r, target=mask(r["target"])) if r.get("action") in SESSION_TARGETS else r
            for r in rows]
