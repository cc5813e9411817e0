"""Gateway API mesh routes (GAMMA) as the VirtualServices that mean the same (ADR 0035).

An ``HTTPRoute`` whose parent is a Service routes every consumer's calls to that Service.
Like ServiceEntries (:mod:`shoal.registry.external`), routes are turned into the Istio
model the generators already honour, once per snapshot: one synthetic VirtualService
per parent Service, holding one HTTP rule per (route, rule, match), ordered by the
Gateway API's precedence — exact path, then the longest prefix, then a method, then the
most header matches, then the most query-parameter matches, then the oldest route, then
namespace/name, then rule and match order. A real VirtualService for the same host wins
(Istio's API first; ``shoal analyze`` warns about the shadowed route).

The spec's semantics are kept where the Istio model differs: a ``PathPrefix`` matches
whole path segments (``/foo`` matches ``/foo`` and ``/foo/bar``, not ``/foobar``); weights
are proportions (scaled to Istio's percentages, within 1 %); a rule without usable
backends answers 500; ``ReplacePrefixMatch`` rewrites only the matched prefix.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pydantic

from shoal.api.gatewayapi import (
    SEGMENTS,
    BackendRef,
    Filter,
    FilterType,
    GRPCMethodMatch,
    GRPCRouteMatch,
    GRPCRouteSpec,
    GRPCRule,
    HTTPRouteSpec,
    PathMatch,
    PathModifier,
    PathModifierType,
    PathType,
    RequestRedirect,
    RouteMatch,
    Rule,
    ValueType,
    backend_refs,
    replace_prefix,
)
from shoal.api.http_route import PREFIX_MARKER
from shoal.api.kinds import KINDS
from shoal.api.meta import Metadata, Resource, oldest_first
from shoal.api.networking import VirtualServiceSpec, for_mesh

log = logging.getLogger(__name__)

KIND = "HTTPRoute"
KINDS_ROUTES = ("HTTPRoute", "GRPCRoute")
SYNTHETIC = "shoal.io/from-httproutes"  # annotation: the routes a VirtualService came from
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}


@dataclass(frozen=True)
class Entry:
    route: Resource
    rule_index: int
    rule: Rule | GRPCRule
    match_index: int
    match: RouteMatch  # a GRPCRoute's match as the HTTP match it means
    port: int | None
    grpc: GRPCRouteMatch | None = None
    parent_namespace: str = ""

    @property
    def consumer(self) -> str | None:
        """The route's namespace when it is a consumer route (its parent Service is in
        another namespace): it applies to that namespace's sidecars only."""
        ns = self.route.metadata.namespace
        return ns if self.parent_namespace != ns else None

    def precedence(self) -> tuple[Any, ...]:
        """The spec's order; consumer routes before the producer's (they replace them for
        their namespace); a parent's GRPCRoute rules before its HTTPRoute rules."""
        return (self.consumer is None, self.consumer or "", *self._order())

    def _order(self) -> tuple[Any, ...]:
        r = self.route
        tail = (oldest_first(r), r.metadata.namespace, r.metadata.name, self.rule_index,
                self.match_index)
        if self.grpc is not None:
            m = self.grpc.method
            return (0, -len(m.service or "") if m else 0, -len(m.method or "") if m else 0,
                    -len(self.grpc.headers), 0, 0, *tail)
        path = self.match.path or PathMatch()
        rank = {PathType.EXACT: 0, PathType.PATH_PREFIX: 1,
                PathType.REGULAR_EXPRESSION: 2}[path.type]
        return (1, rank, -len(path.value), self.match.method is None,
                -len(self.match.headers), -len(self.match.query_params), *tail)


def grpc_path(m: GRPCMethodMatch | None) -> PathMatch:
    """A GRPCRoute method match as the HTTP/2 ``:path`` match it means."""
    if m is None:
        return PathMatch()
    if m.type is ValueType.REGULAR_EXPRESSION:
        return PathMatch(type=PathType.REGULAR_EXPRESSION,
                         value=f"/{m.service or '[^/]+'}/{m.method or '[^/]+'}")
    if m.service is not None and m.method is not None:
        return PathMatch(type=PathType.EXACT, value=f"/{m.service}/{m.method}")
    service = re.escape(m.service) if m.service is not None else "[^/]+"
    method = re.escape(m.method) if m.method is not None else "[^/]+"
    return PathMatch(type=PathType.REGULAR_EXPRESSION, value=f"/{service}/{method}")


