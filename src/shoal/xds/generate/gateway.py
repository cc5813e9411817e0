"""Gateway workloads (``shoal gateway run``): listeners from the Gateways selecting them,
routes from the VirtualServices bound to those Gateways.

Per server port: HTTP -> an HCM with RDS ``gateway|<port>``; HTTPS (tls SIMPLE) -> the same
behind TLS termination with the gateway's own certificate (a static secret named by
``credentialName``, see :mod:`shoal.gateway`); TCP -> a tcp_proxy by the VirtualServices'
``tcp`` routes; TLS PASSTHROUGH -> SNI filter chains by their ``tls`` routes. Upstream,
gateways use the shared outbound clusters, so mesh mTLS works as from any sidecar.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from shoal.api.gateway import (
    CREDENTIALS_ANNOTATION,
    GATEWAY_ANNOTATION,
    PORTS_ANNOTATION,
    GatewaySpec,
    Server,
    ServerProtocol,
    TlsMode,
    gateway_ref,
    host_matches,
)
from shoal.api.meta import Resource
from shoal.api.networking import RouteDestination
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import route_filters, routes, telemetry, tls
from shoal.xds.generate.authn import tls_inspector
from shoal.xds.generate.context import GenerationContext
from shoal.xds.generate.protocol import http_connection_manager, socket_address
from shoal.xds.generate.tcp_routes import Weighted, tcp_proxy_filter
from shoal.xds.types import Proxy

Add = Callable[[listener_pb2.Listener], bool]


@dataclass(frozen=True)
class Bound:
    """One server of one Gateway, on this gateway workload."""

    gateway: str  # namespace/name
    server: Server


def gateway_ports(workload: Resource) -> set[int]:
    text = workload.metadata.annotations.get(PORTS_ANNOTATION, "")
    return {int(p) for p in text.split(",") if p.strip().isdigit()}


def servers_of(mesh: MeshSnapshot, workload: Resource) -> dict[int, list[Bound]]:
    """Servers of the Gateways selecting ``workload``, by port (ports it may bind only)."""
    allowed = gateway_ports(workload)
    labels = workload.spec.labels
    out: dict[int, list[Bound]] = {}
    for gw in mesh.of_kind("Gateway"):
        spec: GatewaySpec = gw.spec
        if not all(labels.get(k) == v for k, v in spec.selector.items()):
            continue
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
                 key=lambda r: (r.metadata.creation_timestamp or "", r.metadata.name))
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
                                             http.name or f"{ns}/{vs_name}.http[{i}]", m))
        domains = [d for h in hosts for d in ((h,) if h == "*" else (h, f"{h}:{port}"))
                   if d not in taken]
        if out and domains:
            taken.update(domains)
            rc.virtual_hosts.append(rc_pb2.VirtualHost(name=f"{ns}/{vs_name}",
                                                       domains=domains, routes=out))
    return rc


def _tls_context(credential: str) -> tls_pb2.DownstreamTlsContext:
    """TLS termination with the gateway's static secret ``credential`` (no client cert)."""
    return tls_pb2.DownstreamTlsContext(common_tls_context=tls_pb2.CommonTlsContext(
        alpn_protocols=list(tls.ALPN_INBOUND_HTTP),
        tls_certificate_sds_secret_configs=[secret_pb2.SdsSecretConfig(name=credential)]))


def _l4(mesh: MeshSnapshot, rules: Sequence[Sequence[RouteDestination]], ns: str, port: int
        ) -> Weighted | None:
    for rule in rules:
        out: dict[str, int] = {}
        for rd in rule:
            resolved = routes.resolve_destination(mesh, rd.destination, ns, port)
            if resolved.problem:
                break
            out[resolved.cluster] = out.get(resolved.cluster, 0) + (rd.weight or 100)
        else:
            live = tuple((c, w) for c, w in out.items() if w > 0)
            if live:
                return live
    return None


