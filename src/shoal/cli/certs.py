"""`shoal certs WORKLOAD` (also meant for `shoal get certs WORKLOAD`): a workload's
certificate as the CA issued it and as its agent reports serving it."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from shoal.cli.client import ApiClient
from shoal.cli.output import Format, console, dump, table


def show_certs(client: ApiClient, namespace: str, workload: str, output: Format) -> None:
    info = client.workload_certs(namespace, workload)
    if output in (Format.JSON, Format.YAML):
        dump(info, output)
        return
    rows: list[list[Any]] = []
    for source in ("issued", "reported"):
        c = info.get(source)
        if c:
            rows.append([source, c.get("spiffeId", ""), c.get("serial", ""),
                         c.get("notBefore", ""), c.get("notAfter", ""), c.get("issuer", "")])
    table(["source", "spiffe id", "serial", "not before", "not after", "issuer"], rows,
          title=f"certificates of {namespace}/{workload}")
    console.print("roots: " + "; ".join(
        f"{r['name']}{' (active)' if r['active'] else ''} {r['subject']}"
        for r in info.get("roots", [])))


def certs(
    ctx: typer.Context,
    workload: Annotated[str, typer.Argument(help="Workload name.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    output: Annotated[Format, typer.Option("--output", "-o")] = Format.TABLE,
) -> None:
    """SPIFFE ID, serial, validity, issuer and roots of a workload's certificate."""
    client: ApiClient = ctx.obj()
    with client:
        show_certs(client, namespace, workload, output)
