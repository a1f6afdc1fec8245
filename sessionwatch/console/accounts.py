"""The console's accounts: a TOML file of names, roles and password hashes (argon2id, or scrypt).

    [[account]]
    name = "alice"
    role = "responder"          # or "viewer"
    password_hash = "$argon2id$v=19$m=65536,t=3,p=4$..."   # from `sessionwatch console-hash`
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import logging
import os
import secrets
import stat
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from producers.errors import ConfigError

log = logging.getLogger("sessionwatch.console.security")

Role = Literal["viewer", "responder"]
ROLES: tuple[Role, ...] = ("viewer", "responder")
MIN_PASSWORD_CHARS = 8  # ASVS 5.0 6.2.1
_MAX_NAME_CHARS = 256
_FIELDS = frozenset({"name", "role", "password_hash"})
_HINT = "make a hash with `sessionwatch console-hash`"

# scrypt parameters for the stdlib fallback: n=2**15, r=8 needs 32 MiB (OWASP's minimum is 2**17
# with r=8 at p=1; 2**15 keeps a sign-in under ~100 ms on small machines while argon2 is the default).
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 256 * 1024 * 1024

_hasher = PasswordHasher()


@dataclass(frozen=True)
class Account:
    """One console user. The hash never appears in a repr, a log or a page."""

    name: str
    role: Role
    password_hash: str = field(repr=False)


def hash_password(password: str, *, scheme: Literal["argon2id", "scrypt"] = "argon2id") -> str:
    """A hash for the accounts file: argon2id (argon2-cffi defaults) or stdlib scrypt."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ConfigError(f"password: use at least {MIN_PASSWORD_CHARS} characters")
    if scheme == "argon2id":
        return _hasher.hash(password)
    if scheme == "scrypt":
        salt = secrets.token_bytes(16)
        digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P,
                                maxmem=_SCRYPT_MAXMEM)
        return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"
    raise ValueError(f"scheme: {scheme!r} is not 'argon2id' or 'scrypt'")


def verify_password(password_hash: str, password: str) -> bool:
    """True if `password` matches; False for a mismatch or a hash this module cannot read."""
    if password_hash.startswith("scrypt$"):
        return _verify_scrypt(password_hash, password)
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


_dummy_hash: str | None = None


def check_password(accounts: Mapping[str, Account], name: str, password: str) -> Account | None:
    """The account if name and password match. An unknown name still costs one verification
    (against a throwaway hash), so response time does not tell which names exist."""
    global _dummy_hash
    account = accounts.get(name)
    if account is None:
        if _dummy_hash is None:
            _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
        verify_password(_dummy_hash, password)
        return None
    return account if verify_password(account.password_hash, password) else None


def load_accounts(path: str | os.PathLike[str]) -> dict[str, Account]:
    """Read and check the accounts file; ConfigError names the file, the account and the field."""
    file = Path(path)
    where = f"console accounts file {str(file)!r}"
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where}: not found; create it with [[account]] entries ({_HINT})") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror})") from None
    _check_mode(file, where)
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from None
    unknown = sorted(set(doc) - {"account"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; only [[account]] tables are read")
    entries = doc.get("account")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: no [[account]] entries; add at least one ({_HINT})")
    accounts: dict[str, Account] = {}
    for index, entry in enumerate(entries):
        account = _account(entry, f"{where}, account #{index}")
        if account.name in accounts:
            raise ConfigError(f"{where}, account #{index}: `name` {account.name!r} is defined twice")
        accounts[account.name] = account
    return accounts


def _account(entry: Any, where: str) -> Account:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table ([[account]])")
    if "password" in entry:
        raise ConfigError(
            f"{where}: `password` holds a plaintext password, which is never accepted; delete it "
            f"and set `password_hash` instead ({_HINT})"
        )
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; the fields are {sorted(_FIELDS)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME_CHARS:
        raise ConfigError(f"{where}: `name` must be a non-empty string of at most {_MAX_NAME_CHARS} "
                          "characters")
    where = f"{where} ({name!r})"
    role = entry.get("role")
    if role not in ROLES:
        raise ConfigError(f"{where}: `role` is {role!r}; use \"viewer\" (read) or \"responder\" (act)")
    password_hash = entry.get("password_hash")
    if not isinstance(password_hash, str) or not _readable_hash(password_hash):
        raise ConfigError(f"{where}: `password_hash` is missing or not an argon2id/scrypt hash; {_HINT}")
    return Account(name=name, role=role, password_hash=password_hash)


def _readable_hash(value: str) -> bool:
    if value.startswith("$argon2id$"):
        try:
            from argon2 import extract_parameters

            extract_parameters(value)
            return True
        except InvalidHashError:
            return False
    return _parse_scrypt(value) is not None


def _check_mode(file: Path, where: str) -> None:
    if os.name != "posix":
        return
    mode = file.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        # anyone who can write the file can give themselves a responder account
        raise ConfigError(f"{where}: writable by other users; run `chmod 600 {file}`")
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s: readable by other users, who could try to crack the hashes offline; "
                    "run `chmod 600 %s`", where, file)


def _parse_scrypt(value: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = value.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        return None
    if n < 2**14 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16:
        return None
    if len(salt) < 16 or len(digest) < 32:
        return None
    return n, r, p, salt, digest


def _verify_scrypt(value: str, password: str) -> bool:
    parsed = _parse_scrypt(value)
    if parsed is None:
        return False
    n, r, p, salt, digest = parsed
    candidate = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(digest),
                               maxmem=_SCRYPT_MAXMEM)
    return hmac.compare_digest(candidate, digest)


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hash_command(password_source: TextIO | None = None, out: TextIO | None = None) -> int:
    """`sessionwatch console-hash`: read a password (no echo on a terminal, asked twice; else one
    line of stdin) and print its argon2id hash for the accounts file."""
    source = password_source if password_source is not None else sys.stdin
    sink = out if out is not None else sys.stdout
    if source.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ConfigError("console-hash: the two passwords differ; nothing was printed")
    else:
        password = source.readline().removesuffix("\n").removesuffix("\r")
    print(hash_password(password), file=sink)
    return 0
