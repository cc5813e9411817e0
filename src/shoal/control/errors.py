"""Domain errors -> HTTP responses, in one place (the edge)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from shoal.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    ShoalError,
    StoreError,
    Unauthenticated,
    Unavailable,
    ValidationError,
    Violation,
)

_STATUS: list[tuple[type[ShoalError], int]] = [
    (ValidationError, 422),
    (NotFound, 404),
    (Unauthenticated, 401),
    (PermissionDenied, 403),
    (Conflict, 409),
    (Unavailable, 503),
    (StoreError, 500),
    (ShoalError, 500),
]


def error_response(err: ShoalError) -> web.Response:
    status = next(code for cls, code in _STATUS if isinstance(err, cls))
    body: dict = {"error": str(err)}
    if isinstance(err, ValidationError):
        body["error"] = f"{len(err.violations)} violation(s); nothing was applied"
        body["violations"] = [
            {"path": v.path, "message": v.message, "document": v.document}
            for v in err.violations
        ]
    return web.json_response(body, status=status)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body; anything else is a ValidationError (HTTP 422)."""
    try:
        body = await request.json()
    except json.JSONDecodeError as e:
        raise ValidationError([Violation("", f"invalid JSON: {e}")]) from None
    if not isinstance(body, dict):
        raise ValidationError([Violation("", "body must be a JSON object")])
    return body


@web.middleware
async def errors_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    try:
        return await handler(request)
    except ShoalError as err:
        return error_response(err)
