"""Peer authentication (mesh mTLS): who a client sidecar speaks mTLS to, and which filter
chains an inbound port has for its effective PeerAuthentication mode.

* client side: an endpoint gets mTLS when its workload runs a sidecar and its mode at that
  port is not DISABLE (Istio's automatic mTLS); the SAN list of a cluster is the SPIFFE IDs
  of all the service's workloads, so clusters stay shared by every proxy;
* server side: STRICT = one mTLS filter chain; PERMISSIVE = TLS inspector, an mTLS chain
  (transport protocol "tls") and a plaintext chain; DISABLE = plaintext only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2

from shoal.api.mesh import Protocol
from shoal.api.meta import Resource
from shoal.registry.snapshot import Endpoint, MeshSnapshot, spiffe_id
from shoal.security.model import MtlsMode
from shoal.security.scoping import mtls_mode
from shoal.xds.generate import tls
from shoal.xds.generate.protocol import pack

TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"


def service_identities(mesh: MeshSnapshot, service: Resource) -> list[str]:
    """SPIFFE IDs a client accepts from ``service``'s endpoints (sorted, unique)."""
    td = mesh.config.trust_domain
    return sorted({spiffe_id(td, w.metadata.namespace, w.spec.service_account)
                   for w in mesh.members(service)})


def upstream_alpn(protocol: Protocol) -> tuple[str, ...]:
    if protocol.is_http2:
        return tls.ALPN_H2
    return tls.ALPN_HTTP1 if protocol.is_http else ()


def endpoint_mtls(mesh: MeshSnapshot, ep: Endpoint) -> bool:
    if not ep.sidecar:
        return False
    workload = mesh.workload(ep.namespace, ep.workload)
    return workload is not None and mtls_mode(mesh, workload, ep.port) is not MtlsMode.DISABLE


def tls_inspector() -> lc_pb2.ListenerFilter:
    return lc_pb2.ListenerFilter(name=TLS_INSPECTOR,
                                 typed_config=pack(tls_inspector_pb2.TlsInspector()))


def filter_chains(
    mode: MtlsMode,
    is_http: bool,
    filters: Callable[[bool], Sequence[lc_pb2.Filter]],
) -> tuple[list[lc_pb2.FilterChain], list[lc_pb2.ListenerFilter]]:
    """(filter chains, listener filters) of an inbound port; ``filters(mtls)`` gives the
    network filters of a chain (with or without the peer's certificate)."""
    alpn = tls.ALPN_INBOUND_HTTP if is_http else ()

    def mtls_chain(match: lc_pb2.FilterChainMatch | None) -> lc_pb2.FilterChain:
        chain = lc_pb2.FilterChain(
            name="mtls", filters=list(filters(True)),
            transport_socket=tls.tls_socket(tls.downstream_tls(alpn)),
        )
        if match is not None:
            chain.filter_chain_match.CopyFrom(match)
        return chain

    if mode is MtlsMode.STRICT:
        return [mtls_chain(None)], []
    if mode is MtlsMode.DISABLE:
        return [lc_pb2.FilterChain(name="plaintext", filters=list(filters(False)))], []
    return [
        mtls_chain(lc_pb2.FilterChainMatch(transport_protocol="tls")),
        lc_pb2.FilterChain(
            name="plaintext", filters=list(filters(False)),
            filter_chain_match=lc_pb2.FilterChainMatch(transport_protocol="raw_buffer"),
        ),
    ], [tls_inspector()]
