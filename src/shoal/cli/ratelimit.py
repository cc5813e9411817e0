"""`shoal ratelimit serve`: run the rate-limit service as a separate process."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import typer

from shoal.cli.client import default_url
from shoal.logs import configure_logging
from shoal.ratelimit.server import ServeConfig, is_loopback, serve

app = typer.Typer(help="The global rate-limit service (Envoy RateLimitService, gRPC).",
                  no_args_is_help=True)


@app.command("serve")
def serve_cmd(
    control_plane: Annotated[str, typer.Option(
        envvar="SHOAL_CONTROL_PLANE", help="Control plane REST URL (rules come from it).")
    ] = default_url(),
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="gRPC port (the sidecars').")] = 15090,
    http_port: Annotated[int, typer.Option(help="REST port: /healthz /stats /quotas.")
                         ] = 15091,
    redis: Annotated[str | None, typer.Option(
        help="Redis URL (redis://host:port/0): counters shared by every instance.")] = None,
    state_dir: Annotated[Path | None, typer.Option(
        help="In-memory mode: where quota counters persist (SQLite).")] = None,
    log_level: Annotated[str, typer.Option(envvar="SHOAL_LOG_LEVEL")] = "info",
    insecure_any_host: Annotated[bool, typer.Option(
        "--insecure-any-host",
        help="Listen on a non-loopback --host although the service is plaintext and "
             "answers any caller: only on a private network that nothing but the "
             "sidecars reaches.")] = False,
) -> None:
    """Serve rate-limit decisions. Run the control plane with --ratelimit-address.

    The rules are read from the control plane with an operator credential that may view
    them (e.g. `shoal token create --user ratelimit --role view:*`), found like the CLI's:
    $SHOAL_API_TOKEN, $SHOAL_API_TOKEN_FILE, or $SHOAL_HOME/credentials.

    Plaintext and unauthenticated: keep it on loopback or a private network (the
    control plane's built-in service answers mesh identities over mTLS instead)."""
    if not insecure_any_host and not is_loopback(host):
        raise typer.BadParameter("the standalone rate-limit service is plaintext and "
                                 "unauthenticated: listen on loopback, or pass "
                                 "--insecure-any-host on a private network", param_hint="--host")
    configure_logging(log_level)
    config = ServeConfig(control_plane, host, port, http_port, redis, state_dir)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
