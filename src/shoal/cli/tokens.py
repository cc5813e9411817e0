"""`shoal token create`: mint an attestation token for one namespace/service account."""

from __future__ import annotations

from typing import Annotated

import typer

from shoal.ca.setup import parse_duration
from shoal.cli.client import ApiClient
from shoal.cli.output import Format, dump

app = typer.Typer(name="token", help="Workload attestation tokens.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace.")],
    service_account: Annotated[str, typer.Option(
        "--service-account", "-a", help="Service account (identity) the token is for.")],
    ttl: Annotated[str, typer.Option(help="Lifetime, e.g. 24h, 30m, 7d.")] = "24h",
    output: Annotated[Format | None, typer.Option(
        "--output", "-o", help="json or yaml: the token with its claims.")] = None,
) -> None:
    """Create a token; an agent given it (--token-file) may obtain certificates for
    spiffe://TD/ns/NAMESPACE/sa/SERVICE_ACCOUNT and register workloads running as it.

    Prints only the token by default:  shoal token create -n default -a reviews > t.jwt
    """
    seconds = parse_duration(ttl, "--ttl")
    client: ApiClient = ctx.obj()
    with client:
        answer = client.create_token(namespace, service_account, seconds)
    if output in (Format.JSON, Format.YAML):
        dump(answer, output)
    else:
        typer.echo(answer["token"])
