"""The security plugin of inbound ports: mTLS mode (PeerAuthentication), JWT authentication
(RequestAuthentication) and authorization (AuthorizationPolicy) of one workload's port.

Returns immutable values that the generation context memoizes by the policies involved,
so workloads under the same policies share the same filter objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2

from shoal.api.meta import Resource
from shoal.registry.snapshot import MeshSnapshot
from shoal.security import ext_authz, jwt, rbac
from shoal.security.model import MtlsMode
from shoal.security.scoping import applicable, mtls_mode
from shoal.xds.generate import names
from shoal.xds.generate.protocol import HcmExtras


@dataclass(frozen=True)
class InboundSecurity:
    mode: MtlsMode
    http: HcmExtras  # jwt_authn + RBAC filters (HTTP ports), before telemetry's
    network_filters: tuple[lc_pb2.Filter, ...]  # RBAC filters (TCP ports), before tcp_proxy

    def http_extras(self, mtls: bool) -> HcmExtras:
        """What an HTTP chain adds; mTLS chains pass the caller's identity (XFCC)."""
        return HcmExtras(http_filters=self.http.http_filters, forward_client_cert=mtls)


def security_key(mesh: MeshSnapshot, workload: Resource, port: int, is_http: bool
                 ) -> tuple[object, ...]:
    """What :func:`inbound_security` depends on (the stat prefix includes the port)."""
    policies = applicable(mesh, "AuthorizationPolicy", workload)
    aps = tuple(r.key for r in policies)
    ras = tuple(r.key for r in applicable(mesh, "RequestAuthentication", workload))
    custom = ext_authz.custom(policies)
    provider = ((res := ext_authz.resolve(mesh, custom)).cluster, res.error) if custom else ()
    return (mtls_mode(mesh, workload, port), is_http, aps, ras, provider,
            port if not is_http else 0)


def inbound_security(mesh: MeshSnapshot, workload: Resource, port: int, is_http: bool
                     ) -> InboundSecurity:
    mode = mtls_mode(mesh, workload, port)
    aps = applicable(mesh, "AuthorizationPolicy", workload)
    if is_http:
        ras = applicable(mesh, "RequestAuthentication", workload)
        filters = (jwt.http_filters(ras) + ext_authz.http_filters(mesh, aps)
                   + rbac.http_filters(aps))
        return InboundSecurity(mode, HcmExtras(http_filters=filters), ())
    prefix = names.inbound_stat_prefix(port)
    net = ext_authz.network_filters(mesh, aps, prefix) + rbac.network_filters(aps, prefix)
    return InboundSecurity(mode, HcmExtras(), net)
