"""Cross-resource checks over a set of resources (stored config plus files to apply).

Each finding names the resource, the field path and, when known, the file it came from.
Checks are pure functions of the resources; the mesh snapshot resolves host names with
the same rules as the generators (ServiceEntry hosts included).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from shoal.analyze.finding import Finding
from shoal.analyze.traffic_policy import destination_rule_policies
from shoal.api.gateway import gateway_ref
from shoal.api.gatewayapi import BackendRef, backend_refs
from shoal.api.meta import Resource, ResourceKey, oldest_first
from shoal.api.networking import Destination, VirtualServiceSpec, for_mesh
from shoal.api.selector import selects
from shoal.registry import gamma, gateways
from shoal.registry.snapshot import MeshConfig, MeshSnapshot
from shoal.security import analyze as security


def _destinations(spec: VirtualServiceSpec) -> Iterator[tuple[str, Destination]]:
    for i, http in enumerate(spec.http):
        for j, rd in enumerate(http.route):
            yield f"spec.http[{i}].route[{j}].destination", rd.destination
        if http.mirror is not None:
            yield f"spec.http[{i}].mirror", http.mirror
        for j, m in enumerate(http.mirrors):
            yield f"spec.http[{i}].mirrors[{j}].destination", m.destination
    for kind, rules in (("tcp", spec.tcp), ("tls", spec.tls)):
        for i, rule in enumerate(rules):
            for j, rd in enumerate(rule.route):
                yield f"spec.{kind}[{i}].route[{j}].destination", rd.destination


def _gateway_refs(spec: VirtualServiceSpec) -> Iterator[tuple[str, str]]:
    for i, g in enumerate(spec.gateways):
        yield f"spec.gateways[{i}]", g
    for i, http in enumerate(spec.http):
        for j, m in enumerate(http.match):
            for k, g in enumerate(m.gateways):
                yield f"spec.http[{i}].match[{j}].gateways[{k}]", g
    for kind, rules in (("tcp", spec.tcp), ("tls", spec.tls)):
        for i, rule in enumerate(rules):
            for j, lm in enumerate(rule.match):
                for k, g in enumerate(lm.gateways):
                    yield f"spec.{kind}[{i}].match[{j}].gateways[{k}]", g


def _virtual_services(mesh: MeshSnapshot) -> Iterator[Finding]:
    gateways = {f"{g.metadata.namespace}/{g.metadata.name}" for g in mesh.of_kind("Gateway")}
    claimed: dict[str, Resource] = {}
    vss = sorted(mesh.of_kind("VirtualService"),
                 key=oldest_first)
    for vs in vss:
        spec: VirtualServiceSpec = vs.spec
        ns, who = vs.metadata.namespace, str(vs.key)
        mesh_bound = for_mesh(spec.gateways)
        for i, host in enumerate(spec.hosts):
            svc = mesh.resolve_host(host, ns)
            if mesh_bound and svc is None:
                yield Finding("host-not-found", who, f"spec.hosts[{i}]",
                              f"{host!r} matches no Service or ServiceEntry")
            if mesh_bound and svc is not None:
                fqdn = mesh.fqdn(svc)
                if fqdn in claimed and claimed[fqdn].key != vs.key:
                    yield Finding("conflicting-virtual-services", who, f"spec.hosts[{i}]",
                                  f"{fqdn} is also a host of {claimed[fqdn].key}; only "
                                  "the oldest VirtualService for a host is used")
                claimed.setdefault(fqdn, vs)
        translated = gamma.SYNTHETIC in vs.metadata.annotations  # (from the Gateway API)
        for path, dest in _destinations(spec):
            if translated and dest.host == gamma.UNUSABLE_HOST:
                continue  # a backend the route cannot use: its own finding says which
            target = mesh.resolve_host(dest.host, ns)
            if target is None:
                yield Finding("host-not-found", who, f"{path}.host",
                              f"{dest.host!r} matches no Service or ServiceEntry")
                continue
            if dest.subset:
                dr = mesh.destination_rule_for(target)
                if dr is None or dr.spec.subset(dest.subset) is None:
                    yield Finding("subset-not-found", who, f"{path}.subset",
                                  f"subset {dest.subset!r} of {mesh.fqdn(target)} is not "
                                  "defined in any DestinationRule")
        for path, g in _gateway_refs(spec):
            ref = gateway_ref(g, ns)
            if ref != "mesh" and ref not in gateways:
                yield Finding("gateway-not-found", who, path, f"Gateway {ref} does not exist")


def _destination_rules(mesh: MeshSnapshot) -> Iterator[Finding]:
    for dr in mesh.of_kind("DestinationRule"):
        if mesh.resolve_host(dr.spec.host, dr.metadata.namespace) is None:
            yield Finding("host-not-found", str(dr.key), "spec.host",
                          f"{dr.spec.host!r} matches no Service or ServiceEntry")


def _selectors(mesh: MeshSnapshot) -> Iterator[Finding]:
    for sc in mesh.of_kind("Sidecar"):
        sel = sc.spec.workload_selector
        if sel is None:
            continue
        if not any(w.metadata.namespace == sc.metadata.namespace
                   and selects(sel.labels, w.spec.labels)
                   for w in mesh.workloads):
            yield Finding("selects-nothing", str(sc.key), "spec.workloadSelector.labels",
                          f"no workload in namespace {sc.metadata.namespace} has labels "
                          f"{sel.labels}")


def _http_routes(mesh: MeshSnapshot) -> Iterator[Finding]:
    """Gateway API routes that cannot work as written (ADR 0035, 0039, 0040): a parent
    Service that does not exist, a VirtualService for the same host, which wins, a Gateway
    parent the route cannot attach to (and why), a backend it cannot use (of another kind
    than Service, not granted, or not there: the route status's own resolution)."""
    real = gamma.routed_hosts(mesh.of_kind("VirtualService"), mesh.config.domain)
    scene = gateways.Scene.of_mesh(mesh)
    kinds = dict.fromkeys((*gamma.KINDS_ROUTES, *gateways.ROUTE_KINDS))
    grants = mesh.of_kind("ReferenceGrant")

    def exists(namespace: str, name: str) -> bool:
        return mesh.service(namespace, name) is not None

    def permit(route: Resource, ref: BackendRef) -> bool:
        return gamma.permitted(route, ref, grants)

    for route in (r for k in kinds for r in mesh.of_kind(k)):
        ns = route.metadata.namespace
        for i, parent in enumerate(route.spec.parent_refs):
            if not parent.is_service:
                attached, reason, message = gateways.attach(route, parent, scene)
                if not attached:
                    yield Finding("route-not-attached", str(route.key), f"spec.parentRefs[{i}]",
                                  f"{reason}: {message}; the route is not used there")
                continue
            pns = parent.namespace or ns
            host = f"{parent.name}.{pns}.svc.{mesh.config.domain}"
            if mesh.service(pns, parent.name) is None:
                yield Finding("parent-not-found", str(route.key), f"spec.parentRefs[{i}]",
                              f"no Service {pns}/{parent.name}: the route applies to nothing")
            elif host in real:
                vs = real[host]
                yield Finding("httproute-shadowed", str(route.key), f"spec.parentRefs[{i}]",
                              f"VirtualService {vs.metadata.namespace}/{vs.metadata.name} "
                              f"routes {host} too; it wins and this route is not used")
        for where, ref in backend_refs(route.spec.rules):
            problem = gamma.backend_problem(route, ref, exists, permit)
            if problem is not None:
                reason, message = problem
                yield Finding(_BACKEND_CODES[reason], str(route.key), where, (
                    f"{reason}: {message}: "
                    + ("nothing is mirrored to it" if where.endswith("requestMirror.backendRef")
                       else "its share of the rule's requests answers 500")))


# the findings for a backend the route cannot use, by its status reason
_BACKEND_CODES = {"InvalidKind": "backend-invalid-kind", "BackendNotFound": "backend-not-found",
                  "RefNotPermitted": "backend-not-permitted"}


def _gateways(mesh: MeshSnapshot) -> Iterator[Finding]:
    """Gateway API Gateways shoal will not serve as written (ADR 0039)."""
    scene = gateways.Scene.of_mesh(mesh)
    for gw in mesh.of_kind(gateways.KIND):
        if not scene.serves(gw):
            yield Finding("gateway-not-served", str(gw.key), "spec.gatewayClassName",
                          f"class {gw.spec.gateway_class_name!r} is not shoal's (shoal, "
                          "istio, or a GatewayClass naming shoal.io/gateway-controller): "
                          "no shoal gateway serves it")
            continue
        for j, lis in enumerate(gw.spec.listeners):
            if (other := gateways.foreign_certificate(gw, lis, scene.grants)) is not None:
                yield Finding("certificate-not-permitted", str(gw.key),
                              f"spec.listeners[{j}].tls.certificateRefs",
                              f"a certificate in namespace {other}, and no ReferenceGrant "
                              f"there lets Gateways of {gw.metadata.namespace} use it: the "
                              "listener is not served")


CHECKS = (_virtual_services, _destination_rules, _selectors, security.policy_selectors,
          security.custom_providers, _http_routes, _gateways, destination_rule_policies)


def analyze(resources: Iterable[Resource], sources: Mapping[ResourceKey, str] | None = None,
            config: MeshConfig | None = None) -> list[Finding]:
    """Every finding for ``resources`` (later duplicates of a key replace earlier ones,
    as applying files over stored config does), under the control plane's ``config``."""
    by_key = {r.key: r for r in resources}
    mesh = MeshSnapshot.of(by_key, revision=0, config=config)
    sources = sources or {}
    out: list[Finding] = []
    for check in CHECKS:
        for f in check(mesh):
            kind, _, name = f.resource.partition(" ")
            ns, _, n = name.partition("/")
            src = sources.get(ResourceKey(kind, ns, n), "")
            out.append(Finding(f.code, f.resource, f.path, f.message, src))
    return out
