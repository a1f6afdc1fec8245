"""JSON log lines, and no planted secret ever reaches the log output."""

from __future__ import annotations

import io
import json
import logging

import pytest

from sessionwatch.logs import configure_logging, redact_text

SECRETS = ("hunter2-pw", "tok-9f8e7d", "ck-c0ffee", "bearer-abc.def", "sh-secret-1", "url-pw-77",
           "basic-dXNlcjpwYXNz", "ck-second-1")


@pytest.fixture
def captured():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    yield out
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_the_message_position(captured):
    configure_logging("info", "json", stream=captured)
    log = logging.getLogger("sessionwatch.worker")
    log.warning("dead-lettered %s", "not_json", extra={
        "topic": "sessionwatch.events", "partition": 3, "offset": 41, "tenant": "bank-a",
        "event_id": "e-1"})
    log.debug("not shown at info")
    log.info("no position here")
    first, second = lines(captured)
    assert first["level"] == "warning" and first["logger"] == "sessionwatch.worker"
    assert first["message"] == "dead-lettered not_json"
    assert (first["topic"], first["partition"], first["offset"], first["tenant"],
            first["event_id"]) == ("sessionwatch.events", 3, 41, "bank-a", "e-1")
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert "topic" not in second and second["message"] == "no position here"


def test_text_format_is_the_familiar_one(captured):
    configure_logging("info", "text", stream=captured)
    logging.getLogger("sessionwatch.apply").info("delivered %d", 3)
    assert captured.getvalue().rstrip().endswith(" INFO sessionwatch.apply: delivered 3")


def test_bad_settings_name_the_flag():
    with pytest.raises(ValueError, match="--log-format"):
        configure_logging("info", "yaml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--log-level"):
        configure_logging("loud", "text")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_planted_secrets_never_reach_the_log(captured, enricher, fmt):
    """A run that logs the ways code really does - args, dicts, headers, URLs, extras,
    tracebacks, and the worker's own dead-letter lines for garbage carrying secrets - then a grep."""
    from streams.session_stage import SessionStage
    from streams.stats import WorkerStats

    configure_logging("debug", fmt, stream=captured)
    log = logging.getLogger("sessionwatch.test")
    log.info("login with password=%s", "hunter2-pw")
    log.info("request headers %s", {"Authorization": "Bearer bearer-abc.def", "Cookie": "sid=ck-c0ffee"})
    log.info("Cookie: sid=ck-c0ffee; other=ck-second-1")
    log.info("upstream said Authorization: Basic basic-dXNlcjpwYXNz")
    log.warning("sink redis://app:url-pw-77@redis:6379/0 unavailable")
    log.info("config %r", {"client_secret": "sh-secret-1", "access_token": "tok-9f8e7d"})
    log.info("event", extra={"tenant": "t", "token": "tok-9f8e7d", "password": "hunter2-pw"})
    try:
        raise RuntimeError("connect failed: password='hunter2-pw'")
    except RuntimeError:
        log.exception("sink failed")
    # The worker's own dead-letter log quotes what was wrong with the message.
    stage = SessionStage(None, enricher, WorkerStats(), "u", "s")  # type: ignore[arg-type]
    stage(b'{"schema": "sessionwatch.event/1", "token": "tok-9f8e7d", "password": "hunter2-pw"',
          b"k", 0, 7, None)
    stage(b'{"Authorization": "Bearer bearer-abc.def"}', b"k", 0, 8, None)

    text = captured.getvalue()
    assert text.count("\n") >= 10, text
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, text
    assert "[redacted]" in text
    if fmt == "json":
        lines(captured)  # every line is still valid JSON after redaction


def test_redaction_leaves_ordinary_words_alone():
    # Detector ids and counters that contain a secret word are not secrets.
    line = "source.token_guess: 40 tokens_rejected=40 by 1.2.3.4 (session.cookie_replay)"
    assert redact_text(line) == line


def test_the_quick_check_never_skips_a_line_a_rule_would_redact():
    """redact_text skips its rules for text without a secret word (most lines): every spelling
    the rules take for one - any case, and any character IGNORECASE equates with a letter of
    it (`ſ`, `K`, `ı`, `İ`) - must still go through them."""
    import re
    import sys

    from sessionwatch.logs import _RULES

    def by_the_rules(text: str) -> str:
        for pattern, replacement in _RULES:
            text = pattern.sub(replacement, text)
        return text

    words = ["password", "passwd", "passphrase", "token", "cookie", "secret", "authorization",
             "api_key", "apikey", "credentials", "bearer", "basic"]
    letters = {c for w in words for c in w if c.isalpha()}
    alike: dict[str, set[str]] = {c: {c} for c in letters}
    # IGNORECASE equates characters through their simple case mappings: only those whose lower,
    # upper or folded form holds an ASCII letter can be one (a quick filter over all of Unicode).
    candidates = [ch for ch in map(chr, range(sys.maxunicode + 1))
                  if any(x.isascii() for x in ch.lower() + ch.upper() + ch.casefold())]
    for ch in candidates:
        for c in letters:
            if re.fullmatch(f"(?i){c}", ch):
                alike[c].add(ch)
    assert "\u017f" in alike["s"] and "\u0130" in alike["i"]   # the odd ones are there
    checked = 0
    for word in words:
        for i, c in enumerate(word):
            for ch in alike.get(c, {c}):
                spelled = word[:i] + ch + word[i + 1:]
                for line in (f"{spelled}=hunter2", f"Authorization: {spelled} abc",
                             f"{spelled.upper()}: x", f"u://{spelled}:pw@h"):
                    assert redact_text(line) == by_the_rules(line), line
                    checked += 1
    assert checked > 500
