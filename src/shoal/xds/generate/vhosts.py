"""Route configurations: ``upstream|<fqdn>|<port>`` (one per service port), the scopes
of ``outbound_http`` that pick one of them by Host header, the single ``outbound_http``
table of ALLOW_ANY proxies, and the inline table of an inbound listener.

Scoped routes (docs/adr/0036): the app's HTTP proxy port finds a request's route
configuration by its whole Host header in a table of scopes (SRDS), one scope per host
name a service port answers to, each naming that port's route configuration (RDS). A
change to one service's routes is then one small route configuration on the wire, not
the whole mesh's table. Envoy has no fallback scope, so ALLOW_ANY proxies (unknown hosts
go to the dynamic forward proxy) keep one ``outbound_http`` table with a catch-all.

The port-less host names go to one port of a service only (80 if it is an HTTP port,
else its first HTTP port), and a host name already taken by an earlier service is
dropped (Envoy rejects two virtual hosts, or two scopes, with one key).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.config.route.v3.scoped_route_pb2 import ScopedRouteConfiguration
from google.protobuf.wrappers_pb2 import BoolValue

from shoal.api.mesh import ServicePort
from shoal.api.meta import Resource
from shoal.registry.external import external_host
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import names
from shoal.xds.generate.egress import passthrough_route
from shoal.xds.generate.protocol import duration

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


Visible = Callable[[Resource], bool] | None


def _host_names(mesh: MeshSnapshot, namespace: str, visible: Visible
                ) -> Iterator[tuple[Resource, ServicePort, list[str]]]:
    """Each HTTP service port (of those ``visible`` to a Sidecar scope) with the host names
    that reach it from ``namespace`` and no earlier service port took."""
    taken: set[str] = set()
    for service in mesh.services:
        if visible is not None and not visible(service):
            continue
        same = service.metadata.namespace == namespace
        for port in http_ports(service):
            wanted = domains(mesh, service, port.port, same_namespace=same)
            fresh = [d for d in wanted if d not in taken]
            if fresh:
                taken.update(fresh)
                yield service, port, fresh


def outbound_scopes(mesh: MeshSnapshot, namespace: str, visible: Visible = None
                    ) -> dict[str, ScopedRouteConfiguration]:
    """The scopes of ``outbound_http`` as seen from ``namespace``: host name -> the route
    configuration of the service port it names (see :func:`upstream_route_config`)."""
    out: dict[str, ScopedRouteConfiguration] = {}
    for service, port, hosts in _host_names(mesh, namespace, visible):
        rc = names.upstream_route(mesh.fqdn(service), port.port)
        for host in hosts:
            out[host] = ScopedRouteConfiguration(
                name=host, route_configuration_name=rc,
                key=ScopedRouteConfiguration.Key(
                    fragments=[ScopedRouteConfiguration.Key.Fragment(string_key=host)]))
    return out


def outbound_route_config(
    mesh: MeshSnapshot, namespace: str, routes_of: RoutesOf, visible: Visible = None,
) -> route_pb2.RouteConfiguration:
    """``outbound_http`` of an ALLOW_ANY proxy in ``namespace``: one virtual host per HTTP
    service port it sees, then a catch-all to the dynamic forward proxy."""
    rc = route_pb2.RouteConfiguration(name=names.OUTBOUND_HTTP)
    for service, port, hosts in _host_names(mesh, namespace, visible):
        rc.virtual_hosts.append(rc_pb2.VirtualHost(
            name=names.virtual_host(mesh.fqdn(service), port.port), domains=hosts,
            routes=routes_of(service, port)))
    rc.virtual_hosts.append(
        rc_pb2.VirtualHost(name="unknown_host", domains=["*"], routes=[passthrough_route()]))
    return rc


def upstream_route_config(
    mesh: MeshSnapshot, service: Resource, port: ServicePort, routes_of: RoutesOf
) -> route_pb2.RouteConfiguration:
    """The routes of (service, port) for any Host: for a local upstream port, a captured
    connection to the service, and the ``outbound_http`` scopes of its host names."""
    fqdn = mesh.fqdn(service)
    return route_pb2.RouteConfiguration(
        name=names.upstream_route(fqdn, port.port),
        virtual_hosts=[rc_pb2.VirtualHost(name=names.virtual_host(fqdn, port.port),
                                          domains=["*"], routes=routes_of(service, port))],
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
