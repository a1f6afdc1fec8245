"""The console's Starlette app: pages, charts, API and sign-in behind one SecurityMiddleware,
with the archive, the live feed and the acts it shares between requests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from sessionwatch.console import api, pages
from sessionwatch.console.actions import Actions, RevocationPublisher
from sessionwatch.console.live import LiveFeed
from sessionwatch.console.middleware import SecurityMiddleware
from sessionwatch.console.oidc import OidcClient
from sessionwatch.console.own_events import OwnEvents
from sessionwatch.console.security import SECURITY_HEADERS, Authenticator
from sessionwatch.console.signin import security_routes
from storage import audit

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


@dataclass
class ConsoleParts:
    """What the app is built from (sessionwatch/console/serve.py builds these from settings)."""

    archive: Any                      # a SharedArchive
    auth: Authenticator
    feed: LiveFeed
    publisher: RevocationPublisher | None = None
    own_events: OwnEvents | None = None
    secure_cookies: bool = True
    city_db: str = ""
    oidc: OidcClient | None = None    # single sign-on, when an OIDC provider is configured
    # Prometheus (sessionwatch/metrics.py: ConsoleMetrics) and the liveness heartbeat, when the
    # console has a metrics port (serve.py); beaten every second from the event loop.
    metrics: Any = None
    heartbeat: Callable[[], None] | None = None


def create_app(parts: ConsoleParts) -> Starlette:
    from storage import plots

    plots.preload()  # never from several request threads at once (see preload)

    templates = Jinja2Templates(directory=str(TEMPLATES))
    def audit_sign_in(action: str, actor: str, role: str, client: str, result: str) -> None:
        audit.record_action(parts.archive, actor=actor, role=role, action=action, client=client,
                            result=result)

    routes = [*security_routes(parts.auth, templates, parts.own_events, audit_sign_in, parts.oidc),
              *pages.ROUTES,
              *api.ROUTES, Mount("/static", StaticFiles(directory=str(STATIC)), name="static")]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error,
                                                       Exception: _server_error},
                    lifespan=_beating(parts.heartbeat) if parts.heartbeat else None)
    app.state.archive = parts.archive
    app.state.feed = parts.feed
    app.state.auth = parts.auth
    app.state.templates = templates
    app.state.actions = Actions(parts.archive, parts.publisher)
    app.state.city_db = parts.city_db
    app.add_middleware(SecurityMiddleware, auth=parts.auth, secure_cookies=parts.secure_cookies,
                       own_events=parts.own_events)
    if parts.metrics is not None:
        from sessionwatch.metrics import RequestMetricsMiddleware

        # Outermost (added last): refused sign-ins and CSRF failures are counted too.
        app.add_middleware(RequestMetricsMiddleware, metrics=parts.metrics)
    return app


def _beating(heartbeat: Callable[[], None]) -> Callable[[Any], Any]:
    """A lifespan that beats while the event loop turns (a wedged loop stops the beat)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async def beat() -> None:
            while True:
                heartbeat()
                await asyncio.sleep(1.0)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()

    return lifespan


async def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette answers a crash outside every middleware: the headers are set here instead.
    return JSONResponse({"error": "internal error; the console's log says more"}, status_code=500,
                        headers={**dict(SECURITY_HEADERS), "cache-control": "no-store"})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/") or getattr(request.state, "principal", None) is None:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    return request.app.state.templates.TemplateResponse(
        request, "error.html", {"request": request, "principal": request.state.principal,
                                "csrf": request.state.principal.csrf or "", "flash": "",
                                "message": exc.detail}, status_code=exc.status_code)
