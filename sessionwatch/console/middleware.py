"""SecurityMiddleware: every request but sign-in (PUBLIC_PATHS) and /static is authenticated (a
console session or the bearer token), unsafe methods are CSRF-checked, and every response gets
the security headers (README "Security model")."""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionwatch.console.security import (
    _MAX_FORM_BYTES,
    CSRF_FIELD,
    CSRF_HEADER,
    PASSIVE_PATHS,
    SECURITY_HEADERS,
    UNSAFE_METHODS,
    Authenticator,
    CookiePolicy,
    EndedSession,
    Principal,
    client_address,
    safe_next,
)

if TYPE_CHECKING:
    from sessionwatch.console.own_events import OwnEvents


log = logging.getLogger("sessionwatch.console.security")
# Reachable without a session: the sign-in form and the single sign-on start and callback.
PUBLIC_PATHS = frozenset({"/signin", "/signin/oidc", "/signin/oidc/callback"})


class SecurityMiddleware:
    """Pure ASGI (streams server-sent events untouched): authenticate, check CSRF, add headers."""

    def __init__(self, app: ASGIApp, *, auth: Authenticator, secure_cookies: bool,
                 own_events: OwnEvents | None = None) -> None:
        self.app = app
        self.auth = auth
        self.cookies = CookiePolicy(secure_cookies)
        self.own_events = own_events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        path: str = scope["path"]
        static = path.startswith("/static/")
        # assets need nobody: no lookup, so a stale cookie is not reported once per stylesheet
        principal, stale = (None, False) if static else self._principal(conn)
        scope = {**scope, "state": {**scope.get("state", {}), "principal": principal,
                                    "cookie_policy": self.cookies}}
        if scope["type"] == "websocket":
            if principal is None:
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        send = self._with_headers(send, static=static)
        if path in PUBLIC_PATHS or static:
            if scope["method"] == "POST":  # public: bound what an anonymous client can make us hold
                body, complete = await _read_body(receive)
                if not complete:
                    await _error(path, 413, "Request too large.")(scope, receive, send)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send)
            return
        if principal is None:
            await self._refuse(conn, stale)(scope, receive, send)
            return
        if scope["method"] in UNSAFE_METHODS and principal.via == "session":
            ok, receive = await self._csrf_ok(scope, receive, principal)
            if not ok:
                await _error(path, 403, "CSRF token missing or wrong: reload the page and try again, or "
                             "send the X-CSRF-Token header")(scope, receive, send)
                return
        if (self.own_events is not None and principal.session_id is not None
                and path not in PASSIVE_PATHS):
            self.own_events.activity(principal.session_id, user=principal.name, ip=client_address(conn),
                                     user_agent=conn.headers.get("user-agent"))
        await self.app(scope, receive, send)

    def _principal(self, conn: HTTPConnection) -> tuple[Principal | None, bool]:
        """The principal, and whether a cookie was presented that names no live session."""
        header = conn.headers.get("authorization")
        if header is not None:  # an explicit credential decides; a wrong one is not retried as a cookie
            principal = self.auth.bearer(header)
            if principal is None:
                log.warning("console: bearer token refused from %s", client_address(conn))
            return principal, False
        sid = conn.cookies.get(self.cookies.session_name)
        if not sid:
            return None, False
        # The live view's stream reconnects on its own: that is no sign of a person being there.
        found = self.auth.resolve(sid, touch=conn.scope["path"] not in PASSIVE_PATHS)
        if isinstance(found, Principal):
            return found, False
        if self.own_events is not None:
            ip, ua = client_address(conn), conn.headers.get("user-agent")
            if isinstance(found, EndedSession):
                self.own_events.expired(sid, user=found.name, ip=ip, user_agent=ua, reason=found.reason)
            else:
                self.own_events.token_rejected(sid, ip=ip, user_agent=ua)
        return None, True

    def _refuse(self, conn: HTTPConnection, stale: bool) -> Response:
        path = conn.scope["path"]
        response: Response
        if _is_api(path):
            response = JSONResponse({"error": "sign in, or send Authorization: Bearer <token>"},
                                    status_code=401, headers={"www-authenticate": "Bearer"})
        else:
            target = path + ("?" + conn.url.query if conn.url.query else "")
            response = RedirectResponse(f"/signin?next={quote(safe_next(target), safe='')}", 303)
        if stale:
            response.headers.append("set-cookie", self.cookies.header(self.cookies.session_name, "", 0))
        return response

    async def _csrf_ok(self, scope: Scope, receive: Receive, principal: Principal) -> tuple[bool, Receive]:
        expected = principal.csrf or ""
        header = HTTPConnection(scope).headers.get(CSRF_HEADER)
        if header is not None:
            return hmac.compare_digest(header.encode(), expected.encode()), receive
        content_type = HTTPConnection(scope).headers.get("content-type", "")
        if not content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            return False, receive
        body, complete = await _read_body(receive)
        if not complete:
            return False, receive
        replay = _replay(body, receive)
        form = await Request(scope, replay).form()
        submitted = form.get(CSRF_FIELD)
        await form.close()
        ok = isinstance(submitted, str) and hmac.compare_digest(submitted.encode(), expected.encode())
        return ok, _replay(body, receive)

    @staticmethod
    def _with_headers(send: Send, *, static: bool) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                drop = {name for name, _ in SECURITY_HEADERS} | (set() if static else {"cache-control"})
                headers = [(k, v) for k, v in message.get("headers", []) if k.decode().lower() not in drop]
                headers.extend((k.encode(), v.encode()) for k, v in SECURITY_HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)
        return wrapped


def _is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def _error(path: str, status: int, message: str) -> Response:
    if _is_api(path):
        return JSONResponse({"error": message}, status_code=status)
    return PlainTextResponse(message, status_code=status)


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole request body, or (partial, False) past `_MAX_FORM_BYTES` or on a disconnect."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_FORM_BYTES:
            return b"", False
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


# -- the sign-in routes ----------------------------------------------------------------------------
