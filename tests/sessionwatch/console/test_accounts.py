"""The console's accounts file and password hashing (argon2id, stdlib scrypt), with real hashes."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest

from producers.errors import ConfigError
from sessionwatch.console import accounts as accounts_module
from sessionwatch.console.accounts import (
    Account,
    check_password,
    hash_command,
    hash_password,
    load_accounts,
    verify_password,
)

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def argon_hash() -> str:
    return hash_password(PASSWORD)


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def entry(name: str = "alice", role: str = "responder", hash_: str = "", extra: str = "") -> str:
    return f'[[account]]\nname = "{name}"\nrole = "{role}"\npassword_hash = "{hash_}"\n{extra}\n'


def test_loads_accounts_with_argon2_and_scrypt_hashes(tmp_path: Path, argon_hash: str) -> None:
    scrypt_hash = hash_password(PASSWORD, scheme="scrypt")
    path = write(tmp_path, entry("alice", "responder", argon_hash) + entry("bob", "viewer", scrypt_hash))
    loaded = load_accounts(path)
    assert sorted(loaded) == ["alice", "bob"]
    assert loaded["alice"] == Account("alice", "responder", argon_hash)
    assert loaded["bob"].role == "viewer"
    assert check_password(loaded, "alice", PASSWORD) == loaded["alice"]
    assert check_password(loaded, "bob", PASSWORD) == loaded["bob"]
    assert check_password(loaded, "bob", PASSWORD + "x") is None


def test_account_repr_never_shows_the_hash(argon_hash: str) -> None:
    account = Account("alice", "responder", argon_hash)
    assert argon_hash not in repr(account)
    assert "argon2" not in str(account)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (entry(role="admin"), ["account #0", "`role`", "viewer"]),
        (entry(extra='password = "hunter2"'), ["account #0", "`password`", "plaintext", "console-hash"]),
        (entry(hash_="not-a-hash"), ["account #0", "`password_hash`", "sessionwatch console-hash"]),
        (entry(hash_="$argon2id$v=19$garbage"), ["`password_hash`"]),
        (entry(hash_="scrypt$16$8$1$AAAA$BBBB"), ["`password_hash`"]),
        (entry(name=""), ["account #0", "`name`"]),
        (entry(extra='pasword_hash = "x"'), ["account #0", "unknown field", "pasword_hash"]),
        ("[[accounts]]\nname = 'x'\n", ["unknown key", "accounts"]),
        ("", ["no [[account]] entries", "console-hash"]),
        ("[[account]\n", ["not valid TOML"]),
    ],
)
def test_bad_files_name_the_file_the_account_and_the_field(
    tmp_path: Path, argon_hash: str, body: str, expected: list[str]
) -> None:
    body = body.replace('password_hash = ""', f'password_hash = "{argon_hash}"')
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as error:
        load_accounts(path)
    message = str(error.value)
    assert str(path) in message
    for part in expected:
        assert part in message
    assert "hunter2" not in message


def test_second_account_with_the_same_name_is_refused(tmp_path: Path, argon_hash: str) -> None:
    path = write(tmp_path, entry("alice", "viewer", argon_hash) + entry("alice", "responder", argon_hash))
    with pytest.raises(ConfigError, match=r"account #1: `name` 'alice' is defined twice"):
        load_accounts(path)


def test_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found.*console-hash"):
        load_accounts(tmp_path / "nope.toml")


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_a_file_others_can_write_is_refused(tmp_path: Path, argon_hash: str) -> None:
    path = write(tmp_path, entry(hash_=argon_hash), mode=0o666)
    with pytest.raises(ConfigError, match=r"writable by other users; run `chmod 600"):
        load_accounts(path)


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_a_file_others_can_read_loads_with_a_warning(
    tmp_path: Path, argon_hash: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, entry(hash_=argon_hash), mode=0o644)
    with caplog.at_level(logging.WARNING, logger="sessionwatch.console.security"):
        assert list(load_accounts(path)) == ["alice"]
    assert "readable by other users" in caplog.text and "chmod 600" in caplog.text
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="sessionwatch.console.security"):
        load_accounts(path)
    assert caplog.text == ""


def test_unknown_names_cost_a_verification_too(argon_hash: str, monkeypatch: pytest.MonkeyPatch) -> None:
    accounts = {"alice": Account("alice", "responder", argon_hash)}
    verified: list[str] = []
    real = accounts_module.verify_password

    def counting(password_hash: str, password: str) -> bool:
        verified.append(password_hash.split("$")[1])
        return real(password_hash, password)

    monkeypatch.setattr(accounts_module, "verify_password", counting)
    assert check_password(accounts, "mallory", PASSWORD) is None
    assert check_password(accounts, "alice", "wrong password") is None
    # both paths ran one argon2id verification: timing does not separate them
    assert verified == ["argon2id", "argon2id"]


def test_hashes_verify_and_refuse() -> None:
    for scheme in ("argon2id", "scrypt"):
        hashed = hash_password(PASSWORD, scheme=scheme)  # type: ignore[arg-type]
        assert PASSWORD not in hashed
        assert verify_password(hashed, PASSWORD)
        assert not verify_password(hashed, PASSWORD.upper())
    assert hash_password(PASSWORD) != hash_password(PASSWORD)  # salted
    assert not verify_password("garbage", PASSWORD)
    with pytest.raises(ConfigError, match="at least 8 characters"):
        hash_password("short")


def test_hash_command_reads_one_line_from_a_pipe() -> None:
    out = io.StringIO()
    assert hash_command(io.StringIO(PASSWORD + "\n"), out) == 0
    printed = out.getvalue().strip()
    assert printed.startswith("$argon2id$")
    assert verify_password(printed, PASSWORD)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_hash_command_asks_twice_without_echo_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([PASSWORD, PASSWORD])
    monkeypatch.setattr(accounts_module.getpass, "getpass", lambda prompt: next(answers))
    out = io.StringIO()
    assert hash_command(Tty(), out) == 0
    assert verify_password(out.getvalue().strip(), PASSWORD)

    answers = iter([PASSWORD, "something else"])
    out = io.StringIO()
    with pytest.raises(ConfigError, match="differ"):
        hash_command(Tty(), out)
    assert out.getvalue() == ""