def fqdn(host: str, namespace: str, domain: str) -> str:
    """A VirtualService host as a service's full name (Istio's short-name rules)."""
    host = host.lower().rstrip(".")
    parts = host.split(".")
    if len(parts) == 1:
        return f"{host}.{namespace}.svc.{domain}"
    if len(parts) == 2:
        return f"{host}.svc.{domain}"
    if len(parts) == 3 and parts[2] == "svc":
        return f"{host}.{domain}"
    return host


def routed_hosts(virtual_services: Iterable[Resource], domain: str) -> dict[str, Resource]:
    """The mesh hosts that real (not synthetic) VirtualServices route, each with the first
    such VirtualService: where an HTTPRoute or GRPCRoute is not used (a VirtualService
    wins)."""
    out: dict[str, Resource] = {}
    for vs in virtual_services:
        if SYNTHETIC in vs.metadata.annotations or not for_mesh(vs.spec.gateways):
            continue
        for h in vs.spec.hosts:
            out.setdefault(fqdn(h, vs.metadata.namespace, domain), vs)
    return out


def milliseconds(text: str) -> int:
    """A Gateway API duration (``1m30s``, ``500ms``) in milliseconds."""
    return sum(int(n) * _UNIT_MS[u] for n, u in re.findall(r"(\d+)(ms|h|m|s)", text))


# what a rule's ``retry`` retries besides its codes (GEP-1731): a connection that could not
# be made, a request the backend refused unprocessed, and — as the conformance suite's
# connection-error feature asks — a connection reset or a backendRequest timeout before
# the answer (Envoy's ``reset``; unsafe for non-idempotent requests: docs/gateway-api.md)
RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,reset"


def _duration(text: str) -> str | None:
    ms = milliseconds(text)
    return None if ms == 0 else (f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms")


def _prefix_regex(value: str) -> str:
    return re.escape(value.rstrip("/")) + SEGMENTS


def _match(m: RouteMatch, port: int | None, consumer: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"sourceNamespace": consumer} if consumer else {}
    path = m.path or PathMatch()
    if path.type is PathType.EXACT:
        out["uri"] = {"exact": path.value}
    elif path.type is PathType.REGULAR_EXPRESSION:
        out["uri"] = {"regex": path.value}
    elif path.value.rstrip("/"):
        out["uri"] = {"regex": _prefix_regex(path.value)}  # whole segments only
    else:
        out["uri"] = {"prefix": "/"}
    if m.method is not None:
        out["method"] = {"exact": str(m.method)}
    for key, items in (("headers", m.headers), ("queryParams", m.query_params)):
        if items:
            out[key] = {(h.name.lower() if key == "headers" else h.name): (
                {"exact": h.value} if h.type is ValueType.EXACT else {"regex": h.value})
                for h in items}
    if port is not None:
        out["port"] = port
    return out


def _path_rewrite(mod: PathModifier, match: RouteMatch) -> dict[str, Any]:
    if mod.type is PathModifierType.REPLACE_FULL_PATH:
        return {"uriRegexRewrite": {"match": "^.*$", "rewrite": mod.replace_full_path}}
    assert mod.replace_prefix_match is not None and match.path is not None
    pattern, substitution = replace_prefix(re.escape(match.path.value.rstrip("/")),
                                           mod.replace_prefix_match)
    return {"uriRegexRewrite": {"match": pattern, "rewrite": substitution}}


def percentages(weights: list[int]) -> list[int]:
    """Proportions as whole percentages that sum to 100 (largest remainder)."""
    total = sum(weights)
    exact = [w * 100 / total for w in weights]
    out = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: out[i] - exact[i])[:100 - sum(out)]:
        out[i] += 1
    return out


def destination(ref: BackendRef, namespace: str, domain: str) -> dict[str, Any]:
    return {"host": f"{ref.name}.{ref.namespace or namespace}.svc.{domain}",
            "port": {"number": ref.port}}