def _tcp_chains(mesh: MeshSnapshot, port: int, bound: Sequence[Bound], prefix: str
                ) -> list[lc_pb2.FilterChain]:
    chains = []
    for vs, _hosts, _refs in bound_virtual_services(mesh, bound):
        ns = vs.metadata.namespace
        if bound[0].server.port.protocol is ServerProtocol.TCP:
            rules = [r.route for r in vs.spec.tcp
                     if not r.match or any(m.port in (None, port) for m in r.match)]
            found = _l4(mesh, rules, ns, port)
            if found:
                return [lc_pb2.FilterChain(filters=[tcp_proxy_filter(prefix, found)])]
            continue
        for rule in vs.spec.tls:
            for m in rule.match:
                found = _l4(mesh, [rule.route], ns, port)
                if found and m.port in (None, port):
                    chains.append(lc_pb2.FilterChain(
                        filter_chain_match=lc_pb2.FilterChainMatch(
                            server_names=[h for h in m.sni_hosts if h != "*"]),
                        filters=[tcp_proxy_filter(prefix, found)]))
    return chains


def gateway_listener(ctx: GenerationContext, address: str, port: int,
                     bound: Sequence[Bound], credentials: set[str]
                     ) -> tuple[listener_pb2.Listener | None, route_pb2.RouteConfiguration | None]:
    name = f"gateway|{port}"
    prefix = f"gateway_{port}"
    protocol = bound[0].server.port.protocol
    lis = listener_pb2.Listener(name=name, address=socket_address(address, port),
                                traffic_direction=base_pb2.INBOUND)
    if protocol in (ServerProtocol.TCP, ServerProtocol.TLS):
        lis.filter_chains.extend(_tcp_chains(ctx.mesh, port, bound, prefix))
        if protocol is ServerProtocol.TLS:
            lis.listener_filters.append(tls_inspector())
        return (lis if lis.filter_chains else None), None
    extras = route_filters.TRAFFIC_EXTRAS + telemetry.http_extras(
        ctx, telemetry.Direction.INBOUND)
    hcm = http_connection_manager(prefix, rds=name, extras=extras)
    if protocol is ServerProtocol.HTTP:
        lis.filter_chains.append(lc_pb2.FilterChain(filters=[hcm]))
    else:  # HTTPS: one chain per server (SNI = its hosts), terminated with its credential
        for b in bound:
            cred = b.server.tls.credential_name if b.server.tls is not None else None
            if b.server.tls is None or b.server.tls.mode is not TlsMode.SIMPLE \
                    or cred not in credentials:
                continue  # unknown credential: the gateway could not load it
            sni = [h for h in b.server.hosts if h != "*"]
            if any(list(c.filter_chain_match.server_names) == sni for c in lis.filter_chains):
                continue
            lis.filter_chains.append(lc_pb2.FilterChain(
                filter_chain_match=lc_pb2.FilterChainMatch(server_names=sni),
                filters=[hcm], transport_socket=tls.tls_socket(_tls_context(str(cred)))))
        if not lis.filter_chains:
            return None, None
        lis.listener_filters.append(tls_inspector())
    return lis, route_config(ctx.mesh, name, port, bound)


def add_gateway_config(ctx: GenerationContext, proxy: Proxy, add: Add,
                       rds: dict[str, route_pb2.RouteConfiguration]) -> None:
    """Listeners and routes of a gateway proxy; nothing for an ordinary sidecar."""
    workload = ctx.mesh.workload(proxy.namespace, proxy.workload)
    if workload is None or GATEWAY_ANNOTATION not in workload.metadata.annotations:
        return
    creds = set(filter(None, workload.metadata.annotations.get(
        CREDENTIALS_ANNOTATION, "").split(",")))
    for port, bound in servers_of(ctx.mesh, workload).items():
        lis, rc = gateway_listener(ctx, workload.spec.address, port, bound, creds)
        if lis is not None and add(lis) and rc is not None:
            rds[rc.name] = rc


__all__ = ["add_gateway_config"]
