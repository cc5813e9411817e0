"""`shoal ca status | rotate-root | prune-roots`: the mesh certificate authority."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from shoal.cli.client import ApiClient
from shoal.cli.output import Format, console, dump, table

app = typer.Typer(name="ca", help="The mesh certificate authority.", no_args_is_help=True)
OutputOpt = Annotated[Format, typer.Option("--output", "-o", help="table, json or yaml.")]


def _print(status: dict[str, Any], output: Format) -> None:
    if output in (Format.JSON, Format.YAML):
        dump(status, output)
        return
    console.print(f"trust domain: {status['trustDomain']}  mode: {status['mode']}  "
                  f"cert TTL: {status['certTtlSeconds']}s  bundle version: "
                  f"{status['bundleVersion']}")
    console.print(f"issuing: {status['active']['subject']} (serial {status['active']['serial']})")
    table(["name", "active", "subject", "serial", "not after"], [
        [r["name"], "*" if r["active"] else "", r["subject"], r["serial"], r["notAfter"]]
        for r in status["roots"]], title="roots in the trust bundle")
    console.print(f"bundle file: {status['bundleFile']}")


@app.command("status")
def status(ctx: typer.Context, output: OutputOpt = Format.TABLE) -> None:
    """Roots, the active (issuing) root and the trust bundle."""
    with ctx.obj() as client:
        _print(client.ca_status(), output)


@app.command("rotate-root")
def rotate_root(ctx: typer.Context, output: OutputOpt = Format.TABLE) -> None:
    """Make a new root: the bundle becomes old + new, new certificates come from the new
    root. Run `prune-roots` once every workload has renewed (one certificate TTL)."""
    client: ApiClient = ctx.obj()
    with client:
        _print(client.rotate_root(), output)


@app.command("prune-roots")
def prune_roots(ctx: typer.Context, output: OutputOpt = Format.TABLE) -> None:
    """Drop every root but the active one from the trust bundle."""
    client: ApiClient = ctx.obj()
    with client:
        result = client.prune_roots()
    _print(result, output)
    if output is Format.TABLE:
        console.print(f"pruned: {', '.join(result.get('pruned', [])) or 'nothing'}")
