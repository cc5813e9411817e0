"""`shoal prometheus config`: a Prometheus scrape configuration for the control plane."""

from __future__ import annotations

from typing import Annotated

import typer

from shoal.telemetry.prometheus import scrape_config

app = typer.Typer(help="Prometheus integration.", no_args_is_help=True)


@app.command("config")
def config(
    ctx: typer.Context,
    interval: Annotated[str, typer.Option(help="scrape_interval")] = "5s",
    job: Annotated[str, typer.Option(help="job_name")] = "shoal",
) -> None:
    """Print a prometheus.yml that scrapes the control plane's /metrics."""
    client = ctx.obj()
    typer.echo(scrape_config(client.base_url, interval=interval, job=job), nl=False)
