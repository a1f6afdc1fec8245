"""TokenHasher and mint_session_token: the only place raw session tokens are handled."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest

from producers.errors import ConfigError
from producers.hashing import MIN_KEY_BYTES, MIN_TOKEN_BYTES, TokenHasher, mint_session_token

K1 = b"k" * 32
K2 = bytes(range(32, 64))
K3 = "a-text-key-of-more-than-32-characters!"
TOKEN = "tok_3q2+7w_example-session-token"
HEX64 = re.compile(r"[0-9a-f]{64}")


def test_hash_is_deterministic_lowercase_hex_64():
    hasher = TokenHasher({"k1": K1})
    first = hasher.hash(TOKEN)
    assert HEX64.fullmatch(first)
    assert hasher.hash(TOKEN) == first
    assert TokenHasher({"k1": K1}).hash(TOKEN) == first, "same key, other instance, same hash"


def test_hash_is_hmac_sha256_of_the_token():
    """Other languages' SDKs must produce the same value: document it as plain HMAC-SHA256."""
    expected = hmac.new(K1, TOKEN.encode(), hashlib.sha256).hexdigest()
    assert TokenHasher({"k1": K1}).hash(TOKEN) == expected


def test_str_and_bytes_tokens_and_keys_agree():
    assert TokenHasher({"k": K1}).hash(TOKEN) == TokenHasher({"k": K1}).hash(TOKEN.encode())
    assert TokenHasher({"k": K3}).hash(TOKEN) == TokenHasher({"k": K3.encode()}).hash(TOKEN)


def test_different_keys_or_tokens_give_different_hashes():
    assert TokenHasher({"k1": K1}).hash(TOKEN) != TokenHasher({"k2": K2}).hash(TOKEN)
    hasher = TokenHasher({"k1": K1})
    assert hasher.hash(TOKEN) != hasher.hash(TOKEN + "x")


def test_hash_never_contains_the_token():
    hasher = TokenHasher({"k1": K1})
    assert TOKEN not in hasher.hash(TOKEN)


def test_hashes_returns_current_first_then_every_other_key():
    hasher = TokenHasher({"old": K1, "new": K2, "older": K3}, current_key_id="new")
    hashes = hasher.hashes(TOKEN)
    assert len(hashes) == 3 and len(set(hashes)) == 3
    assert hashes[0] == hasher.hash(TOKEN) == TokenHasher({"new": K2}).hash(TOKEN)
    assert set(hashes[1:]) == {
        TokenHasher({"old": K1}).hash(TOKEN),
        TokenHasher({"older": K3}).hash(TOKEN),
    }


def test_rotation_keeps_old_sessions_findable():
    before = TokenHasher({"k1": K1})
    after = TokenHasher({"k1": K1, "k2": K2}, current_key_id="k2")
    stored = before.hash(TOKEN)  # what an event emitted before the rotation carried
    assert after.hash(TOKEN) != stored
    assert stored in after.hashes(TOKEN)


def test_current_key_defaults_to_the_first():
    hasher = TokenHasher({"a": K1, "b": K2})
    assert hasher.current_key_id == "a"
    assert hasher.hashes(TOKEN)[0] == TokenHasher({"a": K1}).hash(TOKEN)


def test_single_key_hashes_is_just_the_hash():
    hasher = TokenHasher({"k1": K1})
    assert hasher.hashes(TOKEN) == [hasher.hash(TOKEN)]


def test_short_key_raises_config_error_naming_the_key():
    with pytest.raises(ConfigError) as info:
        TokenHasher({"good": K1, "tiny": b"x" * (MIN_KEY_BYTES - 1)})
    message = str(info.value)
    assert "'tiny'" in message and str(MIN_KEY_BYTES) in message
    assert "good" not in message


def test_key_of_exactly_the_minimum_is_accepted():
    TokenHasher({"k": b"x" * MIN_KEY_BYTES})


def test_short_key_error_does_not_leak_the_key():
    secret = "s3cr3t-short"
    with pytest.raises(ConfigError) as info:
        TokenHasher({"k": secret})
    assert secret not in str(info.value)


def test_no_keys_raises_config_error():
    with pytest.raises(ConfigError, match="at least one key"):
        TokenHasher({})


def test_unknown_current_key_id_raises():
    with pytest.raises(ConfigError) as info:
        TokenHasher({"k1": K1, "k2": K2}, current_key_id="k3")
    message = str(info.value)
    assert "'k3'" in message and "k1" in message and "k2" in message


def test_repr_never_contains_key_material():
    hasher = TokenHasher({"k1": K1, "k2": K2, "k3": K3}, current_key_id="k2")
    text = repr(hasher) + str(hasher)
    assert "k1" in text and "'k2'" in text
    for key in (K1, K2, K3.encode()):
        for form in (repr(key), key.hex(), base64.b64encode(key).decode(),
                     key.decode("latin-1")):
            assert form not in text


def test_key_material_not_reachable_through_public_attributes():
    hasher = TokenHasher({"k1": K1})
    assert not hasattr(hasher, "__dict__"), "__slots__ keeps vars() from listing keys"
    public = {name: getattr(hasher, name) for name in dir(hasher) if not name.startswith("_")}
    assert K1 not in [v for v in public.values() if isinstance(v, bytes)]


# -- minting --------------------------------------------------------------------------------


def _entropy_bytes(token: str) -> int:
    return len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def test_minted_token_is_url_safe_with_at_least_128_bits():
    token = mint_session_token()
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert _entropy_bytes(token) * 8 >= 256, "256 bits by default"
    assert _entropy_bytes(mint_session_token(MIN_TOKEN_BYTES)) * 8 >= 128


def test_minted_tokens_are_unique():
    tokens = {mint_session_token(MIN_TOKEN_BYTES) for _ in range(10_000)}
    assert len(tokens) == 10_000


def test_minted_tokens_are_not_trivially_biased():
    """A smoke test, not a randomness test: every URL-safe symbol shows up."""
    text = "".join(mint_session_token() for _ in range(500))
    assert len(set(text)) == 64


@pytest.mark.parametrize("nbytes", [0, 1, 8, MIN_TOKEN_BYTES - 1])
def test_refuses_fewer_than_16_bytes(nbytes: int):
    with pytest.raises(ValueError, match="128 bits"):
        mint_session_token(nbytes)
