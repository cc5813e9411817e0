"""Route configurations: ``outbound_http`` (one per namespace), ``upstream|<fqdn>|<port>``
(one per service port) and the inline table of an inbound listener.

Envoy rejects a route configuration in which two virtual hosts share a domain, so the
port-less host names go to one port of a service only (80 if it is an HTTP port, else
its first HTTP port), and a domain already taken by an earlier virtual host is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf.wrappers_pb2 import BoolValue

from shoal.api.mesh import ServicePort
from shoal.api.meta import Resource
from shoal.registry.external import external_host
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import names
from shoal.xds.generate.egress import passthrough_route
from shoal.xds.generate.protocol import duration
from shoal.xds.generate.routes import not_found_route

RoutesOf = Callable[[Resource, ServicePort], Sequence[rc_pb2.Route]]


def http_ports(service: Resource) -> list[ServicePort]:
    return [p for p in service.spec.ports if p.protocol.is_http]


def default_http_port(service: Resource) -> int | None:
    """The port that gets the port-less host names: 80 if HTTP, else the first HTTP port."""
    ports = http_ports(service)
    if any(p.port == 80 for p in ports):
        return 80
    return ports[0].port if ports else None


def domains(mesh: MeshSnapshot, service: Resource, port: int, *, same_namespace: bool) -> list[str]:
    """Host names (with and without port) that reach (service, port) from a namespace.

    Short names (``reviews``) only resolve in the service's own namespace, like Istio.
    """
    if (external := external_host(service)) is not None:  # a ServiceEntry host
        with_port = [f"{external}:{port}"]
        return [external, *with_port] if default_http_port(service) == port else with_port
    name, ns = service.metadata.name, service.metadata.namespace
    hosts = [f"{name}.{ns}", f"{name}.{ns}.svc", mesh.fqdn(service)]
    if same_namespace:
        hosts.insert(0, name)
    out = [f"{h}:{port}" for h in hosts]
    if default_http_port(service) == port:
        out = hosts + out
    return out


def outbound_route_config(
    mesh: MeshSnapshot, namespace: str, routes_of: RoutesOf,
    visible: Callable[[Resource], bool] | None = None, allow_any: bool = False,
) -> route_pb2.RouteConfiguration:
    """``outbound_http`` as seen from ``namespace``: one virtual host per HTTP service port
    of the mesh (those ``visible`` to a Sidecar scope), then a catch-all answering 404
    (or, with ``allow_any``, forwarding to the dynamic forward proxy)."""
    rc = route_pb2.RouteConfiguration(name=names.OUTBOUND_HTTP)
    taken: set[str] = set()
    for service in mesh.services:
        if visible is not None and not visible(service):
            continue
        same = service.metadata.namespace == namespace
        for port in http_ports(service):
            wanted = domains(mesh, service, port.port, same_namespace=same)
            fresh = [d for d in wanted if d not in taken]
            if not fresh:
                continue
            taken.update(fresh)
            rc.virtual_hosts.append(
                rc_pb2.VirtualHost(
                    name=names.virtual_host(mesh.fqdn(service), port.port),
                    domains=fresh,
                    routes=routes_of(service, port),
                )
            )
    rc.virtual_hosts.append(
        rc_pb2.VirtualHost(name="unknown_host", domains=["*"],
                           routes=[passthrough_route() if allow_any else not_found_route()])
    )
    return rc


def upstream_route_config(
    mesh: MeshSnapshot, service: Resource, port: ServicePort, routes_of: RoutesOf
) -> route_pb2.RouteConfiguration:
    """For a local upstream port: any Host, the routes of (service, port)."""
    name = names.upstream_route(mesh.fqdn(service), port.port)
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            rc_pb2.VirtualHost(name=name, domains=["*"], routes=routes_of(service, port))
        ],
    )


def inbound_route_config(endpoint_port: int, cluster: str) -> route_pb2.RouteConfiguration:
    """Everything received on an inbound port goes to the local application."""
    name = names.inbound_route(endpoint_port)
    route = rc_pb2.Route(
        name="default",
        match=rc_pb2.RouteMatch(prefix="/"),
        route=rc_pb2.RouteAction(cluster=cluster, timeout=duration(0)),
    )
    # Not validated against the cluster manager: the inbound cluster arrives in the same
    # push but may still be warming (e.g. waiting for its SDS secret) when the listener
    # is added, and validation would NACK the listener for good.
    return route_pb2.RouteConfiguration(
        name=name, virtual_hosts=[rc_pb2.VirtualHost(name=name, domains=["*"], routes=[route])],
        validate_clusters=BoolValue(value=False),
    )
