"""HTML for productpage (pure functions; all data escaped)."""

from __future__ import annotations

from html import escape
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;
background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:.8rem 1.5rem;display:flex;
justify-content:space-between;align-items:center}
header a,header button{color:#fff;background:none;border:1px solid #fff6;border-radius:4px;
padding:.25rem .6rem;text-decoration:none;cursor:pointer;font-size:.9rem}
main{max-width:60rem;margin:1.5rem auto;padding:0 1rem}
h1{font-size:1.6rem;margin:.2rem 0 1rem}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:1.2rem}
.card{background:#fff;border-radius:8px;padding:1rem 1.2rem;box-shadow:0 1px 3px #0002}
dl{display:grid;grid-template-columns:auto 1fr;gap:.3rem 1rem;margin:0}
dt{font-weight:600;color:#555}
blockquote{margin:0 0 1rem;padding:.4rem .8rem;border-left:3px solid #a8dadc}
.who{color:#555;font-size:.9rem}
.stars{font-size:1.2rem;letter-spacing:.1rem}
.error{color:#b00020}
footer{color:#777;font-size:.8rem;margin-top:1rem}
"""


def stars(count: int, color: str) -> str:
    count = max(0, min(5, count))
    return (f'<span class="stars" style="color:{escape(color)}" title="{count} stars">'
            + "&#9733;" * count + "&#9734;" * (5 - count) + "</span>")


def _layout(title: str, body: str, user: str = "") -> str:
    who = (f'{escape(user)} <a href="/logout">Sign out</a>' if user
           else '<a href="/login">Sign in</a>')
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body><header><strong>BookInfo Sample</strong>"
            f"<span>{who}</span></header><main>{body}</main></body></html>")


def render_details(details: dict[str, Any] | None, error: str) -> str:
    if details is None:
        return f'<p class="error">{escape(error)}</p>'
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>"
                   for k, v in details.items() if k != "id")
    return f"<dl>{rows}</dl>"


def render_reviews(reviews: dict[str, Any] | None, error: str) -> str:
    if reviews is None:
        return f'<p class="error">{escape(error)}</p>'
    parts = []
    for r in reviews.get("reviews", []):
        rating = r.get("rating") or {}
        if "stars" in rating:
            score = stars(int(rating["stars"]), str(rating.get("color", "black")))
        elif "error" in rating:
            score = f'<span class="error">{escape(str(rating["error"]))}</span>'
        else:
            score = ""
        parts.append(f"<blockquote><p>{escape(str(r.get('text', '')))}</p>"
                     f"<div class='who'>&mdash; {escape(str(r.get('reviewer', '')))} "
                     f"{score}</div></blockquote>")
    parts.append(f"<p class='who'>Reviews served by: "
                 f"<strong>{escape(str(reviews.get('served_by', '?')))}</strong></p>")
    return "".join(parts)


def render_product_page(
    product: dict[str, Any],
    details: dict[str, Any] | None,
    reviews: dict[str, Any] | None,
    *,
    user: str,
    served_by: str,
    details_error: str,
    reviews_error: str,
) -> str:
    # descriptionHtml is our own constant markup, not user input.
    body = (
        f"<h1>{escape(product['title'])}</h1>"
        f"<div class='card'><p>{product['descriptionHtml']}</p></div><br>"
        f"<div class='cols'><section class='card'><h2>Book Details</h2>"
        f"{render_details(details, details_error)}</section>"
        f"<section class='card'><h2>Book Reviews</h2>"
        f"{render_reviews(reviews, reviews_error)}</section></div>"
        f"<footer>Page served by {escape(served_by)}</footer>"
    )
    return _layout(f"Simple Bookstore App — {product['title']}", body, user)


def render_login() -> str:
    body = ("<div class='card'><h1>Sign in</h1><form method='post' action='/login'>"
            "<label>User name <input name='username' autofocus></label> "
            "<button type='submit'>Sign in</button></form>"
            "<p class='who'>Any name works; it is sent to the services as "
            "<code>end-user</code>.</p></div>")
    return _layout("Sign in", body)
