"""Gateway servers with ``tls.mode: AUTO_PASSTHROUGH``: the east-west gateway.

A client sidecar speaks mesh mTLS to an endpoint with the SNI
``outbound_.<port>_.<subset>_.<fqdn>`` (:func:`names.sni`). Sent to such a server instead,
the connection is routed by that SNI, still encrypted, to the endpoints of that service
port (and subset) that the gateway reaches directly; the server sidecar terminates mTLS
and checks the client's identity as usual. No VirtualService is involved (Istio's
semantics), and the gateway never holds a key of the connection.

Contract (used by multi-cluster endpoint substitution): an endpoint "via a gateway" is
``<gateway workload address>:<AUTO_PASSTHROUGH server port>`` (see
:func:`shoal.api.gateway.auto_passthrough_ports`), with the same ``tlsMode: istio`` metadata
and in the same cluster (hence the same SNI and SANs) as the endpoint it stands for.

Per SNI the gateway gets a STATIC cluster named after the SNI, whose endpoints are the
service port's mTLS endpoints (sidecars) that the gateway reaches directly and that are
not gateways themselves, so a connection is never bounced from one gateway to another.
Reachable, as in multi-cluster's endpoint substitution (:mod:`network`): same network
(workload label ``topology.istio.io/network``), or either side has none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import wrappers_pb2

from shoal.api.gateway import (
    GATEWAY_ANNOTATION,
    host_matches,
)
from shoal.multicluster.labels import network_of, same_network
from shoal.registry import external
from shoal.registry.snapshot import Endpoint, MeshSnapshot
from shoal.xds.generate import clusters, endpoints, names
from shoal.xds.generate.protocol import duration, socket_address
from shoal.xds.generate.tcp_routes import Weighted

CONNECT_TIMEOUT_S = 2.0


def _reachable(mesh: MeshSnapshot, network: str, mtls: Callable[[Endpoint], bool]
               ) -> Callable[[Endpoint], bool]:
    def ok(ep: Endpoint) -> bool:
        wl = mesh.workload(ep.namespace, ep.workload)
        return (wl is not None and GATEWAY_ANNOTATION not in wl.metadata.annotations
                and same_network(network, network_of(dict(ep.labels))) and mtls(ep))
    return ok


def sni_targets(mesh: MeshSnapshot, hosts: Sequence[str], network: str,
                mtls: Callable[[Endpoint], bool]) -> Iterator[tuple[str, list[Endpoint]]]:
    """(SNI, its reachable endpoints) for every mesh service port and subset whose FQDN
    one of the server ``hosts`` matches (ServiceEntries excluded: not mesh mTLS)."""
    ok = _reachable(mesh, network, mtls)
    for service in mesh.services:
        fqdn = mesh.fqdn(service)
        if external.external_host(service) is not None or not any(
                host_matches(h, fqdn) for h in hosts):
            continue
        dr = mesh.destination_rule_for(service)
        for _, port_number, subset in clusters.outbound_cluster_names(mesh, service):
            port = service.spec.port(port_number)
            assert port is not None
            labels = dr.spec.subset(subset).labels if subset and dr is not None else None
            eps = [ep for ep in mesh.endpoints(service, port, labels) if ok(ep)]
            yield names.sni(port_number, subset, fqdn), eps


def sni_cluster(name: str, eps: Sequence[Endpoint]) -> cluster_pb2.Cluster:
    """A STATIC cluster of ``eps``, without transport socket (the bytes are the client's
    TLS); endpoints keep their locality and weight."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    by_locality: dict[str, list[Endpoint]] = {}
    for ep in eps:
        by_locality.setdefault(ep.locality, []).append(ep)
    for loc in sorted(by_locality):
        group = cla.endpoints.add()
        if loc:
            group.locality.CopyFrom(endpoints.locality(loc))
        for ep in sorted(by_locality[loc], key=lambda e: (e.address, e.port, e.workload)):
            group.lb_endpoints.append(ec_pb2.LbEndpoint(
                endpoint=ec_pb2.Endpoint(address=socket_address(ep.address, ep.port)),
                load_balancing_weight=wrappers_pb2.UInt32Value(value=ep.weight)))
    return cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC,
                               connect_timeout=duration(CONNECT_TIMEOUT_S),
                               lb_policy=cluster_pb2.Cluster.ROUND_ROBIN, load_assignment=cla)


Candidate = tuple[Sequence[str], Weighted]  # (SNI names, clusters), see tls_routes


def auto_passthrough(mesh: MeshSnapshot, hosts: Sequence[str], network: str,
                     mtls: Callable[[Endpoint], bool]
                     ) -> tuple[list[Candidate], dict[str, cluster_pb2.Cluster]]:
    """(SNI route candidates for :func:`tls_routes.first_claims`, clusters by name) of an
    AUTO_PASSTHROUGH server with ``hosts`` on a gateway in ``network``."""
    candidates: list[Candidate] = []
    out: dict[str, cluster_pb2.Cluster] = {}
    for sni, eps in sni_targets(mesh, hosts, network, mtls):
        out[sni] = sni_cluster(sni, eps)
        candidates.append(((sni,), ((sni, 100),)))
    return candidates, out
