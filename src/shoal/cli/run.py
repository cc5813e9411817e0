"""``shoal run``: start an application with its sidecar (the per-workload agent).

The main app (shoal.cli.main) lists :func:`run` as a lazily imported verb whose context
settings are RUN_CONTEXT_SETTINGS; on first use that amounts to::

    app.command("run", context_settings=RUN_CONTEXT_SETTINGS)(run)

:func:`run_command` is the same thing with plain typed parameters (no Typer involved).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, Protocol

import typer

from shoal.agent import Agent, AgentConfig
from shoal.agent.config import (
    DEFAULT_CONTROL_PLANE,
    DEFAULT_TLS_KEY_DIRS,
    DEFAULT_XDS,
    parse_dns_upstream,
    parse_labels,
    parse_metrics_port,
    parse_upstream,
)
from shoal.errors import ShoalError
from shoal.hosts.pods import run_in_pod
from shoal.hosts.sandbox import parse_app_user
from shoal.logs import configure_logging

RUN_CONTEXT_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}
APP_USER_HELP = (
    "The user the app runs as in the pod: USER|UID[:GROUP|GID] (default nobody, 65534); "
    "never root or --proxy-uid. It has no capabilities, its own PID and mount "
    "namespaces, and cannot read shoal's keys (docs/hosts.md).")
TLS_KEY_DIR_HELP = (
    "A directory a DestinationRule's clientCertificate/privateKey may be read from "
    "(repeatable; default /etc/shoal/certs). Keys anywhere else are refused, so that "
    "config cannot make the sidecar present another key found on this host.")
METRICS_PORT_HELP = (
    "Port of the metrics endpoint Prometheus scrapes (GET /stats/prometheus over mTLS on "
    "--address, Istio's metric names; docs/observability.md); default: a free port; "
    "0 or off: none. Served only with a workload identity (--token-file).")
METRICS_SCRAPER_HELP = (
    "The only client identity the metrics endpoint answers (default "
    "spiffe://<trust domain>/ns/shoal-system/sa/prometheus, what `shoal prometheus "
    "config --mode workloads` mints).")
log = logging.getLogger("shoal.cli.run")


def run_command(
    service: str,
    port: int,
    command: list[str],
    *,
    namespace: str = "default",
    protocol: str = "http",
    port_name: str = "http",
    labels: list[str] | None = None,
    app_port: int | None = None,
    inbound_port: int | None = None,
    address: str = "127.0.0.1",
    name: str | None = None,
    service_account: str | None = None,
    locality: str = "",
    upstreams: list[str] | None = None,
    control_plane: str = DEFAULT_CONTROL_PLANE,
    xds: str = DEFAULT_XDS,
    xds_delta: bool = True,
    drain_seconds: float = 5.0,
    run_dir: Path | None = None,
    lease_seconds: int = 15,
    ready_timeout: float = 30.0,
    log_level: str = "info",
) -> int:
    """Run the agent in this process; returns the exit status (raises ShoalError on bad input)."""
    configure_logging(log_level)
    agent = Agent(agent_config(
        service, port, command, namespace=namespace, protocol=protocol, port_name=port_name,
        labels=labels, app_port=app_port, inbound_port=inbound_port, address=address, name=name,
        service_account=service_account, locality=locality, upstreams=upstreams,
        control_plane=control_plane, xds=xds, xds_delta=xds_delta, drain_seconds=drain_seconds,
        run_dir=run_dir, lease_seconds=lease_seconds, ready_timeout=ready_timeout,
    ))
    return asyncio.run(agent.run())


def agent_config(
    service: str,
    port: int,
    command: list[str],
    *,
    namespace: str = "default",
    protocol: str = "http",
    port_name: str = "http",
    labels: list[str] | None = None,
    app_port: int | None = None,
    inbound_port: int | None = None,
    address: str = "127.0.0.1",
    name: str | None = None,
    service_account: str | None = None,
    locality: str = "",
    upstreams: list[str] | None = None,
    control_plane: str = DEFAULT_CONTROL_PLANE,
    xds: str = DEFAULT_XDS,
    xds_delta: bool = True,
    drain_seconds: float = 5.0,
    run_dir: Path | None = None,
    lease_seconds: int = 15,
    ready_timeout: float = 30.0,
    token: str | None = None,
    token_file: Path | None = None,
    ca_bundle: Path | None = None,
    renew_fraction: float = 0.5,
    capture: bool = False,
    proxy_uid: int = 1337,
    tls_key_dirs: list[Path] | None = None,
    dns_upstreams: list[str] | None = None,
    app_user: str | None = None,
    app_hide: list[Path] | None = None,
    app_socket: bool = False,
    metrics_port: str | None = None,
    metrics_scraper: str | None = None,
) -> AgentConfig:
    """Flags -> :class:`AgentConfig` (raises AgentError naming the bad flag)."""
    return AgentConfig(
        service=service,
        port=port,
        command=tuple(command),
        namespace=namespace,
        protocol=protocol,
        port_name=port_name,
        labels=parse_labels(labels or []),
        app_port=app_port,
        inbound_port=inbound_port,
        address=address,
        name=name,
        service_account=service_account,
        locality=locality,
        upstreams=tuple(parse_upstream(u) for u in upstreams or []),
        control_plane=control_plane,
        xds=xds,
        xds_delta=xds_delta,
        drain_seconds=drain_seconds,
        run_dir=run_dir,
        lease_seconds=lease_seconds,
        ready_timeout=ready_timeout,
        token=token or None,
        token_file=token_file,
        ca_bundle=ca_bundle,
        renew_fraction=renew_fraction,
        capture=capture,
        proxy_uid=proxy_uid,
        tls_key_dirs=tuple(d.resolve() for d in tls_key_dirs)
        if tls_key_dirs else DEFAULT_TLS_KEY_DIRS,
        dns_upstreams=tuple(parse_dns_upstream(d) for d in dns_upstreams or []),
        app_user=parse_app_user(app_user, proxy_uid=proxy_uid) if app_user else None,
        app_hide=tuple(p.absolute() for p in app_hide or []),
        app_socket=app_socket,
        metrics_port=parse_metrics_port(metrics_port),
        metrics_scraper=metrics_scraper,
    )


def _run_args() -> list[str]:
    """This process's arguments after ``run`` (to repeat them inside a pod)."""
    argv = sys.argv[1:]
    return argv[argv.index("run") + 1:] if "run" in argv else argv


