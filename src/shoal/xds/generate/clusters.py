"""Clusters: shared outbound EDS clusters (one per service port and subset) and the
per-proxy STATIC inbound cluster that points at the local application (its loopback
port, or its Unix socket with ``shoal run --app-socket``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import wrappers_pb2

from shoal.api.meta import Resource
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import names
from shoal.xds.generate.protocol import ads, duration, http2_protocol_options, socket_address

CONNECT_TIMEOUT_S = 2.0
_UNLIMITED = 4294967295  # like Istio: no circuit breaking unless a policy asks for it


def _circuit_breakers() -> circuit_breaker_pb2.CircuitBreakers:
    big = wrappers_pb2.UInt32Value(value=_UNLIMITED)
    return circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            circuit_breaker_pb2.CircuitBreakers.Thresholds(
                priority=base_pb2.DEFAULT,
                max_connections=big,
                max_pending_requests=big,
                max_requests=big,
                max_retries=big,
            )
        ]
    )


def _base(name: str, http2: bool) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(
        name=name,
        connect_timeout=duration(CONNECT_TIMEOUT_S),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        circuit_breakers=_circuit_breakers(),
        common_lb_config=cluster_pb2.Cluster.CommonLbConfig(),
    )
    if http2:
        for key, value in http2_protocol_options().items():
            c.typed_extension_protocol_options[key].CopyFrom(value)
    return c


def outbound_cluster(
    name: str, http2: bool, tls: Sequence[cluster_pb2.Cluster.TransportSocketMatch] = ()
) -> cluster_pb2.Cluster:
    """An EDS cluster fed over ADS; the EDS service name is the cluster name (left out:
    Envoy asks for the cluster's name when none is given). ``tls``: transport socket
    matches choosing mTLS or plaintext per endpoint (see ``tls``)."""
    c = _base(name, http2)
    c.transport_socket_matches.extend(tls)
    c.type = cluster_pb2.Cluster.EDS
    c.eds_cluster_config.CopyFrom(cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads()))
    return c


def inbound_cluster(name: str, app_port: int, http2: bool, app_socket: str = ""
                    ) -> cluster_pb2.Cluster:
    """STATIC cluster to the application on 127.0.0.1:app_port, or on the Unix socket
    ``app_socket`` when given (docs/adr/0026-app-unix-socket.md)."""
    address = address_pb2.Address(pipe=address_pb2.Pipe(path=app_socket)) if app_socket \
        else socket_address("127.0.0.1", app_port)
    c = _base(name, http2)
    c.type = cluster_pb2.Cluster.STATIC
    c.load_assignment.CopyFrom(
        endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(
                            endpoint=endpoint_components_pb2.Endpoint(
                                address=address
                            )
                        )
                    ]
                )
            ],
        )
    )
    return c


def outbound_cluster_names(
    mesh: MeshSnapshot, service: Resource
) -> Iterator[tuple[str, int, str | None]]:
    """(cluster name, service port, subset name or None) for every outbound cluster of
    ``service``: one per port, plus one per port and DestinationRule subset."""
    fqdn = mesh.fqdn(service)
    dr = mesh.destination_rule_for(service)
    subsets = [s.name for s in dr.spec.subsets] if dr is not None else []
    for port in service.spec.ports:
        yield names.outbound_cluster(port.port, None, fqdn), port.port, None
        for subset in subsets:
            yield names.outbound_cluster(port.port, subset, fqdn), port.port, subset
