"""The routes of one service port: from its VirtualService, or a default route.

Routes depend only on the mesh (a VirtualService's hosts resolve relative to the
VirtualService's namespace), never on the proxy, so the context computes them once per
(service, port) and every route configuration reuses them.

A destination that cannot be resolved (unknown host, port or subset) becomes an explicit
503 direct response naming the problem, so no route references a missing cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from google.protobuf import wrappers_pb2

from shoal.api.mesh import ServicePort
from shoal.api.meta import Resource
from shoal.api.networking import Destination, HTTPMatchRequest, HTTPRoute
from shoal.api.selector import selects
from shoal.registry import gamma
from shoal.registry.gateways import GATEWAY_KINDS
from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import hashing, names, route_actions, route_filters, traffic_policy
from shoal.xds.generate.matches import applies_to_port, route_match
from shoal.xds.generate.protocol import duration, pack
from shoal.xds.generate.retries import default_retry_policy, retry_policy

Labels = Mapping[str, str]

# Kinds a service port's routes depend on: the routing APIs (HTTPRoutes and GRPCRoutes
# become VirtualServices, ReferenceGrants decide their backends: registry/gamma.py), the
# services and subsets they name, the workloads whose labels sourceLabels match, and
# the policies that add per-route settings.
INPUTS = frozenset({"VirtualService", "DestinationRule", "HTTPRoute", "GRPCRoute",
                    "ReferenceGrant", "Service", "ServiceEntry", "Workload", "Sidecar",
                    "Gateway", "RateLimitPolicy", "AuthorizationPolicy",
                    "RequestAuthentication"} | GATEWAY_KINDS)

# Of INPUTS, the kinds that reach a service port's routes only through what they are
# computed for: the VirtualServices naming the service (GenerationContext.routes compares
# them resource by resource) and the caller's workload labels (part of the key,
# route_labels). A change of no other input keeps every other service's routes.
KEYED_INPUTS = frozenset({"VirtualService", "Workload"})


def direct_response(status: int, body: str) -> rc_pb2.DirectResponseAction:
    return rc_pb2.DirectResponseAction(status=status, body=base_pb2.DataSource(inline_string=body))


@dataclass(frozen=True)
class Resolved:
    cluster: str = ""
    problem: str = ""  # set when the destination cannot be routed to
    hash_policy: tuple[rc_pb2.RouteAction.HashPolicy, ...] = ()  # DestinationRule's key


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
    policy = traffic_policy.policy_for(mesh.destination_rule_for(target), dest.subset, port)
    return Resolved(cluster=names.outbound_cluster(port, dest.subset, mesh.fqdn(target)),
                    hash_policy=tuple(hashing.hash_policies(policy)))


# a weighted share with no cluster: Envoy answers it with the route's
# cluster_not_found_response_code (500, the Gateway API's answer for a backend it cannot
# use; gamma.UNUSABLE_HOST marks it in translated rules only)
UNUSABLE_CLUSTER = "unusable-backend"


def _action(
    mesh: MeshSnapshot, http: HTTPRoute, namespace: str, port: int, where: str,
    gateway_api: bool = False,
) -> rc_pb2.RouteAction | rc_pb2.DirectResponseAction:
    """Destinations (weights, per-destination headers, hash key), timeout, retries and
    mirrors of a rule; a 503 naming the problem when a destination cannot be resolved
    (``gateway_api``: the translated rule's unusable backends' shares answer 500)."""
    entries: dict[str, rc_pb2.WeightedCluster.ClusterWeight] = {}
    hash_policy: tuple[rc_pb2.RouteAction.HashPolicy, ...] = ()
    for i, rd in enumerate(http.route):
        if gateway_api and rd.destination.host == gamma.UNUSABLE_HOST:
            resolved = Resolved(cluster=UNUSABLE_CLUSTER)
        else:
            resolved = resolve_destination(mesh, rd.destination, namespace, port)
        if resolved.problem:
            return direct_response(503, f"shoal: {where} route[{i}]: {resolved.problem}\n")
        entry = entries.setdefault(resolved.cluster, rc_pb2.WeightedCluster.ClusterWeight(
            name=resolved.cluster, weight=wrappers_pb2.UInt32Value(value=0)))
        entry.weight.value += 1 if rd.weight is None else rd.weight
        route_actions.apply_headers(entry, rd.headers)
        hash_policy = hash_policy or resolved.hash_policy
    live = [e for e in entries.values() if e.weight.value > 0] or [next(iter(entries.values()))]
    action = rc_pb2.RouteAction(
        timeout=duration(http.timeout.seconds if http.timeout else 0),
        hash_policy=hash_policy,
    )
    retries = retry_policy(http.retries)
    if retries is not None:
        action.retry_policy.CopyFrom(retries)
    if len(live) == 1 and not _has_headers(live[0]):
        action.cluster = live[0].name
    else:
        action.weighted_clusters.clusters.extend(live)
    if UNUSABLE_CLUSTER in entries:
        action.cluster_not_found_response_code = \
            rc_pb2.RouteAction.INTERNAL_SERVER_ERROR
    for i, (dest, percent) in enumerate(_mirrors(http)):
        resolved = resolve_destination(mesh, dest, namespace, port)
        if resolved.problem:
            return direct_response(503, f"shoal: {where} mirror[{i}]: {resolved.problem}\n")
        action.request_mirror_policies.append(route_actions.mirror_policy(resolved.cluster,
                                                                          percent))
    return action


def _has_headers(cw: rc_pb2.WeightedCluster.ClusterWeight) -> bool:
    return bool(cw.request_headers_to_add or cw.request_headers_to_remove
                or cw.response_headers_to_add or cw.response_headers_to_remove)


def _mirrors(http: HTTPRoute) -> list[tuple[Destination, float]]:
    """(destination, percent of requests copied); Istio's default is 100 %."""
    if http.mirror is not None:
        if http.mirror_percentage is not None:
            return [(http.mirror, http.mirror_percentage.value)]
        pct = 100.0 if http.mirror_percent is None else float(http.mirror_percent)
        return [(http.mirror, pct)]
    return [(m.destination, 100.0 if m.percentage is None else m.percentage.value)
            for m in http.mirrors]


