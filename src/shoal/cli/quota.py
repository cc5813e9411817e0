"""`shoal quota status`: usage of every quota (RateLimitPolicy ``quotas``) per key."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer

from shoal.cli.client import ApiClient
from shoal.cli.credentials import token_for
from shoal.cli.output import Format, dump, table
from shoal.errors import Unavailable

app = typer.Typer(help="Quotas: long-window allowances kept by the rate-limit service.",
                  no_args_is_help=True)


def rows(quotas: list[dict[str, Any]]) -> list[list[Any]]:
    return [[q["rule"], q["key"] or "-", q["used"], q["limit"], q["remaining"], q["unit"],
             f"{q['resetSeconds']:.0f}s"] for q in quotas]


def fetch(ctx: typer.Context, ratelimit: str | None) -> list[dict[str, Any]]:
    if ratelimit:  # a separate `shoal ratelimit serve`: its REST port, which checks the
        # control plane's operator token (view mesh-wide) with the control plane
        with ctx.obj() as client:
            token = token_for(client.base_url)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            r = httpx.get(ratelimit.rstrip("/") + "/quotas", timeout=10, headers=headers)
        except httpx.HTTPError as e:
            raise Unavailable(f"cannot reach the rate-limit service at {ratelimit}: {e}") \
                from e
        if r.status_code != 200:
            raise Unavailable(f"rate-limit service: HTTP {r.status_code}: {r.text[:200]}")
        return list(r.json()["quotas"])
    client: ApiClient = ctx.obj()
    with client:
        return list(client.request("GET", "/api/v1/ratelimit/quotas")["quotas"])


@app.command("status")
def status(
    ctx: typer.Context,
    output: Annotated[Format, typer.Option("--output", "-o")] = Format.TABLE,
    ratelimit: Annotated[str | None, typer.Option(
        "--ratelimit", envvar="SHOAL_RATELIMIT",
        help="REST URL of a separate rate-limit service (default: the control plane's).")
    ] = None,
) -> None:
    """Current usage of every quota, per key, in its current window."""
    quotas = fetch(ctx, ratelimit)
    if output in (Format.YAML, Format.JSON):
        dump(quotas, output)
        return
    table(["quota", "key", "used", "limit", "remaining", "window", "resets in"],
          rows(quotas), title="quotas")
