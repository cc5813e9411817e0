"""`shoal token create | revoke | whoami`: workload and operator tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from shoal.ca.setup import parse_ttl
from shoal.cli.client import ApiClient
from shoal.cli.output import Format, dump
from shoal.errors import ValidationError, Violation

app = typer.Typer(name="token", help="Workload and operator tokens.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-n", help="Workload token: the namespace.")] = None,
    service_account: Annotated[str | None, typer.Option(
        "--service-account", "-a", help="Workload token: the service account (identity).")
    ] = None,
    user: Annotated[str | None, typer.Option(
        "--user", "-u", help="Operator token: the person or tool it is for.")] = None,
    role: Annotated[list[str] | None, typer.Option(
        "--role", "-r", help="Operator token: ROLE:NAMESPACE (view, edit, admin; "
        "namespace or *), repeatable, e.g. --role edit:default --role view:*.")] = None,
    ttl: Annotated[str | None, typer.Option(
        help="Lifetime, e.g. 30m, 8h, 7d (default: 24h for workload, 8h for operator "
             "tokens; operator tokens at most 30d).")] = None,
    output: Annotated[Format | None, typer.Option(
        "--output", "-o", help="json or yaml: the token with its claims.")] = None,
) -> None:
    """Create a token (prints only the token by default).

    Workload token (-n/-a; needs admin in the namespace): an agent given it
    (--token-file) may obtain certificates for spiffe://TD/ns/NAMESPACE/sa/SERVICE_ACCOUNT
    and register workloads running as it:  shoal token create -n default -a reviews > t.jwt

    Operator token (--user/--role; needs the mesh admin): a credential for the operator
    API and the dashboard:  shoal token create --user alice --role edit:default
    """
    if user is not None:
        if namespace or service_account:
            raise ValidationError([Violation("--user", "is for operator tokens; "
                                                       "-n/-a are for workload tokens")])
        body = {"user": user, "grants": list(role or []),
                "ttlSeconds": parse_ttl(ttl or "8h", "--ttl")}
    elif namespace and service_account:
        body = {"namespace": namespace, "serviceAccount": service_account,
                "ttlSeconds": parse_ttl(ttl or "24h", "--ttl")}
    else:
        raise ValidationError([Violation("", "give -n NAMESPACE -a SERVICE_ACCOUNT (workload "
                                             "token) or --user NAME --role ROLE:NS "
                                             "(operator token)")])
    client: ApiClient = ctx.obj()
    with client:
        answer = client.request("POST", "/api/v1/tokens", json=body)
    if output in (Format.JSON, Format.YAML):
        dump(answer, output)
    else:
        typer.echo(answer["token"])


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    token_id: Annotated[str | None, typer.Argument(
        help="The token's id (`id` in `shoal token create -o json`, `createdTokenId` in "
             "`shoal audit`).")] = None,
    token_file: Annotated[typer.FileText | None, typer.Option(
        "--token-file", help="Or: the token itself, from this file ('-': stdin).")] = None,
    reason: Annotated[str, typer.Option(help="Why (kept with the revocation).")] = "",
) -> None:
    """Revoke a token: every control plane sharing the store refuses it from now on
    (needs the mesh admin)."""
    if (token_id is None) == (token_file is None):
        raise ValidationError([Violation("", "give either a token id or --token-file")])
    body = {"reason": reason, **({"id": token_id} if token_id else
                                 {"token": token_file.read().strip()})}  # type: ignore[union-attr]
    client: ApiClient = ctx.obj()
    with client:
        answer = client.request("POST", "/api/v1/tokens/revoke", json=body)
    typer.echo(f"revoked token {answer['revoked']}"
               + (f" ({answer['subject']})" if answer.get("subject") else ""))


@app.command("whoami")
def whoami(ctx: typer.Context,
           output: Annotated[Format | None, typer.Option("--output", "-o")] = None) -> None:
    """Who the control plane takes you for, and your roles."""
    client: ApiClient = ctx.obj()
    with client:
        answer = client.request("GET", "/api/v1/whoami")
    if output in (Format.JSON, Format.YAML):
        dump(answer, output)
    else:
        typer.echo(f"{answer['user']} ({', '.join(answer['grants']) or 'no roles'})")
