"""Exceptions of the producer package. `SessionwatchError` is the root of every package's errors."""

from __future__ import annotations


class SessionwatchError(Exception):
    """Root of every error sessionwatch raises on purpose."""


class InvalidEvent(SessionwatchError):
    """An event that breaks the contract. `code` is machine-readable, `detail` says what and where."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class ConfigError(SessionwatchError):
    """A setting is wrong. The message names the setting and says what to do."""
