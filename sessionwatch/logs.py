"""Logging for every sessionwatch process: text or JSON lines, and secrets redacted on the way out.

    configure_logging("info", "json")      # from --log-level / --log-format

Convention for a line about a message: pass where it was in `extra`, with these keys exactly -

    log.warning("dead-lettered: %s", code,
                extra={"topic": t, "partition": p, "offset": o, "tenant": tenant, "event_id": id})

(`event_id`: the id of the record the message carried - an event's, or a revocation's on
`sessionwatch.revocations`; tenant and id are left out when it did not decode, a position when it
is not known.) JSON lines carry `time` (UTC, ISO 8601, ms), `level`, `logger`, `message`, those
five keys when given, and `exc` for a traceback. Text lines keep today's format (the human text
names the position too). Secrets never: `RedactFilter` (installed on the handler, so it covers
every logger) masks values of keys that look like a password, token, cookie, secret,
authorization or API key - in the message, its arguments, the extras and tracebacks - plus
`Bearer ...`/`Basic ...` credentials and passwords in URLs.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

CONTEXT_KEYS = ("topic", "partition", "offset", "tenant", "event_id")
REDACTED = "[redacted]"

_SECRET_WORD = r"(?:password|passwd|passphrase|token|cookie|secret|authorization|api[_-]?key|credentials?)"
# A key that ends with a secret word: `password`, `db_password`, `access_token`, `Set-Cookie`;
# not `token_guess` (a detector) or `tokens_rejected`.
SECRET_KEY = re.compile(rf"^[\w.-]*{_SECRET_WORD}$", re.IGNORECASE)

_RULES: list[tuple[re.Pattern[str], str]] = [
    # A cookie header's value runs to the end of the line: `a=1; b=2` are all secrets.
    (re.compile(r"(?im)\b((?:set-)?cookie\s*:\s*)[^\r\n\"']+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {REDACTED}"),
    # key=value, key: value, "key": "value", 'key': 'value' (a dict's repr), key="value"
    (re.compile(rf"(?i)([\"']?[\w.-]*{_SECRET_WORD}[\"']?\s*[:=]\s*)(?!\[redacted\])"
                r"(\"[^\"]*\"|'[^']*'|[^\s,;&'\"})\]]+)"), rf"\1{REDACTED}"),
    # scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@", re.IGNORECASE), rf"\1{REDACTED}@"),
]


# Every rule needs one of these in the text (`pass` for password, passwd, passphrase; `api` for
# api_key): a line without any - most lines, and most extras: topics, tenants, ids - skips the
# rules, whose key=value one is quadratic in a word's length (~20 us for a topic name, measured).
# casefold() matches as the rules' IGNORECASE does (`ſ` is an `s` to both), once the dotless and
# dotted i (which IGNORECASE also takes for an `i`) are made plain ones.
_NEEDLES = ("pass", "token", "cookie", "secret", "authorization", "api", "credential",
            "bearer", "basic", "://")


def redact_text(text: str) -> str:
    folded = text.casefold().replace("\u0131", "i").replace("\u0307", "")
    if not any(needle in folded for needle in _NEEDLES):
        return text
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def redact_value(key: str, value: Any) -> Any:
    """A value named `key`, safe to log: masked whole if the key looks secret, else its text
    redacted (containers walked)."""
    if SECRET_KEY.match(key):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value("", v) for v in value)
    return value


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class RedactFilter(logging.Filter):
    """Formats the message once, redacted, and masks secret-looking extras."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: log what there is rather than lose the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = redact_text(message), None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, redact_value(key, value))
        return True


class _Redacting(logging.Formatter):
    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's naming)
        return redact_text(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return redact_text(super().formatStack(stack_info))


class TextFormatter(_Redacting):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")


class JsonFormatter(_Redacting):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = redact_text(record.exc_text)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str | int = "info", format: Literal["text", "json"] = "text",
                      stream: IO[str] | None = None) -> logging.Handler:
    """Replace the root logger's handlers with one redacting handler on `stream` (stderr)."""
    if format not in ("text", "json"):
        raise ValueError(f"--log-format / SESSIONWATCH_LOG_FORMAT: {format!r} is not one of "
                         "text, json")
    if isinstance(level, str):
        named = logging.getLevelName(level.upper())
        if not isinstance(named, int):
            raise ValueError(f"--log-level: {level!r} is not one of debug, info, warning, error")
        level = named
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactFilter())
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    # Python warnings (a library's DeprecationWarning at import) as log lines too: a JSON log
    # must have no line that is not JSON.
    logging.captureWarnings(True)
    return handler
