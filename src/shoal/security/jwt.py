"""RequestAuthentication -> ``envoy.filters.http.jwt_authn`` on inbound HTTP ports, and the
shared clusters that fetch remote JWKS.

Istio semantics: a request without a token passes (AuthorizationPolicy decides, e.g. with
``requestPrincipals: ["*"]``); a token that is invalid, expired or from an issuer no rule
names is rejected with 401. Every provider leaves the verified payload in dynamic metadata
under the same key, which the RBAC matchers read (:mod:`rbac_match`).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlparse

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import http_uri_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from google.protobuf import empty_pb2

from shoal.api.meta import Resource
from shoal.netaddr import is_ip
from shoal.registry.snapshot import MeshSnapshot
from shoal.security.model import JwtRule, RequestAuthenticationSpec
from shoal.security.rbac_match import JWT_FILTER, JWT_PAYLOAD_KEY
from shoal.xds.generate import names
from shoal.xds.generate.protocol import duration, pack, socket_address
from shoal.xds.generate.tls import tls_socket

JWKS_TIMEOUT_S = 5.0
JWKS_CACHE_S = 300.0


def _host_port(uri: str) -> tuple[str, int, bool]:
    u = urlparse(uri)
    tls = u.scheme == "https"
    return u.hostname or "", u.port or (443 if tls else 80), tls


def provider_name(r: Resource, index: int) -> str:
    return f"{r.metadata.namespace}/{r.metadata.name}/{index}"


def provider(rule: JwtRule) -> jwt_pb2.JwtProvider:
    p = jwt_pb2.JwtProvider(
        issuer=rule.issuer,
        audiences=list(rule.audiences),
        forward=rule.forward_original_token,
        from_headers=[jwt_pb2.JwtHeader(name=h.name, value_prefix=h.prefix)
                      for h in rule.from_headers],
        from_params=list(rule.from_params),
        from_cookies=list(rule.from_cookies),
        payload_in_metadata=JWT_PAYLOAD_KEY,
        claim_to_headers=[jwt_pb2.JwtClaimToHeader(header_name=c.header, claim_name=c.claim)
                          for c in rule.output_claim_to_headers],
    )
    if rule.output_payload_to_header:
        p.forward_payload_header = rule.output_payload_to_header
    if rule.jwks is not None:
        p.local_jwks.inline_string = rule.jwks
    else:
        assert rule.jwks_uri is not None
        host, port, _ = _host_port(rule.jwks_uri)
        p.remote_jwks.CopyFrom(jwt_pb2.RemoteJwks(
            http_uri=http_uri_pb2.HttpUri(uri=rule.jwks_uri,
                                          cluster=names.jwks_cluster(host, port),
                                          timeout=duration(JWKS_TIMEOUT_S)),
            cache_duration=duration(JWKS_CACHE_S),
        ))
    return p


def http_filters(policies: Sequence[Resource]) -> tuple[hcm_pb2.HttpFilter, ...]:
    """The jwt_authn filter for the RequestAuthentications applying to one workload."""
    providers = {
        provider_name(r, i): provider(rule)
        for r in policies
        for i, rule in enumerate(r.spec.jwt_rules)
    }
    if not providers:
        return ()
    requires_any = jwt_pb2.JwtRequirementOrList(requirements=[
        *(jwt_pb2.JwtRequirement(provider_name=n) for n in providers),
        jwt_pb2.JwtRequirement(allow_missing=empty_pb2.Empty()),
    ])
    cfg = jwt_pb2.JwtAuthentication(
        providers=providers,
        rules=[jwt_pb2.RequirementRule(
            match=rc_pb2.RouteMatch(prefix="/"),
            requires=jwt_pb2.JwtRequirement(requires_any=requires_any),
        )],
    )
    return (hcm_pb2.HttpFilter(name=JWT_FILTER, typed_config=pack(cfg)),)


def jwks_cluster(uri: str) -> cluster_pb2.Cluster:
    host, port, tls = _host_port(uri)
    name = names.jwks_cluster(host, port)
    kind = cluster_pb2.Cluster.STATIC if is_ip(host) else cluster_pb2.Cluster.STRICT_DNS
    c = cluster_pb2.Cluster(
        name=name, type=kind, connect_timeout=duration(JWKS_TIMEOUT_S),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=[
            ec_pb2.LocalityLbEndpoints(lb_endpoints=[
                ec_pb2.LbEndpoint(endpoint=ec_pb2.Endpoint(address=socket_address(host, port)))
            ])
        ]),
    )
    if tls:
        c.transport_socket.CopyFrom(tls_socket(tls_pb2.UpstreamTlsContext(
            sni=host,
            common_tls_context=tls_pb2.CommonTlsContext(
                validation_context=common_pb2.CertificateValidationContext(
                    system_root_certs=common_pb2.CertificateValidationContext.SystemRootCerts()))),
        ))
    c.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
    return c


def jwks_clusters(mesh: MeshSnapshot) -> dict[str, cluster_pb2.Cluster]:
    """One cluster per JWKS host:port named by any RequestAuthentication (shared)."""
    out: dict[str, cluster_pb2.Cluster] = {}
    for r in mesh.of_kind("RequestAuthentication"):
        spec: RequestAuthenticationSpec = r.spec
        for rule in spec.jwt_rules:
            if rule.jwks_uri:
                c = jwks_cluster(rule.jwks_uri)
                out.setdefault(c.name, c)
    return dict(sorted(out.items()))
