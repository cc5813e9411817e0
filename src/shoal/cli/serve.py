"""`shoal control-plane`: run the control plane in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from pathlib import Path
from typing import Annotated

import typer

from shoal.ca.setup import parse_duration
from shoal.control.config import (
    DEFAULT_AGENT_API_PORT,
    DEFAULT_API_PORT,
    DEFAULT_SECURE_XDS_PORT,
    DEFAULT_XDS_PORT,
    Address,
    ControlPlaneConfig,
)
from shoal.control.plane import ControlPlane
from shoal.logs import configure_logging
from shoal.registry.snapshot import MeshConfig


def default_home() -> Path:
    import os

    return Path(os.environ.get("SHOAL_HOME", Path.home() / ".shoal"))


async def serve(config: ControlPlaneConfig) -> None:
    plane = ControlPlane.build(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with plane.serving():
        await stop.wait()


def control_plane(
    api: Annotated[str, typer.Option(help="REST API listen address HOST:PORT.")
                   ] = f"127.0.0.1:{DEFAULT_API_PORT}",
    xds: Annotated[str, typer.Option(
        help="Plaintext xDS (gRPC) listen address HOST:PORT (keep it on loopback).")
                   ] = f"127.0.0.1:{DEFAULT_XDS_PORT}",
    agent_api: Annotated[str, typer.Option(
        help="TLS REST listener for agents HOST:PORT ('off' to disable).")
    ] = f"127.0.0.1:{DEFAULT_AGENT_API_PORT}",
    secure_xds: Annotated[str, typer.Option(
        help="xDS over TLS listen address HOST:PORT ('off' to disable).")
    ] = f"127.0.0.1:{DEFAULT_SECURE_XDS_PORT}",
    cert_ttl: Annotated[str, typer.Option(
        help="Lifetime of workload certificates (e.g. 24h, 1h, 90m; at least 1m).")] = "24h",
    ca_cert: Annotated[Path | None, typer.Option(
        help="Operator CA certificate (root, or intermediate followed by its chain).")] = None,
    ca_key: Annotated[Path | None, typer.Option(help="Private key of --ca-cert.")] = None,
    ca_chain: Annotated[Path | None, typer.Option(
        help="Chain above --ca-cert up to the root(s), if not in the --ca-cert file.")] = None,
    token_key: Annotated[Path | None, typer.Option(
        help="Token-signing key (PEM, EC P-256) shared by several instances (HA); default: "
             "<data-dir>/ca/token-key.pem, made on first start.")] = None,
    require_tokens: Annotated[bool, typer.Option(
        "--require-tokens/--no-require-tokens",
        help="Workload registration must present a token for its namespace and "
             "service account.")] = True,
    data_dir: Annotated[Path | None, typer.Option(
        help="Where the config store lives (default: $SHOAL_HOME/data).")] = None,
    store: Annotated[str, typer.Option(
        help="sqlite (persistent), memory, or etcd (shared by several control planes).")
    ] = "sqlite",
    etcd_endpoints: Annotated[str | None, typer.Option(
        help="etcd client URLs for --store etcd, comma-separated "
             "(e.g. http://10.0.0.1:2379,http://10.0.0.2:2379).")] = None,
    lease_ttl: Annotated[float, typer.Option(
        help="Seconds without heartbeat before a registered workload is removed.")] = 15.0,
    log_level: Annotated[str, typer.Option(envvar="SHOAL_LOG_LEVEL")] = "info",
    otlp_export: Annotated[str | None, typer.Option(
        help="Also forward the sidecars' spans to this OTLP/gRPC collector HOST:PORT.")
    ] = None,
    trace_sampling: Annotated[float, typer.Option(
        min=0.0, max=100.0,
        help="Percent of new requests the sidecars trace (a caller's sampled trace is "
             "always continued).")] = 1.0,
    trace_collector: Annotated[str | None, typer.Option(
        help="HOST:PORT the sidecars POST Zipkin spans to (default: the --api address), "
             "or 'xds': OpenTelemetry spans over the sidecars' xDS connection (W3C "
             "traceparent only), for sidecars that cannot reach the API (pods).")] = None,
    ratelimit_address: Annotated[str | None, typer.Option(
        help="A separate rate-limit service (`shoal ratelimit serve`) HOST:PORT; default: "
             "the control plane serves it on its xDS ports.")] = None,
    ratelimit_redis: Annotated[str | None, typer.Option(
        help="Redis URL for the built-in rate-limit service's counters.")] = None,
    outbound_traffic_policy: Annotated[str, typer.Option(
        help="Hosts that are neither services nor ServiceEntries: REGISTRY_ONLY (404) or "
             "ALLOW_ANY (forwarded). A Sidecar may override it.")] = "REGISTRY_ONLY",
    cluster: Annotated[str, typer.Option(
        help="Multi-cluster: this cluster's name (workloads get the "
             "topology.istio.io/cluster label; see docs/multicluster.md).")] = "",
    network: Annotated[str, typer.Option(
        help="Multi-cluster: the network this cluster's workloads are on; other networks "
             "are reached through their east-west gateways.")] = "",
) -> None:
    """Run the control plane (REST API + xDS server) in the foreground."""
    configure_logging(log_level)
    if store not in ("sqlite", "memory", "etcd"):
        raise typer.BadParameter("must be sqlite, memory or etcd", param_hint="--store")
    if outbound_traffic_policy not in ("REGISTRY_ONLY", "ALLOW_ANY"):
        raise typer.BadParameter("must be REGISTRY_ONLY or ALLOW_ANY",
                                 param_hint="--outbound-traffic-policy")
    for flag, value in (("--cluster", cluster), ("--network", network)):
        if value and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
            raise typer.BadParameter("must be a DNS label (a-z, 0-9, -)", param_hint=flag)
    endpoints = tuple(e.strip() for e in (etcd_endpoints or "").split(",") if e.strip())
    if (store == "etcd") != bool(endpoints):
        raise typer.BadParameter("is required with --store etcd, and only then",
                                 param_hint="--etcd-endpoints")
    config = ControlPlaneConfig(
        data_dir=data_dir or default_home() / "data",
        api=Address.parse(api), xds=Address.parse(xds), store=store, lease_ttl=lease_ttl,
        etcd_endpoints=endpoints,
        agent_api=None if agent_api == "off" else Address.parse(agent_api),
        secure_xds=None if secure_xds == "off" else Address.parse(secure_xds),
        cert_ttl=parse_duration(cert_ttl, "--cert-ttl"), require_tokens=require_tokens,
        ca_cert=ca_cert, ca_key=ca_key, ca_chain=ca_chain, token_key=token_key,
        otlp_export=otlp_export,
        mesh=MeshConfig(ratelimit_address=ratelimit_address, trace_sampling=trace_sampling,
                        trace_collector="" if trace_collector == "xds" else trace_collector,
                        outbound_traffic_policy=outbound_traffic_policy,
                        cluster=cluster, network=network),
        ratelimit_redis=ratelimit_redis,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
