"""`shoal control-plane`: run the control plane in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from pathlib import Path
from typing import Annotated

import typer

from shoal.api.meshconfig import load_mesh_config
from shoal.api.meta import DNS_LABEL
from shoal.ca.setup import parse_ttl
from shoal.control.collector import FullCollections
from shoal.control.config import (
    DEFAULT_AGENT_API_PORT,
    DEFAULT_API_PORT,
    DEFAULT_SECURE_XDS_PORT,
    DEFAULT_XDS_PORT,
    Address,
    ControlPlaneConfig,
)
from shoal.control.plane import ControlPlane
from shoal.errors import ValidationError
from shoal.logs import configure_logging
from shoal.netaddr import is_loopback
from shoal.ratelimit.identity import service_identity
from shoal.registry.snapshot import AccessLogMode, MeshConfig
from shoal.store.etcd_security import EtcdSecurity


def default_home() -> Path:
    import os

    return Path(os.environ.get("SHOAL_HOME", Path.home() / ".shoal"))




async def serve(config: ControlPlaneConfig) -> None:
    plane = ControlPlane.build(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # full garbage collections when the plane is quiet (no proxy computed, no response
    # written), not in the middle of a push or a connect storm
    collections = FullCollections(
        lambda: plane.sync.stats.proxies_computed + plane.xds.budget.granted)
    async with plane.serving(), asyncio.TaskGroup() as tg:
        collecting = tg.create_task(collections.run(), name="full-collections")
        await stop.wait()
        collecting.cancel()


def control_plane(
    api: Annotated[str, typer.Option(help="REST API listen address HOST:PORT.")
                   ] = f"127.0.0.1:{DEFAULT_API_PORT}",
    xds: Annotated[str, typer.Option(
        help="Plaintext xDS (gRPC) listen address HOST:PORT: loopback only (agents use "
             "--secure-xds), unless --insecure-xds-any-host.")
                   ] = f"127.0.0.1:{DEFAULT_XDS_PORT}",
    insecure_xds_any_host: Annotated[bool, typer.Option(
        "--insecure-xds-any-host",
        help="Let --xds listen on a non-loopback address: unauthenticated xDS and "
             "telemetry for anyone who reaches it (docs/adr/0020-xds-peer-identity.md).")
    ] = False,
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
    trace_sampling: Annotated[float | None, typer.Option(
        min=0.0, max=100.0,
        help="Turn tracing on: the percent of new requests the sidecars trace (1 is a "
             "usual production rate; a caller's sampled trace is always continued). "
             "Default: no tracer in the sidecars, like Istio >= 1.22; it costs every "
             "request about a tenth of a sidecar pair's throughput (docs/adr/0031).")
    ] = None,
    access_log_stream: Annotated[bool, typer.Option(
        "--access-log-stream/--no-access-log-stream",
        help="Sidecars also stream every access-log entry to the control plane (OTLP), for "
             "`shoal logs` and the dashboard's log view. Per-request work in the control "
             "plane: off by default (metrics come from the proxies' own counters).")
    ] = False,
    access_log: Annotated[AccessLogMode, typer.Option(
        help="Which requests the sidecars write to their local access log (`shoal logs`): "
             "all, errors (4xx/5xx, a response flag or a gRPC error; the default) or off.")
    ] = AccessLogMode.ERRORS,
    trace_collector: Annotated[str | None, typer.Option(
        help="HOST:PORT of this control plane's --agent-api as the sidecars reach it, "
             "where they POST Zipkin spans over mTLS (default: the --agent-api address), "
             "or 'xds': OpenTelemetry spans over the sidecars' xDS connection (W3C "
             "traceparent only).")] = None,
    ratelimit_address: Annotated[str | None, typer.Option(
        help="A separate rate-limit service (`shoal ratelimit serve`) HOST:PORT; default: "
             "the control plane serves it on its xDS ports.")] = None,
    ratelimit_redis: Annotated[str | None, typer.Option(
        help="Redis URL for the built-in rate-limit service's counters.")] = None,
    outbound_traffic_policy: Annotated[str, typer.Option(
        help="Hosts that are neither services nor ServiceEntries: REGISTRY_ONLY (404) or "
             "ALLOW_ANY (forwarded). A Sidecar may override it.")] = "REGISTRY_ONLY",
    mesh_config: Annotated[Path | None, typer.Option(
        help="Istio mesh configuration YAML (a MeshConfig, the `istio` ConfigMap or an "
             "IstioOperator): its extensionProviders are the external authorizers that "
             "AuthorizationPolicy action CUSTOM names (docs/adr/0033).")] = None,
    istio_root_namespace: Annotated[str, typer.Option(
        help="Istio's root namespace (its meshConfig.rootNamespace): policies there "
             "without a selector apply mesh-wide, like those in shoal-system, so Istio's "
             "files work unchanged; '' to honour shoal-system only (docs/adr/0032).")
    ] = "istio-system",
    cluster: Annotated[str, typer.Option(
        help="Multi-cluster: this cluster's name (workloads get the "
             "topology.istio.io/cluster label; see docs/multicluster.md).")] = "",
    network: Annotated[str, typer.Option(
        help="Multi-cluster: the network this cluster's workloads are on; other networks "
             "are reached through their east-west gateways.")] = "",
    admin_token_ttl: Annotated[str, typer.Option(
        help="Lifetime of the mesh-admin token kept in <data-dir>/admin.token (renewed at "
             "half of it while the control plane runs).")] = "24h",
    api_host: Annotated[list[str] | None, typer.Option(
        help="A further Host name the operator API answers to (besides loopback and its "
             "listen address), e.g. a DNS name in front of it; repeatable.")] = None,
    etcd_ca: Annotated[Path | None, typer.Option(
        help="CA bundle (PEM) that verifies the etcd servers of https:// --etcd-endpoints "
             "(default: the system's CAs).")] = None,
    etcd_cert: Annotated[Path | None, typer.Option(
        help="Client certificate (PEM) for etcd's --client-cert-auth; needs --etcd-key.")
    ] = None,
    etcd_key: Annotated[Path | None, typer.Option(help="Private key of --etcd-cert.")] = None,
    etcd_user: Annotated[str | None, typer.Option(
        help="etcd user (etcd's own authentication); the password comes from "
             "--etcd-password-file or $SHOAL_ETCD_PASSWORD, never the command line.")
    ] = None,
    etcd_password_file: Annotated[Path | None, typer.Option(
        help="File holding the password of --etcd-user.")] = None,
    insecure_etcd_plaintext_auth: Annotated[bool, typer.Option(
        "--insecure-etcd-plaintext-auth",
        help="Let --etcd-user authenticate over http:// to a non-loopback etcd: password "
             "and token in clear on the network.")] = False,
    ratelimit_identity: Annotated[str | None, typer.Option(
        help="With --ratelimit-address: the service's identity, NAMESPACE/SERVICE_ACCOUNT "
             "or spiffe://TD/ns/NS/sa/SA (the token it was started with, e.g. "
             "shoal-system/ratelimit); sidecars reach it over mTLS and verify it. Without "
             "it the service must run with --insecure-plaintext (development).")] = None,
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
    if not insecure_xds_any_host and not is_loopback(Address.parse(xds).host):
        raise typer.BadParameter("the plaintext xDS port is unauthenticated: listen on "
                                 "loopback (agents use --secure-xds), or pass "
                                 "--insecure-xds-any-host", param_hint="--xds")
    if ratelimit_identity is not None:
        if ratelimit_address is None:
            raise typer.BadParameter("only with --ratelimit-address",
                                     param_hint="--ratelimit-identity")
        try:
            ratelimit_identity = service_identity(ratelimit_identity,
                                                  MeshConfig.trust_domain)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--ratelimit-identity") from e
    endpoints = tuple(e.strip() for e in (etcd_endpoints or "").split(",") if e.strip())
    if (store == "etcd") != bool(endpoints):
        raise typer.BadParameter("is required with --store etcd, and only then",
                                 param_hint="--etcd-endpoints")
    etcd_flags = (etcd_ca, etcd_cert, etcd_key, etcd_user, etcd_password_file)
    if store != "etcd" and (any(f is not None for f in etcd_flags)
                            or insecure_etcd_plaintext_auth):
        raise typer.BadParameter("--etcd-* options need --store etcd")
    try:
        etcd_security = EtcdSecurity.from_options(
            ca=etcd_ca, cert=etcd_cert, key=etcd_key, user=etcd_user,
            password_file=etcd_password_file,
            insecure_plaintext_auth=insecure_etcd_plaintext_auth,
        ) if store == "etcd" else EtcdSecurity()
        etcd_security.check(endpoints)
    except ValidationError as e:
        raise typer.BadParameter(str(e)) from e
    if istio_root_namespace and not (DNS_LABEL.match(istio_root_namespace)
                                     and len(istio_root_namespace) <= 63):
        raise typer.BadParameter(f"{istio_root_namespace!r} is not a namespace name",
                                 param_hint="--istio-root-namespace")
    try:
        providers = load_mesh_config(mesh_config).extension_providers if mesh_config else ()
    except ValidationError as e:
        raise typer.BadParameter(str(e), param_hint="--mesh-config") from e
    config = ControlPlaneConfig(
        data_dir=data_dir or default_home() / "data",
        api=Address.parse(api), xds=Address.parse(xds), store=store, lease_ttl=lease_ttl,
        etcd_endpoints=endpoints, etcd_security=etcd_security,
        agent_api=None if agent_api == "off" else Address.parse(agent_api),
        secure_xds=None if secure_xds == "off" else Address.parse(secure_xds),
        cert_ttl=parse_ttl(cert_ttl, "--cert-ttl"), require_tokens=require_tokens,
        ca_cert=ca_cert, ca_key=ca_key, ca_chain=ca_chain, token_key=token_key,
        otlp_export=otlp_export,
        mesh=MeshConfig(ratelimit_address=ratelimit_address,
                        ratelimit_identity=ratelimit_identity, trace_sampling=trace_sampling,
                        access_log_stream=access_log_stream, access_log=access_log,
                        trace_collector="" if trace_collector == "xds" else trace_collector,
                        outbound_traffic_policy=outbound_traffic_policy,
                        istio_root_namespace=istio_root_namespace,
                        cluster=cluster, network=network, extension_providers=providers),
        ratelimit_redis=ratelimit_redis,
        admin_token_ttl=parse_ttl(admin_token_ttl, "--admin-token-ttl"),
        api_hosts=tuple(api_host or ()),
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
