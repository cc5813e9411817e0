"""`shoal cluster list | remote-secret | add | remove`: multi-cluster (multi-primary).

    shoal -c http://B-API cluster remote-secret > b.json   # on cluster b's control plane
    shoal -c http://A-API cluster add -f b.json            # a follows b
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from shoal.cli.client import ApiClient
from shoal.cli.output import Format, console, dump, table
from shoal.multicluster.secrets import READER_SERVICE_ACCOUNT, RemoteSecret

app = typer.Typer(name="cluster", help="Multi-cluster: the clusters this control plane "
                  "follows.", no_args_is_help=True)
OutputOpt = Annotated[Format, typer.Option("--output", "-o", help="table, json or yaml.")]


def _age(since: float) -> str:
    if not since:
        return ""
    s = int(time.time() - since)
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


@app.command("list")
def list_clusters(ctx: typer.Context, output: OutputOpt = Format.TABLE) -> None:
    """This cluster and the remote ones: network, control plane, health (reachable /
    stale = unreachable, last known endpoints kept), workloads and east-west gateways."""
    with ctx.obj() as client:
        data = client.request("GET", "/api/v1/clusters")
    if output in (Format.JSON, Format.YAML):
        dump(data, output)
        return
    rows = []
    for c in data["clusters"]:
        state = c["state"] + (f" ({_age(c['since'])})" if c["state"] != "local" and c["since"]
                              else "")
        rows.append([c["name"] or "(unnamed)", c["network"] or "-", c["url"], state,
                     c["workloads"], c["services"], ", ".join(c["gateways"]) or "-"])
    table(["cluster", "network", "control plane", "state", "workloads", "services",
           "east-west gateways"], rows, title="clusters")
    for c in data["clusters"]:
        if c["lastError"]:
            console.print(f"{c['name']}: {c['lastError']}")


@app.command("remote-secret")
def remote_secret(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(
        help="Where other control planes reach this one (default: its agent TLS API).")
    ] = None,
    ttl: Annotated[str, typer.Option(
        help="Lifetime of the token (at most 90d; make a new secret and `shoal cluster "
             "add` it again before it ends; `shoal token revoke` ends it early).")] = "90d",
    output: OutputOpt = Format.JSON,
) -> None:
    """Print a remote secret for THIS control plane's cluster (name, URL, network and a
    read-only discovery token) for `shoal cluster add -f` on the others."""
    from shoal.ca.setup import parse_ttl

    client: ApiClient = ctx.obj()
    with client:
        info = client.request("GET", "/api/v1/clusters")
        if not info["cluster"]:
            typer.echo("shoal cluster remote-secret: this control plane has no --cluster name",
                       err=True)
            raise typer.Exit(1)
        token = client.create_token(info["rootNamespace"], READER_SERVICE_ACCOUNT,
                                    parse_ttl(ttl, "--ttl"))["token"]
    target = url or info["urls"].get("agentApi") or info["urls"]["api"]
    secret = RemoteSecret(info["cluster"], target, token, info["network"])
    dump(secret.to_json(), Format.YAML if output is Format.YAML else Format.JSON)


def _read(path: Path) -> Any:
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    return json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)


@app.command("add")
def add(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Option(
        "--file", "-f", help="A remote secret (`shoal cluster remote-secret`), - for stdin.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="The remote cluster's name.")] = None,
    url: Annotated[str | None, typer.Option(help="Its control plane's URL.")] = None,
    token_file: Annotated[Path | None, typer.Option(
        help="A file with its discovery token.")] = None,
    network: Annotated[str | None, typer.Option(
        help="Its network (default: what it reports).")] = None,
) -> None:
    """Follow a remote cluster: its workloads and services join this cluster's mesh."""
    doc: dict[str, Any] = _read(file) if file is not None else {}
    for key, value in (("name", name), ("url", url), ("network", network)):
        if value is not None:
            doc[key] = value
    if token_file is not None:
        doc["token"] = token_file.read_text().strip()
    secret = RemoteSecret.parse(doc)
    with ctx.obj() as client:
        client.request("POST", "/api/v1/clusters", json=secret.to_json())
    console.print(f"cluster {secret.name} added ({secret.url}); `shoal cluster list` "
                  "shows when it is reachable")


@app.command("remove")
def remove(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Stop following a remote cluster (its endpoints leave this cluster's mesh)."""
    with ctx.obj() as client:
        client.request("DELETE", f"/api/v1/clusters/{name}")
    console.print(f"cluster {name} removed")
