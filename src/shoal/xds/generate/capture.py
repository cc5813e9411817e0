"""Listeners of a sidecar in a pod with transparent capture (docs/hosts.md, ADR 0015).

iptables in the pod sends the app's outbound TCP to ``capture_outbound`` and peers'
inbound TCP (to the app's ports) to ``capture_inbound``; the app's DNS queries go to
``capture_dns``. Both TCP listeners read the connection's original destination (the
``original_dst`` listener filter) and pick a filter chain by it:

* outbound: one chain group per service port, matching the service's VIP (registry/vip.py)
  and the addresses of its endpoints at that port. The chains are those of the port's
  upstream listener (the same HTTP route configuration, TCP routes, TLS routes), so a
  captured connection is handled exactly like one to an upstream port. Anything else goes
  to the original destination (``ALLOW_ANY``) or is closed (``REGISTRY_ONLY``; while
  no service is visible there is no outbound listener, Envoy rejects one without chains);
* inbound: the chains of each inbound port's listener (mTLS mode, authorization, rate
  limits, telemetry: see inbound.py), matched by destination port;
* DNS: every visible service name answered with its VIP (UDP, Envoy's DNS filter).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import TYPE_CHECKING

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.listener.v3 import listener_pb2, udp_listener_config_pb2
from envoy.data.dns.v3 import dns_table_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.udp.dns_filter.v3 import dns_filter_pb2
from google.protobuf import wrappers_pb2

from shoal.api.mesh import ServicePort
from shoal.api.meta import Resource
from shoal.registry.external import external_host
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import inbound, names, outbound_http, telemetry, upstreams
from shoal.xds.generate.base import Generator, Labels, Part, ProxyView
from shoal.xds.generate.clusters import CONNECT_TIMEOUT_S
from shoal.xds.generate.inbound import inbound_config, inbound_ports
from shoal.xds.generate.protocol import (
    dns_resolver,
    duration,
    pack,
    socket_address,
    tcp_proxy,
)
from shoal.xds.generate.scope import Scope

if TYPE_CHECKING:
    from shoal.xds.generate.context import GenerationContext

OUTBOUND_LISTENER = "capture_outbound"
INBOUND_LISTENER = "capture_inbound"
DNS_LISTENER = "capture_dns"
PASSTHROUGH_CLUSTER = "PassthroughCluster"
ORIGINAL_DST = "envoy.filters.listener.original_dst"
DNS_FILTER = "envoy.filters.udp.dns_filter"
ANY_ADDRESS = "0.0.0.0"
DNS_ADDRESS = "127.0.0.1"
DNS_TTL_S = 30.0


def _parts(ctx: GenerationContext, view: ProxyView) -> Iterator[Part]:
    """The capture listeners of a captured proxy (and the clusters they use; their
    routes are the service route configurations, outbound_http.service_route_configs)."""
    cap = view.capture
    if cap is None:
        return
    mesh, proxy, labels, within = ctx.mesh, view.proxy, view.labels, view.within
    yield Part(service_routes=outbound_http.service_route_configs(ctx, labels, within))
    outbound = ctx.memo(("capture", "outbound", cap.outbound_capture_port, labels, within.key,
                         within.allow_any),
                        lambda: outbound_listener(ctx, cap.outbound_capture_port, labels, within))
    # REGISTRY_ONLY with no service visible yet (a pod's first config): no chain at all,
    # which Envoy would reject. Without the listener, captured connections are refused,
    # which is what REGISTRY_ONLY does to them anyway; it is added with the first service.
    if outbound.filter_chains or outbound.HasField("default_filter_chain"):
        yield Part(outbound)
    if within.allow_any:
        yield Part(clusters={PASSTHROUGH_CLUSTER: ctx.memo(("capture", "passthrough"),
                                                           passthrough_cluster)})
    yield Part(ctx.memo(("capture", "dns", cap.dns_port, proxy.namespace, within.key,
                         cap.dns_upstreams),
                        lambda: dns_listener(mesh, cap.dns_port, proxy.namespace, within,
                                             cap.dns_upstreams)))
    if view.workload is None:
        return  # not registered yet: nobody can call it
    ports = inbound_ports(mesh, proxy, view.services)
    built = [(ip, *inbound_config(ctx, view.workload, ip)) for ip in ports]
    if built:
        yield Part(inbound_listener(cap.inbound_capture_port,
                                    [(ip.endpoint_port, lis) for ip, lis, _ in built]),
                   clusters={ip.cluster: cluster for ip, _, cluster in built})


GENERATOR = Generator("capture", outbound_http.INPUTS | inbound.INPUTS, _parts)


# -- outbound -------------------------------------------------------------------------------

def visible_ports(mesh: MeshSnapshot, within: Scope) -> Iterator[tuple[Resource, ServicePort]]:
    for service in mesh.services:
        if within.visible(mesh, service):
            for port in service.spec.ports:
                yield service, port


def _routable(address: str) -> bool:
    """An IPv4 address a pod can dial (not loopback, not a host name)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.version == 4 and not ip.is_loopback and not ip.is_unspecified


