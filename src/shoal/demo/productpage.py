"""productpage: the page a user sees; calls details and reviews, like Istio's bookinfo.

``GET /productpage`` (HTML), ``/api/v1/products[/<id>[/reviews|/ratings]]`` (JSON),
``/login`` (sets cookie ``user``; then every call carries ``end-user: <name>``),
``/logout``, ``/health``.
"""

from __future__ import annotations

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
from shoal.demo.page import render_login, render_product_page
from shoal.errors import Unavailable

SERVED_BY = f"productpage-{demo_version()}"
DETAILS_TIMEOUT_S = 3.0
REVIEWS_TIMEOUT_S = 3.0
REVIEWS_RETRIES = 1
DETAILS_ERROR = "Sorry, product details are currently unavailable for this book."
REVIEWS_ERROR = "Sorry, product reviews are currently unavailable for this book."
PRODUCTS = [{
    "id": 0,
    "title": "The Comedy of Errors",
    "descriptionHtml": "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">"
                       "Wikipedia Summary</a>: The Comedy of Errors is one of William "
                       "Shakespeare's early plays. It is his shortest and one of his most "
                       "farcical comedies, with a major part of the humour coming from "
                       "slapstick and mistaken identity, in addition to puns and word play.",
}]
_PRODUCT = re.compile(r"^/api/v1/products/(\d+)(/reviews|/ratings)?$")


def user_of(req: Request) -> str:
    return req.cookies.get("user", "")


def outgoing_headers(req: Request) -> dict[str, str]:
    """Trace headers from the incoming request, plus ``end-user`` when logged in."""
    headers = propagated(req.headers)
    if user := user_of(req):
        headers["end-user"] = user
    return headers


def get_details(product_id: int, req: Request) -> dict[str, Any]:
    return fetch_json(f"{service_url('details')}/details/{product_id}", outgoing_headers(req),
                      timeout=DETAILS_TIMEOUT_S)


def get_reviews(product_id: int, req: Request) -> dict[str, Any]:
    return fetch_json(f"{service_url('reviews')}/reviews/{product_id}", outgoing_headers(req),
                      timeout=REVIEWS_TIMEOUT_S, retries=REVIEWS_RETRIES)


def get_ratings(product_id: int, req: Request) -> dict[str, Any]:
    return fetch_json(f"{service_url('ratings')}/ratings/{product_id}", outgoing_headers(req),
                      timeout=REVIEWS_TIMEOUT_S)


def product_page(req: Request) -> Response:
    product = PRODUCTS[0]
    details: dict[str, Any] | None
    reviews: dict[str, Any] | None
    try:
        details = get_details(product["id"], req)
    except Unavailable:
        details = None
    try:
        reviews = get_reviews(product["id"], req)
    except Unavailable:
        reviews = None
    return Response.html(render_product_page(
        product, details, reviews, user=user_of(req), served_by=SERVED_BY,
        details_error=DETAILS_ERROR, reviews_error=REVIEWS_ERROR,
    ))


def api(req: Request, product_id: int, sub: str | None) -> Response:
    if not any(p["id"] == product_id for p in PRODUCTS):
        return Response.json({"error": "Product not found"}, 404)
    call = {None: get_details, "/reviews": get_reviews, "/ratings": get_ratings}[sub]
    try:
        return Response.json(call(product_id, req))
    except Unavailable:
        what = {None: "details", "/reviews": "reviews", "/ratings": "ratings"}[sub]
        return Response.json({"error": f"Sorry, product {what} are currently unavailable "
                                       "for this book."}, 503)


def route(req: Request) -> Response:
    path = req.path
    if path == "/health":
        return Response.json({"status": "ok", "served_by": SERVED_BY})
    if path == "/":
        return Response.redirect("/productpage")
    if path == "/productpage":
        return product_page(req)
    if path == "/login":
        if req.method == "POST":
            name = re.sub(r"[^A-Za-z0-9_.@-]", "", req.form().get("username", ""))[:64]
            if name:
                return Response.redirect("/productpage",
                                         ("Set-Cookie", f"user={name}; Path=/; SameSite=Lax"))
        return Response.html(render_login())
    if path == "/logout":
        return Response.redirect("/productpage", ("Set-Cookie", "user=; Path=/; Max-Age=0"))
    if path == "/api/v1/products":
        return Response.json(PRODUCTS)
    if m := _PRODUCT.match(path):
        return api(req, int(m.group(1)), m.group(2))
    return Response.json({"error": "not found"}, 404)


if __name__ == "__main__":
    serve(route, SERVED_BY)
