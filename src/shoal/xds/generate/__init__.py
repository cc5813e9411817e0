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
from shoal.xds.generate import capture, envoyfilter, gateway, names, ratelimit, routes
from shoal.xds.generate.context import GenerationContext
from shoal.xds.generate.inbound import inbound_config, inbound_ports
from shoal.xds.node import capture_of
from shoal.xds.types import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SCOPED_ROUTE,
    Proxy,
    ProxySnapshot,
    Resources,
)

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
    labels = routes.route_labels(ctx.source_label_keys, workload, proxy.namespace)
    # Sidecar resource: which services this proxy sees (shared per Sidecar)
    within = ctx.scope_of_proxy(proxy.namespace, workload)
    # the route configuration of every service port it sees (scoped routes, capture),
    # shared by every proxy with the same route labels and Sidecar scope
    service_routes: Resources | None = None
    scopes = Resources(items={}, version=ctx.version_of({}))
    if proxy.metadata.outbound_port:
        add(ctx.outbound_listener(proxy.metadata.outbound_port, within.allow_any))
        if within.allow_any:  # no fallback scope: one table with a catch-all (vhosts.py)
            rds[names.OUTBOUND_HTTP] = ctx.outbound_route_config(proxy.namespace, labels,
                                                                 within)
        else:
            scopes = ctx.outbound_scopes(proxy.namespace, within)
            service_routes = ctx.service_route_configs(labels, within)
    gateway.add_gateway_config(ctx, proxy, add, rds, inbound_cds)

    services = ctx.services_of_workload(proxy.namespace, proxy.workload)
    # transparent capture (pods, docs/hosts.md): two capture listeners replace the inbound
    # ports and the app's HTTP proxy / upstream ports
    if (cap := capture_of(proxy.metadata)) is not None:
        capture.add_capture_config(ctx, proxy, cap, workload, labels, within, add, inbound_cds)
        service_routes = ctx.service_route_configs(labels, within)
    for ip in inbound_ports(mesh, proxy, services) if cap is None else ():
        assert workload is not None  # inbound ports exist only for a registered workload
        listener, cluster = inbound_config(ctx, workload, ip)
        if add(listener):
            inbound_cds[ip.cluster] = cluster

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

    routes_ = _routes(ctx, service_routes, rds)
    shared, eds = ctx.scoped_resources(within)
    # multi-cluster: endpoints on other networks through their east-west gateways
    eds = ctx.network_endpoints(eds, workload)
    # localityLbSetting: endpoint priorities / weights as seen from this proxy's locality
    eds = ctx.localized_endpoints(eds, workload.spec.locality if workload is not None else "",
                                  workload.spec.labels if workload is not None else None)
    if workload is not None and mtls_disabled(workload):
        shared = ctx.without_mtls(shared)
    inbound_cds.update(ratelimit.clusters(ctx))  # a separate rate-limit service
    cds = ctx.proxy_clusters(proxy.node_id, shared, inbound_cds)
    snap = ProxySnapshot(
        resources={
            CLUSTER: cds,
            ENDPOINT: eds,
            LISTENER: Resources(items=lds, version=ctx.version_of(lds)),
            SCOPED_ROUTE: scopes,
            ROUTE: routes_,
        },
        mesh_revision=mesh.revision,
    )
    # EnvoyFilter patches, last, on copies (docs/adr/0034)
    return envoyfilter.apply(mesh, proxy, workload, snap, ctx.patch_value, ctx.version_of)


def _routes(ctx: GenerationContext, shared: Resources | None,
            own: dict[str, route_pb2.RouteConfiguration]) -> Resources:
    """RDS: the shared service route configurations (the same object for every proxy of a
    scope, so that a push's change set is computed once for all of them), plus this
    proxy's own (gateway, upstream ports) when it has any not already among them."""
    if shared is None:
        return Resources(items=own, version=ctx.version_of(own))
    extra = {n: rc for n, rc in own.items() if shared.items.get(n) is not rc}
    if not extra:
        return shared
    return Resources.over(shared, extra, ctx.version_of(extra, base=shared.version))
