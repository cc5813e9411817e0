"""The routes of one service port: from its VirtualService, or a default route.

Routes depend only on the mesh (a VirtualService's hosts resolve relative to the
VirtualService's namespace), never on the proxy, so the context computes them once per
(service, port) and every route configuration reuses them.

A destination that cannot be resolved (unknown host, port or subset) becomes an explicit
503 direct response naming the problem, so no route references a missing cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2, substitution_format_string_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from google.protobuf import wrappers_pb2

from shoal.api.mesh import ServicePort
from shoal.api.meta import Resource
from shoal.api.networking import Destination, HTTPRoute
from shoal.api.types import parse_duration
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import names
from shoal.xds.generate.matches import applies_to_port, route_match
from shoal.xds.generate.protocol import duration, pack

RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
NOT_FOUND_BODY = "shoal: no service matches host %REQ(:AUTHORITY)%\n"


def retry_policy() -> rc_pb2.RetryPolicy:
    """Istio's default: 2 retries on connect failures, resets and 503s, other hosts first."""
    return rc_pb2.RetryPolicy(
        retry_on=RETRY_ON,
        num_retries=wrappers_pb2.UInt32Value(value=2),
        retriable_status_codes=[503],
        retry_host_predicate=[
            rc_pb2.RetryPolicy.RetryHostPredicate(
                name=PREVIOUS_HOSTS, typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate())
            )
        ],
        host_selection_retry_max_attempts=5,
    )


def direct_response(
    status: int, body: str, *, formatted: bool = False
) -> rc_pb2.DirectResponseAction:
    if formatted:  # an Envoy format string (command operators such as %REQ(...)%)
        fmt = substitution_format_string_pb2.SubstitutionFormatString(
            text_format_source=base_pb2.DataSource(inline_string=body)
        )
        return rc_pb2.DirectResponseAction(status=status, body_format=fmt)
    return rc_pb2.DirectResponseAction(status=status, body=base_pb2.DataSource(inline_string=body))


def not_found_route() -> rc_pb2.Route:
    """Catch-all for hosts outside the registry (egress is registry-only for now)."""
    return rc_pb2.Route(
        name="no_such_host",
        match=rc_pb2.RouteMatch(prefix="/"),
        direct_response=direct_response(404, NOT_FOUND_BODY, formatted=True),
    )


@dataclass(frozen=True)
class Resolved:
    cluster: str = ""
    problem: str = ""  # set when the destination cannot be routed to


def resolve_destination(
    mesh: MeshSnapshot, dest: Destination, namespace: str, vhost_port: int
) -> Resolved:
    """Destination (host relative to ``namespace``) -> outbound cluster name or a problem."""
    target = mesh.resolve_host(dest.host, namespace)
    if target is None:
        return Resolved(problem=f"destination host {dest.host!r} is not a service in the mesh")
    ports = target.spec.ports
    if dest.port is not None:
        if target.spec.port(dest.port.number) is None:
            return Resolved(problem=f"service {mesh.fqdn(target)} has no port {dest.port.number}")
        port = dest.port.number
    elif target.spec.port(vhost_port) is not None:
        port = vhost_port
    elif len(ports) == 1:
        port = ports[0].port
    else:
        return Resolved(
            problem=f"service {mesh.fqdn(target)} has several ports; set destination.port"
        )
    if dest.subset:
        dr = mesh.destination_rule_for(target)
        if dr is None or dr.spec.subset(dest.subset) is None:
            return Resolved(
                problem=f"subset {dest.subset!r} of {mesh.fqdn(target)} is not "
                "defined by a DestinationRule"
            )
    return Resolved(cluster=names.outbound_cluster(port, dest.subset, mesh.fqdn(target)))


def _action(
    mesh: MeshSnapshot, http: HTTPRoute, namespace: str, port: int, where: str
) -> rc_pb2.RouteAction | rc_pb2.DirectResponseAction:
    weights: dict[str, int] = {}
    for i, rd in enumerate(http.route):
        resolved = resolve_destination(mesh, rd.destination, namespace, port)
        if resolved.problem:
            return direct_response(503, f"shoal: {where} route[{i}]: {resolved.problem}\n")
        weight = 1 if rd.weight is None else rd.weight
        weights[resolved.cluster] = weights.get(resolved.cluster, 0) + weight
    live = {c: w for c, w in weights.items() if w > 0} or dict([next(iter(weights.items()))])
    action = rc_pb2.RouteAction(
        timeout=duration(parse_duration(http.timeout) if http.timeout else 0),
        retry_policy=retry_policy(),
    )
    if len(live) == 1:
        action.cluster = next(iter(live))
    else:
        action.weighted_clusters.CopyFrom(
            rc_pb2.WeightedCluster(
                clusters=[
                    rc_pb2.WeightedCluster.ClusterWeight(
                        name=c, weight=wrappers_pb2.UInt32Value(value=w)
                    )
                    for c, w in live.items()
                ]
            )
        )
    return action


def default_route(cluster: str) -> rc_pb2.Route:
    return rc_pb2.Route(
        name="default",
        match=rc_pb2.RouteMatch(prefix="/"),
        route=rc_pb2.RouteAction(cluster=cluster, timeout=duration(0), retry_policy=retry_policy()),
    )


def service_routes(mesh: MeshSnapshot, service: Resource, port: ServicePort) -> list[rc_pb2.Route]:
    """Routes of the virtual host for (service, port), in VirtualService order.

    The oldest VirtualService naming the service wins (Istio's tie-break). Without one,
    or when none of its routes applies to this port, everything goes to the port cluster.
    """
    vss = mesh.virtual_services_for(service)
    out: list[rc_pb2.Route] = []
    if vss:
        vs = vss[0]
        ns, vs_name = vs.metadata.namespace, vs.metadata.name
        for i, http in enumerate(vs.spec.http):
            matches = [m for m in http.match if applies_to_port(m, port.port)]
            if http.match and not matches:
                continue  # every match names another port
            where = f"VirtualService {ns}/{vs_name} http[{i}]"
            action = _action(mesh, http, ns, port.port, where)
            name = http.name or f"{ns}/{vs_name}.http[{i}]"
            for m in matches or [None]:
                route = rc_pb2.Route(name=name, match=route_match(m))
                if isinstance(action, rc_pb2.DirectResponseAction):
                    route.direct_response.CopyFrom(action)
                else:
                    route.route.CopyFrom(action)
                out.append(route)
    if not out:
        out.append(default_route(names.outbound_cluster(port.port, None, mesh.fqdn(service))))
    return out