def _header_ops(filters: Iterable[Filter]) -> dict[str, Any]:
    """Header modifier filters as Istio's ``headers`` (names lowercase: they are
    case-insensitive, and Istio's model takes them so)."""
    out: dict[str, Any] = {}
    for f in filters:
        mod = f.request_header_modifier or f.response_header_modifier
        if mod is None:
            continue
        side = "request" if f.type is FilterType.REQUEST_HEADER_MODIFIER else "response"
        out[side] = {"set": {h.name.lower(): h.value for h in mod.set},
                     "add": {h.name.lower(): h.value for h in mod.add},
                     "remove": [n.lower() for n in mod.remove]}
    return out


def _backend(ref: BackendRef, namespace: str, domain: str) -> dict[str, Any]:
    """One destination of a rule, with its own header filters."""
    out: dict[str, Any] = {"destination": destination(ref, namespace, domain)}
    if headers := _header_ops(ref.filters):
        out["headers"] = headers
    return out


def permitted(route: Resource, ref: BackendRef, grants: Iterable[Resource]) -> bool:
    """May ``route`` send to the Service ``ref`` names? Its own namespace's, or another's
    whose ReferenceGrant lets routes of this kind and namespace refer to it (grant
    entries for other groups or kinds allow nothing: ``ReferenceGrantSpec.allows``)."""
    ns = route.metadata.namespace
    target = ref.namespace or ns
    if target == ns:
        return True
    if any(p.is_service and (p.namespace or ns) == target and p.name == ref.name
           for p in route.spec.parent_refs):
        return True  # a consumer route sending to its parent Service itself
    return any(g.metadata.namespace == target
               and g.spec.allows(route.kind, ns, "Service", ref.name) for g in grants)


Permit = Callable[[Resource, BackendRef], bool]  # may this route use this backend?


def backend_problem(route: Resource, ref: BackendRef, exists: Callable[[str, str], bool],
                    allowed: Permit) -> tuple[str, str] | None:
    """Why ``route`` cannot send to ``ref``: the spec's ``ResolvedRefs`` reason and a
    message naming the backend; None when it can. The one home of "is this backend
    usable" (the rules' translation, the routes' status, ``shoal analyze``; docs/adr/0040).
    ``exists(namespace, name)``: is there such a Service; ``allowed``: is the reference
    permitted (:func:`permitted`). A reference to another namespace that no grant permits
    says so whether that Service exists or not (it is that namespace's business)."""
    ns = route.metadata.namespace
    target = f"{ref.namespace or ns}/{ref.name}"
    if not ref.is_service:
        name = ref.name if ref.namespace in (None, ns) else target
        return "InvalidKind", f"backend {ref.group_kind} {name} is not a Service"
    if not allowed(route, ref):
        return "RefNotPermitted", (f"no ReferenceGrant in namespace {ref.namespace} lets "
                                   f"{route.kind}s of {ns} use Service {target}")
    if not exists(ref.namespace or ns, ref.name):
        return "BackendNotFound", f"no Service {target}"
    return None


# the destination of a share no backend can take (a Service that does not exist, is not
# granted, a kind shoal has not): answered 500, as the spec says (xds routes.py); a
# reserved name (RFC 2606 .invalid), honoured in translated rules only
UNUSABLE_HOST = "unusable-backend.gateway-api.invalid"

WELL_KNOWN_PORTS = {"http": 80, "https": 443}


def redirect_port(rd: RequestRedirect, listener: tuple[str, int] | None) -> int | None:
    """The port a redirect sends to (the spec's rules): its own, else the well-known port
    of the scheme it sets, else the listener's (``listener``: the scheme and port the
    request came in on, when known); ``None`` where Location leaves the port out (80 for
    http, 443 for https) or nothing says."""
    scheme = rd.scheme or (listener[0] if listener else None)
    port = rd.port or (WELL_KNOWN_PORTS[rd.scheme] if rd.scheme
                       else listener[1] if listener else None)
    return None if scheme is not None and WELL_KNOWN_PORTS.get(scheme) == port else port


