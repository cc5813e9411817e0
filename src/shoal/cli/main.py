"""`shoal`: the command line. Each verb lives in its own module; this one wires them."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from shoal import __version__
from shoal.cli import (
    analyze,
    audit,
    authz,
    ca,
    certs,
    cluster,
    dashboard,
    gateway,
    logs,
    prometheus,
    proxies,
    quota,
    ratelimit,
    resources,
    serve,
    slo,
    tokens,
    traces,
    up,
)
from shoal.cli.client import ApiClient, default_url
from shoal.cli.run import RUN_CONTEXT_SETTINGS, run
from shoal.errors import ShoalError, ValidationError

app = typer.Typer(
    name="shoal",
    help="shoal: a service mesh. Envoy sidecars programmed by a Python control plane.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def _root(
    ctx: typer.Context,
    control_plane: Annotated[str, typer.Option(
        "--control-plane", "-c", envvar="SHOAL_CONTROL_PLANE",
        help="Control plane REST URL.")] = default_url(),
) -> None:
    ctx.obj = lambda: ApiClient(control_plane)


@app.command()
def version() -> None:
    """Print the shoal version."""
    typer.echo(f"shoal {__version__}")


app.command("up", rich_help_panel="Local mesh")(up.up)
app.command("down", rich_help_panel="Local mesh")(up.down)
app.command("status", rich_help_panel="Local mesh")(up.status)
app.command("apply", rich_help_panel="Config")(resources.apply)
app.command("get", rich_help_panel="Config")(resources.get)
app.command("delete", rich_help_panel="Config")(resources.delete)
app.command("analyze", rich_help_panel="Config")(analyze.analyze)
app.command("proxy-status", rich_help_panel="Proxies")(proxies.proxy_status)
app.command("proxy-config", rich_help_panel="Proxies")(proxies.proxy_config)
app.command("run", context_settings=RUN_CONTEXT_SETTINGS, rich_help_panel="Workloads")(run)
app.add_typer(gateway.app, name="gateway", rich_help_panel="Workloads")
app.command("control-plane", rich_help_panel="Processes")(serve.control_plane)
app.add_typer(tokens.app, name="token", rich_help_panel="Identity")
app.add_typer(authz.authz, name="authz", rich_help_panel="Identity")
app.add_typer(ca.app, name="ca", rich_help_panel="Identity")
app.command("certs", rich_help_panel="Identity")(certs.certs)
app.command("audit", rich_help_panel="Identity")(audit.audit)
app.add_typer(slo.app, name="slo", rich_help_panel="Observability")
app.command("dashboard", rich_help_panel="Observability")(dashboard.dashboard)
app.command("logs", rich_help_panel="Observability")(logs.logs)
app.command("traces", rich_help_panel="Observability")(traces.traces)
app.add_typer(prometheus.app, name="prometheus", rich_help_panel="Observability")
app.add_typer(ratelimit.app, name="ratelimit", rich_help_panel="Traffic")
app.add_typer(quota.app, name="quota", rich_help_panel="Traffic")
app.add_typer(cluster.app, name="cluster", rich_help_panel="Multi-cluster")


def main() -> None:
    try:
        app()
    except ValidationError as e:
        print(f"error: {e.violations[0] if len(e.violations) == 1 else e}", file=sys.stderr)
        for v in e.violations if len(e.violations) > 1 else []:
            print(f"  {v}", file=sys.stderr)
        sys.exit(1)
    except ShoalError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
