"""Sign and verify sessionwatch webhook bodies: one implementation for the sender and receivers.

The webhook sink (`storage/webhook.py`) signs with `sign`; an admin's receiver verifies with
`verify`, so the two sides cannot drift. The header is Stripe-style,
`Sessionwatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`: the
timestamp is inside the MAC, so a captured request cannot be replayed after `tolerance_s`.
Receivers should also dedupe on `Sessionwatch-Revocation-Id`: retries re-send the same id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

SIGNATURE_HEADER = "Sessionwatch-Signature"
REVOCATION_ID_HEADER = "Sessionwatch-Revocation-Id"
# HMAC-SHA256 keys shorter than this are guessable offline from one captured request.
MIN_SECRET_BYTES = 16
DEFAULT_TOLERANCE_S = 300

# ASCII digits only, and few of them: int() also accepts other scripts' digits and "1_000",
# and a header of thousands of digits should cost nothing to refuse.
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}", re.ASCII)
_HEX_SHA256_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
_MAX_HEADER_CHARS = 1024


def secret_bytes(secret: bytes | str) -> bytes:
    """The HMAC key as bytes (text secrets are UTF-8)."""
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def _mac(secret: bytes | str, body: bytes, timestamp: int) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret_bytes(secret), signed, hashlib.sha256).hexdigest()


def sign(secret: bytes | str, body: bytes, timestamp: int) -> str:
    """The `Sessionwatch-Signature` header value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={int(timestamp)},v1={_mac(secret, body, int(timestamp))}"


def verify(
    secret: bytes | str,
    header_value: str,
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True if `header_value` signs exactly `body` with `secret`, timestamped within `tolerance_s`.

    `body` must be the raw request bytes, before any JSON parsing. Returns False, never raises,
    on anything a sender controls: a malformed header, a stale or future timestamp, a wrong MAC.
    Several `v1=` entries are accepted (any may match) so a sender can sign with an old and a new
    secret while receivers rotate.
    """
    if not isinstance(header_value, str) or len(header_value) > _MAX_HEADER_CHARS:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header_value.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if timestamp is not None or not _TIMESTAMP_RE.fullmatch(value):
                return False
            timestamp = int(value)
        elif key == "v1":
            if not _HEX_SHA256_RE.fullmatch(value):
                return False
            candidates.append(value)
        # Other keys (a future v2 scheme) are ignored, as Stripe's receivers do.
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _mac(secret, body, timestamp)
    # Check every candidate, so the time taken does not say which entry matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    return matched
