"""`shoal authz check`: would this request be allowed? Explains which policy decides."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from shoal.api.parse import load_resource
from shoal.cli.client import ApiClient
from shoal.cli.output import Format, dump, table
from shoal.errors import ValidationError, Violation
from shoal.registry.snapshot import MeshSnapshot
from shoal.security.check import check, check_gateway

EXIT_DENIED = 3  # 1 is every other error, 2 a usage error

authz = typer.Typer(help="Authorization tools.", no_args_is_help=True)


def _pairs(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{v!r} is not key=value", param_hint="--header")
        out[key.strip().lower()] = val
    return out


@authz.command("check")
def check_cmd(
    ctx: typer.Context,
    source: Annotated[str | None, typer.Option(
        "--from", help="Calling workload: NAME or NS/NAME.")] = None,
    service: Annotated[str | None, typer.Option(
        "--to", help="Service host, as the caller names it.")] = None,
    gateway: Annotated[str | None, typer.Option(
        "--gateway", help="Instead of --from/--to: a request from outside the mesh to this "
        "gateway workload (NAME or NS/NAME) on --port.")] = None,
    port: Annotated[int | None, typer.Option(help="Service port (default: its first).")] = None,
    method: Annotated[str, typer.Option(help="HTTP method.")] = "GET",
    path: Annotated[str, typer.Option(help="HTTP path.")] = "/",
    header: Annotated[list[str], typer.Option(help="Request header K=V (repeatable).")] = [],  # noqa: B006
    jwt_claims: Annotated[str | None, typer.Option(
        "--jwt-claims", help="Payload of a valid JWT the request carries (JSON).")] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n",
                                           help="Namespace of --from.")] = "default",
    output: Annotated[Format, typer.Option("--output", "-o", help="Output format.")] =
        Format.TABLE,
) -> None:
    """Evaluate a request against the mesh's PeerAuthentication and AuthorizationPolicy:
    from one workload to a service (--from/--to), or from outside to a gateway (--gateway).

    Exit code: 0 when every workload of the service allows it, 3 when any denies it.
    """
    if (gateway is None) == (source is None or service is None):
        raise ValidationError([Violation("", "give --from and --to, or --gateway "
                                             "(with --port)")])
    if gateway is not None and port is None:
        raise ValidationError([Violation("--port", "is required with --gateway")])
    claims = None
    if jwt_claims is not None:
        try:
            claims = json.loads(jwt_claims)
        except ValueError as e:
            raise ValidationError([Violation("--jwt-claims", f"invalid JSON: {e}")]) from None
    client: ApiClient = ctx.obj()
    with client:
        listing = client.list()
    mesh = MeshSnapshot.build([load_resource(d) for d in listing["items"]],
                              revision=int(listing.get("revision") or 0))
    if gateway is not None:
        assert port is not None
        verdicts = [check_gateway(mesh, gateway, namespace=namespace, port=port,
                                  method=method, path=path, headers=_pairs(header),
                                  claims=claims)]
    else:
        assert source is not None and service is not None
        verdicts = check(mesh, source, service, namespace=namespace, port=port,
                         method=method, path=path, headers=_pairs(header), claims=claims)
    if output in (Format.JSON, Format.YAML):
        dump([v.as_dict() for v in verdicts], output)
    else:
        table(["WORKLOAD", "PORT", "MTLS", "DECISION", "POLICY", "RULE", "REASON"], [
            [v.workload, v.port, "yes" if v.mtls else "no",
             "ALLOWED" if v.decision.allowed else "DENIED", v.decision.policy or "-",
             "-" if v.decision.rule is None else v.decision.rule, v.decision.reason]
            for v in verdicts])
    if not verdicts or any(not v.decision.allowed for v in verdicts):
        sys.exit(EXIT_DENIED)
