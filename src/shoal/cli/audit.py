"""`shoal audit`: who changed what, when and from where (the control plane's audit log)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from shoal.cli.client import ApiClient
from shoal.cli.output import Format, dump, table


def _what(e: dict[str, Any]) -> str:
    if e.get("resources"):
        return "; ".join(e["resources"])
    for key, label in (("createdTokenId", "token"), ("revokedTokenId", "revoked")):
        if e.get(key):
            return f"{label} {e[key]}" + (f" for {e['subject']}" if e.get("subject") else "")
    return ""


def audit(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many entries.")] = 50,
    user: Annotated[str | None, typer.Option(
        help="Only this principal (e.g. user:alice, spiffe://...).")] = None,
    output: Annotated[Format | None, typer.Option("--output", "-o")] = None,
) -> None:
    """Show the audit log: every change and every refused request (needs the mesh admin)."""
    params: dict[str, Any] = {"limit": limit}
    if user:
        params["user"] = user
    client: ApiClient = ctx.obj()
    with client:
        entries = client.request("GET", "/api/v1/audit", params=params)["entries"]
    if output in (Format.JSON, Format.YAML):
        dump(entries, output)
        return
    table(["TIME", "USER", "FROM", "REQUEST", "STATUS", "WHAT"], [
        [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"])), e["user"],
         f"{e['source']} ({e['listener']})", f"{e['method']} {e['path']}", e["status"],
         _what(e)] for e in entries])