def http_rule(e: Entry, services: set[tuple[str, str]], domain: str,
              allowed: Permit, listener: tuple[str, int] | None = None) -> dict[str, Any]:
    """One Istio HTTP route of a rule's match; ``listener``: the scheme and port of the
    Gateway listener it serves (None on a Service)."""
    ns = e.route.metadata.namespace

    def usable(ref: BackendRef) -> bool:
        return backend_problem(e.route, ref, lambda n, s: (n, s) in services, allowed) is None

    out: dict[str, Any] = {"name": f"{ns}.{e.route.metadata.name}.{e.rule_index}."
                                   f"{e.match_index}",
                           "match": [_match(e.match, e.port, e.consumer)]}
    headers = _header_ops(e.rule.filters)
    for f in e.rule.filters:
        if f.type is FilterType.REQUEST_REDIRECT:
            rd = f.request_redirect
            assert rd is not None
            redirect: dict[str, Any] = {"redirectCode": rd.status_code}
            if rd.scheme:
                redirect["scheme"] = rd.scheme
            if rd.hostname:
                redirect["authority"] = rd.hostname
            if port := redirect_port(rd, listener):
                redirect["port"] = port
            if rd.path is not None:  # ReplacePrefixMatch: Istio's marker (route_actions)
                redirect["uri"] = rd.path.replace_full_path \
                    if rd.path.type is PathModifierType.REPLACE_FULL_PATH \
                    else PREFIX_MARKER + str(rd.path.replace_prefix_match)
            out["redirect"] = redirect
        elif f.type is FilterType.URL_REWRITE:
            rw = f.url_rewrite
            assert rw is not None
            rewrite: dict[str, Any] = {}
            if rw.hostname:
                rewrite["authority"] = rw.hostname
            if rw.path is not None:
                rewrite.update(_path_rewrite(rw.path, e.match))
            out["rewrite"] = rewrite
        elif f.type is FilterType.REQUEST_MIRROR:
            mirror = f.request_mirror
            assert mirror is not None
            if not usable(mirror.backend_ref):
                continue  # not there or not granted: nothing to mirror to
            pct = (mirror.percent if mirror.percent is not None else
                   100 * mirror.fraction.numerator / mirror.fraction.denominator
                   if mirror.fraction is not None else 100)
            out.setdefault("mirrors", []).append({
                "destination": destination(mirror.backend_ref, ns, domain),
                "percentage": {"value": min(100.0, float(pct))}})
    if headers:
        out["headers"] = headers
    if "redirect" not in out:
        weighted = [r for r in e.rule.backend_refs if r.weight > 0]
        backends = [r for r in weighted if usable(r)]
        if not backends:  # none, all weight 0, none exists or is granted: the spec's 500
            out.pop("rewrite", None)
            out.pop("mirrors", None)
            out["directResponse"] = {"status": 500}
        elif len(weighted) == 1:
            out["route"] = [_backend(backends[0], ns, domain)]
        else:  # the shares of backends that cannot be used are answered 500
            weights = percentages([r.weight for r in weighted])
            out["route"] = [{**_backend(r, ns, domain), "weight": w} if r in backends
                            else {"destination": {"host": UNUSABLE_HOST}, "weight": w}
                            for r, w in zip(weighted, weights, strict=True)]
    if "route" not in out:  # a redirect or the 500: nothing is sent to a backend
        return out
    t = getattr(e.rule, "timeouts", None)
    if t is not None and t.request and (d := _duration(t.request)):
        out["timeout"] = d
    retries: dict[str, Any] = {}
    if (retry := getattr(e.rule, "retry", None)) is not None:
        if retry.attempts is not None:
            retries["attempts"] = retry.attempts
        retries["retryOn"] = ",".join([RETRY_ON, *(str(c) for c in retry.codes)])
    if t is not None and t.backend_request and (d := _duration(t.backend_request)):
        retries["perTryTimeout"] = d
    if retries:
        out["retries"] = retries
    return out


