"""Domain errors -> HTTP responses, in one place (the edge)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shoal.api.limits import MAX_JSON_BODY_BYTES, loads_json
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


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request's body, refused with 413 when longer than ``max_bytes`` (checked
    against Content-Length before reading, and after: a chunked or compressed body has
    none; the app's ``client_max_size`` bounds what is read meanwhile)."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise web.HTTPRequestEntityTooLarge(max_bytes, declared)
    body = await request.read()
    if len(body) > max_bytes:
        raise web.HTTPRequestEntityTooLarge(max_bytes, len(body))
    return body


async def read_text(request: web.Request, max_bytes: int) -> str:
    """:func:`read_body` decoded by the request's charset (UTF-8 by default); a body
    that is not text in it is a ValidationError."""
    body = await read_body(request, max_bytes)
    charset = request.charset or "utf-8"
    try:
        return body.decode(charset)
    except (LookupError, UnicodeDecodeError):
        raise ValidationError([Violation("", f"the body is not {charset} text")]) from None


async def json_body(request: web.Request, max_bytes: int = MAX_JSON_BODY_BYTES
                    ) -> dict[str, Any]:
    """The request's JSON object body, held to :mod:`shoal.api.limits` (size, depth,
    values, integer digits); anything else is a ValidationError (HTTP 422) or, when too
    large, HTTP 413."""
    body = loads_json(await read_body(request, max_bytes))
    if not isinstance(body, dict):
        raise ValidationError([Violation("", "body must be a JSON object")])
    return body


@web.middleware
async def errors_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    try:
        return await handler(request)
    except ShoalError as err:
        return error_response(err)
    except web.HTTPRequestEntityTooLarge as err:  # read_body's, or the app's client_max_size
        return web.json_response({"error": f"request body too large: {err.text}"},
                                 status=err.status)