def run(
    ctx: typer.Context,
    service: Annotated[str, typer.Option(
        "--service", "-s", help="Service this workload belongs to (label app=SERVICE).")],
    port: Annotated[int, typer.Option(
        "--port", "-p", help="Service port peers call (e.g. 9080).")],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace.")] = "default",
    protocol: Annotated[str, typer.Option(
        help="Protocol of the port: http, http2, grpc or tcp.")] = "http",
    port_name: Annotated[str, typer.Option(help="Name of the service port.")] = "http",
    label: Annotated[list[str] | None, typer.Option(
        "--label", "-l", help="Workload label KEY=VALUE (repeatable), e.g. version=v2.")] = None,
    app_port: Annotated[int | None, typer.Option(
        help="Port the app listens on at 127.0.0.1 (default: --port); given to it as $PORT.")
    ] = None,
    app_socket: Annotated[bool, typer.Option(
        "--app-socket",
        help="The app listens on the Unix socket $SHOAL_APP_SOCKET (in a directory only "
             "this user can open) instead of a port on 127.0.0.1, so other users' "
             "processes cannot skip the sidecar; $PORT is not set. Not with --pod/--capture.")
    ] = False,
    inbound_port: Annotated[int | None, typer.Option(
        help="Port the sidecar accepts peers on at --address (default: a free port).")] = None,
    address: Annotated[str, typer.Option(
        help="Address peers reach this workload's sidecar at.")] = "127.0.0.1",
    name: Annotated[str | None, typer.Option(
        help="Workload name (default: SERVICE-<5 random characters>).")] = None,
    service_account: Annotated[str | None, typer.Option(
        help="Identity of the workload (default: the service name).")] = None,
    locality: Annotated[str, typer.Option(help="REGION/ZONE/SUBZONE of the workload.")] = "",
    upstream: Annotated[list[str] | None, typer.Option(
        "--upstream", "-u",
        help="HOST:PORT[=LOCALPORT] (repeatable): the sidecar listens on 127.0.0.1:LOCALPORT "
             "and forwards to that service port; the app gets $SHOAL_UPSTREAM_<HOST>_<PORT>.")
    ] = None,
    control_plane: Annotated[str, typer.Option(
        envvar="SHOAL_CONTROL_PLANE",
        help="Control plane REST base URL; several instances (HA): URL,URL,... (the next "
             "one is tried when one is unreachable).")
    ] = DEFAULT_CONTROL_PLANE,
    xds: Annotated[str, typer.Option(
        envvar="SHOAL_XDS",
        help="Control plane xDS (gRPC) address HOST:PORT; several instances (HA): "
             "HOST:PORT,HOST:PORT,... (Envoy reconnects to another when one dies).")
    ] = DEFAULT_XDS,
    xds_delta: Annotated[bool, typer.Option(
        "--xds-delta/--xds-sotw",
        help="Incremental (delta) xDS, the default, or state-of-the-world (docs/adr/0037).")
    ] = True,
    drain_seconds: Annotated[float, typer.Option(
        help="On stop: seconds to let in-flight requests finish after draining.")] = 5.0,
    run_dir: Annotated[Path | None, typer.Option(
        help="Where the Envoy bootstrap and log go (default: a temp dir per workload).")
    ] = None,
    lease_seconds: Annotated[int, typer.Option(
        help="Registration lease; heartbeats are sent every third of it.")] = 15,
    ready_timeout: Annotated[float, typer.Option(
        help="Seconds to wait for Envoy to get its config before starting the app anyway.")
    ] = 30.0,
    log_level: Annotated[str, typer.Option(
        envvar="SHOAL_LOG_LEVEL", help="debug, info, warning or error.")] = "info",
    token_file: Annotated[Path | None, typer.Option(
        envvar="SHOAL_TOKEN_FILE",
        help="File holding this workload's token (`shoal token create`); re-read on use.")
    ] = None,
    token: Annotated[str | None, typer.Option(
        envvar="SHOAL_TOKEN", show_envvar=True,
        help="The token itself. INSECURE on the command line (visible in ps); prefer "
             "--token-file or $SHOAL_TOKEN.")] = None,
    ca_bundle: Annotated[Path | None, typer.Option(
        envvar="SHOAL_CA_BUNDLE",
        help="Mesh root certificate(s) (<data-dir>/ca/root-cert.pem): verify the control "
             "plane; with it, use https:// --control-plane and the secure xDS port.")
    ] = None,
    renew_fraction: Annotated[float, typer.Option(
        help="Renew the workload certificate at this fraction of its lifetime.")] = 0.5,
    tls_key_dir: Annotated[list[Path] | None, typer.Option(
        metavar="DIR", help=TLS_KEY_DIR_HELP)] = None,
    pod: Annotated[str | None, typer.Option(
        help="Run in a new network namespace (a 'pod') of this name, with its own IP and "
             "transparent capture; deleted on exit. Needs root (docs/hosts.md).",
        rich_help_panel="Pods (root)")] = None,
    network: Annotated[str, typer.Option(
        help="The pod's network (a Linux bridge); created if --subnet is given.",
        rich_help_panel="Pods (root)")] = "shoal",
    subnet: Annotated[str | None, typer.Option(
        help="Subnet of --network, e.g. 10.61.0.0/24 (the host is its first address).",
        rich_help_panel="Pods (root)")] = None,
    pod_address: Annotated[str | None, typer.Option(
        help="The pod's IP address (default: the next free one).",
        rich_help_panel="Pods (root)")] = None,
    capture: Annotated[bool, typer.Option(
        "--capture", help="Already inside the workload's own network namespace: capture its "
        "TCP with iptables instead of proxy settings (--address = its IP). Needs root.",
        rich_help_panel="Pods (root)")] = False,
    proxy_uid: Annotated[int, typer.Option(
        help="With --capture: the uid Envoy runs as (its traffic is not captured).",
        rich_help_panel="Pods (root)")] = 1337,
    dns_upstream: Annotated[list[str] | None, typer.Option(
        metavar="IP[:PORT]", help="A resolver for names outside the mesh, asked by the "
        "sidecar for the app and by Envoy for DNS ServiceEntries (repeatable; default with "
        "--pod: the host's /etc/resolv.conf nameservers).",
        rich_help_panel="Pods (root)")] = None,
    app_user: Annotated[str | None, typer.Option(
        metavar="USER[:GROUP]", help=APP_USER_HELP, rich_help_panel="Pods (root)")] = None,
    app_hide: Annotated[list[Path] | None, typer.Option(
        metavar="PATH", help="With --pod/--capture: a further directory or file the app must "
        "not see, e.g. a control plane's --data-dir outside $SHOAL_HOME (repeatable).",
        rich_help_panel="Pods (root)")] = None,
    metrics_port: Annotated[str | None, typer.Option(
        metavar="PORT|off", help=METRICS_PORT_HELP)] = None,
    metrics_scraper: Annotated[str | None, typer.Option(
        metavar="SPIFFE-ID", help=METRICS_SCRAPER_HELP)] = None,
) -> None:
    """Run CMD with a sidecar Envoy (the per-workload agent).

    Example: shoal run -s reviews -p 9080 -l version=v2 -- python -m shoal.demo.reviews

    CMD gets HTTP_PROXY set to its sidecar, so http://SERVICE:PORT/ calls go
    through the mesh, and $PORT set to the port it must listen on (127.0.0.1).
    The workload is registered with the control plane while it runs. On
    SIGTERM/Ctrl-C the agent deregisters, drains the sidecar, then stops CMD.
    If CMD exits by itself, shoal run exits with CMD's status.

    As root, --pod NAME --network NET [--subnet CIDR] runs CMD in its own network
    namespace with its own IP instead: iptables sends its TCP through the sidecar and
    service names resolve there, so CMD needs no proxy settings. There CMD runs as
    --app-user (default nobody) without capabilities, in its own PID and mount
    namespaces (docs/hosts.md).
    """
    command = list(ctx.args)
    if command and command[0] == "--":
        command = command[1:]
    configure_logging(log_level)
    if pod is not None:  # the host side: make the pod, run this command inside it
        if app_socket:
            typer.echo("shoal run: --app-socket is for unprivileged mode: in a pod the app's "
                       "port is already reached only through its sidecar", err=True)
            raise typer.Exit(2)
        try:
            parse_app_user(app_user, proxy_uid=proxy_uid)  # a bad flag: before the pod
        except ShoalError as e:
            typer.echo(f"shoal run: {e}", err=True)
            raise typer.Exit(2) from None
        try:
            status = run_in_pod(pod=pod, network=network, subnet=subnet,
                                address=pod_address, namespace=namespace, args=_run_args())
        except ShoalError as e:
            typer.echo(f"shoal run: {e}", err=True)
            raise typer.Exit(1) from None
        raise typer.Exit(status)
    run_agent("shoal run", lambda: Agent(agent_config(
        service, port, command, namespace=namespace, protocol=protocol,
        port_name=port_name, labels=label, app_port=app_port, inbound_port=inbound_port,
        address=address, name=name, service_account=service_account, locality=locality,
        upstreams=upstream, control_plane=control_plane, xds=xds, xds_delta=xds_delta,
        drain_seconds=drain_seconds, run_dir=run_dir, lease_seconds=lease_seconds,
        ready_timeout=ready_timeout, token=token, token_file=token_file,
        ca_bundle=ca_bundle, renew_fraction=renew_fraction, capture=capture,
        proxy_uid=proxy_uid, tls_key_dirs=tls_key_dir, dns_upstreams=dns_upstream,
        app_user=app_user, app_hide=app_hide, app_socket=app_socket,
        metrics_port=metrics_port, metrics_scraper=metrics_scraper,
    )))


class _Runnable(Protocol):
    async def run(self) -> int: ...


def run_agent(prog: str, build: Callable[[], _Runnable]) -> NoReturn:
    """Build an agent (a ShoalError here is a bad flag: exit 2 before anything starts),
    run it (a ShoalError: exit 1), exit with its status; errors are one line on stderr."""
    try:
        agent = build()
    except ShoalError as e:
        typer.echo(f"{prog}: {e}", err=True)
        raise typer.Exit(2) from None
    try:
        status = asyncio.run(agent.run())
    except ShoalError as e:
        typer.echo(f"{prog}: {e}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(status)


def standalone_app() -> typer.Typer:
    """A Typer app with only ``run`` (used by ``python -m shoal.agent``)."""
    app = typer.Typer(add_completion=False, no_args_is_help=True)
    app.command("run", context_settings=RUN_CONTEXT_SETTINGS)(run)

    @app.callback()
    def _root() -> None:
        """shoal agent."""

    return app