def http_route(
    mesh: MeshSnapshot, http: HTTPRoute, namespace: str, port: int, where: str,
    name: str, m: HTTPMatchRequest | None,
    action: rc_pb2.RouteAction | rc_pb2.DirectResponseAction | None = None,
    gateway_api: bool = False,
) -> rc_pb2.Route:
    """One Envoy route for one match of a rule (``action``: the rule's, when computed;
    ``gateway_api``: the rule was translated from the Gateway API)."""
    route = rc_pb2.Route(name=name, match=route_match(m))
    if http.direct_response is not None:
        route.direct_response.CopyFrom(route_actions.direct_response_action(
            http.direct_response))
    elif http.redirect is not None:
        route.redirect.CopyFrom(route_actions.redirect_action(http.redirect, m, gateway_api))
    else:
        action = action or _action(mesh, http, namespace, port, where, gateway_api)
        if isinstance(action, rc_pb2.DirectResponseAction):
            route.direct_response.CopyFrom(action)
            return route
        route.route.CopyFrom(action)
        if http.rewrite is not None:
            route_actions.apply_rewrite(route.route, http.rewrite, m)
    route_actions.apply_headers(route, http.headers)
    if http.fault is not None:
        route.typed_per_filter_config[route_filters.FAULT_FILTER].CopyFrom(
            pack(route_filters.fault_config(http.fault)))
    if http.cors_policy is not None:
        route.typed_per_filter_config[route_filters.CORS_FILTER].CopyFrom(
            pack(route_filters.cors_config(http.cors_policy)))
    return route


