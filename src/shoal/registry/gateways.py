"""Gateway API Gateways and their HTTPRoutes, as the Istio Gateways and VirtualServices
that mean the same (ADR 0039).

Like mesh routes (:mod:`shoal.registry.gamma`), Gateways are turned into the Istio model
the gateway generator already honours, once per snapshot:

* each listener of a Gateway of a class shoal serves (``shoal``, or Istio's ``istio``)
  becomes one Istio Gateway with one server (its port, protocol, hostname; an HTTPS
  listener's certificate is the gateway's credential of that name), selecting the gateway
  workloads labelled ``gateway.networking.k8s.io/gateway-name: <name>`` in the Gateway's
  namespace (``shoal gateway run --name <name>`` sets it);
* the HTTPRoutes attached to a listener (their ``parentRefs``: ``sectionName`` and
  ``port`` choose listeners; ``allowedRoutes`` and hostnames must allow the route)
  become, per (listener, hostname), one VirtualService bound to that listener's Gateway,
  its rules in the Gateway API's precedence order (the same translation as mesh routes).

A listener's hostnames are what its ``hostname`` and the route's ``hostnames``
intersect in: a route without hostnames takes the listener's (or any host); a listener
without one takes the route's.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from shoal.api.gateway import CREDENTIALS_ANNOTATION, gateway_ports
from shoal.api.gateway import GatewaySpec as IstioGatewaySpec
from shoal.api.gatewayapi import (
    CLASSES,
    CONTROLLER_NAME,
    GATEWAY_NAME_LABEL,
    GROUP,
    FromNamespaces,
    GatewaySpec,
    Listener,
    ListenerProtocol,
    ParentRef,
)
from shoal.api.kinds import KINDS
from shoal.api.mesh import NAMESPACE_NAME_LABEL
from shoal.api.meta import Metadata, Resource, oldest_first
from shoal.api.networking import VirtualServiceSpec
from shoal.registry import gamma
from shoal.registry.readiness import is_ready

log = logging.getLogger(__name__)

KIND = KINDS[f"Gateway.{GROUP}"].name
# the kinds that make (synthetic) Istio Gateways: an input wherever Istio's Gateway is
# (ReferenceGrants, which may let a listener use another namespace's certificate, are
# the gateway generator's and the routes' inputs: only a gateway proxy's listeners and
# the routes depend on them, docs/adr/0038)
GATEWAY_KINDS = frozenset({KIND, "GatewayClass"})
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute")  # the routes a Gateway takes
SYNTHETIC = "shoal.io/from-gateway"  # annotation of an Istio Gateway: the Gateway it is


@dataclass(frozen=True)
class Scene:
    """What attaching routes to Gateways looks at, once per snapshot: the Gateways, the
    GatewayClass documents (name -> controllerName), the namespaces' labels and the
    ReferenceGrants (which may let a listener use another namespace's certificate)."""

    gateways: Mapping[tuple[str, str], Resource]
    classes: Mapping[str, str]
    namespace_labels: Mapping[str, Mapping[str, str]]
    grants: tuple[Resource, ...] = ()

    @staticmethod
    def of(gateways: Iterable[Resource], classes: Iterable[Resource] = (),
           namespaces: Iterable[Resource] = (), grants: Iterable[Resource] = ()) -> Scene:
        named: dict[str, str] = {}
        for c in sorted(classes, key=oldest_first):  # a name twice: the oldest decides
            named.setdefault(c.metadata.name, c.spec.controller_name)
        return Scene({(g.metadata.namespace, g.metadata.name): g for g in gateways}, named,
                     {n.metadata.name: n.metadata.labels for n in namespaces}, tuple(grants))

    @staticmethod
    def of_mesh(mesh: Any) -> Scene:
        return Scene.of(mesh.of_kind(KIND), mesh.of_kind("GatewayClass"),
                        mesh.of_kind("Namespace"), mesh.of_kind("ReferenceGrant"))

    def controller(self, class_name: str) -> str | None:
        """The controller of a class: its GatewayClass document's, else shoal's for the
        classes it serves without one."""
        return self.classes.get(class_name, CONTROLLER_NAME if class_name in CLASSES else None)

    def serves(self, gateway: Resource) -> bool:
        """Is ``gateway`` of a class shoal serves?"""
        return self.controller(gateway.spec.gateway_class_name) == CONTROLLER_NAME

    def labels(self, namespace: str) -> dict[str, str]:
        """A namespace's labels (its Namespace document's), with the one every namespace
        has: kubernetes.io/metadata.name."""
        return {**self.namespace_labels.get(namespace, {}), NAMESPACE_NAME_LABEL: namespace}


def istio_name(gateway: Resource, listener: Listener) -> str:
    """The name of the Istio Gateway standing for one listener (in the Gateway's
    namespace)."""
    return f"gatewayapi.{gateway.metadata.name}.{listener.name}"


def _narrower(a: str, b: str) -> str | None:
    """The hosts two hostnames (each possibly ``*.``-wildcarded) have in common, as one
    hostname, or None."""
    def covers(wild: str, host: str) -> bool:
        return wild.startswith("*.") and host.endswith(wild[1:]) and host != wild[2:]
    if a == b:
        return a
    if covers(a, b):
        return b
    if covers(b, a):
        return a
    return None


def hostnames(listener: Listener, route_hosts: Iterable[str]) -> list[str]:
    """The hostnames a route with ``route_hosts`` serves on ``listener`` (``*``: any);
    empty when they have none in common."""
    route_hosts = list(route_hosts)
    if listener.hostname is None:
        return sorted(set(route_hosts)) or ["*"]
    if not route_hosts:
        return [listener.hostname]
    return sorted({h for r in route_hosts if (h := _narrower(listener.hostname, r))})


@dataclass(frozen=True)
class Attached:
    gateway: Resource
    listener: Listener
    hosts: tuple[str, ...]


def attach(route: Resource, parent: ParentRef, scene: Scene
           ) -> tuple[list[Attached], str, str]:
    """The listeners ``route`` attaches to through ``parent``, and, when none, the spec's
    reason and a message saying why."""
    ns = route.metadata.namespace
    gw = scene.gateways.get((parent.namespace or ns, parent.name))
    if gw is None or not scene.serves(gw):
        return [], "NoMatchingParent", (f"no Gateway {parent.namespace or ns}/{parent.name} "
                                        "of a class shoal serves")
    spec: GatewaySpec = gw.spec
    chosen = [lis for lis in spec.listeners
              if parent.section_name in (None, lis.name) and parent.port in (None, lis.port)
              and foreign_certificate(gw, lis, scene.grants) is None]
    if not chosen:
        return [], "NoMatchingParent", "no listener has that sectionName and port"
    chosen = [lis for lis in chosen if route.kind in lis.route_kinds]
    if not chosen:
        return [], "NotAllowedByListeners", f"no such listener takes {route.kind}s"
    allowed = [lis for lis in chosen if _admits(lis, gw.metadata.namespace, ns, scene)]
    if not allowed:
        return [], "NotAllowedByListeners", (f"the listeners' allowedRoutes do not take "
                                             f"routes from namespace {ns}")
    out = [Attached(gw, lis, tuple(hs)) for lis in allowed
           if (hs := hostnames(lis, route.spec.hostnames)
               if lis.protocol is not ListenerProtocol.TCP else ["*"])]
    if not out:
        return [], "NoMatchingListenerHostname", "no listener hostname matches the route's"
    return out, "Accepted", f"attached to {len(out)} listener(s)"


def _admits(listener: Listener, gateway_ns: str, route_ns: str, scene: Scene) -> bool:
    namespaces = listener.allowed_routes.namespaces
    if namespaces.from_ is FromNamespaces.ALL:
        return True
    if namespaces.from_ is FromNamespaces.SAME:
        return route_ns == gateway_ns
    assert namespaces.selector is not None
    return namespaces.selector.matches(scene.labels(route_ns))


def foreign_certificate(gateway: Resource, listener: Listener,
                        grants: Iterable[Resource] = ()) -> str | None:
    """The namespace of a certificate ``listener`` names in another namespace than its
    Gateway's that no ReferenceGrant there lets the Gateway use (such a listener is not
    served), else None. A granted one names the gateway's credential of that name, as a
    certificate of its own namespace does (shoal's gateways hold their own credentials:
    the grant is the permission the spec asks for, docs/adr/0040)."""
    ns = gateway.metadata.namespace
    for ref in listener.tls.certificate_refs if listener.tls is not None else ():
        if ref.namespace not in (None, ns) and not any(
                g.metadata.namespace == ref.namespace
                and g.spec.allows("Gateway", ns, "Secret", ref.name) for g in grants):
            return ref.namespace
    return None


def _server(listener: Listener) -> dict[str, Any]:
    server: dict[str, Any] = {
        "port": {"number": listener.port, "name": listener.name,
                 "protocol": str(listener.protocol)},
        "hosts": [listener.hostname or "*"]}
    if listener.protocol is ListenerProtocol.HTTPS:
        assert listener.tls is not None
        server["tls"] = {"mode": "SIMPLE",
                         "credentialName": listener.tls.certificate_refs[0].name}
    elif listener.protocol is ListenerProtocol.TLS:
        server["tls"] = {"mode": "PASSTHROUGH"}
    return server


def _synthetic(kind: str, name: str, namespace: str, spec: Any, annotations: dict[str, str],
               created: str | None) -> Resource:
    return Resource(api_version=KINDS[kind].api_version, kind=kind, metadata=Metadata(
        name=name, namespace=namespace, annotations=annotations, creation_timestamp=created),
        spec=spec)


def translate(scene: Scene, routes: Iterable[Resource], services: Iterable[Resource],
              grants: Iterable[Resource], domain: str) -> tuple[list[Resource], list[Resource]]:
    """(Istio Gateways, VirtualServices) standing for the Gateways shoal serves and the
    routes attached to them."""
    known = {(s.metadata.namespace, s.metadata.name) for s in services}
    granted = list(grants)
    scene = dataclasses.replace(scene, grants=tuple(granted))  # (certificates' grants)
    istio: list[Resource] = []
    for gw in sorted(scene.gateways.values(), key=lambda g: g.key):
        if not scene.serves(gw):
            continue
        note = f"{gw.metadata.namespace}/{gw.metadata.name}"
        for lis in gw.spec.listeners:
            if foreign_certificate(gw, lis, scene.grants) is not None:
                continue  # (its status says why)
            spec = IstioGatewaySpec.model_validate({
                "selector": {GATEWAY_NAME_LABEL: gw.metadata.name}, "servers": [_server(lis)]})
            istio.append(_synthetic("Gateway", istio_name(gw, lis), gw.metadata.namespace,
                                    spec, {SYNTHETIC: note}, gw.metadata.creation_timestamp))
    # (gateway namespace, Istio gateway name, host) -> the routes attached there
    by_host: dict[tuple[str, str, str], dict[Any, Resource]] = {}
    # (gateway namespace, Istio gateway name) -> the scheme and port requests come in on
    entry: dict[tuple[str, str], tuple[str, int]] = {}
    for route in routes:
        if not route.spec.for_gateways:
            continue
        for parent in route.spec.parent_refs:
            for a in attach(route, parent, scene)[0]:
                ns, name = a.gateway.metadata.namespace, istio_name(a.gateway, a.listener)
                entry[ns, name] = ("https" if a.listener.protocol is ListenerProtocol.HTTPS
                                   else "http", a.listener.port)
                for host in a.hosts:
                    key = (ns, name, host)
                    by_host.setdefault(key, {})[route.key] = route
    vss: list[Resource] = []
    for (ns, gw_name, host), attached in sorted(by_host.items()):
        kind = next(iter(attached.values())).kind  # (one protocol per listener)
        try:
            if kind in ("HTTPRoute", "GRPCRoute"):
                entries = sorted((e for r in attached.values()
                                  for e in gamma.rule_entries(r, r.metadata.namespace, None)),
                                 key=gamma.Entry.precedence)
                rules: dict[str, Any] = {"http": [
                    gamma.http_rule(e, known, domain,
                                    lambda r, b: gamma.permitted(r, b, granted),
                                    entry[ns, gw_name])
                    for e in entries]}
            else:
                rules = _l4_rules(kind, host, attached.values(), known, granted, domain)
                if not rules:
                    continue  # no usable backend: connections are refused
            spec = VirtualServiceSpec.model_validate(
                {"hosts": [host], "gateways": [f"{ns}/{gw_name}"], **rules})
        except (pydantic.ValidationError, ValueError, TypeError) as e:
            log.error("a Gateway's routes could not be translated", extra={
                "gateway": f"{ns}/{gw_name}", "host": host, "error": str(e)})
            continue
        sources = ",".join(f"{r.metadata.namespace}/{r.metadata.name}"
                           for r in sorted(attached.values(), key=lambda r: r.key))
        oldest = min(attached.values(), key=oldest_first)
        vss.append(_synthetic("VirtualService", f"{gw_name}.{host.replace('*', 'any')}", ns,
                              spec, {gamma.SYNTHETIC: sources},
                              oldest.metadata.creation_timestamp))
    return istio, vss


def _l4_rules(kind: str, host: str, routes: Iterable[Resource], known: set[tuple[str, str]],
              grants: list[Resource], domain: str) -> dict[str, Any]:
    """The ``tls`` (by SNI) or ``tcp`` routes of TLSRoutes or TCPRoutes on one listener
    and hostname, the oldest route first (a TCP listener: the oldest route only)."""
    out: list[dict[str, Any]] = []
    for route in sorted(routes, key=oldest_first):
        ns = route.metadata.namespace
        for rule in route.spec.rules:
            usable = [r for r in rule.backend_refs if r.weight > 0
                      and gamma.backend_problem(route, r, lambda n, s: (n, s) in known,
                                                lambda a, b: gamma.permitted(a, b, grants))
                      is None]
            if not usable:
                continue
            weights = gamma.percentages([r.weight for r in usable])
            dests = [{"destination": gamma.destination(r, ns, domain),
                      **({"weight": w} if len(usable) > 1 else {})}
                     for r, w in zip(usable, weights, strict=True)]
            out.append({"match": [{"sniHosts": [host]}], "route": dests} if kind == "TLSRoute"
                       else {"route": dests})
        if kind == "TCPRoute" and out:
            break
    return {"tls" if kind == "TLSRoute" else "tcp": out} if out else {}


# -- status (read, not stored: computed from the snapshot the proxies were given) -------------

def _condition(type_: str, ok: bool, reason: str, message: str,
               generation: int | None) -> dict[str, Any]:
    out = {"type": type_, "status": "True" if ok else "False", "reason": reason,
           "message": message}
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def gateway_status(mesh: Any, gateway: Resource) -> dict[str, Any] | None:
    """The Gateway API status of ``gateway`` (``Accepted``, ``Programmed``, and per
    listener the routes attached and its conditions) as ``mesh`` (what the proxies were
    last given) sees it; None when ``mesh`` does not hold this version yet."""
    held = next((g for g in mesh.of_kind(KIND) if g.key == gateway.key), None)
    if held is None or held.revision != gateway.revision:
        return None
    gen = gateway.metadata.generation
    ns, name = gateway.metadata.namespace, gateway.metadata.name
    scene = Scene.of_mesh(mesh)
    if not scene.serves(gateway):
        why = (f"gatewayClassName {gateway.spec.gateway_class_name!r} is not a class shoal "
               f"serves (controller {CONTROLLER_NAME}: {', '.join(CLASSES)} or a "
               "GatewayClass naming it): no shoal gateway serves this Gateway")
        return {"conditions": [_condition("Accepted", False, "Pending", why, gen),
                               _condition("Programmed", False, "Pending", why, gen)]}
    workloads = [w for w in mesh.workloads if w.metadata.namespace == ns
                 and w.spec.labels.get(GATEWAY_NAME_LABEL) == name and is_ready(w)]
    attached: dict[str, int] = {}
    for route in (r for kind in ROUTE_KINDS for r in mesh.of_kind(kind)):
        if route.spec.for_gateways:
            for parent in route.spec.parent_refs:
                for a in attach(route, parent, scene)[0]:
                    if a.gateway.key == gateway.key:
                        attached[a.listener.name] = attached.get(a.listener.name, 0) + 1
    listeners = []
    for lis in gateway.spec.listeners:
        bindable = [w for w in workloads if lis.port in gateway_ports(w)]
        cert = lis.tls.certificate_refs[0].name if lis.tls and lis.tls.certificate_refs \
            else None
        creds = [w for w in bindable if cert is None or cert in
                 w.metadata.annotations.get(CREDENTIALS_ANNOTATION, "").split(",")]
        if not workloads:
            programmed = (False, "Pending", "no gateway workload is ready")
        elif not bindable:
            programmed = (False, "Invalid", f"no gateway workload may bind port {lis.port} "
                          "(shoal gateway run --port)")
        else:
            programmed = (True, "Programmed", f"served by {len(bindable)} gateway workload(s)")
        if (other := foreign_certificate(gateway, lis, scene.grants)) is not None:
            resolved = (False, "RefNotPermitted",
                        f"certificate in namespace {other}, and no ReferenceGrant there "
                        f"lets Gateways of {ns} use it; the listener is not served")
            programmed = (False, "Invalid", "its certificate cannot be used")
        elif cert is not None and bindable and not creds:
            resolved = (False, "InvalidCertificateRef",
                        f"no gateway workload holds credential {cert!r} "
                        "(shoal gateway run --credential)")
        else:
            resolved = (True, "ResolvedRefs", "every reference resolved")
        listeners.append({
            "name": lis.name,
            "supportedKinds": [{"group": GROUP, "kind": k} for k in lis.route_kinds],
            "attachedRoutes": attached.get(lis.name, 0),
            "conditions": [_condition("Accepted", True, "Accepted", "listener accepted", gen),
                           _condition("ResolvedRefs", *resolved, gen),
                           _condition("Programmed", *programmed, gen)]})
    all_programmed = all(c["status"] == "True" for lis in listeners for c in lis["conditions"])
    hint = (f"run `shoal gateway run --name {name} --namespace {ns} --port ...` for its "
            "listeners' ports" if not workloads else "see the listeners' conditions")
    return {
        "conditions": [
            _condition("Accepted", True, "Accepted", f"class {gateway.spec.gateway_class_name}"
                       f" ({CONTROLLER_NAME})", gen),
            _condition("Programmed", all_programmed,
                       "Programmed" if all_programmed else
                       ("NoResources" if not workloads else "Invalid"),
                       "every listener is served" if all_programmed else hint, gen)],
        "listeners": listeners}


def parent_status(mesh: Any, route: Resource, parent: ParentRef) -> dict[str, Any]:
    """``Accepted`` of ``route`` on the Gateway ``parent`` names (status.parents[])."""
    attached, reason, message = attach(route, parent, Scene.of_mesh(mesh))
    ref: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                           "name": parent.name,
                           "namespace": parent.namespace or route.metadata.namespace}
    if parent.section_name is not None:
        ref["sectionName"] = parent.section_name
    if parent.port is not None:
        ref["port"] = parent.port
    return {"parentRef": ref, "controllerName": CONTROLLER_NAME,
            "conditions": [_condition("Accepted", bool(attached), reason, message,
                                      route.metadata.generation)]}


def class_status(gateway_class: Resource) -> dict[str, Any] | None:
    """A GatewayClass's status: ``Accepted`` when it names shoal's controller; none for
    another controller's class (not shoal's to speak for)."""
    if gateway_class.spec.controller_name != CONTROLLER_NAME:
        return None
    return {"conditions": [_condition("Accepted", True, "Accepted",
                                      f"shoal ({CONTROLLER_NAME}) serves Gateways of this "
                                      "class", gateway_class.metadata.generation)]}
