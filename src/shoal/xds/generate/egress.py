"""Egress: clusters of ServiceEntry hosts and the fate of hosts nobody declared.

* ServiceEntry hosts with DNS (or NONE) resolution get a STRICT_DNS cluster whose
  endpoints are names, instead of an EDS cluster;
* outbound traffic policy (docs/adr/0009-egress.md): REGISTRY_ONLY answers unknown hosts
  with 404 (ADR 0006); ALLOW_ANY sends them to Envoy's dynamic forward proxy cluster,
  which resolves the request's host itself (the filter must run in the outbound HCM).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.clusters.dynamic_forward_proxy.v3 import cluster_pb2 as dfp_cluster_pb2
from envoy.extensions.common.dynamic_forward_proxy.v3 import dns_cache_pb2
from envoy.extensions.filters.http.dynamic_forward_proxy.v3 import (
    dynamic_forward_proxy_pb2 as dfp_filter_pb2,
)
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from shoal.api.sidecar import OutboundPolicy
from shoal.xds.generate.clusters import CONNECT_TIMEOUT_S
from shoal.xds.generate.protocol import HcmExtras, duration, pack

DFP_CLUSTER = "outbound|passthrough|dynamic_forward_proxy"
DFP_FILTER = "envoy.filters.http.dynamic_forward_proxy"
DFP_CLUSTER_TYPE = "envoy.clusters.dynamic_forward_proxy"
_DNS_CACHE = "shoal_egress"


def dns_cluster(cluster: cluster_pb2.Cluster, cla: endpoint_pb2.ClusterLoadAssignment,
                ) -> cluster_pb2.Cluster:
    """``cluster`` (an EDS cluster) as STRICT_DNS with ``cla`` inline (names resolved by
    Envoy, re-resolved periodically)."""
    out = cluster_pb2.Cluster()
    out.CopyFrom(cluster)
    out.ClearField("eds_cluster_config")
    out.type = cluster_pb2.Cluster.STRICT_DNS
    out.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
    out.load_assignment.CopyFrom(cla)
    return out


def _dns_cache() -> dns_cache_pb2.DnsCacheConfig:
    return dns_cache_pb2.DnsCacheConfig(name=_DNS_CACHE,
                                        dns_lookup_family=cluster_pb2.Cluster.V4_PREFERRED)


def passthrough_cluster() -> cluster_pb2.Cluster:
    """The dynamic forward proxy cluster (ALLOW_ANY egress)."""
    config = dfp_cluster_pb2.ClusterConfig(dns_cache_config=_dns_cache())
    return cluster_pb2.Cluster(
        name=DFP_CLUSTER, connect_timeout=duration(CONNECT_TIMEOUT_S),
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        cluster_type=cluster_pb2.Cluster.CustomClusterType(name=DFP_CLUSTER_TYPE,
                                                          typed_config=pack(config)))


def forward_proxy_extras() -> HcmExtras:
    """The dynamic forward proxy HTTP filter (acts only on routes to its cluster)."""
    config = dfp_filter_pb2.FilterConfig(dns_cache_config=_dns_cache())
    return HcmExtras(http_filters=(hcm_pb2.HttpFilter(name=DFP_FILTER,
                                                      typed_config=pack(config)),))


def passthrough_route() -> rc_pb2.Route:
    """Catch-all under ALLOW_ANY: any other host, forwarded as asked."""
    return rc_pb2.Route(name="allow_any", match=rc_pb2.RouteMatch(prefix="/"),
                        route=rc_pb2.RouteAction(cluster=DFP_CLUSTER, timeout=duration(0)))


def allow_any(mode: str | OutboundPolicy) -> bool:
    return str(mode) == OutboundPolicy.ALLOW_ANY.value