def original_dst() -> lc_pb2.ListenerFilter:
    return lc_pb2.ListenerFilter(name=ORIGINAL_DST,
                                 typed_config=pack(original_dst_pb2.OriginalDst()))


def _with_match(chain: lc_pb2.FilterChain, name: str, port: int, ips: list[str]
                ) -> lc_pb2.FilterChain:
    out = lc_pb2.FilterChain()
    out.CopyFrom(chain)
    out.name = name if not chain.name else f"{name}|{chain.name}"
    match = out.filter_chain_match
    match.destination_port.CopyFrom(wrappers_pb2.UInt32Value(value=port))
    for ip in ips:
        match.prefix_ranges.add(address_prefix=ip, prefix_len=wrappers_pb2.UInt32Value(value=32))
    return out


def _add_listener_filters(into: listener_pb2.Listener, source: listener_pb2.Listener) -> None:
    have = {f.name for f in into.listener_filters}
    for f in source.listener_filters:
        if f.name not in have:
            into.listener_filters.append(f)
            have.add(f.name)


def outbound_listener(ctx: GenerationContext, port: int, labels: Labels, within: Scope
                      ) -> listener_pb2.Listener:
    """0.0.0.0:port: captured outbound connections, by original destination."""
    mesh = ctx.mesh
    lis = listener_pb2.Listener(
        name=OUTBOUND_LISTENER, address=socket_address(ANY_ADDRESS, port),
        traffic_direction=base_pb2.OUTBOUND, listener_filters=[original_dst()])
    seen: set[tuple[str, int]] = set()
    for service, sp in visible_ports(mesh, within):
        fqdn = mesh.fqdn(service)
        targets = [(str(mesh.vips[fqdn]), sp.port)] + [
            (ep.address, ep.port) for ep in mesh.endpoints(service, sp) if _routable(ep.address)]
        by_port: dict[int, list[str]] = {}
        for ip, dport in targets:
            if (ip, dport) not in seen:
                seen.add((ip, dport))
                by_port.setdefault(dport, []).append(ip)
        if not by_port:
            continue
        # the upstream listener of this service port: its chains and listener filters
        base = upstreams.listener(ctx, fqdn, service, sp, port, labels)
        for dport, ips in sorted(by_port.items()):
            name = names.outbound_cluster(sp.port, None, fqdn) + (
                f"|{dport}" if dport != sp.port else "")
            lis.filter_chains.extend(_with_match(c, name, dport, ips)
                                     for c in base.filter_chains)
        _add_listener_filters(lis, base)
    if within.allow_any:  # anything else: to where the app wanted to go
        lis.default_filter_chain.CopyFrom(lc_pb2.FilterChain(
            name="passthrough", filters=[tcp_proxy(
                PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER,
                access_log=telemetry.tcp_access_log(ctx, telemetry.Direction.OUTBOUND))]))
    return lis


