"""The API's OpenAPI 3.1 document, built from the route table (so a route cannot go undocumented)
plus the parameters, bodies and responses written out here."""

from __future__ import annotations

import re
from typing import Any

ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
REASON = {"type": "object", "properties": {
    "detector": {"type": "string"}, "severity": {"type": "string"}, "summary": {"type": "string"}}}
REVOCATION = {
    "type": "object",
    "description": "A revocation in the contract's fields (producers/schemas/revocation.v1.json), "
                   "`id` first, plus `severity` and `detectors` as archived.",
    "properties": {
        "id": {"type": "string"}, "tenant": {"type": "string"},
        "scope": {"enum": ["session", "user", "source"]},
        "session": {"type": ["string", "null"]}, "user": {"type": ["string", "null"]},
        "source": {"type": ["string", "null"]},
        "action": {"enum": ["revoke", "step_up", "block", "lift"]},
        "not_before": {"type": ["string", "null"], "format": "date-time"},
        "expires": {"type": ["string", "null"], "format": "date-time"},
        "reasons": {"type": "array", "items": REASON}, "severity": {"type": "string"},
        "detectors": {"type": "array", "items": {"type": "string"}},
        "event_time": {"type": "string", "format": "date-time"},
        "decided_at": {"type": "string", "format": "date-time"},
        "events": {"type": "array", "items": {"type": "string"}}},
    "required": ["id", "tenant", "scope", "action", "reasons", "event_time", "decided_at"]}
FEEDBACK_IN = {"type": "object", "required": ["target", "verdict"], "properties": {
    "target": {"type": "string", "description": "a revocation or finding id"},
    "verdict": {"enum": ["confirmed", "dismissed"]},
    "note": {"type": "string", "maxLength": 2000}}}
REVOKE_IN = {"type": "object", "required": ["tenant", "scope"], "properties": {
    "tenant": {"type": "string"}, "scope": {"enum": ["session", "user", "source"]},
    "session": {"type": "string", "description": "scope session: its hash"},
    "user": {"type": "string", "description": "scope user"},
    "source": {"type": "string", "description": "scope source: the blocked address or network"},
    "action": {"enum": ["revoke", "lift"], "default": "revoke",
               "description": "revoke (session, user) or lift (a source block)"}}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


QUERY = {
    "since": _query("since", "RFC 3339 with an offset; event time at or after",
                    {"type": "string", "format": "date-time"}),
    "tenant": _query("tenant", "one tenant only"),
    "detector": _query("detector", "one detector only"),
    "severity": _query("severity", "low, medium, high or critical"),
    "action": _query("action", "revoke, step_up, block or lift"),
    "limit": _query("limit", "at most this many rows (1-10000)", {"type": "integer"}),
    "days": _query("days", "how many days back (1-90, default 7)", {"type": "integer"}),
    "target": {"name": "target", "in": "query", "required": True,
               "description": "a revocation or finding id", "schema": {"type": "string"}},
}
PARAMETERS = {
    ("GET", "/api/revocations"): ["since", "tenant", "detector", "action", "limit"],
    ("GET", "/api/findings"): ["since", "tenant", "detector", "severity", "limit"],
    ("GET", "/api/detectors"): ["days", "tenant"],
    ("GET", "/api/feedback"): ["target"],
    ("GET", "/api/audit"): ["limit"],
}
BODIES = {("POST", "/api/feedback"): FEEDBACK_IN, ("POST", "/api/revocations"): REVOKE_IN}
OK = {("GET", "/api/revocations"): ("200", {"type": "array", "items": REVOCATION}),
      ("POST", "/api/revocations"): ("201", REVOCATION),
      ("POST", "/api/feedback"): ("201", {"type": "object"})}


def openapi(routes: list[Any]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", route.path)
        for method in sorted(route.methods - {"HEAD"}):
            key = (method, route.path)
            code, schema = OK.get(key, ("200", {"type": "object"}))
            op: dict[str, Any] = {
                "operationId": route.endpoint.__name__,
                "summary": (route.endpoint.__doc__ or "").strip().splitlines()[0],
                "parameters": [QUERY[q] for q in PARAMETERS.get(key, ())] + [
                    {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                    for p in re.findall(r"\{(\w+)", route.path)],
                "responses": {
                    code: {"description": "done",
                           "content": {"application/json": {"schema": schema}}},
                    "401": {"description": "no valid token or session",
                            "content": {"application/json": {"schema": ERROR}}},
                    "403": {"description": "the viewer role cannot act, or no CSRF token",
                            "content": {"application/json": {"schema": ERROR}}},
                    "404": {"description": "not in the archive",
                            "content": {"application/json": {"schema": ERROR}}},
                    "422": {"description": "a parameter refused",
                            "content": {"application/json": {"schema": ERROR}}}}}
            if key in BODIES:
                op["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": BODIES[key]}}}
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "sessionwatch console API", "version": "1",
                 "description": "Everything the console's pages show and do. Sign in with "
                                "`Authorization: Bearer $SESSIONWATCH_CONSOLE_TOKEN` (the "
                                "responder role) or a console session cookie (POSTs then need "
                                "X-CSRF-Token)."},
        "components": {"securitySchemes": {
            "token": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": "sessionwatch_console"}}},
        "security": [{"token": []}, {"session": []}],
        "paths": paths,
    }
