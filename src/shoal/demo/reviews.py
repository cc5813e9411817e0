"""reviews: ``GET /reviews/<id>`` -> two reviews; v2 adds black stars, v3 red stars.

The version comes from ``--version`` or ``$SHOAL_DEMO_VERSION`` (v1, v2, v3). v1 does not
call ratings; v2 and v3 do (timeout 10 s), like Istio's bookinfo.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

from shoal.demo.common import (
    Request,
    Response,
    demo_version,
    fetch_json,
    propagated,
    serve,
    service_url,
)
from shoal.errors import Unavailable

_REVIEWS = re.compile(r"^/reviews/(\d+)$")
STAR_COLORS = {"v2": "black", "v3": "red"}
RATINGS_TIMEOUT_S = 10.0
TEXTS = {
    "Reviewer1": "An extremely entertaining play by Shakespeare. "
                 "The slapstick humour is refreshing!",
    "Reviewer2": "Absolutely fun and entertaining. The play lacks thematic depth when "
                 "compared to other plays by Shakespeare.",
}


def make_route(version: str) -> Any:
    served_by = f"reviews-{version}"
    color = STAR_COLORS.get(version)

    def reviews(product_id: int, req: Request) -> dict[str, Any]:
        ratings: dict[str, int] | None = None
        error = None
        if color is not None:
            try:
                data = fetch_json(f"{service_url('ratings')}/ratings/{product_id}",
                                  propagated(req.headers), timeout=RATINGS_TIMEOUT_S)
                ratings = data.get("ratings", {})
            except Unavailable:
                error = "Ratings service is currently unavailable"
        out = []
        for reviewer, text in TEXTS.items():
            item: dict[str, Any] = {"reviewer": reviewer, "text": text}
            if color is not None:
                if ratings is not None and reviewer in ratings:
                    item["rating"] = {"stars": ratings[reviewer], "color": color}
                else:
                    item["rating"] = {"error": error or "no rating"}
            out.append(item)
        return {
            "id": product_id,
            "served_by": served_by,
            "podname": os.environ.get("SHOAL_WORKLOAD", served_by),
            "clustername": os.environ.get("SHOAL_NAMESPACE", "default"),
            "reviews": out,
        }

    def route(req: Request) -> Response:
        if req.path == "/health":
            return Response.json({"status": "ok", "served_by": served_by})
        if m := _REVIEWS.match(req.path):
            return Response.json(reviews(int(m.group(1)), req))
        return Response.json({"error": "not found"}, 404)

    return route, served_by


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shoal.demo.reviews")
    parser.add_argument("--version", default=demo_version(), choices=["v1", "v2", "v3"])
    args = parser.parse_args(argv)
    route, served_by = make_route(args.version)
    serve(route, served_by)


if __name__ == "__main__":
    main()