def rule_entries(route: Resource, parent_namespace: str, port: int | None
                 ) -> Iterator[Entry]:
    """One entry per (rule, match) of an HTTPRoute or GRPCRoute (a GRPCRoute's match as
    the HTTP/2 request it means), for one parent."""
    for i, rule in enumerate(route.spec.rules):
        if isinstance(rule, GRPCRule):
            for j, g in enumerate(rule.matches or [GRPCRouteMatch()]):
                m = RouteMatch(path=grpc_path(g.method), headers=g.headers)
                yield Entry(route, i, rule, j, m, port, g, parent_namespace)
            continue
        for j, m in enumerate(rule.matches or [RouteMatch()]):
            yield Entry(route, i, rule, j, m, port, None, parent_namespace)


def _entries(routes: Iterable[Resource]) -> Iterator[tuple[tuple[str, str], Entry]]:
    for r in routes:
        spec: HTTPRouteSpec | GRPCRouteSpec = r.spec
        ns = r.metadata.namespace
        for parent in spec.parent_refs:
            if not parent.is_service:
                continue  # a Gateway's route (registry/gateways.py)
            key = (parent.namespace or ns, parent.name)
            yield from ((key, e) for e in rule_entries(r, key[0], parent.port))


def mesh_routes(routes: Iterable[Resource], services: Iterable[Resource],
                taken_hosts: set[str], domain: str, grants: Iterable[Resource] = ()
                ) -> list[Resource]:
    """One synthetic VirtualService per Service that HTTPRoutes or GRPCRoutes name as
    their parent (except hosts a real VirtualService already routes)."""
    services = list(services)
    known = {(s.metadata.namespace, s.metadata.name) for s in services}
    ports_of = {(s.metadata.namespace, s.metadata.name): [p.port for p in s.spec.ports]
                for s in services}
    granted = list(grants)
    by_parent: dict[tuple[str, str], list[Entry]] = {}
    for key, entry in _entries(routes):
        if key in known:
            by_parent.setdefault(key, []).append(entry)
    out = []
    for (ns, name), entries in sorted(by_parent.items()):
        host = f"{name}.{ns}.svc.{domain}"
        if host in taken_hosts:
            continue
        entries.sort(key=Entry.precedence)
        try:
            http = [http_rule(e, known, domain, lambda r, b: permitted(r, b, granted))
                    for e in entries]
        except (ValueError, TypeError) as e:  # a bug here must not stop the control plane
            log.error("mesh routes of a Service could not be translated", extra={
                "service": f"{ns}/{name}", "error": str(e)})
            continue
        # a consumer namespace's requests that its routes do not match: 404, not the
        # producer's routes (consumer routes replace them for that namespace); they go
        # right after the consumer rules, which come first
        consumers = sorted({(e.consumer, e.port or 0) for e in entries if e.consumer})
        n_consumer = sum(1 for e in entries if e.consumer)
        http[n_consumer:n_consumer] = [
            {"name": f"consumer.{c}.{p}.unmatched",
             "match": [{"sourceNamespace": c, "uri": {"prefix": "/"},
                        **({"port": p} if p else {})}],
             "directResponse": {"status": 404}} for c, p in consumers]
        # routes attached to some ports only: the others keep their default routing
        routed_ports = {e.port for e in entries}
        if None not in routed_ports:
            http += [{"name": f"default.{p}", "match": [{"port": p}],
                      "route": [{"destination": {"host": host, "port": {"number": p}}}]}
                     for p in ports_of[(ns, name)] if p not in routed_ports]
        try:
            spec = VirtualServiceSpec.model_validate({"hosts": [host], "http": http})
        except pydantic.ValidationError as e:
            log.error("mesh routes of a Service could not be translated", extra={
                "service": f"{ns}/{name}", "error": str(e)})
            continue
        sources = sorted({f"{e.route.metadata.namespace}/{e.route.metadata.name}"
                          for e in entries})
        oldest = min((e.route for e in entries), key=oldest_first)
        out.append(Resource(
            api_version=KINDS["VirtualService"].api_version, kind="VirtualService",
            metadata=Metadata(name=f"httproutes.{name}", namespace=ns,
                              annotations={SYNTHETIC: ",".join(sources)},
                              creation_timestamp=oldest.metadata.creation_timestamp),
            spec=spec))
    return out


# -- status (read, not stored: it reflects the config the proxies were given) ------------------

CONTROLLER = "shoal.io/mesh"


