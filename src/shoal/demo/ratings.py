"""ratings: ``GET /ratings/<id>`` -> star ratings per reviewer (JSON)."""

from __future__ import annotations

import re

from shoal.demo.common import Request, Response, demo_version, serve

SERVED_BY = f"ratings-{demo_version()}"
_RATINGS = re.compile(r"^/ratings/(\d+)$")


def route(req: Request) -> Response:
    if req.path == "/health":
        return Response.json({"status": "ok", "served_by": SERVED_BY})
    if m := _RATINGS.match(req.path):
        return Response.json({"id": int(m.group(1)),
                              "ratings": {"Reviewer1": 5, "Reviewer2": 4}})
    return Response.json({"error": "not found"}, 404)


if __name__ == "__main__":
    serve(route, SERVED_BY)
