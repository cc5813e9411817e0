"""Gateway workloads (``shoal gateway run``): listeners from the Gateways selecting them,
routes from the VirtualServices bound to those Gateways.

Per server port: HTTP -> an HCM with RDS ``gateway|<port>``; HTTPS -> the same behind TLS
termination, one filter chain per server (SNI = its hosts): SIMPLE with the gateway's own
certificate (a static secret named by ``credentialName``, see :mod:`shoal.gateway`),
MUTUAL / OPTIONAL_MUTUAL also verifying client certificates against the credential's CA
(static secret ``<credentialName>-cacert``), ISTIO_MUTUAL with the gateway's mesh SVID;
TCP -> a tcp_proxy by the VirtualServices' ``tcp`` routes; TLS -> SNI filter chains, by
the ``tls`` routes for PASSTHROUGH servers and by the mesh's own SNI names for
AUTO_PASSTHROUGH (:mod:`auto_passthrough`). Upstream, gateways use the shared outbound
clusters, so mesh mTLS works as from any sidecar."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from google.protobuf import wrappers_pb2

from shoal.api.gateway import (
    CREDENTIALS_ANNOTATION,
    GATEWAY_ANNOTATION,
    GatewaySpec,
    Server,
    ServerProtocol,
    ServerTLSSettings,
    TlsMode,
    ca_secret,
    gateway_ports,
    gateway_ref,
    host_matches,
)
from shoal.api.meta import Resource, oldest_first
from shoal.api.networking import L4MatchAttributes
from shoal.api.selector import selects
from shoal.multicluster.labels import network_of
from shoal.registry import gamma
from shoal.registry.gateways import GATEWAY_KINDS, SYNTHETIC
from shoal.registry.snapshot import MeshSnapshot, mtls_disabled
from shoal.security import authn
from shoal.xds.generate import (
    auto_passthrough,
    http_filters,
    routes,
    tcp_routes,
    tls,
    tls_routes,
)
from shoal.xds.generate.base import Generator, Part, ProxyView
from shoal.xds.generate.context import GenerationContext
from shoal.xds.generate.protocol import HcmExtras, http_connection_manager, socket_address
from shoal.xds.generate.tcp_routes import Weighted, tcp_proxy_filter


@dataclass(frozen=True)
class Bound:
    """One server of one Gateway, on this gateway workload."""

    gateway: str  # namespace/name
    server: Server


def servers_of(mesh: MeshSnapshot, workload: Resource) -> dict[int, list[Bound]]:
    """Servers of the Gateways selecting ``workload``, by port (ports it may bind only)."""
    allowed = gateway_ports(workload)
    labels = workload.spec.labels
    out: dict[int, list[Bound]] = {}
    for gw in mesh.of_kind("Gateway"):
        spec: GatewaySpec = gw.spec
        if not selects(spec.selector, labels):
            continue
        if SYNTHETIC in gw.metadata.annotations \
                and gw.metadata.namespace != workload.metadata.namespace:
            continue  # a Gateway API Gateway: served from its own namespace only
        for server in spec.servers:
            if server.port.number in allowed:
                out.setdefault(server.port.number, []).append(
                    Bound(f"{gw.metadata.namespace}/{gw.metadata.name}", server))
    return dict(sorted(out.items()))


def bound_virtual_services(mesh: MeshSnapshot, bound: Sequence[Bound]
                           ) -> list[tuple[Resource, list[str], set[str]]]:
    """(VirtualService, its hosts the servers accept, gateway refs it matched), oldest
    first."""
    out = []
    vss = sorted(mesh.of_kind("VirtualService"),
                 key=oldest_first)
    for vs in vss:
        refs = {gateway_ref(g, vs.metadata.namespace) for g in vs.spec.gateways}
        mine = [b for b in bound if b.gateway in refs]
        hosts = [h for h in vs.spec.hosts
                 if any(host_matches(sh, h) for b in mine for sh in b.server.hosts)]
        if mine and hosts:
            out.append((vs, hosts, {b.gateway for b in mine}))
    return out


def route_config(mesh: MeshSnapshot, name: str, port: int, bound: Sequence[Bound]
                 ) -> route_pb2.RouteConfiguration:
    rc = route_pb2.RouteConfiguration(name=name)
    taken: set[str] = set()
    for vs, hosts, refs in bound_virtual_services(mesh, bound):
        ns, vs_name = vs.metadata.namespace, vs.metadata.name
        out: list[rc_pb2.Route] = []
        for i, http in enumerate(vs.spec.http):
            matches = [m for m in http.match if (m.port is None or m.port == port) and (
                not m.gateways or refs & {gateway_ref(g, ns) for g in m.gateways})]
            if http.match and not matches:
                continue
            where = f"VirtualService {ns}/{vs_name} http[{i}]"
            for m in matches or [None]:
                out.append(routes.http_route(mesh, http, ns, port, where,
                                             http.name or f"{ns}/{vs_name}.http[{i}]", m,
                                             gateway_api=gamma.SYNTHETIC in
                                             vs.metadata.annotations))
        domains = [d for h in hosts for d in ((h,) if h == "*" else (h, f"{h}:{port}"))
                   if d not in taken]
        if out and domains:
            taken.update(domains)
            rc.virtual_hosts.append(rc_pb2.VirtualHost(name=f"{ns}/{vs_name}",
                                                       domains=domains, routes=out))
    return rc


def downstream_context(settings: ServerTLSSettings, credentials: set[str], has_identity: bool
                       ) -> tls_pb2.DownstreamTlsContext | None:
    """TLS termination of an HTTPS server; None when the gateway lacks what the mode needs
    (the credential, its ``-cacert`` CA, or a mesh identity): no chain rather than a NACK.

    SIMPLE: the credential's certificate; MUTUAL / OPTIONAL_MUTUAL: also verify client
    certificates against the credential's CA (required / when presented), optionally
    limited to ``subjectAltNames``; ISTIO_MUTUAL: mesh mTLS with the gateway's own SVID."""
    mode = settings.mode
    # ``subjectAltNames``: any one of them admits the client
    sans = [tls.san_matcher(san) for san in settings.subject_alt_names]
    if mode is TlsMode.ISTIO_MUTUAL:
        if not has_identity:
            return None
        out = tls.downstream_tls(tls.ALPN_INBOUND_HTTP)
        out.common_tls_context.combined_validation_context.default_validation_context \
            .match_typed_subject_alt_names.extend(sans)
        return out
    cred = settings.credential_name
    if cred is None or cred not in credentials:
        return None  # unknown credential: the gateway could not load it
    common = tls_pb2.CommonTlsContext(
        alpn_protocols=list(tls.ALPN_INBOUND_HTTP),
        tls_certificate_sds_secret_configs=[secret_pb2.SdsSecretConfig(name=cred)])
    if mode is TlsMode.SIMPLE:
        return tls_pb2.DownstreamTlsContext(common_tls_context=common)
    if ca_secret(cred) not in credentials:
        return None  # MUTUAL without a CA for the credential
    common.combined_validation_context.CopyFrom(
        tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(
                match_typed_subject_alt_names=sans),
            validation_context_sds_secret_config=secret_pb2.SdsSecretConfig(
                name=ca_secret(cred))))
    return tls_pb2.DownstreamTlsContext(
        common_tls_context=common,
        require_client_certificate=wrappers_pb2.BoolValue(value=mode is TlsMode.MUTUAL))


