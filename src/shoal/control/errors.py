"""Domain errors -> HTTP responses, in one place (the edge)."""

from __future__ import annotations

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


@web.middleware
async def errors_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    try:
        return await handler(request)
    except ShoalError as err:
        return error_response(err)