def default_route(cluster: str, hash_policy: tuple[rc_pb2.RouteAction.HashPolicy, ...] = ()
                  ) -> rc_pb2.Route:
    return rc_pb2.Route(
        name="default",
        match=rc_pb2.RouteMatch(prefix="/"),
        route=rc_pb2.RouteAction(cluster=cluster, timeout=duration(0),
                                 retry_policy=default_retry_policy(), hash_policy=hash_policy),
    )


# ``sourceNamespace`` is looked at like a label of the proxy under this key (no label key
# can start with ':'), so proxies share route tables per namespace only when a rule asks.
NAMESPACE_KEY = ":namespace"


def applies_to_source(m: HTTPMatchRequest, labels: Labels) -> bool:
    """``sourceLabels`` / ``sourceNamespace``: the rule is generated only for proxies whose
    workload has those labels / that are in that namespace."""
    if m.source_namespace is not None and dict(labels).get(NAMESPACE_KEY) != m.source_namespace:
        return False
    return selects(m.source_labels, labels)


def source_label_keys(mesh: MeshSnapshot) -> frozenset[str]:
    """Every label key any VirtualService match's ``sourceLabels`` mentions (and
    :data:`NAMESPACE_KEY` when one uses ``sourceNamespace``)."""
    keys: set[str] = set()
    for vs in mesh.of_kind("VirtualService"):
        for http in vs.spec.http:
            for m in http.match:
                keys.update(m.source_labels)
                if m.source_namespace is not None:
                    keys.add(NAMESPACE_KEY)
        for rule in (*vs.spec.tcp, *vs.spec.tls):
            for lm in rule.match:
                keys.update(lm.source_labels)
    return frozenset(keys)


def route_labels(keys: frozenset[str], workload: Resource | None, namespace: str = ""
                 ) -> tuple[tuple[str, str], ...]:
    """The part of a proxy's workload labels (and namespace) that can change its routes
    (``keys``: the mesh's :func:`source_label_keys`): a memo key under which proxies share
    route tables (empty for most meshes)."""
    if not keys:
        return ()
    out = [(NAMESPACE_KEY, namespace)] if NAMESPACE_KEY in keys and namespace else []
    if workload is not None:
        out += [(k, v) for k, v in workload.spec.labels.items() if k in keys]
    return tuple(sorted(out))


def service_routes(mesh: MeshSnapshot, service: Resource, port: ServicePort,
                   labels: Labels | None = None) -> list[rc_pb2.Route]:
    """Routes of the virtual host for (service, port), in VirtualService order, as seen by
    a proxy whose workload has ``labels`` (only ``sourceLabels`` look at them).

    The oldest VirtualService naming the service wins (Istio's tie-break). Without one,
    or when none of its routes applies to this port, everything goes to the port cluster.
    """
    labels = labels or {}
    vss = mesh.virtual_services_for(service)
    out: list[rc_pb2.Route] = []
    if vss:
        vs = vss[0]
        ns, vs_name = vs.metadata.namespace, vs.metadata.name
        translated = gamma.SYNTHETIC in vs.metadata.annotations  # from the Gateway API
        for i, http in enumerate(vs.spec.http):
            matches = [m for m in http.match
                       if applies_to_port(m, port.port) and applies_to_source(m, labels)]
            if http.match and not matches:
                continue  # every match names another port or other source labels
            where = f"VirtualService {ns}/{vs_name} http[{i}]"
            name = http.name or f"{ns}/{vs_name}.http[{i}]"
            action = _action(mesh, http, ns, port.port, where, translated) \
                if http.route else None
            for m in matches or [None]:
                out.append(http_route(mesh, http, ns, port.port, where, name, m, action,
                                      translated))
    if not out:
        fqdn = mesh.fqdn(service)
        policy = traffic_policy.policy_for(mesh.destination_rule_for(service), None, port.port)
        out.append(default_route(names.outbound_cluster(port.port, None, fqdn),
                                 tuple(hashing.hash_policies(policy))))
    return out
