"""Keyed hashing of session tokens, and minting tokens (ASVS 7.2.3).

Raw tokens never leave the app: the SDK sends HMAC-SHA256(key, token) as hex. Keys carry an id so
they can rotate: new events use the current key, while enforcement looks a token up under every
key still configured (`hashes`), so sessions hashed before a rotation stay revocable.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

from producers.errors import ConfigError

MIN_KEY_BYTES = 32
MIN_TOKEN_BYTES = 16  # 128 bits, ASVS 7.2.3


class TokenHasher:
    """HMAC-SHA256 of session tokens with rotating, identified keys."""

    __slots__ = ("_keys", "current_key_id")

    def __init__(self, keys: Mapping[str, bytes | str], current_key_id: str | None = None) -> None:
        if not keys:
            raise ConfigError(
                "hash keys: at least one key is required "
                "(set SESSIONWATCH_HASH_KEY to 32+ random bytes, e.g. `openssl rand -hex 32`)"
            )
        parsed: dict[str, bytes] = {}
        for key_id, key in keys.items():
            raw = key.encode() if isinstance(key, str) else bytes(key)
            if len(raw) < MIN_KEY_BYTES:
                raise ConfigError(
                    f"hash key {key_id!r}: {len(raw)} bytes is too short; "
                    f"use at least {MIN_KEY_BYTES} random bytes"
                )
            parsed[key_id] = raw
        if current_key_id is None:
            current_key_id = next(iter(parsed))
        if current_key_id not in parsed:
            raise ConfigError(
                f"hash keys: current key id {current_key_id!r} is not among {sorted(parsed)}"
            )
        self._keys = parsed
        self.current_key_id = current_key_id

    def hash(self, token: str | bytes) -> str:
        """The hash of `token` under the current key: what goes into events."""
        return _hmac_hex(self._keys[self.current_key_id], token)

    def hashes(self, token: str | bytes) -> list[str]:
        """The hash under every configured key, current first: what enforcement looks up."""
        out = [self.hash(token)]
        out.extend(
            _hmac_hex(key, token) for kid, key in self._keys.items() if kid != self.current_key_id
        )
        return out

    def __repr__(self) -> str:  # never print key material
        return f"TokenHasher(key_ids={sorted(self._keys)}, current={self.current_key_id!r})"


def _hmac_hex(key: bytes, token: str | bytes) -> str:
    data = token.encode() if isinstance(token, str) else token
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def mint_session_token(nbytes: int = 32) -> str:
    """A new session token from the OS CSPRNG, URL-safe; 256 bits unless asked otherwise."""
    if nbytes < MIN_TOKEN_BYTES:
        raise ValueError(f"session tokens need at least {MIN_TOKEN_BYTES} bytes (128 bits)")
    return secrets.token_urlsafe(nbytes)
