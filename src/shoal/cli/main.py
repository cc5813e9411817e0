"""`shoal`: the command line. Each verb lives in its own module; this one wires them,
and a verb's module is imported only when that verb runs (shoal.cli.lazy)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from shoal import __version__
from shoal.cli.client import ApiClient, default_url
from shoal.cli.lazy import LazyGroup, Verb
from shoal.errors import ShoalError, ValidationError

# Every verb but `version`, in the order (and panels) `shoal --help` lists them.
VERBS = (
    Verb("up", "shoal.cli.up:up", "Local mesh"),
    Verb("down", "shoal.cli.up:down", "Local mesh"),
    Verb("status", "shoal.cli.up:status", "Local mesh"),
    Verb("apply", "shoal.cli.resources:apply", "Config"),
    Verb("get", "shoal.cli.resources:get", "Config"),
    Verb("delete", "shoal.cli.resources:delete", "Config"),
    Verb("analyze", "shoal.cli.analyze:analyze", "Config"),
    Verb("proxy-status", "shoal.cli.proxies:proxy_status", "Proxies"),
    Verb("proxy-config", "shoal.cli.proxies:proxy_config", "Proxies"),
    Verb("run", "shoal.cli.run:run", "Workloads", context_settings="RUN_CONTEXT_SETTINGS"),
    Verb("gateway", "shoal.cli.gateway:app", "Workloads"),
    Verb("control-plane", "shoal.cli.serve:control_plane", "Processes"),
    Verb("certs", "shoal.cli.certs:certs", "Identity"),
    Verb("audit", "shoal.cli.audit:audit", "Identity"),
    Verb("token", "shoal.cli.tokens:app", "Identity"),
    Verb("authz", "shoal.cli.authz:authz", "Identity"),
    Verb("ca", "shoal.cli.ca:app", "Identity"),
    Verb("dashboard", "shoal.cli.dashboard:dashboard", "Observability"),
    Verb("logs", "shoal.cli.logs:logs", "Observability"),
    Verb("traces", "shoal.cli.traces:traces", "Observability"),
    Verb("slo", "shoal.cli.slo:app", "Observability"),
    Verb("prometheus", "shoal.cli.prometheus:app", "Observability"),
    Verb("ratelimit", "shoal.cli.ratelimit:app", "Traffic"),
    Verb("quota", "shoal.cli.quota:app", "Traffic"),
    Verb("cluster", "shoal.cli.cluster:app", "Multi-cluster"),
)


class _Shoal(LazyGroup):
    verbs = VERBS


app = typer.Typer(
    name="shoal",
    cls=_Shoal,
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