def passthrough_cluster() -> cluster_pb2.Cluster:
    """Connect to the connection's original destination (the sidecar's own connections
    are not captured, so this does not loop)."""
    return cluster_pb2.Cluster(
        name=PASSTHROUGH_CLUSTER, type=cluster_pb2.Cluster.ORIGINAL_DST,
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        connect_timeout=duration(CONNECT_TIMEOUT_S))


# -- inbound --------------------------------------------------------------------------------

def inbound_listener(port: int, listeners: list[tuple[int, listener_pb2.Listener]]
                     ) -> listener_pb2.Listener:
    """0.0.0.0:port: captured inbound connections; the chains of each inbound port's
    listener, matched by the port the peer dialled."""
    lis = listener_pb2.Listener(
        name=INBOUND_LISTENER, address=socket_address(ANY_ADDRESS, port),
        traffic_direction=base_pb2.INBOUND, listener_filters=[original_dst()])
    for dport, source in listeners:
        for chain in source.filter_chains:
            out = lc_pb2.FilterChain()
            out.CopyFrom(chain)
            out.name = f"{source.name}|{chain.name}" if chain.name else source.name
            out.filter_chain_match.destination_port.CopyFrom(
                wrappers_pb2.UInt32Value(value=dport))
            lis.filter_chains.append(out)
        _add_listener_filters(lis, source)
    return lis


# -- DNS ------------------------------------------------------------------------------------

DNS_UPSTREAM_TIMEOUT_S = 5.0
DNS_MAX_PENDING = 256


def dns_names(mesh: MeshSnapshot, service: Resource, namespace: str) -> list[str]:
    """The names an app in ``namespace`` may use for ``service`` (Istio host semantics)."""
    fqdn = mesh.fqdn(service)
    if external_host(service) is not None:
        return [fqdn]
    name, ns = service.metadata.name, service.metadata.namespace
    out = [fqdn, f"{name}.{ns}.svc", f"{name}.{ns}"]
    return [*out, name] if ns == namespace else out


def dns_table(mesh: MeshSnapshot, namespace: str, within: Scope) -> dns_table_pb2.DnsTable:
    table = dns_table_pb2.DnsTable()
    taken: set[str] = set()
    for service in mesh.services:
        if not within.visible(mesh, service):
            continue
        vip = str(mesh.vips[mesh.fqdn(service)])
        for name in dns_names(mesh, service, namespace):
            if name in taken:
                continue
            taken.add(name)
            table.virtual_domains.add(
                name=name, answer_ttl=duration(DNS_TTL_S),
                endpoint=dns_table_pb2.DnsTable.DnsEndpoint(
                    address_list=dns_table_pb2.DnsTable.AddressList(address=[vip])))
    return table


def dns_listener(mesh: MeshSnapshot, port: int, namespace: str, within: Scope,
                 upstreams: tuple[str, ...] = ()) -> listener_pb2.Listener:
    """UDP 127.0.0.1:port answering service names with their VIPs. Other names are asked
    of ``upstreams`` (the host's resolvers, ``IP:PORT``), except those under the mesh's
    ``svc.<domain>``, which it answers itself (NXDOMAIN); without upstreams they get no
    answer."""
    table = dns_table(mesh, namespace, within)
    config = dns_filter_pb2.DnsFilterConfig(stat_prefix=DNS_LISTENER)
    if upstreams:
        table.known_suffixes.add(suffix=f"svc.{mesh.config.domain}")
        config.client_config.CopyFrom(dns_filter_pb2.DnsFilterConfig.ClientContextConfig(
            resolver_timeout=duration(DNS_UPSTREAM_TIMEOUT_S),
            typed_dns_resolver_config=dns_resolver(upstreams),
            max_pending_lookups=DNS_MAX_PENDING))
    config.server_config.inline_dns_table.CopyFrom(table)
    return listener_pb2.Listener(
        name=DNS_LISTENER,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            protocol=address_pb2.SocketAddress.UDP, address=DNS_ADDRESS, port_value=port)),
        traffic_direction=base_pb2.OUTBOUND,
        udp_listener_config=udp_listener_config_pb2.UdpListenerConfig(),
        listener_filters=[lc_pb2.ListenerFilter(name=DNS_FILTER, typed_config=pack(config))])
