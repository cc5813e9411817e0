"""A generated ProxySnapshot as one static Envoy bootstrap, for ``envoy --mode validate``.

EDS clusters become STATIC with their load assignment inlined; RDS references become
inline route configurations. Static route tables make Envoy check that every cluster a
route names exists, which is exactly what the generators promise. Used where config must
be proven acceptable before any proxy gets it (EnvoyFilter admission, ADR 0034) and by
the generator tests.
"""

from __future__ import annotations

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from shoal.xds.generate.protocol import http2_protocol_options, socket_address
from shoal.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SDS_CLUSTER, ProxySnapshot


def sds_cluster(port: int = 15012) -> cluster_pb2.Cluster:
    """The bootstrap cluster the agent provides: the secrets' source (here 127.0.0.1:port,
    e.g. a :mod:`shoal.testing.sds` server)."""
    c = cluster_pb2.Cluster(name=SDS_CLUSTER, type=cluster_pb2.Cluster.STATIC)
    c.connect_timeout.FromMilliseconds(1000)
    for key, value in http2_protocol_options().items():
        c.typed_extension_protocol_options[key].CopyFrom(value)
    ep = c.load_assignment.endpoints.add().lb_endpoints.add()
    ep.endpoint.address.CopyFrom(socket_address("127.0.0.1", port))
    c.load_assignment.cluster_name = SDS_CLUSTER
    return c


def static_bootstrap(snap: ProxySnapshot, node_id: str, sds_port: int = 15012
                     ) -> bootstrap_pb2.Bootstrap:
    boot = bootstrap_pb2.Bootstrap()
    boot.static_resources.clusters.add().CopyFrom(sds_cluster(sds_port))
    boot.node.id = node_id
    boot.node.cluster = "shoal-validate"
    routes = snap.get(ROUTE).items
    for listener in snap.get(LISTENER).items.values():
        lis = boot.static_resources.listeners.add()
        lis.CopyFrom(listener)
        for chain in lis.filter_chains:
            for f in chain.filters:
                hcm = hcm_pb2.HttpConnectionManager()
                if not f.typed_config.Unpack(hcm) or not hcm.HasField("rds"):
                    continue
                hcm.route_config.CopyFrom(routes[hcm.rds.route_config_name])
                f.typed_config.Pack(hcm)
    cla = snap.get(ENDPOINT).items
    for cluster in snap.get(CLUSTER).items.values():
        c = boot.static_resources.clusters.add()
        c.CopyFrom(cluster)
        if c.type == cluster_pb2.Cluster.EDS:
            c.type = cluster_pb2.Cluster.STATIC
            c.ClearField("eds_cluster_config")
            c.load_assignment.CopyFrom(cla[c.name])
    return boot
