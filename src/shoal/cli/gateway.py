"""``shoal gateway run``: an ingress gateway (Envoy without an app) for Gateway resources."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shoal.agent.config import DEFAULT_CONTROL_PLANE, DEFAULT_XDS
from shoal.api.gatewayapi import GATEWAY_NAME_LABEL
from shoal.cli.run import (
    METRICS_PORT_HELP,
    METRICS_SCRAPER_HELP,
    TLS_KEY_DIR_HELP,
    agent_config,
    run_agent,
)
from shoal.gateway.agent import Credential, GatewayAgent, GatewayConfig, parse_credential
from shoal.logs import configure_logging

app = typer.Typer(help="Ingress gateways.", no_args_is_help=True)


@app.command("run")
def run(
    name: Annotated[str, typer.Option(
        "--name", help="Gateway name (labels app=NAME and gateway.networking.k8s.io/"
        "gateway-name=NAME: it serves the Gateway API Gateway NAME of its namespace; "
        "service account by default).")],
    port: Annotated[list[int] | None, typer.Option(
        "--port", "-p", help="A port the gateway may listen on (repeatable).")] = None,
    https_port: Annotated[list[int] | None, typer.Option(
        help="Another port, for HTTPS/TLS servers (repeatable).")] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    label: Annotated[list[str] | None, typer.Option(
        "--label", "-l", help="KEY=VALUE matched by Gateway selectors, e.g. "
        "istio=ingressgateway (repeatable).")] = None,
    address: Annotated[str, typer.Option(help="Address the listeners bind.")] = "127.0.0.1",
    credential: Annotated[list[str] | None, typer.Option(
        help="NAME=CERT,KEY[,CA]: a TLS credential (PEM files) that Gateways name in "
        "tls.credentialName; CA verifies client certificates for tls mode MUTUAL / "
        "OPTIONAL_MUTUAL (repeatable).")] = None,
    cert: Annotated[Path | None, typer.Option(help="TLS certificate chain (PEM).")] = None,
    key: Annotated[Path | None, typer.Option(help="Private key of --cert (PEM).")] = None,
    ca_cert: Annotated[Path | None, typer.Option(
        help="CA (PEM) for client certificates of --cert/--key (tls mode MUTUAL).")] = None,
    credential_name: Annotated[str | None, typer.Option(
        help="Name Gateways use in tls.credentialName for --cert/--key (default: NAME).")
    ] = None,
    service_account: Annotated[str | None, typer.Option(help="Default: NAME.")] = None,
    control_plane: Annotated[str, typer.Option(envvar="SHOAL_CONTROL_PLANE")
                             ] = DEFAULT_CONTROL_PLANE,
    xds: Annotated[str, typer.Option(envvar="SHOAL_XDS")] = DEFAULT_XDS,
    token_file: Annotated[Path | None, typer.Option(envvar="SHOAL_TOKEN_FILE")] = None,
    token: Annotated[str | None, typer.Option(envvar="SHOAL_TOKEN")] = None,
    ca_bundle: Annotated[Path | None, typer.Option(envvar="SHOAL_CA_BUNDLE")] = None,
    run_dir: Annotated[Path | None, typer.Option()] = None,
    workload: Annotated[str | None, typer.Option(
        help="Workload name (default: NAME-<5 random characters>).")] = None,
    drain_seconds: Annotated[float, typer.Option()] = 5.0,
    lease_seconds: Annotated[int, typer.Option()] = 15,
    log_level: Annotated[str, typer.Option(envvar="SHOAL_LOG_LEVEL")] = "info",
    tls_key_dir: Annotated[list[Path] | None, typer.Option(
        metavar="DIR", help=TLS_KEY_DIR_HELP)] = None,
    metrics_port: Annotated[str | None, typer.Option(
        metavar="PORT|off", help=METRICS_PORT_HELP)] = None,
    metrics_scraper: Annotated[str | None, typer.Option(
        metavar="SPIFFE-ID", help=METRICS_SCRAPER_HELP)] = None,
) -> None:
    """Run an ingress gateway: listeners from the Gateways whose selector matches its
    labels, routes from VirtualServices naming those Gateways in `gateways`; and the
    listeners of the Gateway API Gateway named NAME in its namespace, with the HTTPRoutes
    attached to it."""
    configure_logging(log_level)
    ports = tuple([*(port or []), *(https_port or [])])
    if (cert is None) != (key is None) or (ca_cert is not None and cert is None):
        typer.echo("shoal gateway run: --cert and --key go together (--ca-cert needs them)",
                   err=True)
        raise typer.Exit(2)
    def build() -> GatewayAgent:
        creds = tuple(parse_credential(c) for c in credential or [])
        if cert and key:
            creds += (Credential(credential_name or name, cert, key, ca_cert),)
        return GatewayAgent(GatewayConfig(agent_config(
            name, ports[0] if ports else 0, ["gateway"], namespace=namespace,
            # the Gateway API Gateway of this name (in its namespace) is served here too
            labels=[*(label or []), f"{GATEWAY_NAME_LABEL}={name}"],
            address=address, name=workload, service_account=service_account,
            control_plane=control_plane, xds=xds, run_dir=run_dir, token=token,
            token_file=token_file, ca_bundle=ca_bundle, drain_seconds=drain_seconds,
            lease_seconds=lease_seconds, tls_key_dirs=tls_key_dir, metrics_port=metrics_port,
            metrics_scraper=metrics_scraper), ports, creds))

    run_agent("shoal gateway run", build)
