"""`shoal prometheus config`: a Prometheus scrape configuration for the control plane."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shoal.ca.setup import parse_duration
from shoal.cli.client import ApiClient
from shoal.cli.credentials import shoal_home
from shoal.control.operators import write_private_text
from shoal.telemetry.prometheus import scrape_config

app = typer.Typer(help="Prometheus integration.", no_args_is_help=True)


@app.command("config")
def config(
    ctx: typer.Context,
    interval: Annotated[str, typer.Option(help="scrape_interval")] = "5s",
    job: Annotated[str, typer.Option(help="job_name")] = "shoal",
    credentials_file: Annotated[Path | None, typer.Option(
        help="Where Prometheus reads its bearer token (default: "
             "$SHOAL_HOME/prometheus.token). It must be readable by Prometheus.")] = None,
    ttl: Annotated[str, typer.Option(
        help="Lifetime of the token minted for Prometheus (at most 30d); run the command "
             "again before it ends.")] = "30d",
    mint: Annotated[bool, typer.Option(
        "--mint/--no-mint", help="Mint a view:* token for user 'prometheus' into "
        "--credentials-file (needs the mesh admin); --no-mint: only print the config.")
    ] = True,
) -> None:
    """Print a prometheus.yml that scrapes the control plane's /metrics with a view-only
    token of its own (the operator API needs a credential on every route)."""
    path = (credentials_file or shoal_home() / "prometheus.token").absolute()
    client: ApiClient = ctx.obj()
    if mint:
        with client:
            answer = client.request("POST", "/api/v1/tokens", json={
                "user": "prometheus", "grants": ["view:*"],
                "ttlSeconds": parse_duration(ttl, "--ttl")})
        write_private_text(path, answer["token"] + "\n")
        typer.echo(f"# token {answer['id']} (view:*) written to {path}", err=True)
    typer.echo(scrape_config(client.base_url, interval=interval, job=job,
                             credentials_file=str(path)), nl=False)