def _l4_applies(m: L4MatchAttributes, port: int, refs: set[str], ns: str) -> bool:
    return m.port in (None, port) and (
        not m.gateways or bool(refs & {gateway_ref(g, ns) for g in m.gateways}))


def _first_tcp_route(mesh: MeshSnapshot, port: int, bound: Sequence[Bound]
                     ) -> Weighted | None:
    """TCP server: the first ``tcp`` rule (oldest VirtualService first) that applies."""
    for vs, _hosts, refs in bound_virtual_services(mesh, bound):
        ns = vs.metadata.namespace
        for rule in vs.spec.tcp:
            if rule.match and not any(_l4_applies(m, port, refs, ns) for m in rule.match):
                continue
            found = tcp_routes.resolve(mesh, rule.route, ns, port)
            if found:
                return found
    return None


def _passthrough_candidates(mesh: MeshSnapshot, port: int, bound: Sequence[Bound]
                            ) -> Iterator[tuple[Sequence[str], Weighted]]:
    """TLS PASSTHROUGH: the ``tls`` rules of the bound VirtualServices, in order."""
    passthrough = [b for b in bound if b.server.mode is TlsMode.PASSTHROUGH]
    for vs, _hosts, refs in bound_virtual_services(mesh, passthrough):
        ns = vs.metadata.namespace
        for rule in vs.spec.tls:
            found = tcp_routes.resolve(mesh, rule.route, ns, port)
            if found is None:
                continue
            for m in rule.match:
                if _l4_applies(m, port, refs, ns):
                    yield m.sni_hosts, found


