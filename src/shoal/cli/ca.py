"""`shoal ca status | rotate-root | prune-roots | export`: the mesh certificate authority."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from shoal.cli.client import ApiClient
from shoal.cli.output import Format, console, dump, table
from shoal.errors import CaError

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


@app.command("export")
def export(
    out: Annotated[Path, typer.Option(
        "--out", help="Directory to write ca-cert.pem, ca-key.pem (0600) and "
                      "token-key.pem (0600) into.")],
    data_dir: Annotated[Path | None, typer.Option(
        help="The control plane's data directory (default: $SHOAL_HOME/data).")] = None,
) -> None:
    """Copy this control plane's root CA and token-signing key out of its data directory
    (offline: reads the files), so that every instance of an HA control plane can be
    started with the same --ca-cert/--ca-key/--token-key (docs/operations.md)."""
    from shoal.ca.setup import export_ca
    from shoal.cli.serve import default_home

    ca_dir = (data_dir or default_home() / "data") / "ca"
    try:
        written = export_ca(ca_dir, out)
    except CaError as e:
        typer.echo(f"shoal ca export: {e}", err=True)
        raise typer.Exit(1) from None
    for flag, path in written.items():
        console.print(f"--{flag.replace('_', '-')} {path}")


@app.command("create-root")
def create_root(
    out: Annotated[Path, typer.Option(
        "--out", help="Directory for root-cert.pem and root-key.pem (0600).")],
    trust_domain: Annotated[str, typer.Option(
        help="The mesh trust domain (every cluster's control plane uses the same).")
    ] = "cluster.local",
) -> None:
    """Make a root CA shared by several clusters (offline; see docs/multicluster.md).
    Then give each cluster an intermediate with `shoal ca create-intermediate`."""
    from shoal.ca.shared_root import create_root as make

    try:
        written = make(out, trust_domain)
    except CaError as e:
        typer.echo(f"shoal ca create-root: {e}", err=True)
        raise typer.Exit(1) from None
    for path in written.values():
        console.print(str(path))


@app.command("create-intermediate")
def create_intermediate(
    root: Annotated[Path, typer.Option(
        "--root", help="Directory with root-cert.pem and root-key.pem (`create-root`).")],
    cluster: Annotated[str, typer.Option(help="The cluster the intermediate is for.")],
    out: Annotated[Path, typer.Option(
        "--out", help="Directory for ca-cert.pem, ca-key.pem (0600) and ca-chain.pem.")],
) -> None:
    """Make CLUSTER's intermediate CA under the shared root (offline). Start that
    cluster's control plane with the --ca-cert/--ca-key/--ca-chain this prints."""
    from shoal.ca.shared_root import create_intermediate as make

    try:
        written = make(root, cluster, out)
    except CaError as e:
        typer.echo(f"shoal ca create-intermediate: {e}", err=True)
        raise typer.Exit(1) from None
    for flag, path in written.items():
        console.print(f"--{flag.replace('_', '-')} {path}")
