"""Config generators: (mesh snapshot, proxy) -> Envoy resources, as pure functions.

    ctx = GenerationContext(mesh)          # one per MeshSnapshot
    snapshot = generate(ctx, proxy)        # for each proxy

One generator per concern (:mod:`shoal.xds.generate.base`), in :func:`generators`;
everything proxy-independent is built once in the context and shared by reference (see
:mod:`shoal.xds.generate.context`). Where each concern lives: docs/architecture.md.
"""

from __future__ import annotations

import functools

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from shoal.ratelimit import plugin as ratelimit
from shoal.xds.generate import (
    capture,
    envoyfilter,
    gateway,
    inbound,
    outbound,
    outbound_http,
    routes,
    upstreams,
)
from shoal.xds.generate.base import Generator, ProxyView
from shoal.xds.generate.context import GenerationContext
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

__all__ = ["GENERATORS", "GenerationContext", "generate", "generators", "proxy_view"]

@functools.cache
def generators() -> tuple[Generator, ...]:
    """Every generator, in precedence order: a listener that would bind an address (or
    take a name) an earlier one holds is left out (outbound_http, then a gateway's,
    capture's, inbound ports, the application's upstream ports). Put together on first
    use, not at import: a policy slice's plugin (:mod:`shoal.ratelimit.plugin`) uses this
    package's helpers, so it may be imported before it and be half-imported here."""
    return (
        outbound_http.GENERATOR,
        gateway.GENERATOR,
        capture.GENERATOR,
        inbound.GENERATOR,
        upstreams.GENERATOR,
        ratelimit.GENERATOR,
        outbound.GENERATOR,
    )


def __getattr__(name: str) -> object:
    if name == "GENERATORS":  # (see generators)
        return generators()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
# EnvoyFilter patches apply last, to copies of the generated resources (ADR 0034).
PATCH_INPUTS = envoyfilter.INPUTS


def proxy_view(ctx: GenerationContext, proxy: Proxy) -> ProxyView:
    """What the generators need to know of ``proxy`` in ``ctx``'s snapshot."""
    mesh = ctx.mesh
    workload = mesh.workload(proxy.namespace, proxy.workload)
    return ProxyView(
        proxy=proxy,
        workload=workload,
        # VirtualService rules with sourceLabels make routes depend on who is calling
        labels=routes.route_labels(ctx.source_label_keys, workload, proxy.namespace),
        # Sidecar resource: which services this proxy sees (shared per Sidecar)
        within=ctx.scope_of_proxy(proxy.namespace, workload),
        capture=capture_of(proxy.metadata),
        services=ctx.services_of_workload(proxy.namespace, proxy.workload),
    )


def generate(ctx: GenerationContext, proxy: Proxy) -> ProxySnapshot:
    """Every resource type for one proxy, at the context's mesh revision: the parts of
    every generator, in precedence order, put together. Computed once per context for
    the proxies that differ only in node id (replicas of a workload): they share one
    snapshot."""
    key = proxy.config_key
    return ctx.memo(("proxy", key), lambda: _generate(ctx, proxy, key))  # type: ignore[no-any-return]


def _generate(ctx: GenerationContext, proxy: Proxy, key: tuple[object, ...]) -> ProxySnapshot:
    view = proxy_view(ctx, proxy)
    lds: dict[str, listener_pb2.Listener] = {}
    rds: dict[str, route_pb2.RouteConfiguration] = {}
    own_cds: dict[str, cluster_pb2.Cluster] = {}
    bound: set[tuple[str, int]] = set()
    scopes = service_routes = clusters = endpoints = None
    for generator in generators():
        for part in generator.parts(ctx, view):
            if (lis := part.listener) is not None:
                sa = lis.address.socket_address
                if lis.name in lds or (sa.address, sa.port_value) in bound:
                    continue  # and its routes and clusters: they serve it only
                bound.add((sa.address, sa.port_value))
                lds[lis.name] = lis
            rds.update(part.routes)
            own_cds.update(part.clusters)
            scopes = part.scopes or scopes
            service_routes = part.service_routes or service_routes
            clusters = part.clusters_shared or clusters
            endpoints = part.endpoints or endpoints
    assert clusters is not None and endpoints is not None  # (outbound.GENERATOR)
    snap = ProxySnapshot(
        resources={
            CLUSTER: ctx.proxy_clusters(key, clusters, own_cds),
            ENDPOINT: endpoints,
            LISTENER: Resources(items=lds, version=ctx.version_of(lds)),
            SCOPED_ROUTE: scopes or Resources(items={}, version=ctx.version_of({})),
            ROUTE: _routes(ctx, service_routes, rds),
        },
        mesh_revision=ctx.mesh.revision,
    )
    # EnvoyFilter patches, last, on copies (docs/adr/0034)
    return envoyfilter.apply(ctx.mesh, proxy, view.workload, snap, ctx.patch_value,
                             ctx.version_of)


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