def _condition(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason,
            "message": message}


def route_status(mesh: Any, route: Resource) -> dict[str, Any] | None:
    """The Gateway API status of ``route`` (``status.parents[]`` with ``Accepted`` and
    ``ResolvedRefs`` conditions, the spec's reasons) as ``mesh`` (a MeshSnapshot: what the
    proxies were last given) sees it; None when ``mesh`` does not hold this version of the
    route yet."""
    held = next((r for r in mesh.of_kind(route.kind) if r.key == route.key), None)
    if held is None or held.revision != route.revision:
        return None
    ns = route.metadata.namespace
    domain = mesh.config.domain
    real = routed_hosts(mesh.of_kind("VirtualService"), domain)
    grants = mesh.of_kind("ReferenceGrant")
    problems = [problem for _, ref in backend_refs(route.spec.rules)
                if (problem := backend_problem(route, ref,
                                               lambda n, s: mesh.service(n, s) is not None,
                                               lambda r, b: permitted(r, b, grants)))
                is not None]
    # the first problem's reason (the spec has one per condition); the message names each
    resolved = (_condition("ResolvedRefs", True, "ResolvedRefs", "every backend resolved")
                if not problems else
                _condition("ResolvedRefs", False, problems[0][0],
                           "; ".join(f"{reason}: {m}" for reason, m in problems)
                           + f": the requests for {'it' if len(problems) == 1 else 'them'}"
                             " answer 500"))
    parents = []
    from shoal.registry import gateways  # (it builds on this module)
    for p in route.spec.parent_refs:
        if not p.is_service:  # a Gateway's route
            entry = gateways.parent_status(mesh, route, p)
            entry["conditions"].append(dict(resolved, **(
                {"observedGeneration": route.metadata.generation}
                if route.metadata.generation is not None else {})))
            parents.append(entry)
            continue
        pns = p.namespace or ns
        host = f"{p.name}.{pns}.svc.{domain}"
        if mesh.service(pns, p.name) is None:
            accepted = _condition("Accepted", False, "NoMatchingParent",
                                  f"no Service {pns}/{p.name}")
        elif host in real:
            vs = real[host]
            accepted = _condition("Accepted", False, "ShadowedByVirtualService",
                                  f"VirtualService {vs.metadata.namespace}/{vs.metadata.name} "
                                  f"routes {host} and wins (docs/adr/0035)")
        else:
            accepted = _condition("Accepted", True, "Accepted",
                                  f"routes every sidecar's calls to {host}")
        ref = {"group": "", "kind": "Service", "name": p.name, "namespace": pns}
        if p.port is not None:
            ref["port"] = p.port
        conditions = [accepted, dict(resolved)]
        if route.metadata.generation is not None:
            for c in conditions:
                c["observedGeneration"] = route.metadata.generation
        parents.append({"parentRef": ref, "controllerName": CONTROLLER,
                        "conditions": conditions})
    return {"parents": parents}


def check_translation(route: Resource) -> list[str]:
    """Problems turning ``route`` alone into the VirtualService it means (admission: a
    route the translation cannot take is refused when applied, never stored)."""
    problems = []
    ns = route.metadata.namespace
    rules: list[Rule] | list[GRPCRule] = route.spec.rules
    # as if every Service it names existed and every reference were granted: the rules'
    # full translation is what must hold
    known = {(r.namespace or ns, r.name) for rule in rules for r in rule.backend_refs}
    known |= {(f.request_mirror.backend_ref.namespace or ns, f.request_mirror.backend_ref.name)
              for rule in rules for f in rule.filters if f.request_mirror is not None}
    entries = list(_entries([route])) if not route.spec.for_gateways else [
        (("", "gateway"), e) for e in rule_entries(route, ns, None)]
    for key, entry in entries:
        try:
            VirtualServiceSpec.model_validate({
                "hosts": [f"{key[1]}.{key[0] or ns}.svc.cluster.local"],
                "http": [http_rule(entry, known | {key}, "cluster.local", lambda r, b: True)]})
        except (pydantic.ValidationError, ValueError, TypeError) as e:
            problems.append(f"rules[{entry.rule_index}] cannot be honoured: {e}")
    return problems

