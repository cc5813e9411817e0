"""`shoal ratelimit serve`: run the rate-limit service as a separate process."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import typer

from shoal.cli.client import default_url
from shoal.errors import ValidationError, Violation
from shoal.logs import configure_logging
from shoal.netaddr import is_loopback
from shoal.ratelimit.descriptors import load as load_descriptors
from shoal.ratelimit.identity import IdentityConfig
from shoal.ratelimit.server import ServeConfig, serve

app = typer.Typer(help="The global rate-limit service (Envoy RateLimitService, gRPC).",
                  no_args_is_help=True)


@app.command("serve")
def serve_cmd(
    control_plane: Annotated[str, typer.Option(
        envvar="SHOAL_CONTROL_PLANE",
        help="Control plane operator API URL (rules come from it; /stats and /quotas "
             "tokens are checked by it).")] = default_url(),
    agent_api: Annotated[str | None, typer.Option(
        envvar="SHOAL_AGENT_API",
        help="The control plane's agent listener, https://HOST:PORT (as agents' "
             "--control-plane): where the service's certificate comes from.")] = None,
    token_file: Annotated[Path | None, typer.Option(
        help="Workload token of the service's identity (`shoal token create -n "
             "shoal-system -a ratelimit`); read again when it is needed.")] = None,
    ca_bundle: Annotated[Path | None, typer.Option(
        help="The mesh trust bundle (PEM) that verifies --agent-api.")] = None,
    renew_fraction: Annotated[float, typer.Option(
        help="Renew the certificate at this fraction of its lifetime.")] = 0.5,
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="gRPC port (the sidecars').")] = 15090,
    http_port: Annotated[int, typer.Option(help="REST port: /healthz /stats /quotas.")
                         ] = 15091,
    redis: Annotated[str | None, typer.Option(
        help="Redis URL (redis://host:port/0): counters shared by every instance.")] = None,
    state_dir: Annotated[Path | None, typer.Option(
        help="In-memory mode: where quota counters persist (SQLite).")] = None,
    log_level: Annotated[str, typer.Option(envvar="SHOAL_LOG_LEVEL")] = "info",
    descriptors: Annotated[list[Path] | None, typer.Option(
        help="Rules in Envoy's rate-limit service format (domain + descriptors, one domain "
             "per file; repeatable) instead of the control plane's RateLimitPolicies: for "
             "EnvoyFilters written for that service, like Istio's global rate-limit task.")
    ] = None,
    insecure_plaintext: Annotated[bool, typer.Option(
        "--insecure-plaintext",
        help="Development only: no identity, plaintext gRPC that answers any caller, on "
             "loopback only (the control plane then runs without --ratelimit-identity).")
    ] = False,
) -> None:
    """Serve rate-limit decisions over mTLS. Run the control plane with
    --ratelimit-address HOST:PORT --ratelimit-identity NS/SA.

    The service holds a mesh identity like an agent (--agent-api, --token-file,
    --ca-bundle): gRPC requires the callers' workload certificates (mesh trust domain
    only). The rules are read from the control plane with an operator credential that may
    view them (e.g. `shoal token create --user ratelimit --role view:*`), found like the
    CLI's: $SHOAL_API_TOKEN, $SHOAL_API_TOKEN_FILE, or $SHOAL_HOME/credentials. /stats and
    /quotas need an operator token with view mesh-wide; /healthz is public."""
    identity: IdentityConfig | None = None
    if insecure_plaintext:
        if token_file is not None or agent_api is not None:
            raise _usage("--insecure-plaintext", "has no identity: drop --token-file and "
                                                 "--agent-api")
        if not is_loopback(host):
            raise _usage("--host", "--insecure-plaintext answers any caller: listen on "
                                   "loopback only")
    else:
        missing = [f for f, v in (("--token-file", token_file), ("--agent-api", agent_api),
                                  ("--ca-bundle", ca_bundle)) if v is None]
        if missing:
            raise _usage(missing[0], "the rate-limit service needs a mesh identity "
                         f"({', '.join(missing)} missing; e.g. a token from `shoal token "
                         "create -n shoal-system -a ratelimit`), or --insecure-plaintext "
                         "for development on loopback")
        assert token_file is not None and agent_api is not None and ca_bundle is not None
        identity = IdentityConfig(agent_api, token_file, ca_bundle,
                                  renew_fraction=renew_fraction)
    table = load_descriptors(descriptors) if descriptors else None
    configure_logging(log_level)
    config = ServeConfig(control_plane, host, port, http_port, redis, state_dir, identity,
                         table)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))  # a ShoalError: one line and exit 1 (shoal.cli.main)


def _usage(flag: str, message: str) -> ValidationError:
    """A one-line ``error: FLAG: MESSAGE`` and exit 1 (shoal.cli.main)."""
    return ValidationError([Violation(flag, message)])
