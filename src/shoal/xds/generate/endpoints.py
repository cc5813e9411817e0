"""ClusterLoadAssignments (EDS): a cluster's endpoints grouped by locality.

Which endpoints a proxy gets (directly, or through another network's east-west gateway)
is decided before, by :mod:`shoal.xds.generate.network`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import wrappers_pb2

from shoal.api.mesh import split_locality
from shoal.registry.snapshot import Endpoint
from shoal.xds.generate.network import GatewayEndpoint
from shoal.xds.generate.protocol import socket_address
from shoal.xds.generate.tls import mesh_endpoint_metadata


def locality(text: str) -> base_pb2.Locality:
    """ "region/zone/subzone" (each part optional) -> Locality."""
    region, zone, subzone = split_locality(text)
    return base_pb2.Locality(region=region, zone=zone, sub_zone=subzone)


def load_assignment(
    cluster: str, endpoints: Iterable[Endpoint],
    mtls: Callable[[Endpoint], bool] = lambda ep: False,
) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints grouped by locality (sorted), each weighted by its workload's weight;
    those for which ``mtls`` holds carry the metadata that selects mesh mTLS (always an
    east-west gateway's)."""
    by_locality: dict[str, list[Endpoint]] = defaultdict(list)
    for ep in endpoints:
        by_locality[ep.locality].append(ep)
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster)
    for loc in sorted(by_locality):
        group = cla.endpoints.add()
        if loc:
            group.locality.CopyFrom(locality(loc))
        for ep in sorted(by_locality[loc], key=lambda e: (e.address, e.port, e.workload)):
            lb = ec_pb2.LbEndpoint(
                endpoint=ec_pb2.Endpoint(address=socket_address(ep.address, ep.port)),
                load_balancing_weight=wrappers_pb2.UInt32Value(value=ep.weight),
            )
            if isinstance(ep, GatewayEndpoint) or mtls(ep):
                lb.metadata.CopyFrom(mesh_endpoint_metadata())
            group.lb_endpoints.append(lb)
    return cla
