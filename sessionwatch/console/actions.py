"""What a responder does in the console: verdicts into `feedback`, revocations by hand onto
`sessionwatch.revocations` (the applier enforces them like the worker's), and every attempt into
the `audit` table with who, when and from where."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from producers.contract import REVOCATIONS_TOPIC, Action, Revocation, Scope, encode
from producers.errors import SessionwatchError
from storage import audit, feedback
from storage.clickhouse.rows import revocation_row
from storage.manual import ManualRevocationError, manual_revocation

log = logging.getLogger("sessionwatch.console.actions")

# The action names written to the audit table, per kind of revocation by hand.
AUDIT_ACTION = {("session", "revoke"): "revoke_session", ("user", "revoke"): "revoke_user",
                ("source", "lift"): "lift_block"}
PUBLISH_TIMEOUT_S = 10.0
MAX_TENANT, MAX_SUBJECT = 128, 256
# The same act by the same admin within this long is one act (a double submit, a retried POST).
REPEAT_S = 60.0


class ActionError(SessionwatchError):
    """An action that was refused or failed; `status` is the HTTP status that says which."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Actor:
    """Who acts: the signed-in account (or the API token) and the address they came from."""

    name: str
    role: str
    client: str


class RevocationPublisher:
    """Publishes a revocation on `sessionwatch.revocations` and waits for the broker's ack."""

    def __init__(self, bootstrap: str,
                 producer_factory: Callable[[], Any] | None = None, security: Any = None) -> None:
        self.bootstrap = bootstrap
        self.security = security  # a KafkaSecurity, None: plaintext
        self._factory = producer_factory or self._kafka_producer
        self._producer: Any = None

    def _kafka_producer(self) -> Any:
        from kafka import KafkaProducer

        from producers.kafka_options import kafka_python_options

        return KafkaProducer(bootstrap_servers=self.bootstrap.split(","), acks="all",
                             linger_ms=0, request_timeout_ms=int(PUBLISH_TIMEOUT_S * 1000),
                             max_block_ms=int(PUBLISH_TIMEOUT_S * 1000),
                             **kafka_python_options(self.security))

    def publish(self, revocation: Revocation) -> None:
        from streams.routing import output_key

        try:
            if self._producer is None:
                self._producer = self._factory()
            future = self._producer.send(REVOCATIONS_TOPIC, value=encode(revocation),
                                         key=output_key(revocation))
            future.get(timeout=PUBLISH_TIMEOUT_S)
        except Exception as exc:  # the broker's many errors: all mean "not published"
            log.warning("revocation %s not published to %s: %s", revocation.id, self.bootstrap,
                        type(exc).__name__)
            raise ActionError(f"the broker at {self.bootstrap} did not take the revocation "
                              f"({type(exc).__name__}); nothing was revoked, try again", 503) from exc

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)


