"""`shoal`: the command line. Each verb lives in its own module; this one wires them."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from shoal import __version__
from shoal.cli import proxies, resources, serve, up
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
app.command("proxy-status", rich_help_panel="Proxies")(proxies.proxy_status)
app.command("proxy-config", rich_help_panel="Proxies")(proxies.proxy_config)
app.command("run", context_settings=RUN_CONTEXT_SETTINGS, rich_help_panel="Workloads")(run)
app.command("control-plane", rich_help_panel="Processes")(serve.control_plane)


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
