"""What a proxy receives: one inbound listener and cluster per port of the services that
select its workload.

The (listener, cluster) of each workload port is kept in a table
(:meth:`GenerationContext.table`) that the next snapshot takes over when a change touches
none of :data:`INPUTS` (routing is the caller's concern), and takes over for the other
workloads when only some Workloads changed (it depends on its own workload only)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2

from shoal.api.mesh import Protocol, WorkloadSpec
from shoal.api.meta import Resource
from shoal.registry.gateways import GATEWAY_KINDS
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import http_filters, listeners, names, telemetry, vhosts
from shoal.xds.generate.base import Generator, Part, ProxyView
from shoal.xds.types import Proxy

if TYPE_CHECKING:
    from shoal.xds.generate.context import Change, GenerationContext


# Kinds an inbound listener or cluster depends on. VirtualServices, DestinationRules and
# the Gateway API routes are the callers' concern; EnvoyFilters patch copies (ADR 0034).
INPUTS = frozenset({"Service", "ServiceEntry", "Workload", "PeerAuthentication",
                    "AuthorizationPolicy", "RequestAuthentication", "RateLimitPolicy",
                    "TokenRevocation", "Gateway", "Sidecar"} | GATEWAY_KINDS)

_Table = dict[tuple[str, str, "InboundPort"], tuple[listener_pb2.Listener, cluster_pb2.Cluster]]


@dataclass(frozen=True)
class InboundPort:
    listener: str  # inbound|<port name>|<endpoint port>
    address: str  # the workload's address
    endpoint_port: int  # where the sidecar receives
    cluster: str  # inbound|<app port>|<port name>
    app_port: int  # where the application listens on 127.0.0.1
    protocol: Protocol
    app_socket: str = ""  # instead: the app's Unix socket (shoal run --app-socket)


def inbound_ports(
    mesh: MeshSnapshot, proxy: Proxy, services: Sequence[Resource]
) -> list[InboundPort]:
    """Inbound ports of ``proxy``'s workload (none when it is not registered yet), given
    the ``services`` that select it.

    Services are visited in the given order; when two of them use the same endpoint
    port, the first one defines the listener.
    """
    workload = mesh.workload(proxy.namespace, proxy.workload)
    if workload is None:
        return []
    spec: WorkloadSpec = workload.spec
    out: dict[int, InboundPort] = {}
    for service in services:
        for port in service.spec.ports:
            endpoint_port = port.endpoint_port(spec.ports)
            if endpoint_port in out:
                continue
            app_port = proxy.metadata.app_ports.get(port.name, port.port)
            # the agent's own port is the one its app serves on the socket
            socket = proxy.metadata.app_socket if port.name in proxy.metadata.app_ports \
                else ""
            out[endpoint_port] = InboundPort(
                listener=names.inbound_listener(port.name, endpoint_port),
                address=spec.address,
                endpoint_port=endpoint_port,
                cluster=names.inbound_cluster(app_port, port.name),
                app_port=app_port,
                protocol=port.protocol,
                app_socket=socket,
            )
    return list(out.values())


def inbound_config(ctx: GenerationContext, workload: Resource, ip: InboundPort
                   ) -> tuple[listener_pb2.Listener, cluster_pb2.Cluster]:
    """The listener of one inbound port (mTLS mode, authorization, rate limits, telemetry)
    and the cluster to the application behind it. Transparent capture (capture.py) reuses
    the listener's filter chains on its inbound port. Kept in the inbound table (see the
    module doc)."""
    table: _Table = ctx.table("inbound", INPUTS, lambda _: {}, _after_workloads)
    key = (workload.metadata.namespace, workload.metadata.name, ip)
    if (hit := table.get(key)) is None:
        hit = table[key] = _build(ctx, workload, ip)
    return hit


def _after_workloads(ctx: GenerationContext, previous: _Table, change: Change) -> _Table:
    workloads = change.workloads or frozenset()
    return {k: v for k, v in previous.items() if (k[0], k[1]) not in workloads}


def _build(ctx: GenerationContext, workload: Resource, ip: InboundPort
           ) -> tuple[listener_pb2.Listener, cluster_pb2.Cluster]:
    route_config = (
        vhosts.inbound_route_config(ip.endpoint_port, ip.cluster)
        if ip.protocol.is_http
        else None
    )
    listener = listeners.inbound_listener(
        ip.listener, ip.address, ip.endpoint_port, ip.cluster, route_config,
        extras=http_filters.inbound(ctx, workload),
        tcp_access_log=telemetry.tcp_access_log(ctx, telemetry.Direction.INBOUND),
        security=ctx.inbound_security(workload, ip.endpoint_port, ip.protocol.is_http),
    )
    return listener, ctx.inbound_cluster(ip.cluster, ip.app_port, ip.protocol.is_http2,
                                         ip.app_socket)


def _parts(ctx: GenerationContext, view: ProxyView) -> Iterator[Part]:
    workload = view.workload
    if view.capture is not None or workload is None:
        return  # captured: the capture listener takes the inbound ports (capture.py)
    for ip in inbound_ports(ctx.mesh, view.proxy, view.services):
        listener, cluster = inbound_config(ctx, workload, ip)
        yield Part(listener, clusters={ip.cluster: cluster})


GENERATOR = Generator("inbound", INPUTS, _parts)