class Actions:
    """The console's acts, each audited whether it worked or not."""

    def __init__(self, archive: Any, publisher: RevocationPublisher | None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.archive = archive
        self.publisher = publisher
        self.clock = clock
        self._lock = threading.Lock()
        self._recent: dict[tuple[str, ...], tuple[datetime, Revocation]] = {}

    def verdict(self, actor: Actor, target: str, verdict: str, note: str = "") -> feedback.Verdict:
        """Confirm or dismiss a revocation or finding (the model trains on these)."""
        try:
            recorded = feedback.record_verdict(self.archive, target, verdict, actor.name, note,
                                               at=self.clock())
        except feedback.UnknownTarget as exc:
            self._audit(actor, "verdict", target[:MAX_SUBJECT], "", "refused",
                        {"verdict": verdict[:20]})
            raise ActionError(str(exc), 404) from exc
        except feedback.FeedbackError as exc:
            self._audit(actor, "verdict", target[:MAX_SUBJECT], "", "refused",
                        {"verdict": verdict[:20]})
            raise ActionError(str(exc), 422) from exc
        self._audit(actor, "verdict", target, recorded.tenant, "ok",
                    {"verdict": recorded.verdict, "kind": recorded.target_kind,
                     "verdict_id": recorded.id})
        return recorded

    def revoke(self, actor: Actor, *, tenant: str, scope: str, subject: str,
               action: str = "revoke") -> Revocation:
        """Revoke a session or all of a user's sessions, or lift a block of a source, by hand.

        The subject must be in the archive for that tenant (a typo must not report success while
        enforcing nothing). The same act by the same admin within `REPEAT_S` returns the
        revocation already published (a double submit publishes once)."""
        kind = AUDIT_ACTION.get((scope, action))
        if kind is None:
            raise ActionError(f"scope/action: {scope[:20]}/{action[:20]} is not something the "
                              "console does; session/revoke, user/revoke or source/lift")
        tenant, subject = tenant.strip(), subject.strip()
        shown = subject[:MAX_SUBJECT]
        if not tenant or not subject or len(tenant) > MAX_TENANT or len(subject) > MAX_SUBJECT:
            self._audit(actor, kind, shown, tenant[:MAX_TENANT], "refused", {"why": "bad field"})
            raise ActionError(f"tenant and {scope}: both are needed, at most {MAX_TENANT} and "
                              f"{MAX_SUBJECT} characters")
        if self.publisher is None:
            self._audit(actor, kind, shown, tenant, "refused", {"why": "no broker"})
            raise ActionError("the console runs without a broker (--bootstrap): revocations by "
                              "hand are off; restart it with --bootstrap host:port", 503)
        try:
            subject = self._existing(tenant, scope, subject)
        except ActionError:
            self._audit(actor, kind, shown, tenant, "refused", {"why": "not in the archive"})
            raise
        now = self.clock()
        key = (actor.name, tenant, scope, subject, action)
        with self._lock:
            earlier = self._recent.get(key)
            if earlier is not None and (now - earlier[0]).total_seconds() < REPEAT_S:
                return earlier[1]
        try:
            rev = manual_revocation(
                tenant=tenant, scope=scope, action=action, admin=actor.name, now=now,
                session=subject if scope == Scope.SESSION.value else None,
                user=subject if scope == Scope.USER.value else None,
                source=subject if scope == Scope.SOURCE.value else None,
                not_before=now if scope == Scope.USER.value and action == Action.REVOKE.value
                else None)
        except ManualRevocationError as exc:
            self._audit(actor, kind, shown, tenant, "refused", {"why": "invalid"})
            raise ActionError(str(exc)) from exc
        # Checked before publishing: once it is on the topic, the audit row must be writable.
        entry = dict(actor=actor.name, role=actor.role, action=kind, target=subject,
                     tenant=tenant, detail={"revocation": rev.id}, client=actor.client, at=now)
        audit.audit_entry(**entry, result="ok")
        try:
            self.publisher.publish(rev)
        except ActionError:
            self._audit(actor, kind, subject, tenant, "error", {"revocation": rev.id})
            raise
        with self._lock:
            self._recent[key] = (now, rev)
            for k in [k for k, (t, _) in self._recent.items()
                      if (now - t).total_seconds() >= REPEAT_S]:
                del self._recent[k]
        try:
            # Into the archive at once as well: the pages show it before the archiver catches
            # up (and with chDB the console holds the directory). The same row, so it collapses.
            self.archive.insert("revocations", [revocation_row(rev)])
            audit.record_action(self.archive, **entry, result="ok")
        except Exception:
            log.error("console: revocation %s (%s by %s) was PUBLISHED but not archived or "
                      "audited; the archiver will archive it from the topic", rev.id, kind,
                      actor.name, exc_info=True)
        log.info("console: %s %s/%s by %s (revocation %s)", kind, tenant, scope, actor.name, rev.id)
        return rev

    def _existing(self, tenant: str, scope: str, subject: str) -> str:
        """The subject as archived (a session reference resolved to its hash); 404 if absent."""
        from sessionwatch.console.views import NotFound, resolve_session

        if scope == Scope.SESSION.value:
            try:
                return resolve_session(self.archive, tenant, subject)
            except NotFound as exc:
                raise ActionError(str(exc), 404) from exc
        column, table = (("user", "events") if scope == Scope.USER.value
                         else ("source", "revocations"))
        found = self.archive.query(
            f"SELECT count() AS n FROM sessionwatch.{table} WHERE tenant = %(tenant)s "
            f"AND `{column}` = %(subject)s", {"tenant": tenant, "subject": subject})
        if int(found["n"].iloc[0]) == 0:
            what = "user" if scope == Scope.USER.value else "blocked source"
            raise ActionError(f"no {what} {subject[:80]!r} of tenant {tenant[:80]!r} in the "
                              "archive; check the spelling (a source exactly as its block names it)",
                              404)
        return subject

    def _audit(self, actor: Actor, action: str, target: str, tenant: str, result: str,
               detail: dict[str, Any]) -> None:
        audit.record_action(self.archive, actor=actor.name, role=actor.role, action=action,
                            target=target, tenant=tenant, result=result, detail=detail,
                            client=actor.client, at=self.clock())
