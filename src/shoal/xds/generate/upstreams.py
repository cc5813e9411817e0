"""Upstream ports: a listener on 127.0.0.1 for each service port an application declared
it calls (``shoal run --upstream``), routed like ``outbound_http`` for HTTP ports, by the
VirtualServices' ``tls`` routes for TLS ports and their ``tcp`` routes otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from envoy.config.listener.v3 import listener_pb2

from shoal.api.mesh import ServicePort
from shoal.api.meta import Resource
from shoal.xds.generate import (
    http_filters,
    listeners,
    names,
    routes,
    tcp_routes,
    telemetry,
    tls_routes,
)
from shoal.xds.generate.base import Generator, Labels, Part, ProxyView

if TYPE_CHECKING:
    from shoal.xds.generate.context import GenerationContext

INPUTS = routes.INPUTS | {"Service", "ServiceEntry", "Sidecar"}


def listener(ctx: GenerationContext, host: str, service: Resource, port: ServicePort,
             local_port: int, labels: Labels = ()) -> listener_pb2.Listener:
    """The listener of one upstream port (shared by the proxies declaring it alike)."""
    fqdn = ctx.mesh.fqdn(service)
    key = ("upstream", host, fqdn, port.port, local_port,
           () if port.protocol.is_http else labels)

    def build() -> listener_pb2.Listener:
        if port.protocol.is_http:
            rds = names.upstream_route(fqdn, port.port)
            return listeners.upstream_http_listener(host, port.port, local_port, rds,
                                                    http_filters.outbound(ctx))
        log = telemetry.tcp_access_log(ctx, telemetry.Direction.OUTBOUND)
        if port.protocol.is_tls:  # VirtualService tls routes by SNI, then tcp
            chains = tls_routes.sidecar_tls_chains(
                ctx.mesh, service, port, dict(labels),
                names.upstream_stat_prefix(host, port.port), log)
            return listeners.upstream_tls_listener(host, port.port, local_port, chains)
        # VirtualService tcp routes (weighted) for this service port
        weighted = tcp_routes.tcp_destinations(ctx.mesh, service, port, dict(labels))
        return listeners.upstream_tcp_listener(host, port.port, local_port, weighted, log)
    return ctx.memo(key, build)  # type: ignore[no-any-return]


def _parts(ctx: GenerationContext, view: ProxyView) -> Iterator[Part]:
    mesh, proxy = ctx.mesh, view.proxy
    for up in proxy.metadata.upstreams:
        service = mesh.resolve_host(up.host, proxy.namespace)
        port = service.spec.port(up.port) if service is not None else None
        if service is None or port is None or not view.within.visible(mesh, service):
            continue  # unknown host or port: no listener; the app gets connection refused
        lis = listener(ctx, up.host, service, port, up.local_port, view.labels)
        if port.protocol.is_http:
            rc = ctx.upstream_route_config(service, port, view.labels)
            yield Part(lis, routes={rc.name: rc})
        else:
            yield Part(lis)


GENERATOR = Generator("upstreams", INPUTS, _parts)