def _tls_server_chains(ctx: GenerationContext, workload: Resource, port: int,
                       bound: Sequence[Bound], prefix: str, cds: dict[str, cluster_pb2.Cluster]
                       ) -> list[lc_pb2.FilterChain]:
    """TLS server (not terminated): SNI routes of PASSTHROUGH servers (VirtualService
    ``tls``), then of AUTO_PASSTHROUGH servers (mesh SNI names; clusters into ``cds``)."""
    candidates = list(_passthrough_candidates(ctx.mesh, port, bound))
    auto_hosts = sorted({h for b in bound if b.server.mode is TlsMode.AUTO_PASSTHROUGH
                         for h in b.server.hosts})
    if auto_hosts:
        more, sni_clusters = auto_passthrough.auto_passthrough(
            ctx.mesh, auto_hosts, network_of(workload.spec.labels),
            ctx.endpoint_mtls)
        candidates.extend(more)
        cds.update(sni_clusters)
    return tls_routes.sni_filter_chains(tls_routes.first_claims(candidates), None, prefix)


MISDIRECTED = 421  # RFC 9110: this connection is not for that Host


def _https_chains(mesh: MeshSnapshot, port: int, bound: Sequence[Bound], prefix: str,
                  extras: HcmExtras, credentials: set[str], has_identity: bool
                  ) -> tuple[list[lc_pb2.FilterChain], list[route_pb2.RouteConfiguration]]:
    """HTTPS: one chain per set of server hosts (its SNI), terminated as the first such
    server's tls says, each with a route table of its own: the routes of its servers, and
    421 for a Host that another chain on the port is for (or, when its servers name their
    hosts, any other Host) — no request reaches a server's routes over a connection made
    for another (its certificate, its client-certificate checks)."""
    groups: dict[tuple[str, ...], list[Bound]] = {}
    contexts: dict[tuple[str, ...], tls_pb2.DownstreamTlsContext] = {}
    for b in bound:
        if b.server.tls is None:
            continue
        context = downstream_context(b.server.tls, credentials, has_identity)
        if context is None:
            continue
        sni = tuple(h for h in b.server.hosts if h != "*")
        groups.setdefault(sni, []).append(b)
        contexts.setdefault(sni, context)
    chains, tables = [], []
    for sni, group in groups.items():
        name = f"gateway|{port}" + (f"|{','.join(sni)}" if sni else "")
        rc = route_config(mesh, name, port, group)
        others = {h for other in groups if other != sni for h in other} - set(sni)
        _misdirected(rc, port, others, any_other=bool(sni))
        chains.append(lc_pb2.FilterChain(
            filter_chain_match=lc_pb2.FilterChainMatch(server_names=sni),
            filters=[http_connection_manager(prefix, rds=name, extras=extras)],
            transport_socket=tls.tls_socket(contexts[sni])))
        tables.append(rc)
    return chains, tables


def _misdirected(rc: route_pb2.RouteConfiguration, port: int, hosts: set[str],
                 any_other: bool) -> None:
    """Answer 421 for ``hosts`` (and, with ``any_other``, every Host) where ``rc`` has no
    route of its own."""
    taken = {d for v in rc.virtual_hosts for d in v.domains}
    domains = [d for h in sorted(hosts) for d in (h, f"{h}:{port}") if d not in taken]
    if any_other and "*" not in taken:
        domains.append("*")
    if domains:
        rc.virtual_hosts.append(rc_pb2.VirtualHost(name="misdirected", domains=domains, routes=[
            rc_pb2.Route(match=rc_pb2.RouteMatch(prefix="/"),
                         direct_response=routes.direct_response(
                             MISDIRECTED, "misdirected request: this connection's TLS "
                             "server name is for other hosts\n"))]))


