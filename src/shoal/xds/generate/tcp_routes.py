"""VirtualService ``tcp`` rules as data, for the listener generators (``tls`` rules: see
tls_routes.py).

TCP routing is decided per listener (no route table), so this module answers "which
cluster(s), with which weights, does a TCP connection to (service, port) from a proxy
with these labels go to" and builds the matching ``tcp_proxy`` filter. A rule whose
destination cannot be resolved is skipped (a TCP listener cannot answer a 503).
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from shoal.api.mesh import ServicePort
from shoal.api.meta import Resource
from shoal.api.networking import L4MatchAttributes, RouteDestination
from shoal.api.selector import selects
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import names
from shoal.xds.generate.protocol import TCP_PROXY_FILTER, pack
from shoal.xds.generate.routes import Labels, resolve_destination

Weighted = tuple[tuple[str, int], ...]  # (cluster, weight), weights > 0


def _applies(m: L4MatchAttributes, port: int, labels: Labels) -> bool:
    return (m.port is None or m.port == port) and selects(
        m.source_labels, labels)


def resolve(mesh: MeshSnapshot, route: Sequence[RouteDestination], ns: str, port: int
             ) -> Weighted | None:
    """A TCP or TLS rule's destinations as (cluster, weight); None if one cannot be
    resolved (the rule is skipped: a TCP listener cannot answer a 503)."""
    out: dict[str, int] = {}
    for rd in route:
        resolved = resolve_destination(mesh, rd.destination, ns, port)
        if resolved.problem:
            return None
        out[resolved.cluster] = out.get(resolved.cluster, 0) + (rd.weight or 100)
    live = tuple((c, w) for c, w in out.items() if w > 0)
    return live or None


def tcp_destinations(mesh: MeshSnapshot, service: Resource, port: ServicePort,
                     labels: Labels | None = None) -> Weighted:
    """Where a TCP connection to (service, port) goes: the first applicable ``tcp`` rule
    of the service's VirtualService, else the port's cluster."""
    labels = labels or {}
    vss = mesh.virtual_services_for(service)
    if vss:
        vs = vss[0]
        for rule in vs.spec.tcp:
            if rule.match and not any(_applies(m, port.port, labels) for m in rule.match):
                continue
            found = resolve(mesh, rule.route, vs.metadata.namespace, port.port)
            if found:
                return found
    return ((names.outbound_cluster(port.port, None, mesh.fqdn(service)), 100),)


def tcp_proxy_filter(stat_prefix: str, clusters: Weighted,
                     access_log: Sequence[accesslog_pb2.AccessLog] = ()
                     ) -> listener_components_pb2.Filter:
    """A tcp_proxy to one cluster, or split by weight over several."""
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, access_log=list(access_log))
    if len(clusters) == 1:
        proxy.cluster = clusters[0][0]
    else:
        proxy.weighted_clusters.clusters.extend(
            tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(name=c, weight=w)
            for c, w in clusters)
    return listener_components_pb2.Filter(name=TCP_PROXY_FILTER, typed_config=pack(proxy))
