"""The console's HTML pages, its charts (PNG, drawn server-side by storage/plots.py, the
notebooks' helpers) and its form actions. Every route here is behind SecurityMiddleware; the
forms' POSTs carry the session's CSRF token and need the responder role."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from sessionwatch.console import views
from sessionwatch.console.actions import ActionError, Actor
from sessionwatch.console.live import finding_item, matches, revocation_item
from sessionwatch.console.security import require_responder, safe_next
from storage import audit, recent

FILTERS = ("tenant", "detector", "severity", "action")
SEVERITIES = ("low", "medium", "high", "critical")
ACTIONS = ("revoke", "step_up", "block", "lift", "alert")
STREAM_S = 300.0  # a stream ends after this; EventSource reconnects (through the sign-in check)


def _ctx(request: Request, **extra: Any) -> dict[str, Any]:
    principal = request.state.principal
    return {"request": request, "principal": principal, "csrf": principal.csrf or "",
            "flash": flash(request), **extra}


def render(request: Request, template: str, status: int = 200, **extra: Any) -> Response:
    return request.app.state.templates.TemplateResponse(request, template, _ctx(request, **extra),
                                                        status_code=status)


def actor(request: Request) -> Actor:
    principal = request.state.principal
    client = request.client.host if request.client else ""
    return Actor(name=principal.name, role=principal.role, client=client)


def _filters(request: Request) -> dict[str, str]:
    return {k: request.query_params.get(k, "")[:128] for k in FILTERS}


def home(request: Request) -> Response:
    return RedirectResponse("/live", status_code=303)


def live(request: Request) -> Response:
    state = request.app.state
    filters = _filters(request)
    # The archive's latest and whatever the feed brought since the console started, once each:
    # the feed alone would hide the history behind the first few items it carries.
    archive = state.archive
    merged = {f"{i['kind']}:{i['id']}": i for i in (
        [revocation_item(r) for r in recent.latest_revocations(archive, limit=100)]
        + [finding_item(f) for f in recent.latest_findings(archive, limit=100)]
        + [i for _, i in state.feed.since(0)])}
    items = sorted((i for i in merged.values() if matches(i, filters)),
                   key=lambda i: (i["time"], i["id"]), reverse=True)[:200]
    return render(request, "live.html", items=items, filters=filters, source=state.feed.source,
                  seq=state.feed.seq, tenants=recent.tenants(state.archive),
                  detectors=recent.detectors(state.archive), severities=SEVERITIES,
                  actions=ACTIONS, stream=f"/live/stream?{urlencode(filters)}")


async def live_stream(request: Request) -> Response:
    """Server-sent events: each new item as `event: item` with its JSON, a comment every 15 s."""
    feed, auth = request.app.state.feed, request.app.state.auth
    filters = _filters(request)
    principal = request.state.principal
    mask = principal.role != "responder"
    try:
        last = int(request.headers.get("last-event-id") or request.query_params.get("after", ""))
    except ValueError:
        last = feed.seq

    async def events() -> Any:
        nonlocal last
        started = asyncio.get_running_loop().time()
        quiet = 0.0
        yield "retry: 2000\n\n"
        while asyncio.get_running_loop().time() - started < STREAM_S and not feed.stop.is_set():
            if await request.is_disconnected():
                return
            # Signed out or timed out since the stream opened: stop (the reconnect is refused).
            if principal.session_id is not None and not auth.alive(principal.session_id):
                return
            sent = False
            for seq, item in feed.since(last):
                last = seq
                if matches(item, filters):
                    shown = dict(item, session=views.session_ref(item["session"]) if mask
                                 else item["session"],
                                 session_ref=views.session_ref(item["session"]))
                    yield f"id: {seq}\nevent: item\ndata: {json.dumps(shown)}\n\n"
                    sent = True
            quiet = 0.0 if sent else quiet + 0.5
            if quiet >= 15:
                yield ": still here\n\n"
                quiet = 0.0
            await asyncio.sleep(0.5)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"X-Accel-Buffering": "no"})


def _not_found(exc: views.NotFound) -> HTTPException:
    return HTTPException(404, str(exc))


def revocation_page(request: Request) -> Response:
    try:
        view = views.revocation_view(request.app.state.archive, request.path_params["id"])
    except views.NotFound as exc:
        raise _not_found(exc) from None
    return render(request, "revocation.html", **view)


def _session(request: Request) -> tuple[str, str]:
    tenant = request.path_params["tenant"]
    try:
        return tenant, views.resolve_session(request.app.state.archive, tenant,
                                             request.path_params["ref"])
    except views.NotFound as exc:
        raise _not_found(exc) from None


def session_page(request: Request) -> Response:
    tenant, session = _session(request)
    try:
        view = views.session_view(request.app.state.archive, tenant, session)
    except views.NotFound as exc:
        raise _not_found(exc) from None
    return render(request, "session.html", **view)


def user_page(request: Request) -> Response:
    try:
        view = views.user_view(request.app.state.archive, request.path_params["tenant"],
                               request.path_params["user"])
    except views.NotFound as exc:
        raise _not_found(exc) from None
    return render(request, "user.html", **view)


def _window(request: Request) -> tuple[datetime, datetime, int]:
    try:
        days = max(1, min(90, int(request.query_params.get("days", "7"))))
    except ValueError:
        raise HTTPException(422, "days: a whole number from 1 to 90") from None
    until = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return until - timedelta(days=days), until, days


def detectors_page(request: Request) -> Response:
    since, until, days = _window(request)
    tenant = request.query_params.get("tenant") or None
    view = views.detectors_view(request.app.state.archive, since, until, tenant)
    return render(request, "detectors.html", days=days,
                  tenants=recent.tenants(request.app.state.archive),
                  chart=f"/charts/detectors.png?{urlencode({'days': days, 'tenant': tenant or ''})}",
                  **view)


def audit_page(request: Request) -> Response:
    log = views.records(audit.audit_log(request.app.state.archive, limit=300))
    return render(request, "audit.html", entries=log)


# -- charts ---------------------------------------------------------------------------------------

def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png")


def session_chart(request: Request) -> Response:
    from storage import plots, queries

    tenant, session = _session(request)
    timeline = queries.session_timeline(request.app.state.archive, tenant, session)
    return _png(plots.png(plots.plot_session_timeline(timeline)))


def places_chart(request: Request) -> Response:
    from storage import places, plots, queries

    tenant, session = _session(request)
    timeline = queries.session_timeline(request.app.state.archive, tenant, session)
    found = places.session_places(timeline, request.app.state.city_db or None)
    return _png(plots.png(plots.plot_session_places(found)))


def distance_chart(request: Request) -> Response:
    from storage import places, plots, queries

    tenant, session = _session(request)
    timeline = queries.session_timeline(request.app.state.archive, tenant, session)
    found = places.session_places(timeline, request.app.state.city_db or None)
    return _png(plots.png(plots.plot_distance(found)))


def detectors_chart(request: Request) -> Response:
    from storage import plots, queries

    since, until, _ = _window(request)
    stats = queries.detector_stats(request.app.state.archive, since, until, bucket="hour",
                                   tenant=request.query_params.get("tenant") or None)
    return _png(plots.png(plots.plot_detector_volume(stats)))


# -- acts -----------------------------------------------------------------------------------------

# What a page says after an act: a fixed text per code, never text from the URL (a link could
# otherwise make the console tell an operator anything).
DONE = {"verdict-confirmed": "verdict recorded: confirmed compromised",
        "verdict-dismissed": "verdict recorded: dismissed (a false alarm)",
        "revoke-session": "revocation of the session published: {id}",
        "revoke-user": "revocation of all the user's sessions published: {id}",
        "lift-source": "lift of the block published: {id}"}
_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def flash(request: Request) -> str:
    text = DONE.get(request.query_params.get("done", ""), "")
    if "{id}" in text:
        found = request.query_params.get("id", "")
        text = text.format(id=found) if _ID.fullmatch(found) else ""
    return text


def _back(request: Request, path: str, done: str, id: str = "") -> Response:
    path = safe_next(path.split("?", 1)[0]) if path else "/live"
    query = urlencode({"done": done, **({"id": id} if id else {})})
    return RedirectResponse(f"{path}?{query}", status_code=303)


def _failed(request: Request, exc: ActionError) -> Response:
    return render(request, "error.html", status=exc.status, message=str(exc))


async def act_verdict(request: Request) -> Response:
    require_responder(request)
    form = await request.form()
    try:
        await asyncio.to_thread(request.app.state.actions.verdict, actor(request),
                                str(form.get("target", "")), str(form.get("verdict", "")),
                                str(form.get("note", "")))
    except ActionError as exc:
        return _failed(request, exc)
    return _back(request, str(form.get("back", "/live")), f"verdict-{form.get('verdict')}")


async def act_revoke(request: Request) -> Response:
    require_responder(request)
    form = await request.form()
    scope, tenant = str(form.get("scope", "")), str(form.get("tenant", ""))
    subject = str(form.get("subject", ""))
    try:
        rev = await asyncio.to_thread(request.app.state.actions.revoke, actor(request),
                                      tenant=tenant, scope=scope, subject=subject,
                                      action=str(form.get("action", "revoke")))
    except ActionError as exc:
        return _failed(request, exc)
    return _back(request, str(form.get("back", "/live")),
                 f"{rev.action.value}-{rev.scope.value}", rev.id)


ROUTES = [
    Route("/", home),
    Route("/live", live),
    Route("/live/stream", live_stream),
    Route("/revocations/{id}", revocation_page),
    Route("/sessions/{tenant}/{ref}", session_page),
    Route("/users/{tenant}/{user:path}", user_page),
    Route("/detectors", detectors_page),
    Route("/audit", audit_page),
    Route("/charts/session/{tenant}/{ref}.png", session_chart),
    Route("/charts/places/{tenant}/{ref}.png", places_chart),
    Route("/charts/distance/{tenant}/{ref}.png", distance_chart),
    Route("/charts/detectors.png", detectors_chart),
    Route("/act/verdict", act_verdict, methods=["POST"]),
    Route("/act/revoke", act_revoke, methods=["POST"]),
]