def gateway_listener(ctx: GenerationContext, workload: Resource, port: int,
                     bound: Sequence[Bound], credentials: set[str],
                     cds: dict[str, cluster_pb2.Cluster]
                     ) -> tuple[listener_pb2.Listener | None, list[route_pb2.RouteConfiguration]]:
    name = f"gateway|{port}"
    prefix = f"gateway_{port}"
    protocol = bound[0].server.port.protocol
    lis = listener_pb2.Listener(name=name, address=socket_address(workload.spec.address, port),
                                traffic_direction=base_pb2.INBOUND)
    if protocol is ServerProtocol.TCP:
        found = _first_tcp_route(ctx.mesh, port, bound)
        if found is None:
            return None, []
        # AuthorizationPolicies selecting the gateway, as on a sidecar's inbound port
        rbac = ctx.inbound_security(workload, port, is_http=False).network_filters
        lis.filter_chains.append(lc_pb2.FilterChain(
            filters=[*rbac, tcp_proxy_filter(prefix, found)]))
        return lis, []
    if protocol is ServerProtocol.TLS:
        lis.filter_chains.extend(_tls_server_chains(ctx, workload, port, bound, prefix, cds))
        if tls_routes.needs_inspector(lis.filter_chains):
            lis.listener_filters.append(authn.tls_inspector())
        return (lis if lis.filter_chains else None), []
    # RequestAuthentication and AuthorizationPolicy (ALLOW / DENY / AUDIT) selecting the
    # gateway, enforced exactly as on a sidecar's inbound port, before anything else.
    # TLS passthrough servers (above) forward encrypted traffic: the destination's sidecar
    # enforces its own policy there.
    extras = http_filters.gateway(ctx, workload, port)
    if protocol is ServerProtocol.HTTP:
        lis.filter_chains.append(lc_pb2.FilterChain(
            filters=[http_connection_manager(prefix, rds=name, extras=extras)]))
        return lis, [route_config(ctx.mesh, name, port, bound)]
    chains, tables = _https_chains(ctx.mesh, port, bound, prefix, extras, credentials,
                                   not mtls_disabled(workload))
    if not chains:
        return None, []
    lis.filter_chains.extend(chains)
    lis.listener_filters.append(authn.tls_inspector())
    return lis, tables


# Kinds a gateway's listeners and routes depend on: its Gateways, the VirtualServices
# bound to them, the services they route to, and the policies of its inbound side.
# Gateway API Gateways and their HTTPRoutes become Gateways and VirtualServices
# (registry/gateways.py).
INPUTS = frozenset({"Gateway", "VirtualService", "DestinationRule", "Service",
                    "ServiceEntry", "Workload", "PeerAuthentication", "AuthorizationPolicy",
                    "RequestAuthentication", "RateLimitPolicy", "TokenRevocation",
                    "HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute", "ReferenceGrant",
                    "Namespace"}) | GATEWAY_KINDS


def _parts(ctx: GenerationContext, view: ProxyView) -> Iterator[Part]:
    """Listeners and routes of a gateway proxy (and the per-SNI clusters of
    AUTO_PASSTHROUGH servers); nothing for an ordinary sidecar."""
    workload = view.workload
    if workload is None or GATEWAY_ANNOTATION not in workload.metadata.annotations:
        return
    creds = set(filter(None, workload.metadata.annotations.get(
        CREDENTIALS_ANNOTATION, "").split(",")))
    for port, bound in servers_of(ctx.mesh, workload).items():
        extra: dict[str, cluster_pb2.Cluster] = {}
        lis, tables = gateway_listener(ctx, workload, port, bound, creds, extra)
        if lis is not None:
            yield Part(lis, routes={rc.name: rc for rc in tables}, clusters=extra)


GENERATOR = Generator("gateway", INPUTS, _parts)

__all__ = ["GENERATOR", "servers_of"]
