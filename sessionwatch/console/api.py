"""The console's JSON API under /api/: everything the pages show and do, for automation (a bearer
token, SESSIONWATCH_CONSOLE_TOKEN) or a signed-in browser. Documented at /api/openapi.json,
which a test keeps equal to the route table."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionwatch.console import views
from sessionwatch.console.actions import ActionError
from sessionwatch.console.masking import masked, masked_audit
from sessionwatch.console.openapi import openapi
from sessionwatch.console.pages import actor
from sessionwatch.console.security import require_responder
from storage import audit, feedback, recent

MAX_BODY = 64 * 1024


class BadRequest(ValueError):
    """A parameter the API refuses (422)."""


class TooLarge(BadRequest):
    """A body over MAX_BODY (413)."""


def _json(request: Request, data: Any, status: int = 200) -> Response:
    return JSONResponse(masked(data, request.state.principal), status_code=status)


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _since(request: Request, default: timedelta | None = None) -> datetime | None:
    raw = request.query_params.get("since")
    if not raw:
        return datetime.now(UTC) - default if default else None
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"since: {raw[:40]!r} is not RFC 3339 (e.g. 2026-12-01T09:00:00Z)") from None
    if when.tzinfo is None:
        raise BadRequest("since: give a UTC offset (Z or +hh:mm)")
    return when


def _limit(request: Request, default: int = 100) -> int:
    raw = request.query_params.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= recent.MAX_ROWS:
        raise BadRequest(f"limit: a whole number from 1 to {recent.MAX_ROWS}")
    return int(raw)


def _handled(handler: Any) -> Any:
    """Map the API's refusals to status codes; the body is always {"error": ...}."""
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except TooLarge as exc:
            return _error(413, str(exc))
        except BadRequest as exc:
            return _error(422, str(exc))
        except views.NotFound as exc:
            return _error(404, str(exc))
        except ActionError as exc:
            return _error(exc.status, str(exc))
    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return asyncio.to_thread(fn, *args, **kwargs)


async def _body(request: Request) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise TooLarge(f"the body is over {MAX_BODY // 1024} KiB; these calls take a few fields")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


@_handled
async def list_revocations(request: Request) -> Response:
    """Revocations, newest first, in the contract's fields (`id` first)."""
    archive = request.app.state.archive
    found = await _run(recent.latest_revocations, archive, since=_since(request),
                       tenant=request.query_params.get("tenant") or None,
                       detector=request.query_params.get("detector") or None,
                       action=request.query_params.get("action") or None,
                       limit=_limit(request, 1000))
    return _json(request, found)


@_handled
async def get_revocation(request: Request) -> Response:
    """One revocation, the findings that caused it and its verdicts."""
    view = await _run(views.revocation_view, request.app.state.archive, request.path_params["id"])
    return _json(request, view)


@_handled
async def post_revocation(request: Request) -> Response:
    """Revoke a session or a user's sessions, or lift a source block, by hand."""
    require_responder(request)
    body = await _body(request)
    scope = str(body.get("scope", ""))
    subject = str(body.get(scope, "") if scope in ("session", "user", "source") else "")
    rev = await _run(request.app.state.actions.revoke, actor(request),
                     tenant=str(body.get("tenant", "")), scope=scope, subject=subject,
                     action=str(body.get("action", "revoke")))
    return _json(request, json.loads(_encode(rev)), 201)


def _encode(rev: Any) -> bytes:
    from producers.contract import encode

    return encode(rev)


@_handled
async def list_findings(request: Request) -> Response:
    """Findings, newest first."""
    found = await _run(recent.latest_findings, request.app.state.archive, since=_since(request),
                       tenant=request.query_params.get("tenant") or None,
                       detector=request.query_params.get("detector") or None,
                       severity=request.query_params.get("severity") or None,
                       limit=_limit(request))
    return _json(request, found)


@_handled
async def get_session(request: Request) -> Response:
    """A session's timeline, findings, revocations and the user's other sessions."""
    archive = request.app.state.archive
    tenant = request.path_params["tenant"]
    session = await _run(views.resolve_session, archive, tenant, request.path_params["ref"])
    return _json(request, await _run(views.session_view, archive, tenant, session))


@_handled
async def get_user(request: Request) -> Response:
    """A user's sessions, logins by place and client, and revocations (30 days)."""
    return _json(request, await _run(views.user_view, request.app.state.archive,
                                     request.path_params["tenant"], request.path_params["user"]))


@_handled
async def get_detectors(request: Request) -> Response:
    """Per hour and detector: findings and revocations; per detector: verdicts."""
    raw = request.query_params.get("days", "7")
    if not raw.isdigit() or not 1 <= int(raw) <= 90:
        raise BadRequest("days: a whole number from 1 to 90")
    until = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return _json(request, await _run(views.detectors_view, request.app.state.archive,
                                     until - timedelta(days=int(raw)), until,
                                     request.query_params.get("tenant") or None))


@_handled
async def post_feedback(request: Request) -> Response:
    """Confirm (a real hijack) or dismiss (a false alarm) a revocation or finding."""
    require_responder(request)
    body = await _body(request)
    verdict = await _run(request.app.state.actions.verdict, actor(request),
                         str(body.get("target", "")), str(body.get("verdict", "")),
                         str(body.get("note", "")))
    return _json(request, {"id": verdict.id, "target": verdict.target,
                           "target_kind": verdict.target_kind, "verdict": verdict.verdict,
                           "tenant": verdict.tenant, "analyst": verdict.analyst,
                           "at": verdict.at.isoformat(timespec="milliseconds")}, 201)


@_handled
async def get_feedback(request: Request) -> Response:
    """The verdicts recorded for one target, latest first."""
    target = request.query_params.get("target", "").strip()
    if not target:
        raise BadRequest("target: give a revocation or finding id")
    found = await _run(feedback.verdicts, request.app.state.archive, target=target)
    return _json(request, views.records(found))


@_handled
async def get_audit(request: Request) -> Response:
    """The console's audit log, newest first: who did what, when, from where."""
    found = await _run(audit.audit_log, request.app.state.archive, limit=_limit(request, 200))
    return _json(request, masked_audit(views.records(found), request.state.principal))


async def get_openapi(request: Request) -> Response:
    """This API's OpenAPI 3.1 document."""
    return JSONResponse(openapi(ROUTES))


ROUTES = [
    Route("/api/revocations", list_revocations, methods=["GET"]),
    Route("/api/revocations", post_revocation, methods=["POST"]),
    Route("/api/revocations/{id}", get_revocation, methods=["GET"]),
    Route("/api/findings", list_findings, methods=["GET"]),
    Route("/api/sessions/{tenant}/{ref}", get_session, methods=["GET"]),
    Route("/api/users/{tenant}/{user:path}", get_user, methods=["GET"]),
    Route("/api/detectors", get_detectors, methods=["GET"]),
    Route("/api/feedback", post_feedback, methods=["POST"]),
    Route("/api/feedback", get_feedback, methods=["GET"]),
    Route("/api/audit", get_audit, methods=["GET"]),
    Route("/api/openapi.json", get_openapi, methods=["GET"]),
]
