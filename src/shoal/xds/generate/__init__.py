"""Config generators: (mesh snapshot, proxy) -> Envoy resources, as pure functions.

    ctx = GenerationContext(mesh)          # one per MeshSnapshot
    snapshot = generate(ctx, proxy)        # for each proxy

Everything proxy-independent is built once in the context and shared by reference;
see :mod:`shoal.xds.generate.context`.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from shoal.registry.snapshot import mtls_disabled
from shoal.xds.generate import gateway, listeners, names, ratelimit, routes, telemetry, vhosts
from shoal.xds.generate.context import GenerationContext
from shoal.xds.generate.inbound import inbound_ports
from shoal.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, Proxy, ProxySnapshot, Resources

__all__ = ["GenerationContext", "generate"]


def generate(ctx: GenerationContext, proxy: Proxy) -> ProxySnapshot:
    """Every resource type for one proxy, at the context's mesh revision.

    Listeners that would bind an address already taken by an earlier one are left out,
    in this order of precedence: ``outbound_http``, inbound ports, upstream ports.
    """
    mesh = ctx.mesh
    lds: dict[str, listener_pb2.Listener] = {}
    rds: dict[str, route_pb2.RouteConfiguration] = {}
    inbound_cds: dict[str, cluster_pb2.Cluster] = {}
    bound: set[tuple[str, int]] = set()

    def add(listener: listener_pb2.Listener) -> bool:
        sa = listener.address.socket_address
        if listener.name in lds or (sa.address, sa.port_value) in bound:
            return False
        bound.add((sa.address, sa.port_value))
        lds[listener.name] = listener
        return True

    # VirtualService rules with sourceLabels make routes depend on who is calling.
    workload = mesh.workload(proxy.namespace, proxy.workload)
    labels = routes.route_labels(mesh, workload)
    # Sidecar resource: which services this proxy sees (shared per Sidecar)
    within = ctx.scope_of_proxy(proxy.namespace, workload)
    if proxy.metadata.outbound_port:
        add(ctx.outbound_listener(proxy.metadata.outbound_port, within.allow_any))
        rds[names.OUTBOUND_HTTP] = ctx.outbound_route_config(proxy.namespace, labels, within)
    gateway.add_gateway_config(ctx, proxy, add, rds)

    services = ctx.services_of_workload(proxy.namespace, proxy.workload)
    for ip in inbound_ports(mesh, proxy, services):
        assert workload is not None  # inbound ports exist only for a registered workload
        route_config = (
            vhosts.inbound_route_config(ip.endpoint_port, ip.cluster)
            if ip.protocol.is_http
            else None
        )
        if add(
            listeners.inbound_listener(
                ip.listener, ip.address, ip.endpoint_port, ip.cluster, route_config,
                extras=ratelimit.inbound_extras(ctx, workload)
                + telemetry.http_extras(ctx, telemetry.Direction.INBOUND),
                tcp_access_log=telemetry.tcp_access_log(ctx, telemetry.Direction.INBOUND),
                security=ctx.inbound_security(workload, ip.endpoint_port, ip.protocol.is_http),
            )
        ):
            inbound_cds[ip.cluster] = ctx.inbound_cluster(
                ip.cluster, ip.app_port, ip.protocol.is_http2
            )

    for up in proxy.metadata.upstreams:
        service = mesh.resolve_host(up.host, proxy.namespace)
        port = service.spec.port(up.port) if service is not None else None
        if service is None or port is None or not within.visible(mesh, service):
            continue  # unknown host or port: no listener; the app gets connection refused
        if (
            add(ctx.upstream_listener(up.host, service, port, up.local_port, labels))
            and port.protocol.is_http
        ):
            rc = ctx.upstream_route_config(service, port, labels)
            rds[rc.name] = rc

    shared, eds = ctx.scoped_resources(within)
    # localityLbSetting: endpoint priorities / weights as seen from this proxy's locality
    eds = ctx.localized_endpoints(eds, workload.spec.locality if workload is not None else "")
    if workload is not None and mtls_disabled(workload):
        shared = ctx.without_mtls(shared)
    inbound_cds.update(ratelimit.clusters(ctx))  # a separate rate-limit service
    cds = Resources(
        items={**shared.items, **inbound_cds},
        version=ctx.version_of(inbound_cds, base=shared.version),
    )
    return ProxySnapshot(
        resources={
            CLUSTER: cds,
            ENDPOINT: eds,
            LISTENER: Resources(items=lds, version=ctx.version_of(lds)),
            ROUTE: Resources(items=rds, version=ctx.version_of(rds)),
        },
        mesh_revision=mesh.revision,
    )
