"""details: ``GET /details/<id>`` -> book details (JSON)."""

from __future__ import annotations

import re

from shoal.demo.common import Request, Response, demo_version, serve

SERVED_BY = f"details-{demo_version()}"
_DETAILS = re.compile(r"^/details/(\d+)$")


def book_details(product_id: int) -> dict[str, object]:
    return {
        "id": product_id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }


def route(req: Request) -> Response:
    if req.path == "/health":
        return Response.json({"status": "ok", "served_by": SERVED_BY})
    if m := _DETAILS.match(req.path):
        return Response.json(book_details(int(m.group(1))))
    return Response.json({"error": "not found"}, 404)


if __name__ == "__main__":
    serve(route, SERVED_BY)
