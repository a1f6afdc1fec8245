"""The sign-in routes: GET/POST /signin and POST /signout, with the login-CSRF token, the neutral
failure message, the rate limit's 429 and the console's own session events; with an OIDC
provider also GET /signin/oidc (start) and /signin/oidc/callback (oidc.py does the checks)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from sessionwatch.console.oidc import (
    CALLBACK_PATH,
    PENDING_S,
    START_PATH,
    OidcClient,
    OidcRefused,
    pending_cookie_header,
    pending_cookie_name,
)
from sessionwatch.console.security import (
    CSRF_FIELD,
    SIGN_IN_FAILED,
    AuditHook,
    Authenticator,
    Principal,
    SignInRefused,
    client_address,
    cookie_policy,
    safe_next,
)

if TYPE_CHECKING:
    from starlette.templating import Jinja2Templates

    from sessionwatch.console.own_events import OwnEvents


log = logging.getLogger("sessionwatch.console.security")


def security_routes(auth: Authenticator, templates: Jinja2Templates,
                    own_events: OwnEvents | None, audit: AuditHook | None = None,
                    oidc: OidcClient | None = None) -> list[Route]:
    """`GET/POST /signin` and `POST /signout` (the middleware has checked its CSRF token), and
    the single sign-on routes when `oidc` is given; `audit` hears every sign-in, refused sign-in
    and sign-out."""

    def report(action: str, actor: str, role: str, client: str, result: str) -> None:
        if audit is None:
            return
        try:
            audit(action, actor, role, client, result)
        except Exception as exc:  # the audit table down must not lock everyone out
            log.error("console: %s of %s not audited (%s)", action, actor, type(exc).__name__)

    def form(request: Request, status: int = 200, error: str | None = None, next_: str = "/",
             headers: dict[str, str] | None = None) -> Response:
        policy = cookie_policy(request)
        held = request.cookies.get(policy.signin_name)
        # keep a valid token the browser holds, so two open sign-in tabs both work
        token = held if held and auth.signin_token_ok(held, held) else auth.new_signin_token()
        response = templates.TemplateResponse(
            request, "signin.html", {"csrf": token, "next": safe_next(next_), "error": error,
                                     "sso": oidc is not None, "passwords": bool(auth.accounts)},
            status_code=status, headers=headers)
        response.headers.append("set-cookie", policy.header(policy.signin_name, token, 3600))
        return response

    async def signin_page(request: Request) -> Response:
        return form(request, next_=request.query_params.get("next", "/"))

    async def signin(request: Request) -> Response:
        policy = cookie_policy(request)
        data = await request.form()
        name, password = str(data.get("name", "")), str(data.get("password", ""))
        next_ = safe_next(str(data.get("next", "/")))
        if not auth.signin_token_ok(request.cookies.get(policy.signin_name), str(data.get(CSRF_FIELD, ""))):
            return form(request, 403, "The sign-in form expired. Please try again.", next_)
        ip, ua = client_address(request), request.headers.get("user-agent")
        previous = request.cookies.get(policy.session_name) or None
        try:
            session = await run_in_threadpool(auth.sign_in, name, password, ip, previous_sid=previous)
        except SignInRefused as refused:
            known = name in auth.accounts
            if own_events is not None:
                own_events.sign_in_failed(user=name if known else None, ip=ip, user_agent=ua,
                                          reason=refused.reason)
            await run_in_threadpool(report, "sign_in_failed", name if known else "",
                                    auth.accounts[name].role if known else "", ip,
                                    "refused")
            if refused.reason == "rate_limited":
                return form(request, 429, f"{SIGN_IN_FAILED} Too many attempts: try again in "
                            f"{max(1, math.ceil(refused.retry_after_s / 60))} minute(s).", next_,
                            headers={"retry-after": str(refused.retry_after_s)})
            return form(request, 401, SIGN_IN_FAILED, next_)
        if own_events is not None:
            own_events.signed_in(session.sid, user=session.principal.name, ip=ip, user_agent=ua,
                                 previous_sid=previous)
        await run_in_threadpool(report, "sign_in", session.principal.name, session.principal.role,
                                ip, "ok")
        response = RedirectResponse(next_, 303)
        response.headers.append("set-cookie", policy.header(policy.session_name, session.sid,
                                                            int(auth.absolute_s)))
        response.headers.append("set-cookie", policy.header(policy.signin_name, "", 0))
        return response

    async def signout(request: Request) -> Response:
        policy = cookie_policy(request)
        principal = getattr(request.state, "principal", None)
        if isinstance(principal, Principal) and principal.session_id is not None:
            ended = auth.sign_out(principal.session_id)
            if ended is not None and own_events is not None:
                own_events.signed_out(principal.session_id, user=ended.name, ip=client_address(request),
                                      user_agent=request.headers.get("user-agent"))
            if ended is not None:
                await run_in_threadpool(report, "sign_out", ended.name, ended.role,
                                        client_address(request), "ok")
        response = RedirectResponse("/signin", 303)
        response.headers.append("set-cookie", policy.header(policy.session_name, "", 0))
        return response

    routes = [
        Route("/signin", signin_page, methods=["GET"], name="signin_page"),
        Route("/signin", signin, methods=["POST"], name="signin"),
        Route("/signout", signout, methods=["POST"], name="signout"),
    ]
    if oidc is None:
        return routes

    async def refused(request: Request, refusal: OidcRefused, next_: str) -> Response:
        ip = client_address(request)
        # the reason is a fixed word from oidc.py: no token, code or secret can reach the log
        log.warning("console sign-in failed (single sign-on: %s) for %s from %s", refusal.reason,
                    repr(refusal.user) if refusal.user else "an unverified user", ip)
        if own_events is not None:
            own_events.sign_in_failed(user=refusal.user, ip=ip,
                                      user_agent=request.headers.get("user-agent"),
                                      reason="bad_credentials")
        await run_in_threadpool(report, "sign_in_failed", refusal.user or "", "", ip, "refused")
        response = form(request, 401, SIGN_IN_FAILED, next_)
        response.headers.append("set-cookie", pending_cookie_header(cookie_policy(request), "", 0))
        return response

    async def oidc_start(request: Request) -> Response:
        next_ = safe_next(request.query_params.get("next", "/"))
        try:
            url, state = await run_in_threadpool(oidc.start, next_)
        except OidcRefused as refusal:
            return await refused(request, refusal, next_)
        response = RedirectResponse(url, 303)
        response.headers.append("set-cookie", pending_cookie_header(cookie_policy(request), state,
                                                                    PENDING_S))
        return response

    async def oidc_callback(request: Request) -> Response:
        policy = cookie_policy(request)
        query = request.query_params
        try:
            identity, next_ = await run_in_threadpool(
                oidc.finish, state=query.get("state"), code=query.get("code"),
                cookie=request.cookies.get(pending_cookie_name(policy)), error=query.get("error"))
        except OidcRefused as refusal:
            return await refused(request, refusal, "/")
        ip, ua = client_address(request), request.headers.get("user-agent")
        previous = request.cookies.get(policy.session_name) or None
        session = auth.sign_in_external(identity.name, identity.role, ip, previous_sid=previous)
        if own_events is not None:
            own_events.signed_in(session.sid, user=identity.name, ip=ip, user_agent=ua,
                                 previous_sid=previous)
        await run_in_threadpool(report, "sign_in", identity.name, identity.role, ip, "ok")
        # Not a redirect: this request came from the provider's site, and a browser sends no
        # SameSite=Strict cookie on a redirect chain that started cross-site, so a 303 to `next`
        # would arrive without the new session. The page's own (same-site) refresh carries it.
        response = templates.TemplateResponse(request, "signin.html", {"continue_to": safe_next(next_)})
        response.headers.append("set-cookie", policy.header(policy.session_name, session.sid,
                                                            int(auth.absolute_s)))
        response.headers.append("set-cookie", pending_cookie_header(policy, "", 0))
        response.headers.append("set-cookie", policy.header(policy.signin_name, "", 0))
        return response

    return [*routes,
            Route(START_PATH, oidc_start, methods=["GET"], name="oidc_start"),
            Route(CALLBACK_PATH, oidc_callback, methods=["GET"], name="oidc_callback")]
